"""Whole networks from models/ (ResNet, VGG, MobileNetV2, and the rest), exported to ONNX,
rewritten and run against ORT on the original: every Conv moves to com.im2win, BatchNormalization
folds, ReLU/ReLU6 and residual Adds fuse, and the answers agree."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from im2win_ort import rewrite_with_report
from im2win_ort.rewriter.validate import compare, random_inputs

sys.path.append(str(Path(__file__).resolve().parents[1]))  # models/ (last: an installed im2win_ort wins)
import models  # noqa: E402

SMALL = {"width": 0.25, "resolution": 64, "num_classes": 10}
TOLERANCE = 1e-3  # relative to each output's magnitude, as `im2win-ort rewrite --validate`


def rewritten(name, **options):
    original = models.build(name, backend="onnx", **{**SMALL, **options})
    out, report = rewrite_with_report(original)
    differences = compare(original, out, random_inputs(original, symbolic_dim=2))
    assert all(d.ok(TOLERANCE) for d in differences), differences
    return original, out, report


def counts(model):
    return Counter((n.domain, n.op_type) for n in model.graph.node)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_fold_bn_and_fuse_residuals(name):
    original, out, report = rewritten(name)
    before, after = counts(original), counts(out)
    assert after[("com.im2win", "Conv")] == before[("", "Conv")] and not report.left
    assert after[("", "BatchNormalization")] == 0 and after[("", "Relu")] == 0
    assert after[("", "Add")] == 0  # every residual Add became a Z input
    assert sum("Add" in f for f in report.fused) == before[("", "Add")]


def test_vgg16_fuses_relu():
    original, out, report = rewritten("vgg16")
    assert counts(out)[("com.im2win", "Conv")] == 13 and counts(out)[("", "Relu")] == counts(original)[("", "Relu")] - 13


def test_mobilenet_v2_depthwise_and_relu6():
    original, out, report = rewritten("mobilenet_v2")
    after = counts(out)
    assert after[("com.im2win", "Conv")] == counts(original)[("", "Conv")] and after[("", "Clip")] == 0
    assert after[("", "BatchNormalization")] == 0 and after[("", "Add")] == 0
    depthwise = [n for n in out.graph.node if n.domain == "com.im2win" and
                 any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 17


@pytest.mark.parametrize("name", ["alexnet", "squeezenet1_1", "densenet121"])
def test_other_networks(name):
    original, out, report = rewritten(name, resolution=64 if name != "alexnet" else 96)
    assert counts(out)[("com.im2win", "Conv")] == counts(original)[("", "Conv")] and not report.left


def test_policy_on_a_network():
    original = models.build("mobilenet_v2", backend="onnx", **SMALL)
    out, report = rewrite_with_report(original, skip_depthwise=True, skip_pointwise=True)
    reasons = Counter(reason.split(" ")[0] for _, reason in report.left)
    assert reasons == {"depthwise": 17, "1x1": 34}  # of 52 convs: the 3x3 stem runs on com.im2win
    assert all(d.ok(TOLERANCE) for d in compare(original, out, random_inputs(original)))


def test_folded_bn_export_and_batch_of_several():
    original = models.build("resnet18", backend="onnx", fold_bn=True, **SMALL)
    out, _ = rewrite_with_report(original)
    feeds = random_inputs(original, symbolic_dim=3)
    assert all(d.ok(TOLERANCE) for d in compare(original, out, feeds, threads=2))


def test_torch_export_rewrites_too(tmp_path):
    pytest.importorskip("torch")
    original = models.build("resnet18", backend="torch", **SMALL)
    out, report = rewrite_with_report(original)
    assert counts(out)[("com.im2win", "Conv")] == 20 and not report.left
    assert all(d.ok(TOLERANCE) for d in compare(original, out, random_inputs(original, symbolic_dim=2)))
    np.testing.assert_equal(len(out.graph.input), len(original.graph.input))
