"""Seeded, deterministic parameters, shared by both backends.

Every parameter is a pure function of (seed, its name, its shape and, for BN statistics, the
expected statistics of its input): it is drawn from a generator seeded with the seed and a CRC-32 of the
name, so the values do not depend on the order in which a builder asks for them. The names are
PyTorch state_dict keys; torch_models loads the ONNX builder's tensors by name, so both backends
hold identical weights.

The scales keep activations O(1) through depth:
- conv and linear weights: He normal, std = sqrt(2 / fan_in);
- biases: uniform in [-0.1, 0.1];
- BatchNormalization: scale in [0.5, 1.5] (times `gamma_scale`, which residual branches use to
  stay small against their shortcut), bias in [-0.2, 0.2]; running mean and variance drawn around
  the statistics that the ONNX builder expects for the BN's input channel by channel (mean
  + N(0, 0.1^2) std, variance times U(0.5, 2)), so that, as in a trained network, each BN brings
  its output back to O(1) -- and none of them trivial, so a pass that folds BN into the Conv
  before it really changes the weights.
"""

from __future__ import annotations

import zlib

import numpy as np

# The scale of the last BatchNormalization of a residual branch (ResNet blocks, MobileNetV2
# inverted residuals with a shortcut): keeps the variance growth along a stage mild.
RESIDUAL_GAMMA_SCALE = 0.5


def generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def he_normal(seed: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    w = generator(seed, name).standard_normal(shape, dtype=np.float32)
    w *= np.float32(np.sqrt(2.0 / max(fan_in, 1)))
    return w


def small_bias(seed: int, name: str, size: int) -> np.ndarray:
    return generator(seed, name).uniform(-0.1, 0.1, size).astype(np.float32)


def conv(seed: int, prefix: str, shape: tuple[int, int, int, int], bias: bool) -> dict[str, np.ndarray]:
    """{prefix.weight: (M, C/group, kh, kw)[, prefix.bias: (M,)]}."""
    out = {f"{prefix}.weight": he_normal(seed, f"{prefix}.weight", tuple(shape))}
    if bias:
        out[f"{prefix}.bias"] = small_bias(seed, f"{prefix}.bias", shape[0])
    return out


def linear(seed: int, prefix: str, out_features: int, in_features: int) -> dict[str, np.ndarray]:
    """{prefix.weight: (out, in), prefix.bias: (out,)}: PyTorch's Linear layout (Gemm transB=1)."""
    return {
        f"{prefix}.weight": he_normal(seed, f"{prefix}.weight", (out_features, in_features)),
        f"{prefix}.bias": small_bias(seed, f"{prefix}.bias", out_features),
    }


def batch_norm(
    seed: int,
    prefix: str,
    channels: int,
    gamma_scale: float = 1.0,
    input_mean: np.ndarray | float = 0.0,
    input_var: np.ndarray | float = 1.0,
) -> dict[str, np.ndarray]:
    """{prefix.weight, prefix.bias, prefix.running_mean, prefix.running_var}, each (channels,).

    input_mean and input_var are the expected per-channel statistics of the BN's input: the running
    statistics are drawn around them, as a trained network's would be, so the output is O(1)
    whatever the input's scale."""
    g = generator(seed, f"{prefix}.batch_norm")
    gamma = g.uniform(0.5, 1.5, channels) * gamma_scale
    beta = g.uniform(-0.2, 0.2, channels)
    std = np.sqrt(np.maximum(np.broadcast_to(np.asarray(input_var, np.float64), (channels,)), 1e-4))
    mean = np.asarray(input_mean, np.float64) + g.normal(0.0, 0.1, channels) * std
    var = g.uniform(0.5, 2.0, channels) * std**2
    return {
        f"{prefix}.weight": gamma.astype(np.float32),
        f"{prefix}.bias": beta.astype(np.float32),
        f"{prefix}.running_mean": mean.astype(np.float32),
        f"{prefix}.running_var": var.astype(np.float32),
    }


def fold_batch_norm(
    weight: np.ndarray, bias: np.ndarray | None, bn: dict[str, np.ndarray], prefix: str, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight and bias with the BatchNormalization after it folded in (eval mode)."""
    var = bn[f"{prefix}.running_var"].astype(np.float64)
    scale = bn[f"{prefix}.weight"].astype(np.float64) / np.sqrt(var + epsilon)
    b = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = (b - bn[f"{prefix}.running_mean"]) * scale + bn[f"{prefix}.bias"]
    return w.astype(np.float32), b.astype(np.float32)
