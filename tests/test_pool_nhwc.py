"""com.im2win::MaxPool and AveragePool: ONNX pooling on channels-last tensors, checked against ORT's
own MaxPool and AveragePool on the same values (transposed), over every attribute: auto_pad, pads,
strides, dilations, ceil_mode, count_include_pad, and 1-D and 2-D."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from helpers import DOMAIN, ONNX_OPSET, make_session
from im2win_ort._ir_version import make_model


# SAME padding that comes out negative (a stride past the window): ORT's AveragePool answers it from
# opset 19 on, its reference MaxPool and older AveragePool refuse it. The oracle is the newer opset.
ORACLE_OPSET = max(ONNX_OPSET, 19)


def _model(op, x_shape, domain, opset=ONNX_OPSET, **attrs):
    node = helper.make_node(op, ["X"], ["Y"], name="pool", domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(DOMAIN, 1)] if domain else [])
    return make_model(graph, opset_imports=opsets)


def _ort_pool(op, x, **attrs):
    return ort.InferenceSession(_model(op, x.shape, "", ORACLE_OPSET, **attrs).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]


def _same_as_cropped(x, attrs):
    """ORT pooling's SAME padding (pool_attributes.h) made explicit: a negative pad crops X instead.
    Returns X cropped and the attributes with non-negative pads, for an ORT pool that refuses the SAME
    form ("padding values must be non-negative")."""
    pads_begin, pads_end, crop = [], [], [slice(None), slice(None)]
    for axis, (k, s) in enumerate(zip(attrs["kernel_shape"], attrs.get("strides", [1] * len(attrs["kernel_shape"])))):
        n = x.shape[2 + axis]
        needed = (-(-n // s) - 1) * s + k - n
        begin = int(needed / 2) if attrs["auto_pad"] == "SAME_UPPER" else int((needed + 1) / 2)
        end = needed - begin
        crop.append(slice(max(-begin, 0), n - max(-end, 0)))
        pads_begin.append(max(begin, 0))
        pads_end.append(max(end, 0))
    explicit = {key: value for key, value in attrs.items() if key != "auto_pad"}
    return np.ascontiguousarray(x[tuple(crop)]), dict(explicit, pads=pads_begin + pads_end)


def _check(op, x, threads=1, **attrs):
    """Ours against ORT's pooling on the same values; where ORT refuses SAME padding that comes out
    negative, against ORT on X cropped by it; where ORT refuses anything else, ours must refuse too.
    Returns whether the cropped form was the oracle."""
    ours = make_session(_model(op, [x.shape[0], *x.shape[2:], x.shape[1]], DOMAIN, **attrs), threads=threads)
    x_nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    cropped = False
    try:
        want = _ort_pool(op, x, **attrs)
    except Exception as refusal:
        if "non-negative" not in str(refusal) or not attrs.get("auto_pad", "").startswith("SAME"):
            with pytest.raises(Exception, match=f"com.im2win::{op} node 'pool'"):
                ours.run(None, {"X": x_nhwc})
            return cropped
        x_cropped, explicit = _same_as_cropped(x, attrs)
        want, cropped = _ort_pool(op, x_cropped, **explicit), True
    (y,) = ours.run(None, {"X": x_nhwc})
    got = np.moveaxis(y, -1, 1)
    assert got.shape == want.shape, (attrs, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{op} {attrs}")
    return cropped


CASES = [
    ("MaxPool", (1, 64, 112, 112), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),  # ResNet's stem
    ("MaxPool", (2, 16, 14, 14), dict(kernel_shape=[2, 2], strides=[2, 2])),  # VGG's
    ("AveragePool", (1, 128, 14, 14), dict(kernel_shape=[2, 2], strides=[2, 2])),  # DenseNet's transitions
    ("MaxPool", (1, 5, 9, 10), dict(kernel_shape=[3, 2], strides=[2, 3], ceil_mode=1)),
    ("AveragePool", (1, 5, 9, 10), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                        count_include_pad=1)),
    ("AveragePool", (1, 7, 8, 8), dict(kernel_shape=[3, 3], pads=[1, 0, 2, 1])),
    ("MaxPool", (1, 3, 11, 12), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),
    ("MaxPool", (1, 4, 7, 7), dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("AveragePool", (1, 4, 7, 7), dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", (2, 6, 20), dict(kernel_shape=[4], strides=[3], pads=[1, 2])),  # 1-D: N x W x C
    ("AveragePool", (1, 3, 5, 5), dict(kernel_shape=[5, 5])),  # the whole plane
    # SAME with the stride past the window: ORT's pooling pads (-1, -1) here where its Conv would pad
    # (0, -1), so every window starts one column later.
    ("AveragePool", (1, 3, 1, 9), dict(kernel_shape=[1, 1], strides=[1, 3], auto_pad="SAME_UPPER")),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pools_match_ort(case):
    op, shape, attrs = CASES[case]
    x = np.random.default_rng(case).standard_normal(shape).astype(np.float32)
    for threads in (1, 3):
        _check(op, x, threads, **attrs)


@pytest.mark.parametrize("op, count_include_pad", [("MaxPool", None), ("AveragePool", 0), ("AveragePool", 1)])
def test_same_padding_follows_ort_pooling(op, count_include_pad):
    """SAME padding of a pool is sized by ORT's pooling rule, not by its Conv's: the two differ where
    the stride exceeds the window and the total comes out negative. Every small 1-D case, both modes.
    ORT's AveragePool-19 answers the negative ones itself; its MaxPool refuses them, and the oracle is
    then ORT's MaxPool on X cropped by the negative pads."""
    rng = np.random.default_rng(7)
    cropped = negative = 0
    for auto_pad, w, k, s in itertools.product(("SAME_UPPER", "SAME_LOWER"), range(1, 11), range(1, 4), range(1, 5)):
        attrs = dict(kernel_shape=[k], strides=[s], auto_pad=auto_pad)
        if count_include_pad is not None:
            attrs["count_include_pad"] = count_include_pad
        negative += (-(-w // s) - 1) * s + k - w < 0
        cropped += _check(op, rng.standard_normal((1, 3, w)).astype(np.float32), **attrs)
    assert negative > 0 and cropped == (negative if op == "MaxPool" else 0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
@given(data=st.data())
def test_pools_random_attributes(data):
    op = data.draw(st.sampled_from(["MaxPool", "AveragePool"]))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    dh, dw = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))) if op == "MaxPool" else (1, 1)
    attrs = dict(kernel_shape=[kh, kw], strides=[data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))])
    if (dh, dw) != (1, 1):
        attrs["dilations"] = [dh, dw]
    same = ["SAME_UPPER", "SAME_LOWER"] if (dh, dw) == (1, 1) else []  # refused with dilations (see below)
    auto_pad = data.draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", *same]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [data.draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw)]
        attrs["ceil_mode"] = data.draw(st.integers(0, 1))
    else:
        attrs["auto_pad"] = auto_pad
    if op == "AveragePool":
        attrs["count_include_pad"] = data.draw(st.integers(0, 1))
    h = data.draw(st.integers((kh - 1) * dh + 1, 16))
    w = data.draw(st.integers((kw - 1) * dw + 1, 16))
    x = np.random.default_rng(data.draw(st.integers(0, 2**31))).standard_normal(
        (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 20)), h, w)).astype(np.float32)
    _check(op, x, data.draw(st.sampled_from([1, 2])), **attrs)


def test_pool_errors_name_the_node():
    x = np.ones((1, 5, 5, 4), np.float32)
    for attrs, says in ((dict(), "kernel_shape' is required"),
                        (dict(kernel_shape=[2, 2], storage_order=1), "storage_order"),
                        (dict(kernel_shape=[2, 2], layout="NCHW"), "'layout' must be"),
                        (dict(kernel_shape=[2, 2], ceil_mode=2), "ceil_mode")):
        with pytest.raises(Exception, match=f"com.im2win::MaxPool node 'pool'.*{says}"):
            make_session(_model("MaxPool", x.shape, DOMAIN, **attrs)).run(None, {"X": x})
    with pytest.raises(Exception, match="com.im2win::MaxPool node 'pool'.*SAME_UPPER with dilations"):
        make_session(_model("MaxPool", x.shape, DOMAIN, kernel_shape=[2, 2], dilations=[2, 2],
                            auto_pad="SAME_UPPER")).run(None, {"X": x})
    with pytest.raises(Exception, match="com.im2win::AveragePool node 'pool'.*dilations"):
        make_session(_model("AveragePool", x.shape, DOMAIN, kernel_shape=[2, 2], dilations=[2, 2])).run(None, {"X": x})
