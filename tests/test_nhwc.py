"""The channels-last (NHWC) convolution: X, Z and Y with the channels last, W as ONNX gives it. Every
attribute, the fused epilogue, every ISA path and pool size, against the NCHW reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ACTIVATIONS, ISAS, reference_conv
from im2win_ort import _kernels, reference


def to_nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def to_nchw(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _check(x, w, b=None, z=None, isa="", threads=1, algorithm="auto", **attrs):
    want = reference_conv(x, w, b, z, **attrs)
    y = _kernels.conv(to_nhwc(x), w, b, None if z is None else to_nhwc(z), isa=isa, threads=threads, layout="NHWC",
                      algorithm=algorithm, **attrs)
    assert y.shape == to_nhwc(want).shape
    np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                               err_msg=f"{x.shape} {w.shape} {attrs} {isa} {threads} threads")


CASES = [  # x shape, w shape, attributes: ResNet's, MobileNetV2's and VGG's layer kinds, and edges
    ([1, 64, 14, 14], [256, 64, 1, 1], {}),  # 1x1, read in place
    ([1, 64, 12, 13], [64, 64, 3, 3], dict(pads=[1, 1, 1, 1])),  # 3x3 through a padded panel
    ([1, 1024, 3, 4], [24, 1024, 3, 3], dict(pads=[1, 1, 1, 1])),  # one tile's weights past any L2: in runs
    ([2, 32, 15, 15], [48, 32, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    ([1, 96, 10, 10], [96, 1, 3, 3], dict(pads=[1, 1, 1, 1], group=96)),  # depthwise
    ([1, 20, 11, 9], [20, 1, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2], group=20)),  # depthwise, odd C
    ([1, 16, 9, 9], [40, 4, 3, 3], dict(pads=[1, 1, 1, 1], group=4)),  # grouped, M/group not a block
    ([1, 8, 16, 16], [24, 1, 3, 3], dict(pads=[1, 1, 1, 1], group=8)),  # channel multiplier 3
    ([2, 40, 10, 15], [40, 1, 1, 1], dict(group=40)),  # depthwise 1x1 read in place: a block of rows as one flat row
    ([1, 3, 23, 23], [8, 3, 7, 7], dict(pads=[3, 3, 3, 3], strides=[2, 2])),  # a stem
    ([1, 12, 13, 17], [20, 12, 3, 3], dict(pads=[2, 0, 1, 3], dilations=[2, 2])),  # dilated, uneven pads
    ([1, 12, 13, 17], [20, 12, 3, 2], dict(dilations=[1, 3], strides=[1, 2])),  # no padding: in place
    ([1, 5, 8, 8], [3, 5, 1, 1], dict(auto_pad="SAME_UPPER", strides=[3, 3])),
    ([2, 24, 13, 11], [40, 24, 1, 1], dict(strides=[2, 2])),  # 1x1 strided: gathered, then one flat row
    ([1, 16, 9, 10], [48, 8, 1, 1], dict(strides=[1, 3], group=2)),  # grouped, strided along W only
    ([1, 8, 17], [16, 8, 1], dict(strides=[2])),  # 1-D
    ([2, 16, 40], [24, 16, 5], dict(pads=[2, 2])),  # 1-D: N x W x C
    ([1, 0, 5, 5], [4, 0, 3, 3], dict(pads=[1, 1, 1, 1])),  # no input channels: Y = B + Z
    ([2, 96, 9, 7], [24, 96, 1, 1], {}),  # a projection to 24: one three-vector tile where the ISA has one
    ([1, 32, 7, 11], [20, 32, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2])),  # 20: a partial third vector
]


@pytest.mark.parametrize("algorithm", ["auto", "direct"])  # (3x3 of stride 1: Winograd under auto)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_nhwc_matches_the_reference(case, isa, algorithm):
    x_shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(max(1, np.prod(w_shape[1:])))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
    for threads in (1, 3, 16):
        _check(x, w, b, z, isa=isa, threads=threads, activation="Relu", algorithm=algorithm, **attrs)
    _check(x, w, isa=isa, algorithm=algorithm, **attrs)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("stride", [1, 2])
def test_nhwc_depthwise_every_row_width(stride, isa):
    """Depthwise 3x3 rows run in blocks of eight outputs and one block of the rest (1-7), the edge
    columns through a zero-padded panel: every width from 1 to 19, whole and partial vectors of
    channels, with and without bias and Z."""
    rng = np.random.default_rng(stride)
    for width in range(1, 20):
        for channels in (8, 21, 40):
            x = rng.standard_normal((1, channels, 3, width)).astype(np.float32)
            w = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
            b = rng.standard_normal(channels).astype(np.float32)
            attrs = dict(pads=[1, 1, 1, 1], strides=[stride, stride], group=channels)
            z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
            _check(x, w, b, z, isa=isa, activation="Relu", **attrs)
            _check(x, w, isa=isa, **attrs)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kernel, attrs", [((1, 1), {}), ((2, 5), dict(pads=[1, 2, 0, 2])),
                                           ((3, 3), dict(pads=[2, 2, 2, 2], dilations=[2, 2]))])
def test_nhwc_depthwise_any_taps_every_row_width(kernel, attrs, isa):
    """Depthwise kernels off the rows-of-three path (1x1 as a folded BatchNormalization, wide or
    dilated ones) run in blocks of eight outputs over any taps and one block of the rest: every
    width from 1 to 19, whole and partial vectors of channels, with and without bias and Z."""
    rng = np.random.default_rng(kernel[1])
    for width in range(1, 20):
        for channels in (8, 21, 40):
            x = rng.standard_normal((1, channels, 4, width)).astype(np.float32)
            w = rng.standard_normal((channels, 1) + kernel).astype(np.float32)
            b = rng.standard_normal(channels).astype(np.float32)
            full = dict(attrs, group=channels)
            z = rng.standard_normal(reference_conv(x, w, b, **full).shape).astype(np.float32)
            _check(x, w, b, z, isa=isa, activation="Relu", **full)
            _check(x, w, isa=isa, **full)


@pytest.mark.parametrize("isa", ISAS)
def test_nhwc_inputs_past_the_l3(isa):
    """An X over 8 MiB (from DRAM in a network): 1x1 tiles fetch the next tile's inputs and depthwise
    rows the next rows of X ahead of them; the answers are the same."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 96, 112, 112)).astype(np.float32)  # 9.6 MB
    for w_shape, attrs in (((24, 96, 1, 1), {}), ((96, 1, 3, 3), dict(pads=[1, 1, 1, 1], group=96))):
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        _check(x, w, b, isa=isa, threads=2, activation="Relu", **attrs)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nhwc_epilogue(activation, isa):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 24, 9, 9)).astype(np.float32)
    w = (rng.standard_normal((40, 24, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    z = rng.standard_normal((1, 40, 9, 9)).astype(np.float32)
    params = {"Clip": [-0.5, 0.7], "LeakyRelu": [0.2], "HardSigmoid": [0.3, 0.4]}.get(activation, [])
    _check(x, w, b, z, isa=isa, threads=2, pads=[1, 1, 1, 1], activation=activation, activation_params=params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_nhwc_random_shapes(data):
    group = data.draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 40))
    depthwise = data.draw(st.booleans())
    if depthwise:
        group, cg, mg = data.draw(st.integers(1, 40)), 1, 1
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    pads = [data.draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw)]
    h = data.draw(st.integers((kh - 1) * dh + 1, 20))
    w_ = data.draw(st.integers((kw - 1) * dw + 1, 20))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((data.draw(st.integers(1, 2)), group * cg, h, w_)).astype(np.float32)
    w = rng.standard_normal((group * mg, cg, kh, kw)).astype(np.float32)
    b = rng.standard_normal(group * mg).astype(np.float32)
    attrs = dict(pads=pads, strides=[sh, sw], dilations=[dh, dw], group=group)
    _check(x, w, b, isa=data.draw(st.sampled_from(ISAS)), threads=data.draw(st.sampled_from([1, 2, 5])), **attrs)


def test_nhwc_one_run_reductions_in_chunks_of_channels(tmp_path):
    """Where the reduction is one run, tiles of outputs go outer over chunks of channel tiles whose
    weights fit a quarter of the L2: with the smallest L2 a plan takes, layers split into several
    chunks (their last with a one-vector tail), on every ISA and pool size, as the reference; a 3x3
    whose one tile's weights pass the panel budget runs its reduction in runs instead (the direct
    conv: "auto" would take Winograd's GEMMs for the 3x3 of stride 1)."""
    script = (
        "import numpy as np\n"
        "from im2win_ort import _kernels, reference\n"
        "rng = np.random.default_rng(0)\n"
        "for x_shape, w_shape, attrs in [((1, 9, 11, 64), (200, 64, 1, 1), {}),\n"
        "                                ((2, 7, 6, 40), (72, 20, 1, 1), dict(group=2)),\n"
        "                                ((1, 8, 8, 30), (104, 30, 3, 3), dict(pads=[0, 1, 1, 0])),\n"
        "                                ((1, 9, 9, 48), (56, 48, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),\n"
        "                                ((1, 6, 7, 120), (40, 120, 3, 3), dict(pads=[1, 1, 1, 1]))]:\n"
        "    x = rng.standard_normal(x_shape).astype(np.float32)\n"
        "    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)\n"
        "    b = rng.standard_normal(w_shape[0]).astype(np.float32)\n"
        "    want = reference.conv(x, w, b, layout='NHWC', activation='Relu', **attrs)\n"
        "    z = rng.standard_normal(want.shape).astype(np.float32)\n"
        "    want_z = reference.conv(x, w, b, z, layout='NHWC', activation='Relu', **attrs)\n"
        "    for isa in _kernels.available_isas():\n"
        "        for threads in (1, 3):\n"
        "            y = _kernels.conv(x, w, b, layout='NHWC', activation='Relu', isa=isa, threads=threads,\n"
        "                              algorithm='direct', **attrs)\n"
        "            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)\n"
        "            y = _kernels.conv(x, w, b, z, layout='NHWC', activation='Relu', isa=isa, threads=threads,\n"
        "                              algorithm='direct', **attrs)\n"
        "            np.testing.assert_allclose(y, want_z, rtol=1e-4, atol=1e-4)\n"
        "print('ok')\n"
    )
    import os
    import subprocess
    import sys

    env = {**os.environ, "IM2WIN_L2_BYTES": str(128 << 10), "IM2WIN_NHWC_POSITIONS_OUTER": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)  # (not the source tree, whose im2win_ort has no compiled files)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


def test_nhwc_layout_errors():
    x = np.ones((1, 5, 5, 4), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)
    with pytest.raises(_kernels.ConvError, match="attribute 'layout' must be"):
        _kernels.conv(x, w, layout="NCWH")
    with pytest.raises(_kernels.ConvError):  # C (last) must match W's
        _kernels.conv(np.ones((1, 4, 5, 5), np.float32), w, layout="NHWC")


def _nhwc_model(x_shape_nhwc, w, b=None, with_z=False, node_name="c", **attrs):
    from onnx import TensorProto, helper, numpy_helper

    from helpers import DOMAIN, ONNX_OPSET
    from im2win_ort._ir_version import make_model

    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape_nhwc))]
    inits = [numpy_helper.from_array(w, "W")]
    names = ["X", "W"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "B"))
        names.append("B")
    if with_z:
        names += [""] * (3 - len(names)) + ["Z"]
        inputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    node = helper.make_node("Conv", names, ["Y"], name=node_name, domain=DOMAIN, layout="NHWC", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(DOMAIN, 1)])


