"""Bad inputs and attributes give an error that names the node and the problem, at session creation
when that is possible and otherwise at run time; the session and the process survive."""

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import DOMAIN, ISAS, assert_close, conv_model, make_session, random_conv_inputs, reference_conv
from im2win_ort import _kernels

NODE = "bad_conv"


@dataclass
class Case:
    """One bad node. `when` says where the error must appear: "create" (session creation),
    "run", or "create_if_const" (creation when W is a constant initializer, as X's shape is static
    here, else run)."""

    x_shape: tuple
    w_shape: tuple
    message: str
    when: str
    attrs: dict = field(default_factory=dict)
    b_len: int | None = None
    z_shape: tuple | None = None


CASES = {
    "channels_mismatch": Case((1, 4, 8, 8), (6, 3, 3, 3), "X has C=4 channels but W [6,3,3,3] with group 1 expects C=3",
                              "create_if_const"),
    "channels_mismatch_grouped": Case((1, 4, 8, 8), (6, 1, 3, 3), "X has C=4 channels but W [6,1,3,3] with group 2 "
                                      "expects C=2", "create_if_const", {"group": 2}),
    "group_not_dividing_c": Case((1, 5, 8, 8), (6, 2, 3, 3), "group 2 does not divide the number of input channels C=5",
                                 "create_if_const", {"group": 2}),
    "group_not_dividing_m": Case((1, 4, 8, 8), (5, 2, 3, 3), "group 2 does not divide the number of output channels M=5",
                                 "create_if_const", {"group": 2}),
    "group_zero": Case((1, 4, 8, 8), (6, 4, 3, 3), "group must be >= 1, got 0", "create", {"group": 0}),
    "kernel_shape_mismatch": Case((1, 4, 8, 8), (6, 4, 3, 3), "kernel_shape [3,2] does not match W's shape [6,4,3,3]",
                                  "create_if_const", {"kernel_shape": [3, 2]}),
    "kernel_shape_wrong_rank": Case((1, 4, 8, 8), (6, 4, 3, 3), "kernel_shape [3] does not match W's spatial rank 2",
                                    "create_if_const", {"kernel_shape": [3]}),
    "negative_pads": Case((1, 4, 8, 8), (6, 4, 3, 3), "pads must all be >= 0, got [-1,0,0,0]", "create",
                          {"pads": [-1, 0, 0, 0]}),
    "zero_stride": Case((1, 4, 8, 8), (6, 4, 3, 3), "strides must all be >= 1, got [1,0]", "create",
                        {"strides": [1, 0]}),
    "zero_dilation": Case((1, 4, 8, 8), (6, 4, 3, 3), "dilations must all be >= 1, got [0,1]", "create",
                          {"dilations": [0, 1]}),
    "pads_odd_length": Case((1, 4, 8, 8), (6, 4, 3, 3), "pads must hold a begin and an end value per spatial axis, "
                            "got 3 values", "create", {"pads": [1, 1, 1]}),
    "pads_wrong_length": Case((1, 4, 8, 8), (6, 4, 3, 3), "pads [1,1] must have 4 values for spatial rank 2", "create_if_const",
                              {"pads": [1, 1]}),
    "strides_wrong_length": Case((1, 4, 8, 8), (6, 4, 3, 3), "strides [2] must have 2 values for spatial rank 2", "create_if_const",
                                 {"strides": [2]}),
    "dilations_wrong_length": Case((1, 4, 8), (6, 4, 3), "dilations [1,1] must have 1 values for spatial rank 1",
                                   "create_if_const", {"dilations": [1, 1]}),
    "attributes_3d": Case((1, 4, 8, 8), (6, 4, 3, 3), "attributes describe spatial rank 3 (3-D convolution)", "create",
                          {"strides": [1, 1, 1]}),
    "unknown_auto_pad": Case((1, 4, 8, 8), (6, 4, 3, 3), "auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, "
                             "got 'SAME'", "create", {"auto_pad": "SAME"}),
    "pads_with_same_upper": Case((1, 4, 8, 8), (6, 4, 3, 3), "pads [1,1,1,1] cannot be used together with "
                                 "auto_pad=SAME_UPPER", "create", {"auto_pad": "SAME_UPPER", "pads": [1, 1, 1, 1]}),
    "unknown_activation": Case((1, 4, 8, 8), (6, 4, 3, 3), "unknown activation 'Gelu' (expected one of Relu, Clip, "
                               "LeakyRelu, Sigmoid, HardSigmoid, Tanh, HardSwish)", "create", {"activation": "Gelu"}),
    "clip_one_param": Case((1, 4, 8, 8), (6, 4, 3, 3), "activation Clip takes 2 activation_params, got 1", "create",
                           {"activation": "Clip", "activation_params": [0.0]}),
    "relu_with_param": Case((1, 4, 8, 8), (6, 4, 3, 3), "activation Relu takes 0 activation_params, got 1", "create",
                            {"activation": "Relu", "activation_params": [0.5]}),
    "leaky_two_params": Case((1, 4, 8, 8), (6, 4, 3, 3), "activation LeakyRelu takes 1 activation_params, got 2",
                             "create", {"activation": "LeakyRelu", "activation_params": [0.1, 0.2]}),
    "weight_layout": Case((1, 4, 8, 8), (6, 4, 3, 3), "weight_layout 'OHWI' is not supported", "create",
                          {"weight_layout": "OHWI"}),
    "input_3d": Case((1, 2, 4, 4, 4), (3, 2, 2, 2, 2), "spatial rank 3 (3-D convolution) is not supported by "
                     "com.im2win::Conv", "create_if_const"),
    "input_rank_2": Case((2, 4), (6, 4, 3), "X must have rank >= 3 (N x C x spatial...), got shape [2,4]", "run"),
    "rank_mismatch": Case((1, 4, 8), (6, 4, 3, 3), "X [1,4,8] and W [6,4,3,3] must have the same rank", "run"),
    "bias_length": Case((1, 4, 8, 8), (6, 4, 3, 3), "B must have shape [6], got [5]", "run", b_len=5),
    "residual_shape": Case((1, 4, 8, 8), (6, 4, 3, 3), "Z must have the output's shape [1,6,6,6], got [1,6,6,5]", "run",
                           z_shape=(1, 6, 6, 5)),
    "kernel_larger_than_input": Case((1, 2, 3, 3), (4, 2, 5, 5), "input W size 3 plus pads (0,0) is smaller than the "
                                     "dilated kernel size 5, so the output would be empty", "create_if_const"),
    "dilated_kernel_larger_than_padded_input": Case((1, 2, 8, 8), (4, 2, 3, 3), "input H size 8 plus pads (1,0) is "
                                                    "smaller than the dilated kernel size 13", "create_if_const",
                                                    {"dilations": [6, 1], "pads": [1, 0, 0, 0]}),
}


