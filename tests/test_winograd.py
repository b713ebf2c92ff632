"""Winograd F(2x2, 3x3) and F(4x4, 3x3) for channels-last 3x3 convs of stride 1 (algorithm "auto" or
"winograd"; the tile size by the output map): every padding, odd and tiny maps, batches, partial
channel vectors, the fused epilogue, every ISA path and pool size, either tile on any map, against
the reference; the choice "auto" makes; the op's attribute in an ORT session against ORT's own
Conv; its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ACTIVATIONS, ISAS, conv_model, make_session, reference_conv, run_model
from im2win_ort import _kernels, reference
from test_nhwc import _nhwc_model, to_nchw, to_nhwc


def _run(x, w, b=None, z=None, algorithm="winograd", **kwargs):
    y = _kernels.conv(to_nhwc(x), w, b, None if z is None else to_nhwc(z), layout="NHWC", algorithm=algorithm,
                      **kwargs)
    return to_nchw(y)


def _check(x, w, b=None, z=None, **kwargs):
    attrs = {k: v for k, v in kwargs.items() if k not in ("isa", "threads")}
    want = reference_conv(x, w, b, z, **attrs)
    got = _run(x, w, b, z, **kwargs)
    # The transforms add and scale where the direct conv multiplies: a few more roundings (F(4x4,
    # 3x3) 1e-5 of the largest output on 512 channels), well within the rewriter's 1e-3.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                               err_msg=f"{x.shape} {w.shape} {kwargs}")


CASES = [  # x shape, w shape, pads: ResNet's and VGG's layers in small, and edges of the tiling
    ([1, 64, 14, 14], [64, 64, 3, 3], [1, 1, 1, 1]),
    ([2, 32, 9, 7], [40, 32, 3, 3], [1, 1, 1, 1]),  # odd maps: the last tiles half past Y
    ([3, 5, 4, 6], [7, 5, 3, 3], [1, 1, 1, 1]),  # C and M under one vector
    ([1, 33, 6, 5], [17, 33, 3, 3], [0, 2, 1, 0]),  # uneven pads, partial vectors of C and M
    ([2, 24, 3, 8], [48, 24, 3, 3], [0, 0, 0, 0]),  # no padding
    ([1, 16, 1, 1], [16, 16, 3, 3], [1, 1, 1, 1]),  # one output: its tile mostly padding
    ([1, 8, 2, 2], [24, 8, 3, 3], [2, 2, 2, 2]),  # wider pads than the kernel's reach
    ([1, 128, 7, 7], [32, 128, 3, 3], [1, 1, 1, 1]),  # DenseNet's
    ([5, 40, 13, 11], [24, 40, 3, 3], [1, 1, 1, 1]),  # many blocks, across images
    # Output maps of 16 and more a side: F(4x4, 3x3)
    ([1, 64, 16, 16], [64, 64, 3, 3], [1, 1, 1, 1]),
    ([2, 24, 19, 17], [40, 24, 3, 3], [1, 1, 1, 1]),  # the last tiles partly past Y
    ([1, 33, 18, 21], [17, 33, 3, 3], [0, 2, 1, 0]),  # uneven pads, partial vectors of C and M
    ([1, 5, 16, 20], [7, 5, 3, 3], [1, 1, 1, 1]),  # C and M under one vector
    ([3, 16, 18, 18], [48, 16, 3, 3], [0, 0, 0, 0]),  # no padding: 16 x 16 outputs
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_winograd_matches_the_reference(case, isa):
    x_shape, w_shape, pads = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    z = rng.standard_normal(reference_conv(x, w, b, pads=pads).shape).astype(np.float32)
    for threads in (1, 2, 3, 16):
        _check(x, w, b, z, isa=isa, threads=threads, pads=pads, activation="Relu")
    _check(x, w, isa=isa, pads=pads)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_winograd_epilogue(activation, isa):
    """Relu and Clip clamp in the output transform; the others follow it on each tile's outputs."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 24, 9, 10)).astype(np.float32)
    w = (rng.standard_normal((40, 24, 3, 3)) / 15).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    z = rng.standard_normal((2, 40, 9, 10)).astype(np.float32)
    params = {"Clip": [-0.5, 0.7], "LeakyRelu": [0.2], "HardSigmoid": [0.3, 0.4]}.get(activation, [])
    for threads in (1, 3):
        _check(x, w, b, z, isa=isa, threads=threads, pads=[1, 1, 1, 1], activation=activation,
               activation_params=params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_winograd_random_shapes(data):
    c, m = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    pads = [data.draw(st.integers(0, 2)) for _ in range(4)]
    h = data.draw(st.integers(max(1, 3 - pads[0] - pads[2]), 22))
    w_ = data.draw(st.integers(max(1, 3 - pads[1] - pads[3]), 22))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((data.draw(st.integers(1, 3)), c, h, w_)).astype(np.float32)
    w = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    z = rng.standard_normal(reference_conv(x, w, b, pads=pads).shape).astype(np.float32)
    _check(x, w, b, z, isa=data.draw(st.sampled_from(ISAS)), threads=data.draw(st.sampled_from([1, 2, 5])),
           pads=pads, activation=data.draw(st.sampled_from(["", "Relu"])))


def test_winograd_either_tile_on_any_map(tmp_path):
    """Either tile size (IM2WIN_WINOGRAD_TILE forces one) on every case above, tiny and odd maps
    included: a 6 x 6 tile over a 1 x 1 output, 2 x 2 tiles over 16 x 16 and more."""
    script = (
        "import numpy as np, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_winograd as t\n"
        "for case, (x_shape, w_shape, pads) in enumerate(t.CASES):\n"
        "    rng = np.random.default_rng(case)\n"
        "    x = rng.standard_normal(x_shape).astype(np.float32)\n"
        "    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)\n"
        "    b = rng.standard_normal(w_shape[0]).astype(np.float32)\n"
        "    for isa in t.ISAS:\n"
        "        for threads in (1, 3):\n"
        "            t._check(x, w, b, isa=isa, threads=threads, pads=pads, activation='Relu')\n"
        "print('ok')\n"
    )
    for tile in ("2", "4"):
        env = {**os.environ, "IM2WIN_WINOGRAD_TILE": tile}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                              cwd=tmp_path)  # (not the source tree, whose im2win_ort has no compiled files)
        assert done.returncode == 0 and "ok" in done.stdout, f"tile {tile}: {done.stderr[-3000:]}"