@pytest.mark.parametrize("isa", ISAS)
def test_nhwc_op_in_an_ort_session(isa, monkeypatch):
    """com.im2win::Conv with layout="NHWC": ORT's shape inference gives Y channels-last (a symbolic
    batch kept), and sessions of any pool answer as the reference, W constant or fed."""
    import onnx

    from helpers import make_session

    monkeypatch.setenv("IM2WIN_ISA", isa)
    rng = np.random.default_rng(5)
    for x_shape, w_shape, attrs in CASES[:8]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) / np.sqrt(max(1, np.prod(w_shape[1:])))).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
        want = reference_conv(x, w, b, z, activation="Relu", **attrs)
        model = _nhwc_model(["N", *to_nhwc(x).shape[1:]], w, b, with_z=True, activation="Relu", **attrs)
        inferred = onnx.shape_inference.infer_shapes(model)  # (ONNX knows nothing of the op: ORT's own is checked)
        assert inferred is not None
        for threads in (1, 4):
            (y,) = make_session(model, threads=threads).run(None, {"X": to_nhwc(x), "Z": to_nhwc(z)})
            np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


INPUT_NCHW_CASES = [  # x shape (channels first), w shape, attributes: stems, and every other path
    ([2, 3, 23, 21], [16, 3, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2])),  # MobileNetV2's stem
    ([1, 3, 19, 19], [24, 3, 7, 7], dict(pads=[3, 3, 3, 3], strides=[2, 2])),  # ResNet's
    ([1, 5, 9, 10], [40, 5, 1, 1], {}),  # 1x1 with no padding, gathered rather than read in place
    ([1, 4, 9, 9], [24, 4, 1, 1], dict(strides=[2, 2])),
    ([1, 12, 8, 9], [12, 1, 3, 3], dict(pads=[1, 1, 1, 1], group=12)),  # depthwise
    ([2, 4, 13], [8, 4, 3], dict(pads=[1, 1])),  # 1-D
]


