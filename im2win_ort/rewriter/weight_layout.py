"""Pre-packed weight layouts of com.im2win::Conv's `weight_layout` attribute, in NumPy.

The native op packs OIHW weights once into the order its micro-kernels read (ops/conv/weight_pack.h),
which would leave the session holding two copies: ORT's initializer and the packed one. When the
rewriter stores W already packed, the op reads ORT's copy in place. Within each group, output
channels are cut into tiles of `tile` (the last one of a group may be smaller); each tile of rm
channels is stored as [k][rm] with k over C/group x Kh x Kw, and the tile that starts at output
channel m begins at m * K. The packed tensor keeps W's shape (and size): only the order changes.

Channels-last nodes (layout NHWC) read their own order, NHWC_LAYOUT: within each group, output
channels in blocks of 16, each block [kh][kw][c][16] (ops/conv/conv_nhwc.h, PackWeightsNhwc). It
is a permutation of W only where every block is whole (M/group a multiple of 16) and the node is
not depthwise (whose kernels read W as it is); other NHWC nodes keep OIHW.

Channels-last nodes that run Winograd's F(2x2, 3x3) or F(4x4, 3x3) may take W as its transform U
instead (WINOGRAD_LAYOUTS): U[i] = (G g G^T)[i] for each of the a x a products (a = tile + 2), each
in NHWC_LAYOUT's order for a 1x1 conv (blocks of 16 output channels, [c][16]), stored with shape
[M, C, a, a] (ops/conv/winograd_nhwc.h, PackWeightsWinograd). A session then holds U alone, not W
and the U the op would make from it.
"""

from __future__ import annotations

import numpy as np

OIHW = "OIHW"
LAYOUT_TILES = {"im2win.positions6": 6, "im2win.channels16": 16}  # must match ops/conv/weight_pack.cc
FAMILY_LAYOUTS = {"positions": "im2win.positions6", "channels": "im2win.channels16"}
NHWC_LAYOUT = "im2win.nhwc16"  # must match ops/conv/conv_nhwc.h
NHWC_BLOCK = 16
WINOGRAD_LAYOUTS = {"im2win.winograd2": 2, "im2win.winograd4": 4}  # must match ops/conv/winograd_nhwc.h
WINOGRAD_LAYOUT_OF_TILE = {tile: name for name, tile in WINOGRAD_LAYOUTS.items()}
# G of F(2x2, 3x3) and of F(4x4, 3x3) (interpolation points 0, 1, -1, (2, -2,) infinity).
_WINOGRAD_G = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
               4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}


def nhwc_packable(w_shape, group: int) -> bool:
    """Whether W of this shape (M x C/group x k...) can be stored in NHWC_LAYOUT."""
    if len(w_shape) < 3:
        return False
    m, cg = int(w_shape[0]), int(w_shape[1])
    mg = m // group if group >= 1 and m % group == 0 else 0
    depthwise = cg == 1 and mg == 1
    return mg > 0 and mg % NHWC_BLOCK == 0 and not depthwise and int(np.prod(w_shape)) > 0


