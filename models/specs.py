"""Architecture tables shared by the two backends (onnx_builder and torch_models).

Both backends read the same tables and the same channel rules, so the networks they emit have the
same shapes, the same parameter names and (see weights.py) the same parameter values. Pure Python.

The tables are the published architectures (the torchvision model definitions' numbers):
ResNet (He et al. 2016; v1.5 layout: the stride of a bottleneck is on its 3x3 conv), VGG-16
(configuration "D"), MobileNetV2 (Sandler et al. 2018), AlexNet (the one-GPU variant torchvision
ships), SqueezeNet 1.1 and DenseNet-121 (Huang et al. 2017).
"""

from __future__ import annotations

import math

DEFAULT_RESOLUTION = 224
DEFAULT_NUM_CLASSES = 1000
BN_EPSILON = 1e-5

# name -> (block kind, blocks per stage)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
RESNET_STAGE_WIDTHS = (64, 128, 256, 512)
RESNET_STEM_WIDTH = 64
BOTTLENECK_EXPANSION = 4

# VGG-16 ("D"): numbers are 3x3 conv widths, "M" a 2x2 max pool of stride 2.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_HIDDEN = 4096

# MobileNetV2: (expansion t, output channels c, repeats n, first stride s)
MOBILENETV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENETV2_STEM = 32
MOBILENETV2_LAST = 1280
MOBILENETV2_ROUND = 8

# AlexNet features: ("conv", out, kernel, stride, pad) or ("pool", kernel, stride)
ALEXNET_FEATURES = (
    ("conv", 64, 11, 4, 2),
    ("pool", 3, 2),
    ("conv", 192, 5, 1, 2),
    ("pool", 3, 2),
    ("conv", 384, 3, 1, 1),
    ("conv", 256, 3, 1, 1),
    ("conv", 256, 3, 1, 1),
    ("pool", 3, 2),
)
ALEXNET_HIDDEN = 4096

# SqueezeNet 1.1: stem conv 3x3/2 with 64 channels, then fire modules (squeeze, expand1x1,
# expand3x3) and max pools 3x3/2 with ceil_mode; the classifier is a 1x1 conv.
SQUEEZENET_STEM = 64
SQUEEZENET_FEATURES = (
    "M",
    (16, 64, 64),
    (16, 64, 64),
    "M",
    (32, 128, 128),
    (32, 128, 128),
    "M",
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)

# DenseNet-121
DENSENET121_BLOCKS = (6, 12, 24, 16)
DENSENET121_GROWTH = 32
DENSENET121_INIT = 64
DENSENET_BN_SIZE = 4


def scaled(channels: int, width: float) -> int:
    """A channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def make_divisible(value: float, divisor: int = MOBILENETV2_ROUND) -> int:
    """MobileNetV2's channel rounding: nearest multiple of divisor, at least divisor, and never
    more than 10% below value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out(size: int, kernel: int, stride: int = 1, pad: int = 0, ceil_mode: bool = False) -> int:
    """Output extent of a convolution or pooling window along one axis (PyTorch's rule)."""
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"input extent {size} is smaller than the window {kernel} (pad {pad})")
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or the left padding
    return out


def check_options(width: float, resolution: int, num_classes: int) -> None:
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width!r}")
    if not (isinstance(resolution, int) and resolution > 0):
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