@pytest.mark.parametrize("isa", ISAS)
def test_nhwc_input_channels_first(isa):
    """input_layout NCHW: X channels-first, Y and Z channels-last, each block's rows gathered from
    X's planes; the kernels and an ORT session (its shape inference included) answer as the
    reference does for the same X channels-last."""
    from helpers import make_session

    rng = np.random.default_rng(11)
    for x_shape, w_shape, attrs in INPUT_NCHW_CASES:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        want = to_nhwc(reference_conv(x, w, b, activation="Relu", **attrs))
        z = rng.standard_normal(want.shape).astype(np.float32)
        want_z = to_nhwc(reference_conv(x, w, b, to_nchw(z), activation="Relu", **attrs))
        tol = dict(rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want_z).max())))
        for threads in (1, 3):
            y = _kernels.conv(x, w, b, isa=isa, threads=threads, layout="NHWC", input_layout="NCHW",
                              activation="Relu", **attrs)
            np.testing.assert_allclose(y, want, **tol)
            y = _kernels.conv(x, w, b, z, isa=isa, threads=threads, layout="NHWC", input_layout="NCHW",
                              activation="Relu", **attrs)
            np.testing.assert_allclose(y, want_z, **tol)
        model = _nhwc_model(["N", *x.shape[1:]], w, b, with_z=True, activation="Relu", input_layout="NCHW", **attrs)
        session = make_session(model, threads=2)
        assert session.get_outputs()[0].shape == ["N", *want.shape[1:]]
        (y,) = session.run(None, {"X": x, "Z": z})
        np.testing.assert_allclose(y, want_z, **tol)
        np.testing.assert_allclose(reference.conv(x, w, b, z, layout="NHWC", input_layout="NCHW",
                                                  activation="Relu", **attrs), want_z, **tol)


