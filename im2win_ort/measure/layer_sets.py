"""Conv layer sets for the benchmark: the im2win paper's cv1-cv12 and the distinct conv shapes of
ResNet-50, VGG-16 and MobileNetV2 at 224x224, derived by walking each architecture."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    name: str
    channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    group: int = 1
    batch: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        def axis(n):
            return (n + 2 * self.pad - self.kernel) // self.stride + 1

        return axis(self.height), axis(self.width)

    @property
    def flops(self) -> int:
        ho, wo = self.out_hw
        return 2 * self.batch * self.out_channels * (self.channels // self.group) * self.kernel**2 * ho * wo

    @property
    def x_shape(self) -> list[int]:
        return [self.batch, self.channels, self.height, self.width]

    @property
    def w_shape(self) -> list[int]:
        return [self.out_channels, self.channels // self.group, self.kernel, self.kernel]

    def describe(self) -> str:
        g = f" g{self.group}" if self.group > 1 else ""
        return (f"{self.channels}x{self.height}x{self.width} -> {self.out_channels} k{self.kernel} s{self.stride}"
                f" p{self.pad}{g} N{self.batch}")


# The im2win paper's layers (MEC's cv1-cv12): C x H x W, M, k, s; pad 0.
_PAPER = [(3, 227, 227, 96, 11, 4), (3, 231, 231, 96, 11, 4), (3, 227, 227, 64, 7, 2), (64, 224, 224, 64, 7, 2),
          (96, 24, 24, 256, 5, 1), (256, 12, 12, 512, 3, 1), (3, 224, 224, 64, 3, 1), (64, 112, 112, 128, 3, 1),
          (64, 56, 56, 64, 3, 1), (128, 28, 28, 128, 3, 1), (256, 14, 14, 256, 3, 1), (512, 7, 7, 512, 3, 1)]


def paper(batches=(1, 8)) -> list[ConvLayer]:
    return [ConvLayer(f"cv{i + 1}", c, h, w, m, k, s, batch=n)
            for n in batches for i, (c, h, w, m, k, s) in enumerate(_PAPER)]


class _Walker:
    """Follows a network's feature map and records each distinct conv shape once."""

    def __init__(self, prefix: str, size: int = 224, channels: int = 3):
        self.prefix, self.size, self.channels = prefix, size, channels
        self.layers: dict[tuple, ConvLayer] = {}

    def conv(self, out_channels, kernel, stride=1, pad=None, group=1, channels=None, size=None):
        c = self.channels if channels is None else channels
        h = self.size if size is None else size
        pad = kernel // 2 if pad is None else pad
        layer = ConvLayer("", c, h, h, out_channels, kernel, stride, pad, group)
        key = (c, h, out_channels, kernel, stride, pad, group)
        if key not in self.layers:
            self.layers[key] = ConvLayer(f"{self.prefix}{len(self.layers) + 1}", c, h, h, out_channels, kernel,
                                         stride, pad, group)
        if channels is None and size is None:
            self.channels, self.size = out_channels, layer.out_hw[0]
        return layer

    def pool(self, stride=2):
        self.size //= stride


def resnet50() -> list[ConvLayer]:
    net = _Walker("resnet50.")
    net.conv(64, 7, 2)
    net.pool()  # 3x3 max-pool, stride 2
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for b in range(blocks):
            s = stride if b == 0 else 1
            c_in, size_in = net.channels, net.size
            if b == 0:  # projection shortcut
                net.conv(width * 4, 1, s, channels=c_in, size=size_in)
            net.conv(width, 1)
            net.conv(width, 3, s)  # the stride sits on the 3x3 (ResNet v1.5, as torchvision)
            net.conv(width * 4, 1)
    return list(net.layers.values())


def vgg16() -> list[ConvLayer]:
    net = _Walker("vgg16.")
    for width, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(convs):
            net.conv(width, 3)
        net.pool()
    return list(net.layers.values())


def mobilenetv2() -> list[ConvLayer]:
    net = _Walker("mobilenetv2.")
    net.conv(32, 3, 2)
    for expand, width, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for r in range(repeats):
            hidden = net.channels * expand
            if expand != 1:
                net.conv(hidden, 1)
            net.conv(hidden, 3, stride if r == 0 else 1, group=hidden)  # depthwise
            net.conv(width, 1)
    net.conv(1280, 1)
    return list(net.layers.values())


def tiny() -> list[ConvLayer]:
    """One small layer, for the benchmark's smoke test."""
    return [ConvLayer("tiny", 8, 12, 12, 16, 3, 1, 1)]


LAYER_SETS = {"paper": paper, "resnet50": resnet50, "vgg16": vgg16, "mobilenetv2": mobilenetv2, "tiny": tiny}
