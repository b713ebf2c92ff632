"""Pre-packed weight layouts of com.im2win::Conv's `weight_layout` attribute, in NumPy.

The native op packs OIHW weights once into the order its micro-kernels read (ops/conv/weight_pack.h),
which would leave the session holding two copies: ORT's initializer and the packed one. When the
rewriter stores W already packed, the op reads ORT's copy in place. Within each group, output
channels are cut into tiles of `tile` (the last one of a group may be smaller); each tile of rm
channels is stored as [k][rm] with k over C/group x Kh x Kw, and the tile that starts at output
channel m begins at m * K. The packed tensor keeps W's shape (and size): only the order changes.
"""

from __future__ import annotations

import numpy as np

OIHW = "OIHW"
LAYOUT_TILES = {"im2win.positions6": 6, "im2win.channels16": 16}  # must match ops/conv/weight_pack.cc
FAMILY_LAYOUTS = {"positions": "im2win.positions6", "channels": "im2win.channels16"}


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