def test_auto_chooses_winograd_where_it_pays():
    """"auto" runs Winograd for 3x3 stride-1 convs of at least 32 input and output channels (the
    same answer bit for bit), the direct conv for narrower ones and for any other shape."""
    rng = np.random.default_rng(4)

    def answers(x_shape, w_shape, **attrs):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) / 10).astype(np.float32)
        return [_run(x, w, algorithm=a, pads=[1, 1, 1, 1], **attrs) for a in ("auto", "winograd", "direct")]

    auto, winograd, direct = answers((1, 64, 10, 10), (32, 64, 3, 3))
    assert np.array_equal(auto, winograd) and not np.array_equal(auto, direct)
    auto, winograd, direct = answers((1, 16, 10, 10), (64, 16, 3, 3))  # C = 16
    assert np.array_equal(auto, direct) and not np.array_equal(auto, winograd)
    x = rng.standard_normal((1, 64, 10, 10)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 10).astype(np.float32)
    auto, direct = (_run(x, w, algorithm=a, pads=[1, 1, 1, 1], strides=[2, 2]) for a in ("auto", "direct"))
    assert np.array_equal(auto, direct)  # stride 2: direct


@pytest.mark.parametrize("isa", ISAS)
def test_winograd_answer_is_the_same_on_any_pool(isa):
    """Blocks of tiles are cut for the pool, but each tile's sums run in the same order: the same
    answer bit for bit on every pool size, as the direct conv's."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 64, 17, 30)).astype(np.float32)
    w = (rng.standard_normal((48, 64, 3, 3)) / 20).astype(np.float32)
    first, *others = (_run(x, w, isa=isa, threads=t, pads=[1, 1, 1, 1]) for t in (1, 2, 3, 5, 16))
    for y in others:
        np.testing.assert_array_equal(y, first)


@pytest.mark.parametrize("isa", ISAS)
def test_winograd_in_an_ort_session(isa, monkeypatch):
    """The op's `algorithm` attribute in ORT sessions of any pool: W constant (transformed once),
    stored packed (weight_layout im2win.nhwc16) or fed at run time, against ORT's own Conv."""
    from onnx import TensorProto, helper

    from im2win_ort.rewriter.weight_layout import NHWC_LAYOUT, pack_nhwc

    monkeypatch.setenv("IM2WIN_ISA", isa)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 48, 11, 12)).astype(np.float32)
    w = (rng.standard_normal((64, 48, 3, 3)) / 20).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    (want,) = run_model(conv_model(list(x.shape), w, b, pads=[1, 1, 1, 1]), {"X": x}, im2win=False)  # ORT's Conv
    want = np.maximum(want, 0)
    attrs = dict(pads=[1, 1, 1, 1], activation="Relu")
    for algorithm in ("auto", "winograd", "direct"):
        models = [_nhwc_model(["N", 11, 12, 48], w, b, algorithm=algorithm, **attrs),
                  _nhwc_model(["N", 11, 12, 48], pack_nhwc(w, 1), b, algorithm=algorithm, weight_layout=NHWC_LAYOUT,
                              **attrs)]
        fed = _nhwc_model(["N", 11, 12, 48], w, b, algorithm=algorithm, **attrs)
        fed.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)))
        del fed.graph.initializer[0]
        for threads in (1, 3):
            for model in models:
                session = make_session(model, threads=threads)
                for _ in range(2):  # the second run takes the weights transformed by the first
                    (y,) = session.run(None, {"X": to_nhwc(x)})
                    np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
            (y,) = make_session(fed, threads=threads).run(None, {"X": to_nhwc(x), "W": w})
            np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)