def test_nhwc_input_layout_errors():
    from helpers import make_session

    x = np.ones((1, 4, 5, 5), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)
    with pytest.raises(_kernels.ConvError, match="attribute 'input_layout' \"NHWC\" needs layout \"NHWC\""):
        _kernels.conv(x, w, input_layout="NHWC")
    with pytest.raises(_kernels.ConvError, match="attribute 'input_layout' must be \"NCHW\" or \"NHWC\", got \"CHW\""):
        _kernels.conv(x, w, layout="NHWC", input_layout="CHW")
    with pytest.raises(ValueError, match="input_layout NHWC needs layout NHWC"):
        reference.conv(x, w, input_layout="NHWC")
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*attribute 'input_layout' must be"):
        make_session(_nhwc_model([1, 4, 5, 5], w, input_layout="NCWH"))


def test_nhwc_op_errors_name_the_node():
    from helpers import make_session

    w = np.ones((6, 4, 3, 3), np.float32)
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*layout NHWC takes W as ONNX gives it .* or as "
                                        "im2win.nhwc16: im2win.channels16 is an NCHW tile order"):
        make_session(_nhwc_model([1, 5, 5, 4], w, weight_layout="im2win.channels16"))
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*attribute 'layout' must be"):
        model = _nhwc_model([1, 5, 5, 4], w)
        model.graph.node[0].attribute[-1].s = b"NCWH"
        make_session(model)
    x = np.ones((1, 5, 5, 4), np.float32)
    (y,) = make_session(_nhwc_model([1, 5, 5, 4], w, pads=[1, 1, 1, 1])).run(None, {"X": x})
    assert y.shape == (1, 5, 5, 6)
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'"):  # NCHW fed where NHWC is declared
        make_session(_nhwc_model(["N", "H", "W", "C"], w)).run(None, {"X": np.ones((1, 4, 5, 5), np.float32)})


