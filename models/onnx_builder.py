"""Standard CNNs emitted directly as ONNX models (numpy + onnx.helper only; no torch).

The graphs are the ones torch.onnx.export (TorchScript exporter, opset 17, eval mode, no constant
folding) writes for the plain torch.nn definitions in torch_models.py: NCHW float32, Conv without
bias followed by BatchNormalization where the network has BN, Relu, Clip(0, 6) with Constant bounds
for ReLU6, Add for residuals, MaxPool / AveragePool / GlobalAveragePool, Concat for DenseNet and
SqueezeNet, Flatten + Gemm (transB=1) classifiers; no Dropout (eval mode). The batch dimension is
the symbolic "N", the input is "input", the output "logits" of shape (N, num_classes).

Parameter names are the PyTorch state_dict keys and their values come from weights.py (seeded He
init). While it builds, the builder runs the network in NumPy (numpy_ops.py) on a small seeded
calibration batch and draws each BatchNormalization's running statistics around the real statistics
of its input, as a trained network's are: activations stay O(1) at any depth and width, and
folding BN changes the weights for real. torch_models loads these same tensors
(parameters()), so both backends compute the same function; reference_run() gives the NumPy
run's input and logits, which the graph must reproduce.

Options of every builder (all keyword-only):
    width        channel multiplier (e.g. 0.125 for a small test variant), default 1.0
    resolution   input height = width, default 224
    num_classes  default 1000
    seed         parameter seed, default 0
    fold_bn      fold each BatchNormalization that directly follows a Conv into that Conv's weight
                 and bias (what torch.onnx.export's default constant folding does), default False
    batch_dynamic  the batch dimension is the symbol "N" (default True); else it is `batch`
    batch        the fixed batch size when not batch_dynamic, default 1

AlexNet and VGG-16 have no adaptive average pool here: their classifier takes the C*H*W features of
the last pool at the chosen resolution (at 224, as in torchvision, where the adaptive pool is then
the identity).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import numpy_ops, specs, weights

OPSET = 17
IR_VERSION = 8  # what torch.onnx.export writes for opset 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PRODUCER = "im2win-ort models.onnx_builder"


class Tensor(NamedTuple):
    """A value of the graph under construction: its name, its (static) channel and spatial
    extents, and, when the builder calibrates, its value for the calibration batch."""

    name: str
    c: int
    h: int
    w: int
    sample: np.ndarray | None = None


class GraphBuilder:
    """Appends nodes and initializers; every layer method returns the Tensor it produced.

    With calibrate=True the layers also run, in NumPy, on a small seeded batch of N(0, 1) images
    (at most CALIBRATION_RESOLUTION pixels a side; as many images as make CALIBRATION_PIXELS
    pixels, at least 4), and each BatchNormalization's running statistics are drawn around the
    statistics of its real input."""

    CALIBRATION_RESOLUTION = 64
    CALIBRATION_PIXELS = 4 * 64 * 64

    def __init__(self, seed: int = 0, fold_bn: bool = False, calibrate: bool = True):
        self.seed = int(seed)
        self.fold_bn = bool(fold_bn)
        self.calibrate = bool(calibrate)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._names: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        if name not in self._names:
            self._names.add(name)
            return name
        i = 1
        while f"{name}_{i}" in self._names:
            i += 1
        self._names.add(f"{name}_{i}")
        return f"{name}_{i}"

    def node(self, op_type: str, inputs: Sequence[str], name: str, **attrs) -> str:
        """Adds a node whose single output tensor has the node's (unique) name."""
        name = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def add_params(self, params: dict[str, np.ndarray]) -> None:
        for key, value in params.items():
            if key in self.initializers:
                raise ValueError(f"parameter {key!r} defined twice")
            self.initializers[key] = value

    def _run(self, x: Tensor, fn, *args, **kwargs) -> np.ndarray | None:
        return None if x.sample is None else fn(x.sample, *args, **kwargs)

    def input(self, channels: int, resolution: int) -> Tensor:
        sample = None
        if self.calibrate:
            r = min(resolution, self.CALIBRATION_RESOLUTION)
            shape = (max(4, self.CALIBRATION_PIXELS // (r * r)), channels, r, r)
            sample = weights.generator(self.seed, "calibration.input").standard_normal(shape, dtype=np.float32)
        return Tensor(INPUT_NAME, channels, resolution, resolution, sample)

    # -- layers ---------------------------------------------------------------------------------
    def conv(
        self,
        x: Tensor,
        prefix: str,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bias: bool = False,
        bn: str | None = None,
        gamma_scale: float = 1.0,
    ) -> Tensor:
        """Conv2d `prefix` (square kernel), followed by BatchNormalization `bn` when given."""
        if x.c % groups or out_channels % groups:
            raise ValueError(f"{prefix}: channels {x.c} -> {out_channels} not divisible by group {groups}")
        params = weights.conv(self.seed, prefix, (out_channels, x.c // groups, kernel, kernel), bias)
        h, w = (specs.conv_out(s, kernel, stride, pad) for s in (x.h, x.w))
        attrs = dict(
            dilations=[1, 1], group=groups, kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride] * 2
        )
        wt, b = params[f"{prefix}.weight"], params.get(f"{prefix}.bias")
        sample = self._run(x, numpy_ops.conv2d, wt, b, stride, pad, groups)
        if bn and self.fold_bn:
            bn_params = self._bn_params(bn, out_channels, gamma_scale, sample)
            wt, b = weights.fold_batch_norm(wt, b, bn_params, bn, specs.BN_EPSILON)
            params = {f"{prefix}.weight": wt, f"{prefix}.bias": b}
            sample = None if sample is None else self._apply_bn(sample, bn_params, bn)
            bn = None
        self.add_params(params)
        y = self.node("Conv", [x.name, *params], prefix, **attrs)
        out = Tensor(y, out_channels, h, w, sample)
        if bn:
            out = self.batch_norm(out, bn, gamma_scale)
        return out

    def _bn_params(self, prefix: str, channels: int, gamma_scale: float, sample: np.ndarray | None):
        if sample is None:
            return weights.batch_norm(self.seed, prefix, channels, gamma_scale)
        stats = sample.astype(np.float64)
        # rounded to float16 precision: the initializers do not depend on the BLAS's last bits
        mean = stats.mean(axis=(0, 2, 3)).astype(np.float16).astype(np.float64)
        var = stats.var(axis=(0, 2, 3))
        # a channel that barely varies on the small batch is not amplified without bound
        var = np.maximum(var, 0.1 * var.mean() + 1e-4).astype(np.float16).astype(np.float64)
        return weights.batch_norm(self.seed, prefix, channels, gamma_scale, mean, var)

    @staticmethod
    def _apply_bn(sample: np.ndarray, params: dict[str, np.ndarray], prefix: str) -> np.ndarray:
        return numpy_ops.batch_norm(
            sample, *(params[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")),
            specs.BN_EPSILON,
        )

    def batch_norm(self, x: Tensor, prefix: str, gamma_scale: float = 1.0) -> Tensor:
        """BatchNormalization `prefix` (a standalone one is never folded: conv(bn=...) folds)."""
        params = self._bn_params(prefix, x.c, gamma_scale, x.sample)
        self.add_params(params)
        y = self.node(
            "BatchNormalization", [x.name, *params], prefix, epsilon=specs.BN_EPSILON, momentum=0.9
        )
        return x._replace(name=y, sample=self._run(x, self._apply_bn, params, prefix))

    def relu(self, x: Tensor, name: str) -> Tensor:
        return x._replace(name=self.node("Relu", [x.name], name), sample=self._run(x, numpy_ops.relu))

    def relu6(self, x: Tensor, name: str) -> Tensor:
        """Clip(x, 0, 6) with its bounds as Constant nodes, as PyTorch exports ReLU6."""
        lo = self.node("Constant", [], f"{name}.min", value=helper.make_tensor("value", TensorProto.FLOAT, [], [0.0]))
        hi = self.node("Constant", [], f"{name}.max", value=helper.make_tensor("value", TensorProto.FLOAT, [], [6.0]))
        return x._replace(name=self.node("Clip", [x.name, lo, hi], name), sample=self._run(x, numpy_ops.relu6))

    def add(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        if a[1:4] != b[1:4]:
            raise ValueError(f"{name}: shapes {a[1:4]} and {b[1:4]} differ")
        y = self.node("Add", [a.name, b.name], name)
        return a._replace(name=y, sample=None if a.sample is None else a.sample + b.sample)

    def max_pool(self, x: Tensor, name: str, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = False) -> Tensor:
        h, w = (specs.conv_out(s, kernel, stride, pad, ceil_mode) for s in (x.h, x.w))
        y = self.node(
            "MaxPool", [x.name], name, ceil_mode=int(ceil_mode), dilations=[1, 1],
            kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride] * 2,
        )
        return Tensor(y, x.c, h, w, self._run(x, numpy_ops.max_pool, kernel, stride, pad, ceil_mode))

    def average_pool(self, x: Tensor, name: str, kernel: int, stride: int) -> Tensor:
        h, w = (specs.conv_out(s, kernel, stride) for s in (x.h, x.w))
        y = self.node(
            "AveragePool", [x.name], name, ceil_mode=0, count_include_pad=1,
            kernel_shape=[kernel, kernel], pads=[0] * 4, strides=[stride] * 2,
        )
        return Tensor(y, x.c, h, w, self._run(x, numpy_ops.average_pool, kernel, stride))

    def global_average_pool(self, x: Tensor, name: str) -> Tensor:
        y = self.node("GlobalAveragePool", [x.name], name)
        return Tensor(y, x.c, 1, 1, self._run(x, numpy_ops.global_average_pool))

    def concat(self, xs: Sequence[Tensor], name: str) -> Tensor:
        if len({(t.h, t.w) for t in xs}) != 1:
            raise ValueError(f"{name}: spatial extents differ: {[t[2:4] for t in xs]}")
        y = self.node("Concat", [t.name for t in xs], name, axis=1)
        sample = None if xs[0].sample is None else np.concatenate([t.sample for t in xs], axis=1)
        return Tensor(y, sum(t.c for t in xs), xs[0].h, xs[0].w, sample)

    def flatten(self, x: Tensor, name: str) -> Tensor:
        y = self.node("Flatten", [x.name], name, axis=1)
        sample = self._run(x, lambda s: s.reshape(s.shape[0], -1, 1, 1))
        if sample is not None and sample.shape[1] != x.c * x.h * x.w:
            sample = None  # calibrated at a smaller resolution: the classifier's input differs
        return Tensor(y, x.c * x.h * x.w, 1, 1, sample)

    def linear(self, x: Tensor, prefix: str, out_features: int) -> Tensor:
        """Gemm(x, W^T) + b on a flattened (N, features) value."""
        if (x.h, x.w) != (1, 1):
            raise ValueError(f"{prefix}: Gemm needs a flattened input")
        params = weights.linear(self.seed, prefix, out_features, x.c)
        self.add_params(params)
        y = self.node("Gemm", [x.name, *params], prefix, alpha=1.0, beta=1.0, transB=1)
        sample = self._run(x, numpy_ops.linear, params[f"{prefix}.weight"], params[f"{prefix}.bias"])
        return Tensor(y, out_features, 1, 1, sample)

    # -- model ----------------------------------------------------------------------------------
    def model(
        self, x: Tensor, output: Tensor, graph_name: str, batch: int | str = "N", metadata: dict | None = None
    ) -> onnx.ModelProto:
        """The model whose input is `x` (NCHW) and whose output, renamed "logits", is `output`."""
        if (output.h, output.w) != (1, 1):
            raise ValueError("the output must be a flattened (N, classes) value")
        for n in self.nodes:  # the last node's output becomes "logits"
            n.input[:] = [OUTPUT_NAME if i == output.name else i for i in n.input]
            n.output[:] = [OUTPUT_NAME if o == output.name else o for o in n.output]
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, x.c, x.h, x.w])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, output.c])],
        )
        for key, value in self.initializers.items():  # in place: one copy of the (large) weights
            t = graph.initializer.add()
            t.name = key
            t.data_type = TensorProto.FLOAT
            t.dims.extend(value.shape)
            t.raw_data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER, ir_version=IR_VERSION
        )
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=str(key), value=str(value))
        return model