def test_winograd_errors():
    """An unknown algorithm, and "winograd" asked of a conv it cannot compute, are refused by name in
    the kernels, in an ORT session (naming the node) and in the reference alike."""
    x = np.ones((1, 8, 6, 6), np.float32)
    w3 = np.ones((16, 8, 3, 3), np.float32)
    refused = [  # x (NCHW), w, attributes, the message
        (x, w3, dict(algorithm="fast"), 'algorithm must be one of auto, direct, winograd, got .fast.|'
                                        "attribute 'algorithm' must be \"auto\", \"direct\" or \"winograd\""),
        (x, w3, dict(algorithm="winograd", strides=[2, 2]), 'algorithm "winograd" needs strides 1'),
        (x, w3, dict(algorithm="winograd", dilations=[2, 2]), 'algorithm "winograd" needs dilations 1'),
        (x, np.ones((16, 4, 3, 3), np.float32), dict(algorithm="winograd", group=2), "needs group 1"),
        (x, np.ones((16, 8, 1, 1), np.float32), dict(algorithm="winograd"), "needs a 2-D 3x3 kernel"),
        (x, np.ones((16, 8, 3, 3), np.float32), dict(algorithm="winograd", input_layout="NCHW"),
         r"needs X channels-last \(no input_layout NCHW\)"),
    ]
    for x_, w_, attrs, message in refused:
        x_in = x_ if attrs.get("input_layout") == "NCHW" else to_nhwc(x_)
        with pytest.raises(Exception, match=message):
            _kernels.conv(x_in, w_, layout="NHWC", **attrs)
        with pytest.raises(ValueError, match=message):
            reference.conv(x_in, w_, layout="NHWC", **attrs)
        model = _nhwc_model(list(x_in.shape), w_, **attrs)
        with pytest.raises(Exception, match=f"com.im2win::Conv node 'c'.*({message})"):
            make_session(model).run(None, {"X": x_in})
    with pytest.raises(Exception, match='algorithm "winograd" needs layout NHWC'):
        _kernels.conv(x, w3, algorithm="winograd")
    with pytest.raises(ValueError, match='algorithm "winograd" needs layout NHWC'):
        reference.conv(x, w3, algorithm="winograd")
    nchw = _nhwc_model([1, 8, 6, 6], w3, algorithm="winograd")
    next(a for a in nchw.graph.node[0].attribute if a.name == "layout").s = b"NCHW"
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*algorithm \"winograd\" needs layout NHWC"):
        make_session(nchw)


def test_winograd_in_the_python_backend():
    """backend="python" takes the attribute, and W stored as U, and computes the same convolution."""
    pytest.importorskip("onnxruntime_extensions")
    import im2win_ort
    from im2win_ort.rewriter.weight_layout import pack_winograd

    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 6, 7, 8)).astype(np.float32)
    w = (rng.standard_normal((16, 6, 3, 3)) / 5).astype(np.float32)
    want = reference_conv(x, w, pads=[1, 1, 1, 1])
    models = [_nhwc_model(["N", 7, 8, 6], w, pads=[1, 1, 1, 1], algorithm="winograd"),
              _nhwc_model(["N", 7, 8, 6], pack_winograd(w, 2), pads=[1, 1, 1, 1], weight_layout="im2win.winograd2")]
    for model in models:
        for backend in ("python", "native"):
            (y,) = im2win_ort.InferenceSession(model, backend=backend).run(None, {"X": to_nhwc(x)})
            np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", [2, 4])