PACKED_CASES = [  # whole blocks of 16 output channels per group, not depthwise
    ([1, 8, 9, 11], [32, 8, 3, 3], dict(pads=[1, 1, 1, 1])),
    ([2, 24, 7, 7], [48, 24, 1, 1], {}),  # a flat 1x1, 3 blocks
    ([1, 8, 10, 10], [32, 4, 3, 3], dict(pads=[1, 1, 1, 1], group=2, strides=[2, 2])),
    ([1, 6, 20], [16, 6, 5], dict(pads=[2, 2])),  # 1-D
]


@pytest.mark.parametrize("isa", ISAS)
def test_nhwc_weights_stored_packed(isa, monkeypatch):
    """W stored in the channels-last order (weight_layout im2win.nhwc16, as the rewriter writes it)
    answers exactly as W as ONNX gives it, constant or fed at run time, on every pool size."""
    from onnx import TensorProto, helper

    from helpers import make_session
    from im2win_ort.rewriter.weight_layout import NHWC_LAYOUT, pack_nhwc, unpack_nhwc

    monkeypatch.setenv("IM2WIN_ISA", isa)
    rng = np.random.default_rng(11)
    for x_shape, w_shape, attrs in PACKED_CASES:
        x = to_nhwc(rng.standard_normal(x_shape).astype(np.float32))
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        packed = pack_nhwc(w, attrs.get("group", 1))
        assert packed.shape == w.shape and not np.array_equal(packed, w)
        np.testing.assert_array_equal(unpack_nhwc(packed, attrs.get("group", 1)), w)
        (want,) = make_session(_nhwc_model(["N", *x.shape[1:]], w, b, activation="Relu", **attrs)).run(None, {"X": x})
        fed = _nhwc_model(["N", *x.shape[1:]], packed, b, activation="Relu", weight_layout=NHWC_LAYOUT, **attrs)
        fed.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)))
        del fed.graph.initializer[0]  # W an input of the graph: not constant
        for threads in (1, 3):
            model = _nhwc_model(["N", *x.shape[1:]], packed, b, activation="Relu", weight_layout=NHWC_LAYOUT, **attrs)
            (y,) = make_session(model, threads=threads).run(None, {"X": x})
            np.testing.assert_array_equal(y, want)
            (y,) = make_session(fed, threads=threads).run(None, {"X": x, "W": packed})
            np.testing.assert_array_equal(y, want)


