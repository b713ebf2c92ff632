"""The pybind11 module's kernels against NumPy: conv on every ISA, the im2win window tensor,
the workspace report, and thread-count independence."""

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    ACTIVATIONS,
    ISAS,
    assert_close,
    conv_output_shape,
    random_conv_inputs,
    reference_conv,
    resolve_pads,
)
from im2win_ort import _kernels

# name: (x shape, w shape, attributes)
SHAPES = {
    "basic_3x3_pad1": ((2, 3, 9, 11), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "no_bias_valid": ((1, 4, 7, 7), (5, 4, 3, 3), {"auto_pad": "VALID"}),
    "asymmetric_pads": ((1, 3, 8, 10), (7, 3, 3, 2), {"pads": [2, 0, 1, 3]}),
    "kernel_shape_given": ((1, 3, 8, 8), (4, 3, 3, 5), {"kernel_shape": [3, 5], "pads": [1, 2, 1, 2]}),
    "stride2": ((2, 5, 13, 12), (6, 5, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride_greater_than_kernel": ((1, 2, 11, 14), (3, 2, 2, 2), {"strides": [3, 4]}),
    "stride_uneven": ((1, 3, 12, 15), (4, 3, 3, 3), {"strides": [1, 3], "pads": [0, 1, 0, 1]}),
    "large_kernel_stride4": ((1, 3, 35, 35), (7, 3, 11, 11), {"strides": [4, 4]}),
    "pointwise": ((2, 16, 5, 7), (13, 16, 1, 1), {}),
    "pointwise_stride2": ((1, 8, 9, 9), (6, 8, 1, 1), {"strides": [2, 2]}),
    "wide_rows": ((1, 3, 4, 130), (7, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "single_output_row": ((1, 4, 3, 40), (9, 4, 3, 3), {}),
    "single_output": ((1, 4, 3, 3), (5, 4, 3, 3), {}),
    "many_channels": ((1, 37, 6, 6), (20, 37, 3, 3), {"pads": [1, 1, 1, 1]}),
    "dilated": ((1, 3, 12, 12), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 2, 3]}),
    "dilated_strided": ((2, 3, 15, 16), (5, 3, 3, 2), {"dilations": [2, 3], "strides": [2, 3]}),
    "dilated_same_upper": ((1, 3, 10, 11), (4, 3, 3, 3), {"dilations": [2, 3], "auto_pad": "SAME_UPPER"}),
    "dilated_same_lower": ((1, 3, 10, 11), (4, 3, 3, 3), {"dilations": [2, 3], "auto_pad": "SAME_LOWER"}),
    "dilated_strided_same_upper": ((1, 2, 11, 10), (3, 2, 3, 4), {"dilations": [2, 2], "strides": [2, 3],
                                                                  "auto_pad": "SAME_UPPER"}),
    # stride > dilated kernel: SAME_* crops the input, as ORT's Conv does (see helpers.resolve_pads)
    "same_upper_cropping": ((2, 1, 14, 25), (3, 1, 2, 1), {"strides": [5, 5], "dilations": [1, 3],
                                                           "auto_pad": "SAME_UPPER"}),
    "same_lower_cropping": ((1, 2, 12, 12), (3, 2, 1, 2), {"strides": [6, 6], "auto_pad": "SAME_LOWER"}),
    "even_kernel_same_lower": ((1, 2, 9, 9), (3, 2, 2, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "group2": ((2, 6, 8, 8), (8, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "group3_strided": ((1, 9, 10, 9), (12, 3, 3, 3), {"group": 3, "strides": [2, 1]}),
    "depthwise": ((2, 8, 9, 9), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "depthwise_multiplier": ((1, 4, 7, 8), (8, 1, 3, 3), {"group": 4}),
    "depthwise_strided_dilated": ((1, 5, 12, 12), (5, 1, 3, 3), {"group": 5, "strides": [2, 2],
                                                                "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "conv1d": ((2, 3, 20), (5, 3, 3), {}),
    "conv1d_pads_stride": ((1, 4, 23), (7, 4, 5), {"pads": [2, 1], "strides": [2]}),
    "conv1d_dilated_same_upper": ((1, 3, 17), (4, 3, 3), {"dilations": [3], "auto_pad": "SAME_UPPER"}),
    "conv1d_dilated_same_lower": ((1, 3, 17), (4, 3, 4), {"dilations": [2], "auto_pad": "SAME_LOWER"}),
    "conv1d_group": ((1, 6, 19), (9, 2, 3), {"group": 3, "pads": [1, 1]}),
    "conv1d_long": ((1, 2, 300), (3, 2, 7), {"strides": [3], "pads": [3, 3]}),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", SHAPES)
def test_conv_matches_numpy(name, isa):
    x_shape, w_shape, attrs = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x, w, b = random_conv_inputs(rng, x_shape, w_shape, bias=name != "no_bias_valid")
    got = _kernels.conv(x, w, b, isa=isa, **attrs)
    assert_close(got, reference_conv(x, w, b, **attrs))


ACTIVATION_CASES = [(a, []) for a in ACTIVATIONS] + [
    ("Clip", [-0.5, 0.7]),
    ("LeakyRelu", [0.3]),
    ("HardSigmoid", [0.4, 0.3]),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation, params", ACTIVATION_CASES,
                         ids=[f"{a or 'none'}{p or ''}" for a, p in ACTIVATION_CASES])
def test_activation_bias_residual(activation, params, isa):
    rng = np.random.default_rng(5)
    x, w, b = random_conv_inputs(rng, (2, 5, 9, 10), (7, 5, 3, 3))
    x *= 3  # outputs of a few units, so every branch of every activation is taken
    attrs = {"strides": [1, 2], "pads": [1, 1, 1, 1]}
    z = rng.standard_normal(reference_conv(x, w, **attrs).shape).astype(np.float32)
    for bias, residual in [(b, None), (None, z), (b, z)]:
        got = _kernels.conv(x, w, bias, residual, activation=activation, activation_params=params, isa=isa, **attrs)
        want = reference_conv(x, w, bias, residual, activation=activation, activation_params=params, **attrs)
        assert_close(got, want)


@pytest.mark.parametrize("isa", ISAS)
def test_clip_with_min_above_max_follows_onnx(isa):
    """ONNX Clip (and ORT's com.microsoft.FusedConv): when min > max every value becomes max."""
    x, w, b = random_conv_inputs(np.random.default_rng(6), (1, 2, 6, 6), (3, 2, 3, 3))
    got = _kernels.conv(x, w, b, activation="Clip", activation_params=[1.0, 0.0], isa=isa)
    np.testing.assert_array_equal(got, np.zeros_like(got))


@pytest.mark.parametrize("isa", ISAS)
def test_non_contiguous_inputs(isa):
    rng = np.random.default_rng(7)
    x, w, b = random_conv_inputs(rng, (2, 4, 10, 9), (6, 4, 3, 3))
    x_t = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # Fortran-like strides
    w_s = np.repeat(w, 2, axis=0)[::2]  # strided view
    assert not x_t.flags.c_contiguous and not w_s.flags.c_contiguous
    assert_close(_kernels.conv(x_t, w_s, b, isa=isa), reference_conv(x, w, b))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("x_shape, m", [((1, 2048, 7, 7), 512), ((2, 512, 7, 7), 64), ((1, 600, 13, 11), 48),
                                        ((1, 1024, 14, 14), 32)])
def test_pointwise_column_strips(x_shape, m, isa):
    """1x1 channel tiles over a long reduction on a small plane copy the block as strips of one tile's
    columns (ConvPlan::strip_panel), the tail tile's columns in a strip of their own: blocks of
    unequal rows (7 rows as 4 + 3) start their tail off a strip's edge, with bias, residual and Relu,
    on one thread and on three (the rule keeps strips only where one item runs a block's tiles)."""
    rng = np.random.default_rng(11)
    x, w, b = random_conv_inputs(rng, x_shape, (m, x_shape[1], 1, 1))
    z = rng.standard_normal((x_shape[0], m, *x_shape[2:])).astype(np.float32)
    plan = _kernels.workspace_bytes(x_shape, w.shape, isa=isa, tiles="channels")
    if plan["tile_family"] != "channels":
        pytest.skip(f"{isa} has no channel tiles")
    assert plan["strip_panel"] and plan["tile"].endswith("strips"), plan
    want = reference_conv(x, w, b, z, activation="Relu")
    for threads in (1, 3):
        assert_close(_kernels.conv(x, w, b, z, activation="Relu", isa=isa, tiles="channels", threads=threads), want)


def test_batch_zero():
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    assert _kernels.conv(x, w).shape == (0, 4, 6, 6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 8, 40, 40), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((3, 6, 17, 19), (12, 3, 3, 3), {"group": 2, "strides": [2, 1]}),
    ((1, 4, 500), (8, 4, 5), {"dilations": [2]}),
])
def test_threads_give_identical_results(x_shape, w_shape, attrs, isa):
    x, w, b = random_conv_inputs(np.random.default_rng(8), x_shape, w_shape)
    one = _kernels.conv(x, w, b, isa=isa, threads=1, **attrs)
    for threads in (2, 3):
        np.testing.assert_array_equal(_kernels.conv(x, w, b, isa=isa, threads=threads, **attrs), one)


def test_isas_agree_closely():
    x, w, b = random_conv_inputs(np.random.default_rng(9), (2, 16, 14, 14), (24, 16, 3, 3))
    results = [_kernels.conv(x, w, b, pads=[1, 1, 1, 1], isa=isa) for isa in ISAS]
    for r in results[1:]:
        assert_close(r, results[0], rtol=1e-5, atol_scale=1e-6)


def test_selected_isa(monkeypatch):
    monkeypatch.delenv("IM2WIN_ISA", raising=False)
    assert _kernels.selected_isa() == ISAS[0]  # the best this CPU has
    for isa in ISAS:
        assert _kernels.selected_isa(isa) == isa
        monkeypatch.setenv("IM2WIN_ISA", isa)
        assert _kernels.selected_isa() == isa
    monkeypatch.setenv("IM2WIN_ISA", "auto")
    assert _kernels.selected_isa() == ISAS[0]


# --- property-based: random small convolutions ------------------------------------------------

@st.composite
def conv_problems(draw):
    rank = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 3)) for _ in range(rank)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    pads = [draw(st.integers(0, 3)) for _ in range(2 * rank)] if auto_pad == "NOTSET" else None
    spatial = []
    for i in range(rank):
        dilated = (kernel[i] - 1) * dilations[i] + 1
        padding = 0 if pads is None else pads[i] + pads[i + rank]
        low = max(1, dilated - padding) if auto_pad != "SAME_UPPER" and auto_pad != "SAME_LOWER" else 1
        spatial.append(draw(st.integers(low, low + 20)))
    x_shape = (draw(st.integers(1, 3)), cg * group, *spatial)
    w_shape = (mg * group, cg, *kernel)
    attrs = {"group": group, "strides": strides, "dilations": dilations, "auto_pad": auto_pad, "pads": pads}
    activation = draw(st.sampled_from(ACTIVATIONS))
    return x_shape, w_shape, attrs, activation, draw(st.booleans()), draw(st.sampled_from(ISAS))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=conv_problems(), seed=st.integers(0, 2**16))
def test_random_convolutions_match_numpy(problem, seed):
    x_shape, w_shape, attrs, activation, with_z, isa = problem
    rng = np.random.default_rng(seed)
    x, w, b = random_conv_inputs(rng, x_shape, w_shape)
    want = reference_conv(x, w, b, activation=activation, **attrs)
    z = rng.standard_normal(want.shape).astype(np.float32) if with_z else None
    if z is not None:
        want = reference_conv(x, w, b, z, activation=activation, **attrs)
    got = _kernels.conv(x, w, b, z, activation=activation, isa=isa, threads=2, **attrs)
    assert_close(got, want)


# --- the im2win window panel ----------------------------------------------------------------

def numpy_window_tensor(x, kernel_shape, auto_pad="NOTSET", dilations=None, pads=None, strides=None):
    """window_layout.h's panel for all output rows, N x C x A x P x plane_rows x row_len, with
    T[n, c, a, p, u, t] = X[n, c, u*s_h + row_phase[a] - pad_top, t*s_w + col_phase[p] - pad_left]
    (0 outside X). Returns the tensor, the row and column phase of each slot and the geometry."""
    rank = x.ndim - 2
    kernel = list(kernel_shape)
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    begin, end = resolve_pads(x.shape[2:], kernel, strides, dilations, auto_pad, pads)
    if rank == 1:  # carried as H = 1
        x = x[:, :, None, :]
        kernel, strides, dilations = [1] + kernel, [1] + strides, [1] + dilations
        begin, end = [0] + begin, [0] + end
    (kh_n, kw_n), (sh, sw), (dh, dw) = kernel, strides, dilations
    in_h, in_w = x.shape[2:]
    out_h = (in_h + begin[0] + end[0] - (kh_n - 1) * dh - 1) // sh + 1
    out_w = (in_w + begin[1] + end[1] - (kw_n - 1) * dw - 1) // sw + 1
    row_len = out_w + ((kw_n - 1) * dw) // sw
    plane_rows = out_h + ((kh_n - 1) * dh) // sh
    row_phases = list(dict.fromkeys((kh * dh) % sh for kh in range(kh_n)))  # in order of first use
    col_phases = list(dict.fromkeys((kw * dw) % sw for kw in range(kw_n)))
    n, c = x.shape[:2]
    t = np.zeros((n, c, len(row_phases), len(col_phases), plane_rows, row_len), np.float32)
    for a, row_phase in enumerate(row_phases):
        for p, col_phase in enumerate(col_phases):
            for u in range(plane_rows):
                y = u * sh + row_phase - begin[0]
                if not 0 <= y < in_h:
                    continue
                for col in range(row_len):
                    xc = col * sw + col_phase - begin[1]
                    if 0 <= xc < in_w:
                        t[:, :, a, p, u, col] = x[:, :, y, xc]
    geometry = {"out_h": out_h, "out_w": out_w, "sh": sh, "dh": dh, "sw": sw, "dw": dw, "kernel": (kh_n, kw_n)}
    return t, (row_phases, col_phases), geometry


TRANSFORM_CASES = {
    "3x3": ((2, 3, 7, 8), [3, 3], {}),
    "pads": ((1, 2, 6, 7), [3, 2], {"pads": [1, 2, 2, 0]}),
    "stride2": ((1, 2, 9, 11), [3, 3], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride_gt_kernel": ((1, 2, 10, 13), [2, 2], {"strides": [3, 4]}),
    "dilated_strided": ((1, 2, 14, 15), [3, 3], {"strides": [2, 2], "dilations": [2, 3], "pads": [1, 2, 0, 1]}),
    "same_lower_dilated": ((1, 3, 9, 10), [3, 3], {"auto_pad": "SAME_LOWER", "dilations": [2, 2]}),
    "same_upper_strided": ((1, 1, 8, 9), [4, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    "same_cropping": ((1, 2, 10, 13), [1, 2], {"auto_pad": "SAME_UPPER", "strides": [4, 5]}),
    "conv1d": ((2, 3, 15), [3], {"pads": [1, 2], "strides": [2]}),
    "conv1d_dilated": ((1, 2, 20), [4], {"dilations": [3], "strides": [2]}),
}


@pytest.mark.parametrize("name", TRANSFORM_CASES)
def test_im2win_transform_matches_numpy(name):
    x_shape, kernel, attrs = TRANSFORM_CASES[name]
    rng = np.random.default_rng(10)
    x = rng.standard_normal(x_shape).astype(np.float32)
    want, phases, g = numpy_window_tensor(x, kernel, **attrs)
    got = _kernels.im2win_transform(x, kernel, **attrs)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)

    # The layout's promise: output (r, j), tap (kh, kw) reads
    # T[.., a(kh), p(kw), r + row_shift(kh), j + col_shift(kw)], so a conv built from the panel
    # alone equals the reference.
    row_phases, col_phases = phases
    w = rng.standard_normal((3, x_shape[1], *kernel)).astype(np.float32)
    kh_n, kw_n = g["kernel"]
    w4 = w.reshape(3, x_shape[1], kh_n, kw_n)
    y = np.zeros((x_shape[0], 3, g["out_h"], g["out_w"]))
    for kh in range(kh_n):
        a, row_shift = row_phases.index((kh * g["dh"]) % g["sh"]), (kh * g["dh"]) // g["sh"]
        for kw in range(kw_n):
            p, col_shift = col_phases.index((kw * g["dw"]) % g["sw"]), (kw * g["dw"]) // g["sw"]
            window = want[:, :, a, p, row_shift:row_shift + g["out_h"], col_shift:col_shift + g["out_w"]]
            y += np.einsum("nchw,mc->nmhw", window.astype(np.float64), w4[:, :, kh, kw])
    want_y = reference_conv(x, w, **attrs)
    assert_close(y.reshape(want_y.shape).astype(np.float32), want_y)


# --- workspace report -----------------------------------------------------------------------

WORKSPACE_CASES = {
    "cv9": ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "cv1": ((1, 3, 227, 227), (96, 3, 11, 11), {"strides": [4, 4]}),
    "grouped": ((1, 8, 20, 20), (8, 2, 3, 3), {"group": 4, "strides": [2, 2]}),
    "same_dilated": ((1, 4, 17, 19), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "dilations": [2, 2]}),
    "conv1d": ((1, 4, 100), (8, 4, 5), {"strides": [2]}),
}


@pytest.mark.parametrize("name", WORKSPACE_CASES)
def test_workspace_bytes(name):
    x_shape, w_shape, attrs = WORKSPACE_CASES[name]
    cg, kernel = w_shape[1], w_shape[2:]
    out = conv_output_shape(x_shape, w_shape, **attrs)[2:]
    im2col = cg * int(np.prod(kernel)) * int(np.prod(out)) * 4

    per_thread = {}
    for batch in (1, 2, 4, 8, 16, 64, 256):
        report = _kernels.workspace_bytes([batch, *x_shape[1:]], list(w_shape), **attrs)
        assert report["im2col"] == im2col
        assert report["work_items"] >= 1
        per_thread[batch] = report["im2win_per_thread"]
    # The per-thread panel never grows with the batch: fixed once the batch alone gives enough
    # work items, and small batches only cut it into smaller row blocks for more parallelism.
    big = per_thread[256]
    assert per_thread[8] == per_thread[16] == per_thread[64] == big, per_thread
    assert all(0 < v <= big for v in per_thread.values()), per_thread