def test_stored_u_round_trips(tile):
    """W stored as Winograd's U (weight_layout im2win.winograd2 / 4) comes back by least squares."""
    from im2win_ort.rewriter.weight_layout import pack_winograd, unpack_winograd

    w = np.random.default_rng(tile).standard_normal((32, 5, 3, 3)).astype(np.float32)
    u = pack_winograd(w, tile)
    assert u.shape == (32, 5, tile + 2, tile + 2) and u.dtype == np.float32
    np.testing.assert_allclose(unpack_winograd(u, f"im2win.winograd{tile}"), w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_stored_u_in_an_ort_session(isa, monkeypatch):
    """The op reads U stored by the rewriter in place, for its tile on any map (a 4-tile U on a 7x7
    map, a 2-tile U on a 30x30 one), with the epilogue, constant or fed at run time, on any pool,
    against ORT's own Conv; ORT's shape inference sees the 3x3 kernel."""
    from onnx import TensorProto, helper

    from im2win_ort.rewriter.weight_layout import pack_winograd

    monkeypatch.setenv("IM2WIN_ISA", isa)
    rng = np.random.default_rng(12)
    w = (rng.standard_normal((48, 40, 3, 3)) / 20).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    attrs = dict(pads=[1, 1, 1, 1], activation="Relu")
    for tile, side in ((4, 7), (2, 30), (4, 18), (2, 5)):
        x = rng.standard_normal((2, 40, side, side)).astype(np.float32)
        z = rng.standard_normal((2, 48, side, side)).astype(np.float32)
        (want,) = run_model(conv_model(list(x.shape), w, b, pads=[1, 1, 1, 1]), {"X": x}, im2win=False)
        want = np.maximum(want + z, 0)
        layout = f"im2win.winograd{tile}"
        u = pack_winograd(w, tile)
        model = _nhwc_model(["N", side, side, 40], u, b, with_z=True, weight_layout=layout, **attrs)
        fed = _nhwc_model(["N", side, side, 40], u, b, with_z=True, weight_layout=layout, **attrs)
        fed.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(u.shape)))
        del fed.graph.initializer[0]
        for threads in (1, 3):
            session = make_session(model, threads=threads)
            assert session.get_outputs()[0].shape == ["N", side, side, 48]
            for _ in range(2):
                (y,) = session.run(None, {"X": to_nhwc(x), "Z": to_nhwc(z)})
                np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
            (y,) = make_session(fed, threads=threads).run(None, {"X": to_nhwc(x), "Z": to_nhwc(z), "W": u})
            np.testing.assert_allclose(to_nchw(y), want, rtol=1e-4, atol=1e-4)
        y_ref = reference.conv(to_nhwc(x), u, b, to_nhwc(z), layout="NHWC", weight_layout=layout, **attrs)
        np.testing.assert_allclose(to_nchw(y_ref), want, rtol=1e-4, atol=1e-4)


def test_stored_u_errors():
    """U where Winograd cannot read it is refused by name, in an ORT session (naming the node) and in
    the reference alike."""
    from im2win_ort.rewriter.weight_layout import pack_winograd

    u4 = pack_winograd(np.ones((32, 8, 3, 3), np.float32), 4)
    x = np.ones((1, 6, 6, 8), np.float32)
    refused = [  # U, attributes, the message
        (u4, dict(weight_layout="im2win.winograd2"),
         r"weight_layout im2win.winograd2 holds U of a 3x3 kernel as \[M, C, 4, 4\] with M a multiple of 16, "
         r"got W \[32, ?8, ?6, ?6\]"),
        (np.ones((24, 8, 6, 6), np.float32), dict(weight_layout="im2win.winograd4"), "with M a multiple of 16"),
        (u4, dict(weight_layout="im2win.winograd4", algorithm="direct"),
         'weight_layout im2win.winograd4 is Winograd\'s transformed W: algorithm "direct" cannot read it'),
        (u4, dict(weight_layout="im2win.winograd4", strides=[2, 2]),
         "weight_layout im2win.winograd4 is Winograd's transformed W: it needs strides 1"),
        (u4, dict(weight_layout="im2win.winograd4", dilations=[2, 2]), "it needs dilations 1"),
        (u4, dict(weight_layout="im2win.winograd4", kernel_shape=[6, 6]), "kernel_shape .* does not match"),
    ]
    for u, attrs, message in refused:
        with pytest.raises(ValueError, match=message):
            reference.conv(x, u, layout="NHWC", **attrs)
        with pytest.raises(Exception, match=f"com.im2win::Conv node 'c'.*({message})"):
            make_session(_nhwc_model(list(x.shape), u, **attrs)).run(None, {"X": x})
    with pytest.raises(ValueError, match="weight_layout im2win.winograd4 is Winograd's transformed W: it needs "
                                         "layout NHWC"):
        reference.conv(to_nchw(x), u4, weight_layout="im2win.winograd4")
    nchw = _nhwc_model([1, 8, 6, 6], u4, weight_layout="im2win.winograd4")
    next(a for a in nchw.graph.node[0].attribute if a.name == "layout").s = b"NCHW"
    with pytest.raises(Exception, match="com.im2win::Conv node 'c'.*weight_layout im2win.winograd4 is Winograd's "
                                        "transformed W: it needs layout NHWC"):
        make_session(nchw)