def test_nhwc_packed_weights_refused_where_they_cannot_be():
    from helpers import make_session
    from im2win_ort.rewriter.weight_layout import NHWC_LAYOUT

    cases = [  # x (NHWC), W, attributes, the message
        ([1, 5, 5, 4], (24, 4, 3, 3), {}, "needs whole blocks of 16 output channels per group, got M/group = 24"),
        ([1, 5, 5, 8], (32, 4, 3, 3), dict(group=2), "got M/group = 16"),  # fine: 16 per group
        ([1, 5, 5, 16], (16, 1, 3, 3), dict(group=16), "a depthwise conv reads W as ONNX gives it"),
    ]
    for x_shape, w_shape, attrs, message in cases:
        model = _nhwc_model(x_shape, np.ones(w_shape, np.float32), weight_layout=NHWC_LAYOUT, **attrs)
        if "= 16" in message:
            (y,) = make_session(model).run(None, {"X": np.ones(x_shape, np.float32)})
            assert y.shape == (1, 3, 3, w_shape[0])
            continue
        with pytest.raises(Exception, match=f"com.im2win::Conv node 'c'.*{message}"):
            make_session(model)
    nchw = _nhwc_model([1, 5, 5, 4], np.ones((16, 4, 3, 3), np.float32), weight_layout=NHWC_LAYOUT)
    next(a for a in nchw.graph.node[0].attribute if a.name == "layout").s = b"NCHW"
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*im2win.nhwc16 is the channels-last order: "
                                        "it needs layout NHWC"):
        make_session(nchw)
    with pytest.raises(ValueError, match="it needs layout NHWC"):
        reference.conv(np.ones((1, 4, 5, 5), np.float32), np.ones((16, 4, 3, 3), np.float32),
                       weight_layout=NHWC_LAYOUT)
    with pytest.raises(ValueError, match="needs whole blocks of 16"):
        reference.conv(np.ones((1, 5, 5, 4), np.float32), np.ones((24, 4, 3, 3), np.float32),
                       weight_layout=NHWC_LAYOUT, layout="NHWC")


def test_nhwc_in_the_numpy_reference_and_the_python_backend():
    """The NumPy reference takes layout="NHWC" too, and backend="python" runs an NHWC node with it."""
    pytest.importorskip("onnxruntime_extensions")
    import im2win_ort

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 9, 8)).astype(np.float32)
    w = (rng.standard_normal((10, 3, 3, 3)) / 5).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    want = reference_conv(x, w, b, pads=[1, 1, 1, 1], group=2, activation="Relu")
    ours = reference.conv(to_nhwc(x), w, b, pads=[1, 1, 1, 1], group=2, activation="Relu", layout="NHWC")
    np.testing.assert_allclose(to_nchw(ours), want, rtol=1e-5, atol=1e-5)
    model = _nhwc_model(["N", 9, 8, 6], w, b, pads=[1, 1, 1, 1], group=2, activation="Relu")
    for backend in ("python", "native"):
        (y,) = im2win_ort.InferenceSession(model, backend=backend).run(None, {"X": to_nhwc(x)})
        np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
    # W stored in the channels-last order (16 output channels per group)
    from im2win_ort.rewriter.weight_layout import NHWC_LAYOUT, pack_nhwc

    w = (rng.standard_normal((32, 3, 3, 3)) / 5).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    want = reference_conv(x, w, b, pads=[1, 1, 1, 1], group=2, activation="Relu")
    model = _nhwc_model(["N", 9, 8, 6], pack_nhwc(w, 2), b, pads=[1, 1, 1, 1], group=2, activation="Relu",
                        weight_layout=NHWC_LAYOUT)
    for backend in ("python", "native"):
        (y,) = im2win_ort.InferenceSession(model, backend=backend).run(None, {"X": to_nhwc(x)})
        np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
    # X channels-first (input_layout NCHW)
    model = _nhwc_model(["N", 6, 9, 8], pack_nhwc(w, 2), b, pads=[1, 1, 1, 1], group=2, activation="Relu",
                        weight_layout=NHWC_LAYOUT, input_layout="NCHW")
    for backend in ("python", "native"):
        (y,) = im2win_ort.InferenceSession(model, backend=backend).run(None, {"X": x})
        np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="layout must be one of"):
        reference.conv(x, w, layout="NWHC")
