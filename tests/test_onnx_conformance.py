"""ONNX's own Conv conformance data (pytorch-converted test_Conv*), run with every Conv node moved to
com.im2win::Conv, on every ISA this CPU can run, with the weights both constant (packed once at
session creation) and fed at run time."""

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from helpers import DOMAIN, assert_close, make_session, move_conv_to_im2win

DATA_ROOT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "pytorch-converted")
CASES = sorted(os.path.basename(d) for d in glob.glob(os.path.join(DATA_ROOT, "test_Conv*")))

# Tolerance: the stored outputs come from PyTorch in float32 and ours sum in another order.
RTOL = 1e-4
ATOL_SCALE = 1e-5  # atol = ATOL_SCALE * max |expected output|


def _load_tensors(directory: str, prefix: str) -> list[np.ndarray]:
    files = sorted(glob.glob(os.path.join(directory, f"{prefix}_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]


def _data_input_names(model: onnx.ModelProto) -> list[str]:
    # As ONNX's backend runner: input_i.pb feeds the i-th graph input that is not an initializer.
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _weights_to_feeds(model: onnx.ModelProto) -> dict:
    """Removes the initializers (these opset-6 models also list them as graph inputs) and returns
    them as feeds, so W and B arrive at run time instead of at session creation."""
    feeds = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    del model.graph.initializer[:]
    return feeds


def test_conformance_data_found():
    assert any(c.startswith("test_Conv2d") for c in CASES), f"no test_Conv* data under {DATA_ROOT}"


@pytest.mark.parametrize("weights", ["constant", "runtime"])
@pytest.mark.parametrize("case", CASES)
def test_onnx_conv_case(case, weights, isa):
    directory = os.path.join(DATA_ROOT, case)
    model = onnx.load(os.path.join(directory, "model.onnx"))
    if not any(n.op_type == "Conv" for n in model.graph.node):
        pytest.skip(f"{case} has no Conv node (ops: {sorted({n.op_type for n in model.graph.node})})")
    non_float = [i.name for i in model.graph.input if i.type.tensor_type.elem_type != TensorProto.FLOAT]
    if non_float:
        pytest.skip(f"{case} has non-float32 inputs {non_float}; com.im2win::Conv is float32 only")

    data_names = _data_input_names(model)
    ours = move_conv_to_im2win(model)
    weight_feeds = _weights_to_feeds(ours) if weights == "runtime" else {}
    node_names = [n.name for n in ours.graph.node if n.domain == DOMAIN]
    data_sets = sorted(glob.glob(os.path.join(directory, "test_data_set_*")))
    assert data_sets

    def feeds(data_set: str) -> dict:
        return {**dict(zip(data_names, _load_tensors(data_set, "input"), strict=True)), **weight_feeds}

    first = feeds(data_sets[0])
    if first[data_names[0]].ndim == 5:  # 3-D convolution: refused, naming the node
        with pytest.raises(Exception) as info:
            make_session(ours).run(None, first)
        message = str(info.value)
        assert "3-D convolution" in message
        assert f"com.im2win::Conv node '{node_names[0]}'" in message
        return

    sess = make_session(ours)
    for data_set in data_sets:
        expected = _load_tensors(data_set, "output")
        got = sess.run(None, feeds(data_set))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_close(g, e, rtol=RTOL, atol_scale=ATOL_SCALE)
