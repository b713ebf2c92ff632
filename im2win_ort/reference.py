"""im2win convolution in NumPy, to be read beside the paper.

Lu, Chu, Liu, "Im2win: Memory Efficient Convolution On SIMD Architectures", HPEC 2022.
This module is the second oracle of the project: it shares no code with the C++ kernels in ops/,
and it implements the whole of com.im2win::Conv, Y = activation(conv(X, W) + B + Z).

Notation (the paper's symbol in brackets)
    X  input    N x C x H x W             (I: N_i x C_i x H_i x W_i)
    W  filter   M x C/group x Kh x Kw     (F: C_o x C_i x H_f x W_f)
    Y  output   N x M x Ho x Wo           (O: N_o x C_o x H_o x W_o)
    s_h, s_w strides, d_h, d_w dilations, pads (top, left, bottom, right) or auto_pad.
A 1-D convolution (N x C x W) is the 2-D one with H = Kh = 1.

The im2win transform. im2col copies every output's Kh x Kw window, C*Kh*Kw x Ho*Wo floats. im2win
copies, for each output row i, only the Kh input rows that row reads, i*s_h .. i*s_h + (Kh-1)*d_h,
interleaved column by column (Kh innermost):

    T[n, c, i, w, kh] = Xp[n, c, i*s_h + kh*d_h, w]         T: N x C x Ho x Wp x Kh

where Xp is X with its pads applied (zeros; negative SAME pads crop) and Wp its padded width.
Padding, the vertical stride and the vertical dilation are thus folded into T. The window of
output (i, j) is the run T[n, c, i, j*s_w + kw*d_w, :] for kw < Kw: with d_w = 1 that is Kw*Kh
consecutive floats, T[n, c, i].ravel()[j*s_w*Kh : (j*s_w + Kw)*Kh], read in the order (kw, kh);
so the filter is reordered once to M x C/group x Kw x Kh to match (the paper's filter transform),
and each output is one dot product of two consecutive runs. T holds about Kh/s_h times X and about
s_w/Kw times im2col's floats.

How the native kernels (ops/conv/window_layout.h) lay out the same data. The panel there is T with
three changes, none of which changes the arithmetic: (1) Kh moved outward: a panel row is a whole
input row, so for a fixed tap (kh, kw) consecutive outputs j read consecutive floats and fill a
SIMD vector; (2) rows shared: T copies an input row into every output row whose window covers it
(Kh/s_h times), the panel stores it once, and output row i finds its kh-th row at panel row
i + (kh*d_h) // s_h; (3) phase-split: rows and columns are split by index mod stride, so that a
strided tap still reads consecutive floats. It is also built per group and per block of output
rows, so its size does not grow with N or H. Here the whole T is built at once, for clarity.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .rewriter.weight_layout import LAYOUT_TILES, NHWC_LAYOUT, WINOGRAD_LAYOUTS, unpack, unpack_nhwc, unpack_winograd

ACTIVATIONS = {  # name -> default activation_params (also their required number)
    "": (), "Relu": (), "Clip": (-np.inf, np.inf), "LeakyRelu": (0.01,), "Sigmoid": (),
    "HardSigmoid": (0.2, 0.5), "Tanh": (), "HardSwish": (),
}
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
ALGORITHMS = ("auto", "direct", "winograd")  # the op's `algorithm` attribute
LAYOUTS = ("NCHW", "NHWC")  # where the channels are in X, Z and Y


def _trunc_div(a: int, b: int) -> int:
    """C++'s integer division, rounding toward zero (ORT splits SAME pads with it)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def resolve_pads(in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], auto_pad: str = "NOTSET",
                 pads: Optional[Sequence[int]] = None) -> tuple[list[int], list[int]]:
    """Begin and end pads per spatial axis under ONNX Conv's rules, as ORT's Conv applies them.

    SAME_UPPER / SAME_LOWER ask for Ho = ceil(H / s). As in ORT, the total padding may be negative
    (a stride larger than the dilated kernel crops the input), is raised by one when padding it on
    both sides would still fall short of that size, and is split with truncating division.
    """
    rank = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            span = (k - 1) * d + 1
            target = -(-size // s)
            total = (target - 1) * s + span - size
            if int((size + 2 * total - span) / s + 1) < target:
                total += 1
            first = _trunc_div(total, 2) if auto_pad == "SAME_UPPER" else _trunc_div(total + 1, 2)
            begin.append(first)
            end.append(total - first)
        return begin, end
    if auto_pad == "VALID" or not pads:
        return [0] * rank, [0] * rank
    return list(pads[:rank]), list(pads[rank:])


def pad_input(x: np.ndarray, begin: Sequence[int], end: Sequence[int]) -> np.ndarray:
    """Xp: x with zero pads on its spatial axes; a negative pad crops that many entries instead."""
    crop = tuple(slice(max(0, -b), n - max(0, -e)) for b, e, n in zip(begin, end, x.shape[2:]))
    zeros = [(0, 0), (0, 0)] + [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    return np.pad(x[(slice(None), slice(None)) + crop], zeros)


def output_size(padded: int, k: int, s: int, d: int) -> int:
    """Ho or Wo: how many dilated windows of k taps fit in `padded` entries at stride s."""
    return (padded - (k - 1) * d - 1) // s + 1


def im2win(x: np.ndarray, kernel_shape: Sequence[int], *, auto_pad: str = "NOTSET",
           dilations: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
           strides: Optional[Sequence[int]] = None) -> np.ndarray:
    """The paper's im2win window tensor T, N x C x Ho x Wp x Kh, of x (N x C x H x W):

        T[n, c, i, w, kh] = Xp[n, c, i*s_h + kh*d_h, w]

    Xp is x padded by `pads` (or auto_pad); Wp is its width. A 1-D x (N x C x W) is taken as
    H = Kh = 1, giving N x C x 1 x Wp x 1. Same dtype as x.
    """
    return _window_tensor(*_as_2d(np.asarray(x), kernel_shape, auto_pad, dilations, pads, strides))


def _window_tensor(x, kernel, strides, dilations, begin, end):
    xp = pad_input(x, begin, end)
    ho = output_size(xp.shape[2], kernel[0], strides[0], dilations[0])
    wo = output_size(xp.shape[3], kernel[1], strides[1], dilations[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"input {x.shape[2:]} plus pads {begin}, {end} is smaller than the dilated kernel "
                         f"{tuple(kernel)}, so the output would be empty")
    rows = np.arange(ho)[:, None] * strides[0] + np.arange(kernel[0])[None, :] * dilations[0]  # Ho x Kh
    return np.ascontiguousarray(xp[:, :, rows, :].transpose(0, 1, 2, 4, 3))  # N x C x Ho x Wp x Kh


def windows(t: np.ndarray, kw_n: int, s_w: int, d_w: int, wo: int) -> np.ndarray:
    """Every output's window in T, N x C x Ho x Wo x Kw x Kh, as a read-only view (no copy):

        V[n, c, i, j, kw, kh] = T[n, c, i, j*s_w + kw*d_w, kh]

    For d_w = 1, V[n, c, i, j] is the consecutive run of Kw*Kh floats that starts at column j*s_w.
    """
    sn, sc, si, sw, sk = t.strides
    shape = t.shape[:3] + (wo, kw_n, t.shape[4])
    return np.lib.stride_tricks.as_strided(t, shape, (sn, sc, si, s_w * sw, d_w * sw, sk), writeable=False)


def activate(y: np.ndarray, activation: str = "", params: Sequence[float] = ()) -> np.ndarray:
    """The fused activation, with ONNX's definition of each op and ORT FusedConv's defaults."""
    p = _activation_params(activation, params)
    if activation == "Relu":
        return np.maximum(y, 0)
    if activation == "Clip":  # min(max(y, lo), hi): when lo > hi every value becomes hi, as in ONNX
        return np.minimum(np.maximum(y, p[0]), p[1])
    if activation == "LeakyRelu":
        return np.where(y < 0, p[0] * y, y)
    if activation == "Sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * y))  # = 1 / (1 + exp(-y)), without overflow
    if activation == "HardSigmoid":
        return np.clip(p[0] * y + p[1], 0, 1)
    if activation == "Tanh":
        return np.tanh(y)
    if activation == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    return y


def conv(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, z: Optional[np.ndarray] = None, *,
         auto_pad: str = "NOTSET", dilations: Optional[Sequence[int]] = None, group: int = 1,
         kernel_shape: Optional[Sequence[int]] = None, pads: Optional[Sequence[int]] = None,
         strides: Optional[Sequence[int]] = None, activation: str = "",
         activation_params: Sequence[float] = (), weight_layout: str = "OIHW", layout: str = "NCHW",
         input_layout: str = "", algorithm: str = "auto") -> np.ndarray:
    """com.im2win::Conv by im2win: Y = activation(conv(X, W) + B + Z), float32.

    x: N x C x [H x] W; w: M x C/group x [Kh x] Kw; b: M; z: Y's shape. The attributes are ONNX
    Conv's plus the epilogue's (see the README). Sums are taken in float64. layout="NHWC": x, z and
    Y have the channels last (N x [H x] W x C), the same convolution; with input_layout="NCHW" x
    keeps its channels second. algorithm (auto, direct or winograd) says how the op computes it, not
    what: the same convolution here.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if weight_layout in WINOGRAD_LAYOUTS:
        _check_winograd_weight_layout(weight_layout, layout, algorithm)
        w = unpack_winograd(w, weight_layout)
        _check_winograd(np.shape(w), layout, input_layout, dilations, group, strides,
                        f"weight_layout {weight_layout} is Winograd's transformed W: it")
        weight_layout = "OIHW"
    if algorithm == "winograd":
        _check_winograd(np.shape(w), layout, input_layout, dilations, group, strides)
    _check_algorithm(algorithm, layout)
    if _x_channels_first(input_layout, layout):
        if np.ndim(x) < 3:
            raise ValueError(f"X must have rank >= 3, got {np.shape(x)}")
        x = np.moveaxis(np.asarray(x), 1, -1)
    if layout == "NHWC":
        _check_nhwc_weight_layout(weight_layout)
        if weight_layout == NHWC_LAYOUT:
            w = unpack_nhwc(np.asarray(w), group)
        if np.ndim(x) < 3 or (z is not None and np.ndim(z) < 3):
            raise ValueError(f"X must have rank >= 3, got {np.shape(x)}")
        y = conv(np.moveaxis(np.asarray(x), -1, 1), w, b, None if z is None else np.moveaxis(np.asarray(z), -1, 1),
                 auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                 strides=strides, activation=activation, activation_params=activation_params)
        return np.ascontiguousarray(np.moveaxis(y, 1, -1))
    x = np.asarray(x, np.float64)
    w = unpack(np.asarray(w, np.float64), weight_layout, group) if weight_layout in LAYOUT_TILES else \
        np.asarray(w, np.float64)
    check_attributes(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                     pads=pads, strides=strides, activation=activation,
                     activation_params=activation_params, weight_layout=weight_layout)
    if w.ndim != x.ndim:
        raise ValueError(f"X {x.shape} and W {w.shape} must have the same rank")
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    if c % group or m % group or cg * group != c:
        raise ValueError(f"X has C={c} channels, W {w.shape} has M={m}: with group={group}, "
                         f"group must divide C and M, and W must hold C/group channels")
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        raise ValueError(f"kernel_shape {list(kernel_shape)} does not match W's shape {w.shape}")

    x4, kernel, strides, dilations, begin, end = _as_2d(x, w.shape[2:], auto_pad, dilations, pads, strides)
    t = _window_tensor(x4, kernel, strides, dilations, begin, end)  # N x C x Ho x Wp x Kh
    (kh_n, kw_n), s_w, d_w = kernel, strides[1], dilations[1]
    ho, wo = t.shape[2], output_size(t.shape[3], kw_n, s_w, d_w)

    # Each output is the dot product of its window V[n, c, i, j] (Kw x Kh) with the filter
    # reordered to the same (kw, kh) order, summed over the C/group channels of its group.
    v = windows(t, kw_n, s_w, d_w, wo).reshape(n, group, cg, ho, wo, kw_n, kh_n)
    f = w.reshape(group, m // group, cg, kh_n, kw_n).transpose(0, 1, 2, 4, 3)  # G x M/G x C/G x Kw x Kh
    y = np.empty((n, group, m // group, ho, wo))
    for g in range(group):
        y[:, g] = np.tensordot(v[:, g], f[g], axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    y = y.reshape((n, m) + ((wo,) if x.ndim == 3 else (ho, wo)))

    if b is not None:
        b = np.asarray(b, np.float64)
        if b.shape != (m,):
            raise ValueError(f"B must have shape ({m},), got {b.shape}")
        y += b.reshape((1, m) + (1,) * (x.ndim - 2))
    if z is not None:
        z = np.asarray(z, np.float64)
        if z.shape != y.shape:
            raise ValueError(f"Z must have Y's shape {y.shape}, got {z.shape}")
        y += z
    return activate(y, activation, activation_params).astype(np.float32)


def check_attributes(*, auto_pad: str = "NOTSET", dilations=None, group: int = 1, kernel_shape=None,
                     pads=None, strides=None, activation: str = "", activation_params=(),
                     weight_layout: str = "OIHW", layout: str = "NCHW", input_layout: str = "",
                     algorithm: str = "auto") -> None:
    """Raises ValueError, naming the problem, for attributes com.im2win::Conv does not accept."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    _check_algorithm(algorithm, layout)
    _x_channels_first(input_layout, layout)
    if layout == "NHWC":
        _check_nhwc_weight_layout(weight_layout)
    elif weight_layout == NHWC_LAYOUT:
        raise ValueError(f"weight_layout {NHWC_LAYOUT} is the channels-last order: it needs layout NHWC")
    if weight_layout in WINOGRAD_LAYOUTS:
        _check_winograd_weight_layout(weight_layout, layout, algorithm)
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {', '.join(AUTO_PADS)}, got {auto_pad!r}")
    if auto_pad != "NOTSET" and pads and any(pads):
        raise ValueError(f"pads {list(pads)} cannot be used together with auto_pad={auto_pad}")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    for name, values, low in (("strides", strides, 1), ("dilations", dilations, 1),
                              ("kernel_shape", kernel_shape, 1), ("pads", pads, 0)):
        values = list(values or [])
        if any(v < low for v in values):
            raise ValueError(f"{name} must all be >= {low}, got {values}")
        rank = len(values) // 2 if name == "pads" else len(values)
        if rank > 2:
            raise ValueError(f"{name} {values} describe spatial rank {rank}: 3-D convolution is not supported "
                             f"by com.im2win::Conv; spatial rank 1 and 2 are")
    if weight_layout not in ("OIHW", NHWC_LAYOUT) and weight_layout not in LAYOUT_TILES and \
            weight_layout not in WINOGRAD_LAYOUTS:
        raise ValueError(f"weight_layout {weight_layout!r} is not supported: 'OIHW' (ONNX's), a packed "
                         f"layout ({', '.join(LAYOUT_TILES)}) or, with layout NHWC, {NHWC_LAYOUT} or "
                         f"{' or '.join(WINOGRAD_LAYOUTS)}")
    _activation_params(activation, activation_params)


def _x_channels_first(input_layout: str, layout: str) -> bool:
    """Whether X comes channels-first to a channels-last node (input_layout NCHW with layout NHWC);
    raises ValueError for any other input_layout than empty or the layout."""
    if input_layout in ("", layout):
        return False
    if input_layout not in LAYOUTS:
        raise ValueError(f"input_layout must be one of {', '.join(LAYOUTS)}, got {input_layout!r}")
    if layout != "NHWC":
        raise ValueError(f"input_layout {input_layout} needs layout NHWC")
    return True


def _check_algorithm(algorithm: str, layout: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "winograd" and layout != "NHWC":
        raise ValueError('algorithm "winograd" needs layout NHWC')


def _check_winograd_weight_layout(weight_layout: str, layout: str, algorithm: str) -> None:
    """The op's refusal of W stored as U where Winograd does not run."""
    what = f"weight_layout {weight_layout} is Winograd's transformed W:"
    if layout != "NHWC":
        raise ValueError(f"{what} it needs layout NHWC")
    if algorithm == "direct":
        raise ValueError(f'{what} algorithm "direct" cannot read it')


def _check_winograd(w_shape, layout: str, input_layout: str, dilations, group: int, strides,
                    who: str = 'algorithm "winograd"') -> None:
    """The op's refusal of algorithm "winograd" (or of W stored as U: `who`) where Winograd cannot
    compute the conv."""
    if layout != "NHWC":
        return  # (_check_algorithm says so)
    for needed, ok in (("a 2-D 3x3 kernel", tuple(w_shape[2:]) == (3, 3)),
                       ("strides 1", all(s == 1 for s in (strides or []))),
                       ("dilations 1", all(d == 1 for d in (dilations or []))),
                       ("group 1", group == 1),
                       ("X channels-last (no input_layout NCHW)", input_layout != "NCHW")):
        if not ok:
            raise ValueError(f"{who} needs {needed}")


def _check_nhwc_weight_layout(weight_layout: str) -> None:
    if weight_layout in LAYOUT_TILES:
        raise ValueError(f"layout NHWC takes W as ONNX gives it (weight_layout OIHW) or as {NHWC_LAYOUT}: "
                         f"{weight_layout} is an NCHW tile order")


def _activation_params(activation: str, params: Sequence[float]) -> tuple:
    if activation not in ACTIVATIONS:
        names = ", ".join(a for a in ACTIVATIONS if a)
        raise ValueError(f"unknown activation {activation!r} (expected one of {names})")
    defaults = ACTIVATIONS[activation]
    if len(params) not in (0, len(defaults)):
        raise ValueError(f"activation {activation or 'none'} takes {len(defaults)} activation_params, "
                         f"got {len(params)}")
    return tuple(params) or defaults


def _as_2d(x, kernel_shape, auto_pad, dilations, pads, strides):
    """Checks the spatial rank, resolves the pads and returns (x, kernel, strides, dilations, begin
    pads, end pads) for the 2-D case; a 1-D problem gets a leading axis of size 1 (H = Kh = 1, no pads)."""
    rank = x.ndim - 2
    if rank == 3:
        raise ValueError(f"X {x.shape} has spatial rank 3: 3-D convolution is not supported by "
                         f"com.im2win::Conv; spatial rank 1 and 2 are")
    if rank not in (1, 2):
        raise ValueError(f"X must be N x C x [H x] W, got shape {x.shape}")
    kernel = list(kernel_shape)
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    for name, values, count in (("kernel_shape", kernel, rank), ("strides", strides, rank),
                                ("dilations", dilations, rank), ("pads", pads or [0] * 2 * rank, 2 * rank)):
        if len(values) != count:
            raise ValueError(f"{name} {list(values)} must have {count} values for spatial rank {rank}")
    begin, end = resolve_pads(x.shape[2:], kernel, strides, dilations, auto_pad, pads)
    if rank == 1:
        return x[:, :, None, :], [1] + kernel, [1] + strides, [1] + dilations, [0] + begin, [0] + end
    return x, kernel, strides, dilations, begin, end