def _node_error(message: str) -> str:
    return f"com.im2win::Conv node '{NODE}': {message}"


def _build(case: Case, w_as_input: bool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x_shape).astype(np.float32)
    w = rng.standard_normal(case.w_shape).astype(np.float32)
    b = None if case.b_len is None else np.ones(case.b_len, np.float32)
    model = conv_model(x.shape, w, b, DOMAIN, w_as_input=w_as_input, with_z=case.z_shape is not None,
                       node_name=NODE, **case.attrs)
    feeds = {"X": x}
    if w_as_input:
        feeds["W"] = w
        if b is not None:
            feeds["B"] = b
    if case.z_shape is not None:
        feeds["Z"] = np.zeros(case.z_shape, np.float32)
    return model, feeds


def _check_still_works() -> None:
    """A valid com.im2win model still runs correctly in this process."""
    x, w, b = random_conv_inputs(np.random.default_rng(1), (1, 3, 7, 7), (4, 3, 3, 3))
    (y,) = make_session(conv_model(x.shape, w, b, DOMAIN, pads=[1, 1, 1, 1])).run(None, {"X": x})
    assert_close(y, reference_conv(x, w, b, pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("w_as_input", [False, True], ids=["constant_w", "w_input"])
@pytest.mark.parametrize("name", CASES)
def test_bad_node_is_refused(name, w_as_input):
    case = CASES[name]
    model, feeds = _build(case, w_as_input)
    expect_at_creation = case.when == "create" or (case.when == "create_if_const" and not w_as_input)
    if expect_at_creation:
        with pytest.raises(Exception) as info:
            make_session(model)
    else:
        sess = make_session(model)
        with pytest.raises(Exception) as info:
            sess.run(None, feeds)
        assert "INVALID_ARGUMENT" in str(info.value)
    assert _node_error(case.message) in str(info.value)
    _check_still_works()


def test_shape_errors_wait_for_the_run_when_x_has_symbolic_spatial_dims():
    """With constant W but X's H and W unknown at creation, the shape check happens at run time."""
    model, feeds = _build(CASES["channels_mismatch"], w_as_input=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    sess = make_session(model)
    with pytest.raises(Exception) as info:
        sess.run(None, feeds)
    assert _node_error(CASES["channels_mismatch"].message) in str(info.value)
    _check_still_works()


def test_unknown_isa_is_refused_at_session_creation(monkeypatch):
    monkeypatch.setenv("IM2WIN_ISA", "sse9")
    model, _ = _build(CASES["channels_mismatch"], w_as_input=False)
    with pytest.raises(Exception, match="IM2WIN_ISA takes avx512, avx2, generic or auto") as info:
        make_session(model)
    assert _node_error("unknown ISA 'sse9'") in str(info.value)
    monkeypatch.delenv("IM2WIN_ISA")
    _check_still_works()


def test_non_float_input_is_refused():
    model, _ = _build(CASES["channels_mismatch"], w_as_input=False)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception, match=r"tensor\(double\).*\(X\).*node \(" + NODE + r"\)"):
        make_session(model)


@pytest.mark.parametrize(
    "attr, value",
    [("strides", 2), ("pads", 1), ("dilations", 2), ("activation_params", 0.5)],
)
def test_scalar_where_list_attribute_expected_is_refused(attr, value):
    """ONNX's strides/pads/dilations are INTS and activation_params FLOATS; ORT's own Conv refuses
    strides=2 ("Mismatched attribute type ... Expected: 'INTS', actual: 'INT'"). The op must not
    silently read a scalar as "attribute not given"."""
    x, w, b = random_conv_inputs(np.random.default_rng(2), (1, 4, 8, 8), (6, 4, 3, 3))
    model = conv_model(x.shape, w, b, DOMAIN, node_name=NODE,
                       activation="LeakyRelu" if attr == "activation_params" else None)
    model.graph.node[0].attribute.append(helper.make_attribute(attr, value))
    with pytest.raises(Exception) as info:
        make_session(model).run(None, {"X": x})
    assert f"com.im2win::Conv node '{NODE}'" in str(info.value)
    assert attr in str(info.value)


def _dynamic_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    for value in model.graph.input:
        value.type.tensor_type.ClearField("shape")
    return model


def test_session_survives_bad_runs():
    """One session with W, B, Z fed at run time: each bad feed fails with the node's error and the
    next good feed still gives the right answer."""
    rng = np.random.default_rng(3)
    x, w, b = random_conv_inputs(rng, (2, 4, 9, 9), (6, 2, 3, 3))
    model = _dynamic_inputs(conv_model(x.shape, w, b, DOMAIN, w_as_input=True, with_z=True, node_name=NODE,
                                       group=2, pads=[1, 1, 1, 1], activation="Relu"))
    sess = make_session(model)
    z = rng.standard_normal((2, 6, 9, 9)).astype(np.float32)
    good = {"X": x, "W": w, "B": b, "Z": z}
    want = reference_conv(x, w, b, z, group=2, pads=[1, 1, 1, 1], activation="Relu")
    bad_feeds = {
        "X has C=2 channels but W [6,2,3,3] with group 2 expects C=4": {"X": x[:, :2]},
        "group 2 does not divide the number of output channels M=5": {"W": w[:5], "B": b[:5]},
        "3-D convolution": {"X": x[..., None], "W": w[..., None]},
        "B must have shape [6], got [4]": {"B": b[:4]},
        "Z must have the output's shape [2,6,9,9], got [2,6,9,8]": {"Z": z[..., :8]},
        "is smaller than the dilated kernel size 13": {"W": rng.standard_normal((6, 2, 13, 3)).astype(np.float32)},
    }
    for message, bad in bad_feeds.items():
        with pytest.raises(Exception) as info:
            sess.run(None, {**good, **bad})
        assert f"com.im2win::Conv node '{NODE}'" in str(info.value) and message in str(info.value)
        (y,) = sess.run(None, good)
        assert_close(y, want)


def test_overridable_initializer_fed_at_run_time():
    """W is an initializer that is also a graph input (IR >= 4: overridable). A W fed at run time
    must be used, not the weights packed at session creation."""
    x, w, b = random_conv_inputs(np.random.default_rng(4), (1, 4, 8, 8), (6, 4, 3, 3))
    model = conv_model(x.shape, w, b, DOMAIN)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)))
    sess = make_session(model)
    w2 = (-2.0 * w).astype(np.float32)
    assert_close(sess.run(None, {"X": x})[0], reference_conv(x, w, b))
    assert_close(sess.run(None, {"X": x, "W": w2})[0], reference_conv(x, w2, b))
    assert_close(sess.run(None, {"X": x})[0], reference_conv(x, w, b))


