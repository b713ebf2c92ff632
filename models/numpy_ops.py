"""The few NCHW float32 layers the ONNX builder runs in NumPy while it builds a network.

They push a small calibration batch through the network as it is being built, so that every
BatchNormalization gets running statistics close to the real statistics of its input (as a trained
network's are) and activations stay O(1) through any depth. Plain NumPy, written for clarity at
small sizes, not for speed.
"""

from __future__ import annotations

import numpy as np

from . import specs


def _out_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool = False) -> int:
    return specs.conv_out(size, kernel, stride, pad, ceil_mode)


def _windows(xp: np.ndarray, kernel: int, stride: int, ho: int, wo: int):
    """(i, j, view) for every kernel tap: the strided view of padded xp that the tap reads."""
    for i in range(kernel):
        for j in range(kernel):
            yield i, j, xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int, groups: int) -> np.ndarray:
    """ONNX Conv with a square kernel, symmetric padding, no dilation: one matmul per tap."""
    n, c, h, wd = x.shape
    m, cg, k, _ = w.shape
    ho, wo = _out_size(h, k, stride, pad), _out_size(wd, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    mg = m // groups
    acc = np.zeros((groups, n * ho * wo, mg), np.float32)
    wg = w.reshape(groups, mg, cg, k, k)
    for i, j, view in _windows(xp, k, stride, ho, wo):
        # view: (n, c, ho, wo) -> (groups, n*ho*wo, cg)
        patch = view.reshape(n, groups, cg, ho * wo).transpose(1, 0, 3, 2).reshape(groups, n * ho * wo, cg)
        acc += patch @ wg[:, :, :, i, j].transpose(0, 2, 1)
    y = acc.reshape(groups, n, ho * wo, mg).transpose(1, 0, 3, 2).reshape(n, m, ho, wo)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=np.float32)


def batch_norm(x: np.ndarray, gamma, beta, mean, var, epsilon: float) -> np.ndarray:
    scale = (gamma / np.sqrt(var + epsilon)).astype(np.float32)
    shift = (beta - mean * scale).astype(np.float32)
    return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def max_pool(x: np.ndarray, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = False) -> np.ndarray:
    n, c, h, w = x.shape
    ho, wo = _out_size(h, kernel, stride, pad, ceil_mode), _out_size(w, kernel, stride, pad, ceil_mode)
    extra_h = max(0, (ho - 1) * stride + kernel - h - 2 * pad)
    extra_w = max(0, (wo - 1) * stride + kernel - w - 2 * pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad + extra_h), (pad, pad + extra_w)), constant_values=-np.inf)
    out = np.full((n, c, ho, wo), -np.inf, np.float32)
    for _, _, view in _windows(xp, kernel, stride, ho, wo):
        np.maximum(out, view, out=out)
    return out


def average_pool(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    n, c, h, w = x.shape
    ho, wo = _out_size(h, kernel, stride, 0), _out_size(w, kernel, stride, 0)
    out = np.zeros((n, c, ho, wo), np.float32)
    for _, _, view in _windows(x, kernel, stride, ho, wo):
        out += view
    return out / np.float32(kernel * kernel)


def global_average_pool(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0))


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, np.float32(0), np.float32(6))


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (x.reshape(x.shape[0], -1) @ w.T + b).reshape(x.shape[0], -1, 1, 1)