# ----------------------------------------------------------------------------------------------
# Networks: each function adds the layers to g and returns the logits Tensor.
# ----------------------------------------------------------------------------------------------

def _resnet(g: GraphBuilder, x: Tensor, name: str, width: float, num_classes: int) -> Tensor:
    kind, layers = specs.RESNETS[name]
    expansion = specs.BOTTLENECK_EXPANSION if kind == "bottleneck" else 1
    stem = specs.scaled(specs.RESNET_STEM_WIDTH, width)
    x = g.conv(x, "conv1", stem, 7, 2, 3, bn="bn1")
    x = g.relu(x, "relu")
    x = g.max_pool(x, "maxpool", 3, 2, 1)
    for stage, (blocks, planes) in enumerate(zip(layers, specs.RESNET_STAGE_WIDTHS)):
        planes = specs.scaled(planes, width)
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if stage > 0 and b == 0 else 1
            out_channels = planes * expansion
            if kind == "basic":
                y = g.conv(x, f"{p}.conv1", planes, 3, stride, 1, bn=f"{p}.bn1")
                y = g.relu(y, f"{p}.relu1")
                y = g.conv(y, f"{p}.conv2", planes, 3, 1, 1, bn=f"{p}.bn2", gamma_scale=weights.RESIDUAL_GAMMA_SCALE)
            else:  # v1.5: the stride is on the 3x3 conv
                y = g.conv(x, f"{p}.conv1", planes, 1, bn=f"{p}.bn1")
                y = g.relu(y, f"{p}.relu1")
                y = g.conv(y, f"{p}.conv2", planes, 3, stride, 1, bn=f"{p}.bn2")
                y = g.relu(y, f"{p}.relu2")
                y = g.conv(y, f"{p}.conv3", out_channels, 1, bn=f"{p}.bn3", gamma_scale=weights.RESIDUAL_GAMMA_SCALE)
            if stride != 1 or x.c != out_channels:
                x = g.conv(x, f"{p}.downsample.0", out_channels, 1, stride, bn=f"{p}.downsample.1")
            x = g.relu(g.add(y, x, f"{p}.add"), f"{p}.relu_out")
    x = g.flatten(g.global_average_pool(x, "avgpool"), "flatten")
    return g.linear(x, "fc", num_classes)