# --- the pybind11 module -------------------------------------------------------------------

X = np.ones((1, 4, 8, 8), np.float32)
W = np.ones((6, 4, 3, 3), np.float32)


KERNEL_VALUE_ERRORS = {
    "channels": ((X, W[:, :3]), {}, "X has C=4 channels but W [6,3,3,3] with group 1 expects C=3"),
    "group": ((X, W[:, :1]), {"group": 4}, "group 4 does not divide the number of output channels M=6"),
    "pads_length": ((X, W), {"pads": [1, 1]}, "pads [1,1] must have 4 values for spatial rank 2"),
    "zero_stride": ((X, W), {"strides": [0, 1]}, "strides must all be >= 1, got [0,1]"),
    "auto_pad": ((X, W), {"auto_pad": "SAME"}, "auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER"),
    "activation": ((X, W), {"activation": "Gelu"}, "unknown activation 'Gelu'"),
    "activation_params": ((X, W), {"activation": "Clip", "activation_params": [1.0]},
                          "activation Clip takes 2 activation_params, got 1"),
    "isa": ((X, W), {"isa": "sse9"}, "unknown ISA 'sse9'"),
    "bias": ((X, W, np.ones(5, np.float32)), {}, "b must have shape [6], got [5]"),
    "residual": ((X, W, None, np.ones((1, 6, 6, 5), np.float32)), {},
                 "z must have the output's shape [1,6,6,6], got [1,6,6,5]"),
    "3d": ((X[..., None], W[..., None]), {}, "spatial rank 3 (3-D convolution) is not supported"),
    "empty_output": ((X[:, :, :2, :2], W), {}, "is smaller than the dilated kernel size 3, so the output would be empty"),
}


