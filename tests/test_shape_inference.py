"""com.im2win::Conv tells ORT its output shape when the session is built (symbolic batch kept), and
may write Y over the residual Z; both must leave the results unchanged."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from im2win_ort._ir_version import make_model

from helpers import DOMAIN, assert_close, conv_model, conv_output_shape, make_session, reference_conv

SHAPES = {
    "plain": ((2, 3, 9, 11), (8, 3, 3, 3), {}),
    "strided_padded_dilated": ((1, 4, 17, 13), (6, 4, 3, 2), {"strides": [2, 3], "pads": [1, 0, 2, 1],
                                                              "dilations": [2, 1]}),
    "same_upper_grouped": ((1, 6, 10, 7), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2], "group": 2}),
    "valid": ((1, 2, 8, 8), (5, 2, 4, 4), {"auto_pad": "VALID"}),
    "conv_1d": ((3, 4, 20), (7, 4, 5), {"strides": [3], "pads": [2, 1]}),
}


@pytest.mark.skipif(tuple(int(p) for p in ort.__version__.split(".")[:2]) < (1, 24),
                    reason="ORT 1.23 and older get no shape inference from the op (ops/ort/register.cc)")
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shape_known_at_session_creation(name):
    x_shape, w_shape, attrs = SHAPES[name]
    w = np.zeros(w_shape, np.float32)
    sess = make_session(conv_model(["N", *x_shape[1:]], w, domain=DOMAIN, **attrs))
    want = conv_output_shape(x_shape, w_shape, **attrs)
    assert sess.get_outputs()[0].shape == ["N", *want[1:]]


def test_unknown_spatial_size_leaves_the_shape_to_run_time():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    sess = make_session(conv_model(["N", 3, "H", "W"], w, domain=DOMAIN))
    assert not any(isinstance(d, int) and d > 0 for d in sess.get_outputs()[0].shape[2:])
    x = rng.standard_normal((2, 3, 10, 7)).astype(np.float32)
    (y,) = sess.run(None, {"X": x})
    assert_close(y, reference_conv(x, w))


def test_bad_attributes_still_named_by_the_kernel():
    w = np.zeros((8, 3, 3, 3), np.float32)
    with pytest.raises(Exception, match=r"com.im2win::Conv node 'conv': strides \[2\] must have 2 values"):
        make_session(conv_model([1, 3, 8, 8], w, domain=DOMAIN, strides=[2]))


def test_residual_produced_inside_the_graph_may_be_overwritten(isa):
    """Z comes from an earlier node and is used by nothing else, so ORT may place Y on it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w1 = rng.standard_normal((16, 8, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(16).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "W1"], ["Z"], domain=DOMAIN, name="shortcut"),
        helper.make_node("Conv", ["X", "W2", "B2", "Z"], ["Y"], domain=DOMAIN, name="residual", pads=[1, 1, 1, 1],
                         activation="Relu"),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 8, 12, 12])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"),
                     numpy_helper.from_array(b2, "B2")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    (y,) = make_session(model).run(None, {"X": x})
    z = reference_conv(x, w1)
    assert_close(y, np.maximum(reference_conv(x, w2, b2, z, pads=[1, 1, 1, 1]), 0.0))
