"""im2win_ort.reference, the NumPy im2win, as a second oracle.

- against ORT's own Conv (+ Add + activation nodes) on a seeded randomized sweep drawn like the core
  sweep's (tests/test_oracle_sweep.py) and on its named edge cases;
- the native kernels (im2win_ort._kernels.conv, every ISA) against it, including what ORT's Conv
  cannot check (dilation with SAME_*, default activation parameters, Clip with min > max);
- its window tensor against the definition, and against the native panel (ops/conv/window_layout.h)
  in the way its docstring says the two relate;
- 3-D convolution and bad attributes refused.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from onnx import helper, numpy_helper

from helpers import ACTIVATIONS, ISAS, assert_close, random_conv_inputs, resolve_pads, run_model
from im2win_ort import _kernels, reference
from test_oracle_sweep import EDGE_CASES, build_models, edge, random_case

SWEEP_CASES, CASES_PER_MODEL = 60, 20
_rng = np.random.default_rng(6)
SWEEP = [random_case(_rng) for _ in range(SWEEP_CASES)]
CHUNKS = [SWEEP[i:i + CASES_PER_MODEL] for i in range(0, SWEEP_CASES, CASES_PER_MODEL)]


def run_reference(model, feeds: dict) -> list:
    """Evaluates every com.im2win::Conv node of model with reference.conv, in graph order."""
    values = dict(feeds)
    values.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        values[node.output[0]] = reference.conv(*[values[n] if n else None for n in node.input], **attrs)
    return [values[o.name] for o in model.graph.output]


def check_against_ort(cases: list[dict], seed: int) -> None:
    ort_model, im2win_model, feeds = build_models(cases, np.random.default_rng(seed))
    want = run_model(ort_model, feeds, im2win=False)
    got = run_reference(im2win_model, feeds)
    for case, g, w in zip(cases, got, want):
        try:
            assert_close(g, w)
        except AssertionError as e:
            raise AssertionError(f"{case}\n{e}") from None


@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
def test_reference_matches_ort_random(chunk):
    check_against_ort(CHUNKS[chunk], seed=100 + chunk)


# SAME_* with a stride above the kernel: the input is cropped, by ORT's rule (odd negative totals).
CROPPING = [
    edge([2, 2, 14, 25], [3, 2, 2, 1], strides=[5, 5], auto_pad="SAME_UPPER"),
    edge([1, 2, 25, 14], [3, 2, 1, 2], strides=[5, 5], auto_pad="SAME_LOWER", activation="Tanh"),
    edge([1, 3, 12, 12], [4, 3, 1, 2], strides=[6, 6], auto_pad="SAME_LOWER", residual=True),
    edge([1, 3, 31], [2, 3, 2], strides=[7], auto_pad="SAME_UPPER"),
]


def test_reference_matches_ort_edge_cases():
    check_against_ort([EDGE_CASES[name] for name in sorted(EDGE_CASES)] + CROPPING, seed=7)


def test_sweep_covers_the_named_features():
    def has(pred):
        return any(pred(c) for c in SWEEP)

    assert has(lambda c: len(c["x_shape"]) == 3)  # 1-D
    assert has(lambda c: c["group"] > 1 and c["w_shape"][1] > 1)  # groups
    assert has(lambda c: c["group"] > 1 and c["w_shape"][1] == 1)  # depthwise
    assert has(lambda c: max(c["dilations"]) > 1)
    assert has(lambda c: max(c["strides"]) > max(c["w_shape"][2:]))
    assert has(lambda c: c["pads"] and c["pads"][:len(c["pads"]) // 2] != c["pads"][len(c["pads"]) // 2:])
    assert {c["auto_pad"] for c in SWEEP} == {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"}
    assert {c["activation"] for c in SWEEP} == set(ACTIVATIONS)
    assert has(lambda c: c["residual"]) and has(lambda c: not c["bias"])


# --- the native kernels against the reference -----------------------------------------------

def native_cases(count: int, seed: int) -> list[dict]:
    """Cases drawn like the sweep's, plus what ORT's Conv cannot check: SAME_* with dilation and
    default or explicit activation parameters."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        case = random_case(rng)
        if case["auto_pad"].startswith("SAME"):
            case["dilations"] = [int(rng.integers(1, 4)) for _ in case["dilations"]]
        defaults = reference.ACTIVATIONS[case["activation"]]
        explicit = defaults and rng.random() < 0.5
        case["activation_params"] = [float(rng.uniform(-0.5, 0.8)) for _ in defaults] if explicit else []
        cases.append(case)
    return cases


NATIVE = native_cases(60, seed=61)


