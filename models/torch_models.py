"""The networks in plain torch.nn, exported with torch.onnx.export.

PyTorch is imported lazily: this module imports without it, and only create(), export() and
export_model() need it. There is no torchvision here; the definitions follow the torchvision
architectures (see specs.py) with the same module names, so the parameters are the torchvision
state_dict keys. Two deliberate differences: AlexNet and VGG-16 flatten their last feature map
without an adaptive average pool (identical at 224, where that pool is the identity, and exportable
at every resolution), and the weights are never downloaded: each model loads the seeded parameters
of onnx_builder.parameters(), so this backend and the ONNX builder hold the same tensors.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
import onnx

from . import onnx_builder, specs

OPSET = 17
INPUT_NAME = onnx_builder.INPUT_NAME
OUTPUT_NAME = onnx_builder.OUTPUT_NAME


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the torch backend needs PyTorch (pip install torch); the onnx backend does not"
        ) from e
    return torch


def _definitions():
    """The nn.Module classes, defined on first use so that importing this module needs no torch."""
    global _DEFS
    if _DEFS is not None:
        return _DEFS
    torch = _torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = _downsample(inplanes, planes, stride)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        expansion = specs.BOTTLENECK_EXPANSION

        def __init__(self, inplanes: int, planes: int, stride: int):
            super().__init__()
            out = planes * self.expansion
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride here
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU()
            self.downsample = _downsample(inplanes, out, stride)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    def _downsample(inplanes: int, out: int, stride: int):
        if stride == 1 and inplanes == out:
            return None
        return nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    class ResNet(nn.Module):
        def __init__(self, name: str, width: float, num_classes: int):
            super().__init__()
            kind, layers = specs.RESNETS[name]
            block = BasicBlock if kind == "basic" else Bottleneck
            inplanes = specs.scaled(specs.RESNET_STEM_WIDTH, width)
            self.conv1 = nn.Conv2d(3, inplanes, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(inplanes)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            for stage, (blocks, planes) in enumerate(zip(layers, specs.RESNET_STAGE_WIDTHS)):
                planes = specs.scaled(planes, width)
                seq = []
                for b in range(blocks):
                    seq.append(block(inplanes, planes, 2 if stage > 0 and b == 0 else 1))
                    inplanes = planes * block.expansion
                setattr(self, f"layer{stage + 1}", nn.Sequential(*seq))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class VGG16(nn.Module):
        def __init__(self, width: float, num_classes: int, resolution: int):
            super().__init__()
            layers, c, size = [], 3, resolution
            for v in specs.VGG16_CONFIG:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    size = specs.conv_out(size, 2, 2)
                else:
                    out = specs.scaled(v, width)
                    layers += [nn.Conv2d(c, out, 3, 1, 1), nn.ReLU()]
                    c = out
            self.features = nn.Sequential(*layers)
            hidden = specs.scaled(specs.VGG_HIDDEN, width)
            self.classifier = nn.Sequential(
                nn.Linear(c * size * size, hidden), nn.ReLU(), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class AlexNet(nn.Module):
        def __init__(self, width: float, num_classes: int, resolution: int):
            super().__init__()
            layers, c, size = [], 3, resolution
            for layer in specs.ALEXNET_FEATURES:
                if layer[0] == "pool":
                    layers.append(nn.MaxPool2d(layer[1], layer[2]))
                    size = specs.conv_out(size, layer[1], layer[2])
                else:
                    _, out, k, s, p = layer
                    size = specs.conv_out(size, k, s, p)
                    out = specs.scaled(out, width)
                    layers += [nn.Conv2d(c, out, k, s, p), nn.ReLU()]
                    c = out
            self.features = nn.Sequential(*layers)
            hidden = specs.scaled(specs.ALEXNET_HIDDEN, width)
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(c * size * size, hidden), nn.ReLU(),
                nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class Fire(nn.Module):
        def __init__(self, inplanes: int, squeeze: int, e1: int, e3: int):
            super().__init__()
            self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
            self.squeeze_activation = nn.ReLU()
            self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
            self.expand1x1_activation = nn.ReLU()
            self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
            self.expand3x3_activation = nn.ReLU()

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat(
                [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
            )

    class SqueezeNet11(nn.Module):
        def __init__(self, width: float, num_classes: int):
            super().__init__()
            c = specs.scaled(specs.SQUEEZENET_STEM, width)
            layers = [nn.Conv2d(3, c, 3, 2), nn.ReLU()]
            for v in specs.SQUEEZENET_FEATURES:
                if v == "M":
                    layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                else:
                    squeeze, e1, e3 = (specs.scaled(n, width) for n in v)
                    layers.append(Fire(c, squeeze, e1, e3))
                    c = e1 + e3
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Conv2d(c, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
            )

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    def conv_bn_relu6(inp: int, out: int, k: int, stride: int = 1, groups: int = 1):
        return nn.Sequential(
            nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out), nn.ReLU6()
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expand: int):
            super().__init__()
            hidden = int(round(inp * expand))
            self.use_residual = stride == 1 and inp == out
            layers = [] if expand == 1 else [conv_bn_relu6(inp, hidden, 1)]
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, width: float, num_classes: int):
            super().__init__()
            c = specs.make_divisible(specs.MOBILENETV2_STEM * width)
            last = specs.make_divisible(specs.MOBILENETV2_LAST * max(1.0, width))
            layers = [conv_bn_relu6(3, c, 3, 2)]
            for t, ch, n, s in specs.MOBILENETV2_SETTING:
                out = specs.make_divisible(ch * width)
                for r in range(n):
                    layers.append(InvertedResidual(c, out, s if r == 0 else 1, t))
                    c = out
            layers.append(conv_bn_relu6(c, last, 1))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    class DenseLayer(nn.Module):
        def __init__(self, inp: int, growth: int):
            super().__init__()
            self.norm1 = nn.BatchNorm2d(inp)
            self.relu1 = nn.ReLU()
            self.conv1 = nn.Conv2d(inp, specs.DENSENET_BN_SIZE * growth, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(specs.DENSENET_BN_SIZE * growth)
            self.relu2 = nn.ReLU()
            self.conv2 = nn.Conv2d(specs.DENSENET_BN_SIZE * growth, growth, 3, 1, 1, bias=False)

        def forward(self, features: list):
            x = features[0] if len(features) == 1 else torch.cat(features, 1)
            x = self.conv1(self.relu1(self.norm1(x)))
            return self.conv2(self.relu2(self.norm2(x)))

    class DenseBlock(nn.ModuleDict):
        def __init__(self, layers: int, inp: int, growth: int):
            super().__init__({f"denselayer{i + 1}": DenseLayer(inp + i * growth, growth) for i in range(layers)})

        def forward(self, x):
            features = [x]
            for layer in self.values():
                features.append(layer(features))
            return torch.cat(features, 1)

    class Transition(nn.Sequential):
        def __init__(self, inp: int, out: int):
            super().__init__()
            self.norm = nn.BatchNorm2d(inp)
            self.relu = nn.ReLU()
            self.conv = nn.Conv2d(inp, out, 1, bias=False)
            self.pool = nn.AvgPool2d(2, 2)

    class DenseNet121(nn.Module):
        def __init__(self, width: float, num_classes: int):
            super().__init__()
            growth = specs.scaled(specs.DENSENET121_GROWTH, width)
            c = specs.scaled(specs.DENSENET121_INIT, width)
            self.features = nn.Sequential()
            self.features.add_module("conv0", nn.Conv2d(3, c, 7, 2, 3, bias=False))
            self.features.add_module("norm0", nn.BatchNorm2d(c))
            self.features.add_module("relu0", nn.ReLU())
            self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
            for i, layers in enumerate(specs.DENSENET121_BLOCKS):
                self.features.add_module(f"denseblock{i + 1}", DenseBlock(layers, c, growth))
                c += layers * growth
                if i != len(specs.DENSENET121_BLOCKS) - 1:
                    self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                    c //= 2
            self.features.add_module("norm5", nn.BatchNorm2d(c))
            self.relu5 = nn.ReLU()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)

        def forward(self, x):
            x = self.avgpool(self.relu5(self.features(x)))
            return self.classifier(torch.flatten(x, 1))

    _DEFS = {
        "resnet18": lambda w, k, r: ResNet("resnet18", w, k),
        "resnet50": lambda w, k, r: ResNet("resnet50", w, k),
        "vgg16": VGG16,
        "mobilenet_v2": lambda w, k, r: MobileNetV2(w, k),
        "alexnet": AlexNet,
        "squeezenet1_1": lambda w, k, r: SqueezeNet11(w, k),
        "densenet121": lambda w, k, r: DenseNet121(w, k),
    }
    return _DEFS


_DEFS: dict | None = None

NAMES = tuple(onnx_builder.NETWORKS)


def create(
    name: str,
    *,
    width: float = 1.0,
    resolution: int = specs.DEFAULT_RESOLUTION,
    num_classes: int = specs.DEFAULT_NUM_CLASSES,
    seed: int = 0,
):
    """The nn.Module of network `name` in eval mode, holding the seeded parameters that the ONNX
    builder generates for the same options (loaded by state_dict key; a missing, extra or
    misshapen parameter is an error)."""
    torch = _torch()
    if name not in NAMES:
        raise KeyError(f"unknown network {name!r}; choose from: {', '.join(NAMES)}")
    specs.check_options(width, resolution, num_classes)
    params = onnx_builder.parameters(name, width=width, resolution=resolution, num_classes=num_classes, seed=seed)
    model = _definitions()[name](width, num_classes, resolution)
    state = model.state_dict()
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    if expected != set(params):
        raise RuntimeError(
            f"{name}: torch and ONNX parameters differ: only torch {sorted(expected - set(params))[:5]}, "
            f"only ONNX {sorted(set(params) - expected)[:5]}"
        )
    for key, value in params.items():
        if tuple(state[key].shape) != value.shape:
            raise RuntimeError(f"{name}: {key} is {tuple(state[key].shape)} in torch, {value.shape} in ONNX")
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_model(
    name: str,
    *,
    width: float = 1.0,
    resolution: int = specs.DEFAULT_RESOLUTION,
    num_classes: int = specs.DEFAULT_NUM_CLASSES,
    seed: int = 0,
    fold_bn: bool = False,
    batch_dynamic: bool = True,
    batch: int = 1,
    dynamo: bool = False,
    opset: int | None = None,
) -> onnx.ModelProto:
    """Network `name` exported with torch.onnx.export, as an onnx.ModelProto.

    The TorchScript exporter (dynamo=False, the default) writes the graph that onnx_builder emits:
    opset 17, input "input", output "logits", batch axis "N" when batch_dynamic (else `batch`).
    Its constant folding, which folds each BatchNormalization into the Conv before it, runs only
    with fold_bn. dynamo=True uses the torch.export-based exporter (needs onnxscript), whose
    optimizer always folds BN and whose opset defaults to 18 (its own: it cannot convert these
    graphs down to 17)."""
    torch = _torch()
    if opset is None:
        opset = 18 if dynamo else OPSET
    if not batch_dynamic and not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    model = create(name, width=width, resolution=resolution, num_classes=num_classes, seed=seed)
    example = torch.zeros(batch if not batch_dynamic else 1, 3, resolution, resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if dynamo:
            dynamic_shapes = ({0: torch.export.Dim("N")},) if batch_dynamic else None
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes, external_data=False,
            )
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], do_constant_folding=bool(fold_bn),
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if batch_dynamic else None,
            )
            proto = onnx.load_model_from_string(buffer.getvalue())
    options = dict(width=width, resolution=resolution, num_classes=num_classes, seed=seed, fold_bn=fold_bn)
    metadata = {"im2win.network": name, "im2win.backend": "torch-dynamo" if dynamo else "torch"}
    metadata.update((f"im2win.{k}", int(v) if isinstance(v, bool) else v) for k, v in options.items())
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))
    return proto


def export(name: str, path: str | os.PathLike, batch_dynamic: bool = True, **options: Any) -> str:
    """Exports network `name` with torch.onnx.export to `path` (written atomically); returns the
    path. Options as in export_model."""
    from .export import save_atomic

    return save_atomic(export_model(name, batch_dynamic=batch_dynamic, **options), path)


__all__ = ["NAMES", "OPSET", "create", "export", "export_model"]
