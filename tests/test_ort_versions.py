"""What ties the package to an onnxruntime version: the IR version of the models it writes (loadable by
the installed ORT whatever onnx wrote them), the rewriter keeping a user's IR version, a node shape that
crashed ORT 1.21-1.23 at session creation, and pyproject's claim matching the oldest ORT that CI tests
(.ci/run runs this file and the op's core tests in a virtual environment with that release)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import im2win_ort
from im2win_ort import demo
from im2win_ort._ir_version import ir_version_for, make_model
from im2win_ort.measure import bench
from im2win_ort.measure.layer_sets import LAYER_SETS

from helpers import small_net

ROOT = Path(__file__).resolve().parent.parent


def test_ir_version_follows_the_opsets():
    assert ir_version_for([("", 17)]) == 8  # as torch.onnx.export writes it
    assert ir_version_for([("", 17), ("com.im2win", 1)]) == 8
    assert ir_version_for([("", 21)]) == 10
    assert ir_version_for([("", 1)]) == 7  # the floor: initializers need not be graph inputs
    assert ir_version_for([("", 13)], functions=True) == 8
    graph = helper.make_graph([], "g", [], [])
    assert make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).ir_version == 8
    assert make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).ir_version == 9


def test_models_the_package_writes_load_in_this_onnxruntime():
    reference, ours = demo.build_models()
    layer = LAYER_SETS["tiny"]()[0]
    written = {"demo reference": reference, "demo im2win": ours,
               "bench ORT": onnx.load_from_string(bench.conv_model(layer)),
               "bench im2win": onnx.load_from_string(bench.conv_model(layer, im2win_ort.DOMAIN)),
               "rewritten": im2win_ort.rewrite(small_net())}
    for what, model in written.items():
        assert model.ir_version <= onnx.IR_VERSION, what
        ort.InferenceSession(model.SerializeToString(), im2win_ort.session_options(),
                             providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("ir_version", [7, 8, 10])
def test_rewriter_keeps_the_models_ir_version(ir_version):
    model = small_net()
    model.ir_version = ir_version
    out = im2win_ort.rewrite(model)
    assert out.ir_version == ir_version
    assert any(n.domain == im2win_ort.DOMAIN for n in out.graph.node)


_Z_WITHOUT_B = """
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
import im2win_ort
w = numpy_helper.from_array(np.ones((6, 4, 3, 3), np.float32), "W")
node = helper.make_node("Conv", ["X", "W", "", "Z"], ["Y"], name="conv", domain="com.im2win")
graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 8, 8]),
                                        helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 6, 6, 6])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.im2win", 1)],
                          ir_version=8)
sess = ort.InferenceSession(model.SerializeToString(), im2win_ort.session_options(), providers=["CPUExecutionProvider"])
x = np.ones((1, 4, 8, 8), np.float32)
(y,) = sess.run(None, {"X": x, "Z": np.full((1, 6, 6, 6), 2.0, np.float32)})
assert np.allclose(y, 36.0 + 2.0), y.ravel()[:4]
print("ok")
"""


def test_residual_without_bias_does_not_crash_session_creation(tmp_path):
    """X, W, "", Z: ORT 1.21-1.23 crash building a custom op's shape-inference context when an optional
    input before a present one is left out; the library must not hand them its shape inference then.
    In a child process, so that a crash fails this test instead of ending the run."""
    run = subprocess.run([sys.executable, "-c", _Z_WITHOUT_B], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "ok", \
        f"onnxruntime {ort.__version__}: exit status {run.returncode}\n{run.stderr[-2000:]}"


def test_pyproject_claims_the_oldest_onnxruntime_that_ci_tests():
    claim = re.search(r'"onnxruntime>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    tested = re.search(r"ORT_OLDEST=([0-9.]+)", (ROOT / ".ci" / "run").read_text())
    assert claim and tested, "pyproject.toml's onnxruntime>= or .ci/run's ORT_OLDEST= is missing"
    claimed, oldest = claim.group(1).split("."), tested.group(1).split(".")
    assert oldest[:len(claimed)] == claimed and all(p == "0" for p in oldest[len(claimed):]), \
        f"pyproject claims onnxruntime>={claim.group(1)}, CI tests {tested.group(1)}"