@pytest.mark.parametrize("name", KERNEL_VALUE_ERRORS)
def test_kernels_conv_value_errors(name):
    args, kwargs, message = KERNEL_VALUE_ERRORS[name]
    with pytest.raises(_kernels.ConvError) as info:
        _kernels.conv(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "args, message",
    [
        ((X.astype(np.float64), W), "x must be float32, got float64"),
        ((X, W.astype(np.int32)), "w must be float32, got int32"),
        ((X, W, np.ones(6)), "b must be float32, got float64"),
        ((X, W, None, np.ones((1, 6, 6, 6), np.float16)), "z must be float32, got float16"),
        ((X.tolist(), W), "x must be float32, got float64"),
    ],
)
def test_kernels_conv_type_errors(args, message):
    with pytest.raises(TypeError, match=message):
        _kernels.conv(*args)


def test_kernels_transform_and_workspace_errors():
    with pytest.raises(ValueError, match=r"pads must all be >= 0"):
        _kernels.im2win_transform(X, [3, 3], pads=[-1, 0, 0, 0])
    with pytest.raises(TypeError, match="x must be float32"):
        _kernels.im2win_transform(X.astype(np.float64), [3, 3])
    with pytest.raises(ValueError, match="X has C=4 channels but W"):
        _kernels.workspace_bytes([1, 4, 8, 8], [6, 3, 3, 3])
    with pytest.raises(ValueError, match="unknown ISA"):
        _kernels.selected_isa("sse9")
    assert set(ISAS) <= {"avx512", "avx2", "generic"} and "generic" in ISAS