def _vgg16(g: GraphBuilder, x: Tensor, width: float, num_classes: int) -> Tensor:
    i = 0
    for v in specs.VGG16_CONFIG:
        if v == "M":
            x = g.max_pool(x, f"features.{i}", 2, 2)
            i += 1
        else:
            x = g.conv(x, f"features.{i}", specs.scaled(v, width), 3, 1, 1, bias=True)
            x = g.relu(x, f"features.{i + 1}")
            i += 2
    hidden = specs.scaled(specs.VGG_HIDDEN, width)
    x = g.flatten(x, "flatten")
    x = g.relu(g.linear(x, "classifier.0", hidden), "classifier.1")
    x = g.relu(g.linear(x, "classifier.3", hidden), "classifier.4")
    return g.linear(x, "classifier.6", num_classes)


def _alexnet(g: GraphBuilder, x: Tensor, width: float, num_classes: int) -> Tensor:
    i = 0
    for layer in specs.ALEXNET_FEATURES:
        if layer[0] == "pool":
            x = g.max_pool(x, f"features.{i}", layer[1], layer[2])
            i += 1
        else:
            _, out, k, s, p = layer
            x = g.conv(x, f"features.{i}", specs.scaled(out, width), k, s, p, bias=True)
            x = g.relu(x, f"features.{i + 1}")
            i += 2
    hidden = specs.scaled(specs.ALEXNET_HIDDEN, width)
    x = g.flatten(x, "flatten")
    x = g.relu(g.linear(x, "classifier.1", hidden), "classifier.2")
    x = g.relu(g.linear(x, "classifier.4", hidden), "classifier.5")
    return g.linear(x, "classifier.6", num_classes)