def _nhwc_view(shape, group: int):
    """W's OIHW dims as (group, blocks, 16, C/group, taps) and the packed order's axes."""
    m, cg = int(shape[0]), int(shape[1])
    return (group, m // group // NHWC_BLOCK, NHWC_BLOCK, cg, int(np.prod(shape[2:], dtype=np.int64))), (0, 1, 4, 3, 2)


def pack_nhwc(w: np.ndarray, group: int = 1) -> np.ndarray:
    """OIHW weights in NHWC_LAYOUT order, same shape and dtype (nhwc_packable must hold)."""
    dims, order = _nhwc_view(w.shape, group)
    return np.ascontiguousarray(np.ascontiguousarray(w).reshape(dims).transpose(order)).reshape(w.shape)


def unpack_nhwc(w: np.ndarray, group: int = 1) -> np.ndarray:
    """Weights stored in NHWC_LAYOUT back to OIHW."""
    if not nhwc_packable(w.shape, group):
        raise ValueError(f"weight_layout {NHWC_LAYOUT} needs whole blocks of {NHWC_BLOCK} output channels per group "
                         f"and a conv that is not depthwise; W {tuple(w.shape)} with group {group} has neither")
    dims, order = _nhwc_view(w.shape, group)
    packed_dims = tuple(dims[i] for i in order)
    return np.ascontiguousarray(np.ascontiguousarray(w).reshape(packed_dims).transpose(np.argsort(order))).reshape(w.shape)


def winograd_packable(w_shape, group: int) -> bool:
    """Whether W of this shape can be stored as U (WINOGRAD_LAYOUTS): a 3x3 kernel, one group, M a
    multiple of 16 and C >= 1."""
    return (len(w_shape) == 4 and tuple(int(d) for d in w_shape[2:]) == (3, 3) and group == 1
            and int(w_shape[0]) > 0 and int(w_shape[0]) % NHWC_BLOCK == 0 and int(w_shape[1]) > 0)


def pack_winograd(w: np.ndarray, tile: int) -> np.ndarray:
    """OIHW 3x3 weights as U for F(tile x tile, 3x3), in float64 then rounded once, shape
    [M, C, a, a] (winograd_packable must hold)."""
    g = _WINOGRAD_G[tile]
    a = tile + 2
    m, c = int(w.shape[0]), int(w.shape[1])
    u = np.einsum("ri,mcij,qj->rqmc", g, np.asarray(w, np.float64), g)  # a x a x M x C
    u = u.reshape(a * a, m // NHWC_BLOCK, NHWC_BLOCK, c).transpose(0, 1, 3, 2)  # [i][block][c][16]
    return np.ascontiguousarray(u.astype(np.float32)).reshape(m, c, a, a)


def unpack_winograd(u: np.ndarray, layout: str) -> np.ndarray:
    """W (OIHW, 3x3, float64) from U stored in `layout`, by least squares (G has full column rank:
    exact up to U's rounding)."""
    tile = WINOGRAD_LAYOUTS[layout]
    a = tile + 2
    shape = tuple(int(d) for d in np.shape(u))
    if len(shape) != 4 or shape[2:] != (a, a) or shape[0] <= 0 or shape[0] % NHWC_BLOCK or shape[1] <= 0:
        raise ValueError(f"weight_layout {layout} holds U of a 3x3 kernel as [M, C, {a}, {a}] with M a multiple "
                         f"of {NHWC_BLOCK}, got W {list(shape)}")
    m, c = shape[:2]
    v = np.asarray(u, np.float64).reshape(a * a, m // NHWC_BLOCK, c, NHWC_BLOCK).transpose(0, 1, 3, 2)
    v = v.reshape(a, a, m, c)
    g_pinv = np.linalg.pinv(_WINOGRAD_G[tile])  # 3 x a
    return np.einsum("ir,rqmc,jq->mcij", g_pinv, v, g_pinv)


def _tiles(layout: str, out_channels: int, group: int):
    tile = LAYOUT_TILES[layout]
    per_group = out_channels // group
    for g in range(group):
        for m0 in range(0, per_group, tile):
            first = g * per_group + m0
            yield first, min(tile, per_group - m0)


def pack(w: np.ndarray, layout: str, group: int = 1) -> np.ndarray:
    """OIHW weights in `layout` order, same shape and dtype."""
    if layout == OIHW:
        return w
    flat = np.ascontiguousarray(w).reshape(w.shape[0], -1)
    k = flat.shape[1]
    out = np.empty(flat.size, w.dtype)
    for first, rm in _tiles(layout, w.shape[0], group):
        out[first * k:(first + rm) * k] = flat[first:first + rm].T.reshape(-1)
    return out.reshape(w.shape)


def unpack(w: np.ndarray, layout: str, group: int = 1) -> np.ndarray:
    """Weights stored in `layout` back to OIHW."""
    if layout == OIHW:
        return w
    if layout not in LAYOUT_TILES:
        raise ValueError(f"weight_layout {layout!r} is not supported ({OIHW}, {', '.join(LAYOUT_TILES)})")
    flat = np.ascontiguousarray(w).reshape(-1)
    k = flat.size // w.shape[0]
    out = np.empty((w.shape[0], k), w.dtype)
    for first, rm in _tiles(layout, w.shape[0], group):
        out[first:first + rm] = flat[first * k:(first + rm) * k].reshape(k, rm).T
    return out.reshape(w.shape)