@pytest.mark.parametrize("index", range(len(NATIVE)))
def test_native_matches_reference(index):
    case = NATIVE[index]
    rng = np.random.default_rng(index)
    x, w, b = random_conv_inputs(rng, case["x_shape"], case["w_shape"], bias=case["bias"])
    x *= 3  # outputs of a few units, so every branch of every activation is taken
    attrs = {k: case[k] for k in ("group", "strides", "dilations", "auto_pad", "pads")}
    epilogue = {"activation": case["activation"], "activation_params": case["activation_params"]}
    z = None
    if case["residual"]:
        z = rng.standard_normal(reference.conv(x, w, **attrs).shape).astype(np.float32)
    want = reference.conv(x, w, b, z, **attrs, **epilogue)
    for isa in ISAS:
        assert_close(_kernels.conv(x, w, b, z, isa=isa, **attrs, **epilogue), want)


def test_native_covers_dilated_same():
    assert any(c["auto_pad"].startswith("SAME") and max(c["dilations"]) > 1 for c in NATIVE)


@pytest.mark.parametrize("activation, params", [
    ("Clip", [1.0, 0.0]),  # min > max: every value becomes max
    ("Clip", [-0.25, 0.5]),
    ("LeakyRelu", []),
    ("HardSigmoid", []),
])
def test_native_matches_reference_epilogue(activation, params):
    x, w, b = random_conv_inputs(np.random.default_rng(3), (2, 4, 7, 9), (5, 4, 3, 3))
    z = np.random.default_rng(4).standard_normal((2, 5, 7, 9)).astype(np.float32)
    kw = {"pads": [1, 1, 1, 1], "activation": activation, "activation_params": params}
    want = reference.conv(3 * x, w, None, z, **kw)
    assert_close(_kernels.conv(3 * x, w, None, z, **kw), want)
    if params == [1.0, 0.0]:
        np.testing.assert_array_equal(want, np.zeros_like(want))


