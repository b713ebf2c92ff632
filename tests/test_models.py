"""models/: the ONNX builder, the torch definitions and the export script.

models/ is not installed: it is imported from the repository root, appended at the end of
sys.path so that an installed im2win_ort still takes precedence over the source tree. Small
variants (width 1/8, 32x32 or 64x64 inputs) keep these tests fast; only graph structure and
parameter counts are checked at full size.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import models  # noqa: E402
from models import export as export_cli  # noqa: E402
from models import onnx_builder  # noqa: E402

if Path(models.__file__).resolve().parent != ROOT / "models":  # pragma: no cover
    raise ImportError(f"'models' resolved to {models.__file__}, not this repository's models/")

NAMES = models.names()
NUM_CLASSES = 10
WIDTH = 0.125

# torchvision's parameter counts (weights and biases, BN scale and shift; no running statistics)
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "mobilenet_v2": 3_504_872,
    "alexnet": 61_100_840,
    "squeezenet1_1": 1_235_496,
    "densenet121": 7_978_856,
}
CONV_COUNTS = {
    "resnet18": 20,
    "resnet50": 53,
    "vgg16": 13,
    "mobilenet_v2": 52,
    "alexnet": 5,
    "squeezenet1_1": 26,
    "densenet121": 120,
}


def small(name: str, **extra) -> dict:
    options = dict(width=WIDTH, resolution=64 if name == "alexnet" else 32, num_classes=NUM_CLASSES)
    options.update(extra)
    return options


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def trainable_count(model: onnx.ModelProto) -> int:
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if not t.name.endswith(("running_mean", "running_var"))
    )


@pytest.fixture(scope="module")
def small_models() -> dict[str, onnx.ModelProto]:
    return {name: models.build(name, **small(name)) for name in NAMES}


# --------------------------------------------------------------------------------------------
# The ONNX builder
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_small_network_checks_and_runs_with_dynamic_batch(name, small_models):
    model = small_models[name]
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, *[small(name)["resolution"]] * 2]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert "Dropout" not in op_counts(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["im2win.network"] == name and meta["im2win.backend"] == "onnx"

    sess = session(model)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, *[small(name)["resolution"]] * 2)).astype(np.float32)
        (y,) = sess.run(None, {"input": x})
        assert y.shape == (batch, NUM_CLASSES) and y.dtype == np.float32
        assert np.isfinite(y).all()
        assert 1e-3 < np.sqrt(np.mean(y**2)) < 1e3  # O(1) activations reach the classifier


@pytest.mark.parametrize("name", NAMES)
def test_graph_computes_what_the_numpy_reference_computes(name, small_models):
    """ORT on the builder's graph agrees with the builder's own NumPy run of the network; the
    BN-folded variant computes the same function with different (folded) weights."""
    x, expected = onnx_builder.reference_run(name, **small(name))
    assert expected is not None and expected.shape == (x.shape[0], NUM_CLASSES)
    (y,) = session(small_models[name]).run(None, {"input": x})
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-3 * scale)

    folded = models.build(name, **small(name, fold_bn=True))
    onnx.checker.check_model(folded, full_check=True)
    counts, folded_counts = op_counts(small_models[name]), op_counts(folded)
    assert folded_counts["Conv"] == counts["Conv"]
    assert folded_counts["BatchNormalization"] < counts["BatchNormalization"] or not counts["BatchNormalization"]
    (y_folded,) = session(folded).run(None, {"input": x})
    np.testing.assert_allclose(y_folded, y, rtol=0, atol=1e-3 * scale)


def test_batch_norm_is_not_trivial(small_models):
    """Running statistics and affine parameters are all non-trivial, so folding really changes
    the weights (and a rewrite that dropped BN would be caught)."""
    params = initializers(small_models["resnet18"])
    for key in (k for k in params if k.endswith("running_var")):
        prefix = key[: -len("running_var")]
        mean, var = params[prefix + "running_mean"], params[key]
        gamma, beta = params[prefix + "weight"], params[prefix + "bias"]
        assert np.all(var > 0) and np.ptp(var) > 0 and np.abs(mean).max() > 1e-3
        assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)
    folded = initializers(models.build("resnet18", **small("resnet18", fold_bn=True)))
    assert not np.allclose(folded["conv1.weight"], params["conv1.weight"])


def test_deterministic_and_seeded(small_models):
    for name in ("resnet18", "mobilenet_v2", "densenet121"):
        again = models.build(name, **small(name))
        assert again.SerializeToString() == small_models[name].SerializeToString()
        a, b = initializers(small_models[name]), initializers(again)
        assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    other = initializers(models.build("resnet18", **small("resnet18", seed=1)))
    assert not np.array_equal(other["conv1.weight"], initializers(small_models["resnet18"])["conv1.weight"])


def test_fixed_batch(small_models):
    model = models.build("squeezenet1_1", **small("squeezenet1_1", batch_dynamic=False, batch=2))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize("name", NAMES)
def test_conv_counts_do_not_depend_on_width(name, small_models):
    assert op_counts(small_models[name])["Conv"] == CONV_COUNTS[name]


def test_full_size_resnet50():
    model = models.build("resnet50")
    counts = op_counts(model)
    assert counts["Conv"] == 53 and counts["BatchNormalization"] == 53
    assert counts["Add"] == 16 and counts["Relu"] == 49 and counts["Gemm"] == 1
    assert trainable_count(model) == TORCHVISION_PARAMETERS["resnet50"]
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    for block in ("layer2.0", "layer3.0", "layer4.0"):  # v1.5: the 3x3 conv carries the stride
        assert attribute(convs[f"{block}.conv1"], "strides") == [1, 1]
        assert attribute(convs[f"{block}.conv2"], "strides") == [2, 2]
    conv_outputs = {n.output[0] for n in convs.values()}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert all(n.input[0] in conv_outputs for n in bns)  # every BN follows a Conv ...
    assert all(len(n.input) == 2 for n in convs.values())  # ... which has no bias


def test_full_size_mobilenet_v2():
    model = models.build("mobilenet_v2")
    counts = op_counts(model)
    assert counts["Conv"] == 52 and counts["BatchNormalization"] == 52 and counts["Add"] == 10
    assert trainable_count(model) == TORCHVISION_PARAMETERS["mobilenet_v2"]
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    depthwise = [
        n for n in model.graph.node
        if n.op_type == "Conv" and attribute(n, "group", 1) > 1
    ]
    assert len(depthwise) == 17
    for n in depthwise:
        m, c_per_group = shapes[n.input[1]][:2]
        assert c_per_group == 1 and attribute(n, "group") == m  # group == channels
    constants = {
        n.output[0]: float(numpy_helper.to_array(attribute(n, "value")))
        for n in model.graph.node if n.op_type == "Constant"
    }
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert len(clips) == 35
    assert all((constants[n.input[1]], constants[n.input[2]]) == (0.0, 6.0) for n in clips)


def test_full_size_densenet121_and_squeezenet():
    model = models.build("densenet121")
    counts = op_counts(model)
    assert counts["Conv"] == 120 and counts["BatchNormalization"] == 121
    assert counts["Concat"] == 58 and counts["AveragePool"] == 3
    assert trainable_count(model) == TORCHVISION_PARAMETERS["densenet121"]
    squeezenet = models.build("squeezenet1_1")
    assert op_counts(squeezenet)["Conv"] == 26 and op_counts(squeezenet)["Concat"] == 8
    assert trainable_count(squeezenet) == TORCHVISION_PARAMETERS["squeezenet1_1"]


def test_full_size_resnet18_parameters():
    assert trainable_count(models.build("resnet18")) == TORCHVISION_PARAMETERS["resnet18"]


@pytest.mark.parametrize("name", ["alexnet", "squeezenet1_1", "densenet121"])
def test_smallest_resolution_runs_and_below_it_a_clear_error(name):
    smallest = onnx_builder.min_resolution(name)
    model = models.build(name, **small(name, resolution=smallest))
    x = np.ones((1, 3, smallest, smallest), np.float32)
    assert session(model).run(None, {"input": x})[0].shape == (1, NUM_CLASSES)
    with pytest.raises(ValueError, match=f"smallest resolution {name} takes is {smallest}"):
        models.build(name, **small(name, resolution=smallest - 1))


def test_names_and_errors():
    assert NAMES == ["resnet18", "resnet50", "vgg16", "mobilenet_v2", "alexnet", "squeezenet1_1", "densenet121"]
    assert set(models.NETWORKS) == set(NAMES) and all(callable(b) for b in models.NETWORKS.values())
    assert models.resolve("MobileNetV2") == "mobilenet_v2" and models.resolve("ResNet-50") == "resnet50"
    with pytest.raises(KeyError, match="choose from: resnet18, resnet50"):
        models.build("resnet99")
    with pytest.raises(ValueError, match="unknown backend"):
        models.build("resnet18", backend="tf", **small("resnet18"))
    with pytest.raises(ValueError, match="width"):
        models.build("resnet18", width=0)
    model = models.NETWORKS["vgg16"](**small("vgg16"))
    assert op_counts(model)["Gemm"] == 3


# --------------------------------------------------------------------------------------------
# The export script
# --------------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models.export", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_unknown_name_lists_the_names(tmp_path):
    r = run_cli("resnet99", "--out", str(tmp_path))
    assert r.returncode != 0
    assert "unknown network 'resnet99'" in r.stderr and all(n in r.stderr for n in NAMES)
    assert not list(tmp_path.iterdir())
    assert run_cli().returncode != 0


def test_cli_writes_a_model(tmp_path):
    r = run_cli("SqueezeNet1_1", "--backend", "onnx", "--out", str(tmp_path), "--width", "0.25", "--resolution", "32")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "squeezenet1_1.onnx"
    assert str(path) in r.stdout
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_value == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["squeezenet1_1.onnx"]  # no temporary left


def test_cli_all_in_process(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--all", "--backend", "onnx", "--out", str(out), "--width", "0.0625", "--resolution", "64",
            "--num-classes", "5", "--fold-bn"]
    assert export_cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.onnx" for n in NAMES)
    model = onnx.load(str(out / "resnet18.onnx"))
    assert "BatchNormalization" not in op_counts(model)
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 5
    assert export_cli.main(["alexnet", "--backend", "onnx", "--out", str(out), "--resolution", "16"]) == 1
    assert "smallest resolution alexnet takes is 63" in capsys.readouterr().err


def test_save_atomic_replaces_and_cleans_up(tmp_path, small_models):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    export_cli.save_atomic(small_models["squeezenet1_1"], path)
    assert onnx.load(str(path)).graph.name == "squeezenet1_1"

    class Boom:  # fails while the file is being written
        def SerializeToString(self):  # noqa: N802 - protobuf's name
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        export_cli.save_atomic(Boom(), path)
    assert onnx.load(str(path)).graph.name == "squeezenet1_1" and os.listdir(tmp_path) == ["m.onnx"]


# --------------------------------------------------------------------------------------------
# The torch backend (only where PyTorch is installed)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_models():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from models import torch_models

    return torch_models


def test_torch_and_onnx_resnet18_agree(torch_models, small_models):
    ours = small_models["resnet18"]
    theirs = models.build("resnet18", backend="torch", **small("resnet18"))
    onnx.checker.check_model(theirs, full_check=True)
    assert op_counts(theirs) == op_counts(ours)
    assert [(o.domain, o.version) for o in theirs.opset_import] == [("", 17)]
    assert theirs.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    a, b = initializers(ours), initializers(theirs)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(session(theirs).run(None, {"input": x})[0], session(ours).run(None, {"input": x})[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "resnet18"])
def test_torch_and_onnx_graphs_agree(torch_models, small_models, name):
    theirs = torch_models.export_model(name, **small(name))
    assert op_counts(theirs) == op_counts(small_models[name])
    x = np.random.default_rng(3).standard_normal((2, 3, *[small(name)["resolution"]] * 2)).astype(np.float32)
    expected = session(small_models[name]).run(None, {"input": x})[0]
    np.testing.assert_allclose(session(theirs).run(None, {"input": x})[0], expected,
                               rtol=0, atol=1e-4 * np.abs(expected).max())


def test_torch_module_matches_its_export(torch_models):
    import torch

    module = torch_models.create("mobilenet_v2", **small("mobilenet_v2"))
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    exported = models.build("mobilenet_v2", backend="torch", **small("mobilenet_v2"))
    np.testing.assert_allclose(session(exported).run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_torch_export_writes_a_file(torch_models, tmp_path):
    path = torch_models.export("resnet18", tmp_path / "r18.onnx", batch_dynamic=True, fold_bn=True, **small("resnet18"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    counts = op_counts(model)
    assert counts["Conv"] == 20 and "BatchNormalization" not in counts  # torch's constant folding
    assert op_counts(models.build("resnet18", **small("resnet18", fold_bn=True))) == counts
    sess = session(model)
    for batch in (1, 4):
        assert sess.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})[0].shape == (batch, NUM_CLASSES)
    fixed = torch_models.export_model("resnet18", batch_dynamic=False, batch=2, **small("resnet18"))
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert sorted(os.listdir(tmp_path)) == ["r18.onnx"]


def test_main_job_end_to_end(tmp_path, capsys):
    """`python -m models` (README's main job) on a small network: export, rewrite + validate, compare."""
    from models.__main__ import main as main_job

    assert main_job(["resnet18", "--out", str(tmp_path), "--width", "0.125", "--resolution", "32", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "report and charts" in out  # the subprocesses print the validation and the table
    for name in ("resnet18.onnx", "resnet18.im2win.onnx", "compare/report.md", "compare/report.json"):
        assert (tmp_path / name).is_file(), name