def _squeezenet1_1(g: GraphBuilder, x: Tensor, width: float, num_classes: int) -> Tensor:
    x = g.conv(x, "features.0", specs.scaled(specs.SQUEEZENET_STEM, width), 3, 2, bias=True)
    x = g.relu(x, "features.1")
    i = 2
    for v in specs.SQUEEZENET_FEATURES:
        p = f"features.{i}"
        if v == "M":
            x = g.max_pool(x, p, 3, 2, ceil_mode=True)
        else:
            squeeze, e1, e3 = (specs.scaled(c, width) for c in v)
            s = g.relu(g.conv(x, f"{p}.squeeze", squeeze, 1, bias=True), f"{p}.squeeze_activation")
            a = g.relu(g.conv(s, f"{p}.expand1x1", e1, 1, bias=True), f"{p}.expand1x1_activation")
            b = g.relu(g.conv(s, f"{p}.expand3x3", e3, 3, 1, 1, bias=True), f"{p}.expand3x3_activation")
            x = g.concat([a, b], f"{p}.concat")
        i += 1
    x = g.relu(g.conv(x, "classifier.1", num_classes, 1, bias=True), "classifier.2")
    return g.flatten(g.global_average_pool(x, "classifier.3"), "flatten")


def _mobilenet_v2(g: GraphBuilder, x: Tensor, width: float, num_classes: int) -> Tensor:
    def conv_bn_relu6(x: Tensor, p: str, out: int, k: int, stride: int = 1, groups: int = 1) -> Tensor:
        y = g.conv(x, f"{p}.0", out, k, stride, (k - 1) // 2, groups, bn=f"{p}.1")
        return g.relu6(y, f"{p}.2")

    channels = specs.make_divisible(specs.MOBILENETV2_STEM * width)
    last = specs.make_divisible(specs.MOBILENETV2_LAST * max(1.0, width))
    x = conv_bn_relu6(x, "features.0", channels, 3, 2)
    i = 1
    for t, c, n, s in specs.MOBILENETV2_SETTING:
        out = specs.make_divisible(c * width)
        for r in range(n):
            stride = s if r == 0 else 1
            p = f"features.{i}.conv"
            hidden = int(round(x.c * t))
            residual = stride == 1 and x.c == out
            y, j = x, 0
            if t != 1:
                y = conv_bn_relu6(y, f"{p}.{j}", hidden, 1)
                j += 1
            y = conv_bn_relu6(y, f"{p}.{j}", hidden, 3, stride, groups=hidden)
            gamma = weights.RESIDUAL_GAMMA_SCALE if residual else 1.0
            y = g.conv(y, f"{p}.{j + 1}", out, 1, bn=f"{p}.{j + 2}", gamma_scale=gamma)
            x = g.add(x, y, f"features.{i}.add") if residual else y
            i += 1
    x = conv_bn_relu6(x, f"features.{i}", last, 1)
    x = g.flatten(g.global_average_pool(x, "avgpool"), "flatten")
    return g.linear(x, "classifier.1", num_classes)


def _densenet121(g: GraphBuilder, x: Tensor, width: float, num_classes: int) -> Tensor:
    growth = specs.scaled(specs.DENSENET121_GROWTH, width)
    x = g.conv(x, "features.conv0", specs.scaled(specs.DENSENET121_INIT, width), 7, 2, 3, bn="features.norm0")
    x = g.relu(x, "features.relu0")
    x = g.max_pool(x, "features.pool0", 3, 2, 1)
    for bi, layers in enumerate(specs.DENSENET121_BLOCKS):
        block = f"features.denseblock{bi + 1}"
        features = [x]
        for li in range(layers):
            p = f"{block}.denselayer{li + 1}"
            y = features[0] if len(features) == 1 else g.concat(features, f"{p}.concat")
            y = g.relu(g.batch_norm(y, f"{p}.norm1"), f"{p}.relu1")
            y = g.conv(y, f"{p}.conv1", specs.DENSENET_BN_SIZE * growth, 1, bn=f"{p}.norm2")
            y = g.relu(y, f"{p}.relu2")
            features.append(g.conv(y, f"{p}.conv2", growth, 3, 1, 1))
        x = g.concat(features, f"{block}.concat")
        if bi != len(specs.DENSENET121_BLOCKS) - 1:
            p = f"features.transition{bi + 1}"
            x = g.relu(g.batch_norm(x, f"{p}.norm"), f"{p}.relu")
            x = g.conv(x, f"{p}.conv", x.c // 2, 1)
            x = g.average_pool(x, f"{p}.pool", 2, 2)
    x = g.relu(g.batch_norm(x, "features.norm5"), "features.relu5")
    x = g.flatten(g.global_average_pool(x, "avgpool"), "flatten")
    return g.linear(x, "classifier", num_classes)


_BODIES: dict[str, Callable[..., Tensor]] = {
    "resnet18": lambda g, x, w, k: _resnet(g, x, "resnet18", w, k),
    "resnet50": lambda g, x, w, k: _resnet(g, x, "resnet50", w, k),
    "vgg16": _vgg16,
    "mobilenet_v2": _mobilenet_v2,
    "alexnet": _alexnet,
    "squeezenet1_1": _squeezenet1_1,
    "densenet121": _densenet121,
}


def _construct(
    name: str,
    *,
    width: float = 1.0,
    resolution: int = specs.DEFAULT_RESOLUTION,
    num_classes: int = specs.DEFAULT_NUM_CLASSES,
    seed: int = 0,
    fold_bn: bool = False,
) -> tuple[GraphBuilder, Tensor, Tensor]:
    if name not in _BODIES:
        raise KeyError(f"unknown network {name!r}; choose from: {', '.join(_BODIES)}")
    specs.check_options(width, resolution, num_classes)
    g = GraphBuilder(seed=seed, fold_bn=fold_bn)
    x = g.input(3, resolution)
    try:
        logits = _BODIES[name](g, x, width, num_classes)
    except ValueError as e:
        smallest = min_resolution(name)
        hint = f" (the smallest resolution {name} takes is {smallest})" if resolution < smallest else ""
        raise ValueError(f"{name} at resolution {resolution}: {e}{hint}") from None
    return g, x, logits


def _fits(name: str, resolution: int) -> bool:
    g = GraphBuilder(calibrate=False)
    try:
        _BODIES[name](g, g.input(3, resolution), 1 / 64, 1)
    except ValueError:
        return False
    return True


def min_resolution(name: str) -> int:
    """The smallest input resolution that network `name` can run at (shapes only)."""
    lo, hi = 1, 1024
    if _fits(name, lo):
        return lo
    while hi - lo > 1:  # _fits(lo) is false, _fits(hi) true
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _fits(name, mid) else (mid, hi)
    return hi


def build(
    name: str,
    *,
    width: float = 1.0,
    resolution: int = specs.DEFAULT_RESOLUTION,
    num_classes: int = specs.DEFAULT_NUM_CLASSES,
    seed: int = 0,
    fold_bn: bool = False,
    batch_dynamic: bool = True,
    batch: int = 1,
) -> onnx.ModelProto:
    """The ONNX model of network `name` (a key of NETWORKS)."""
    if not batch_dynamic and not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    options = dict(width=width, resolution=resolution, num_classes=num_classes, seed=seed, fold_bn=fold_bn)
    g, x, logits = _construct(name, **options)
    metadata = {"im2win.network": name, "im2win.backend": "onnx"}
    metadata.update((f"im2win.{k}", int(v) if isinstance(v, bool) else v) for k, v in options.items())
    return g.model(x, logits, name, "N" if batch_dynamic else batch, metadata)


def parameters(name: str, **options) -> dict[str, np.ndarray]:
    """The parameters of network `name` by PyTorch state_dict key (BN never folded); options as
    in build. torch_models loads these, so both backends hold the same weights."""
    options.pop("batch", None)
    options.pop("batch_dynamic", None)
    options["fold_bn"] = False
    return _construct(name, **options)[0].initializers


def reference_run(name: str, **options) -> tuple[np.ndarray, np.ndarray | None]:
    """(input, logits) of the NumPy calibration run: a seeded batch of N(0, 1) images and what the
    network computes for it, or None for the logits when the calibration ran at a smaller
    resolution than the model's (above GraphBuilder.CALIBRATION_RESOLUTION, for classifiers
    that flatten a spatial map)."""
    options.pop("batch", None)
    options.pop("batch_dynamic", None)
    _, x, logits = _construct(name, **options)
    if x.sample.shape[2] != x.h:
        return x.sample, None
    return x.sample, None if logits.sample is None else logits.sample.reshape(logits.sample.shape[0], -1)


def _builder(name: str) -> Callable[..., onnx.ModelProto]:
    def builder(**options) -> onnx.ModelProto:
        return build(name, **options)

    builder.__name__ = builder.__qualname__ = f"build_{name}"
    builder.__doc__ = f"The ONNX model of {name}; options as in onnx_builder.build."
    return builder


build_resnet18 = _builder("resnet18")
build_resnet50 = _builder("resnet50")
build_vgg16 = _builder("vgg16")
build_mobilenet_v2 = _builder("mobilenet_v2")
build_alexnet = _builder("alexnet")
build_squeezenet1_1 = _builder("squeezenet1_1")
build_densenet121 = _builder("densenet121")

NETWORKS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
    "vgg16": build_vgg16,
    "mobilenet_v2": build_mobilenet_v2,
    "alexnet": build_alexnet,
    "squeezenet1_1": build_squeezenet1_1,
    "densenet121": build_densenet121,
}