def test_batch_zero():
    y = reference.conv(np.zeros((0, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32), strides=[2, 2])
    assert y.shape == (0, 4, 3, 3) and y.dtype == np.float32


def test_resolve_pads_matches_helpers():
    """The reference's own copy of ORT's SAME_* rule agrees with the tests' on a grid."""
    for size, k, s, d, mode in itertools.product(range(1, 13), range(1, 5), range(1, 6), range(1, 4),
                                                 ("SAME_UPPER", "SAME_LOWER")):
        args = ([size], [k], [s], [d], mode)
        assert reference.resolve_pads(*args) == tuple(resolve_pads(*args)), args


# --- the window tensor -------------------------------------------------------------------------

WINDOW_CASES = {
    "3x3": ((2, 3, 7, 8), [3, 3], {}),
    "asymmetric_pads": ((1, 2, 6, 7), [3, 2], {"pads": [1, 2, 2, 0]}),
    "stride2": ((1, 2, 9, 11), [3, 3], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride_gt_kernel": ((1, 2, 10, 13), [2, 2], {"strides": [3, 4]}),
    "dilated_strided": ((1, 2, 14, 15), [3, 3], {"strides": [2, 2], "dilations": [2, 3], "pads": [1, 2, 0, 1]}),
    "same_lower_dilated": ((1, 3, 9, 10), [3, 3], {"auto_pad": "SAME_LOWER", "dilations": [2, 2]}),
    "same_cropping": ((1, 2, 10, 13), [1, 2], {"auto_pad": "SAME_UPPER", "strides": [4, 5]}),
    "conv1d": ((2, 3, 15), [3], {"pads": [1, 2], "strides": [2]}),
}


def geometry(x_shape, kernel, attrs):
    """(kernel, strides, dilations, begin pads, end pads, out sizes) with 1-D as H = Kh = 1."""
    rank = len(kernel)
    strides, dilations = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
    begin, end = resolve_pads(x_shape[2:], kernel, strides, dilations, attrs.get("auto_pad", "NOTSET"),
                              attrs.get("pads"))
    g = [kernel, strides, dilations, begin, end]
    if rank == 1:
        g = [[1] + v if i < 3 else [0] + v for i, v in enumerate(g)]
    spatial = ([1] if rank == 1 else []) + list(x_shape[2:])
    k, st, d, b, e = g
    out = [(n + b_ + e_ - (k_ - 1) * d_ - 1) // s_ + 1 for n, k_, s_, d_, b_, e_ in zip(spatial, k, st, d, b, e)]
    return (*g, out)


@pytest.mark.parametrize("name", WINDOW_CASES)
def test_window_tensor_is_the_papers(name):
    """T[n, c, i, w, kh] = X[n, c, i*s_h + kh*d_h - top, w - left] (0 outside X), N x C x Ho x Wp x Kh;
    the window of output (i, j) is T[n, c, i, j*s_w + kw*d_w, kh], consecutive when d_w = 1."""
    x_shape, kernel, attrs = WINDOW_CASES[name]
    x = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(x_shape).astype(np.float32)
    (kh_n, kw_n), (sh, sw), (dh, dw), (top, left), (bottom, right), (ho, wo) = geometry(x_shape, kernel, attrs)
    x4 = x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])
    h, w_in = x4.shape[2:]

    def pixel(row, col):  # X[:, :, row, col], zero outside
        return x4[:, :, row, col] if 0 <= row < h and 0 <= col < w_in else 0.0

    t = reference.im2win(x, kernel, **attrs)
    wp = left + w_in + right
    assert t.shape == (x.shape[0], x.shape[1], ho, wp, kh_n)
    want = np.zeros(t.shape, np.float32)
    for i, col, kh in itertools.product(range(ho), range(wp), range(kh_n)):
        want[:, :, i, col, kh] = pixel(i * sh + kh * dh - top, col - left)
    np.testing.assert_array_equal(t, want)

    v = reference.windows(t, kw_n, sw, dw, wo)
    assert v.shape == (x.shape[0], x.shape[1], ho, wo, kw_n, kh_n)
    for i, j, kw, kh in itertools.product(range(ho), range(wo), range(kw_n), range(kh_n)):
        np.testing.assert_array_equal(v[:, :, i, j, kw, kh], pixel(i * sh + kh * dh - top, j * sw + kw * dw - left))
        if dw == 1 and kw == kh == 0:  # one consecutive run of Kw*Kh floats
            run = t[:, :, i].reshape(x.shape[0], x.shape[1], -1)[:, :, j * sw * kh_n:(j * sw + kw_n) * kh_n]
            np.testing.assert_array_equal(run, v[:, :, i, j].reshape(run.shape))


@pytest.mark.parametrize("name", WINDOW_CASES)
def test_window_tensor_relates_to_native_panel(name):
    """As the reference's docstring says: output row i finds its kh-th window row in the native
    panel at row i + (kh*d_h) // s_h of row phase (kh*d_h) % s_h, and column j*s_w + kw*d_w of T at
    column j + (kw*d_w) // s_w of column phase (kw*d_w) % s_w (phases in order of first use)."""
    x_shape, kernel, attrs = WINDOW_CASES[name]
    x = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(x_shape).astype(np.float32)
    (kh_n, kw_n), (sh, sw), (dh, dw), *_, (ho, wo) = geometry(x_shape, kernel, attrs)
    t = reference.im2win(x, kernel, **attrs)
    panel = _kernels.im2win_transform(x, kernel, **attrs)
    row_phases = list(dict.fromkeys(kh * dh % sh for kh in range(kh_n)))
    col_phases = list(dict.fromkeys(kw * dw % sw for kw in range(kw_n)))
    for kh, kw in itertools.product(range(kh_n), range(kw_n)):
        a, p = row_phases.index(kh * dh % sh), col_phases.index(kw * dw % sw)
        u, c = kh * dh // sh, kw * dw // sw
        np.testing.assert_array_equal(t[:, :, :, kw * dw:kw * dw + (wo - 1) * sw + 1:sw, kh],
                                      panel[:, :, a, p, u:u + ho, c:c + wo])


# --- refusals ------------------------------------------------------------------------------

def test_3d_refused():
    x, w = np.zeros((1, 2, 5, 5, 5), np.float32), np.zeros((3, 2, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="3-D convolution is not supported"):
        reference.conv(x, w)
    with pytest.raises(ValueError, match="3-D convolution is not supported"):
        reference.im2win(x, [2, 2, 2])
    with pytest.raises(ValueError, match="3-D convolution is not supported"):
        reference.check_attributes(strides=[1, 1, 1])


X, W = np.zeros((1, 4, 6, 6), np.float32), np.zeros((6, 2, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, message", [
    ({"group": 3}, "group must divide"),
    ({"group": 1}, "must hold C/group channels"),
    ({"group": 2, "activation": "Gelu"}, "unknown activation 'Gelu'"),
    ({"group": 2, "activation": "LeakyRelu", "activation_params": [0.1, 0.2]}, "takes 1 activation_params"),
    ({"group": 2, "weight_layout": "packed"}, "weight_layout 'packed' is not supported"),
    ({"group": 2, "auto_pad": "SAME"}, "auto_pad must be one of"),
    ({"group": 2, "auto_pad": "VALID", "pads": [1, 1, 1, 1]}, "cannot be used together"),
    ({"group": 2, "strides": [0, 1]}, "strides must all be >= 1"),
    ({"group": 2, "pads": [1, 1]}, "must have 4 values"),
    ({"group": 2, "kernel_shape": [3, 2]}, "does not match W's shape"),
    ({"group": 2, "dilations": [4, 4]}, "output would be empty"),
])
def test_bad_attributes_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reference.conv(X, W, **kwargs)


def test_bad_b_and_z_refused():
    with pytest.raises(ValueError, match="B must have shape"):
        reference.conv(X, W, np.zeros(5, np.float32), group=2)
    with pytest.raises(ValueError, match="Z must have Y's shape"):
        reference.conv(X, W, None, np.zeros((1, 6, 5, 4), np.float32), group=2)
