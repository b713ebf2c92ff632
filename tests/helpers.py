"""Shared test helpers: single-Conv ONNX models, ORT sessions with the im2win library registered,
and a plain NumPy reference convolution (ONNX Conv rules plus the com.im2win epilogue)."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from im2win_ort import DOMAIN, session_options
from im2win_ort import _kernels
from im2win_ort._ir_version import make_model

ISAS = tuple(_kernels.available_isas())
# Plans are only described by _kernels.workspace_bytes, never run: tests of the planner cover every
# ISA and the L2 of each CPU class (Zen 3: 512 KiB, Zen 4: 1 MiB, recent Xeons: 2 MiB) on any machine.
PLANNING_ISAS = ("avx512", "avx2", "generic")
L2_CLASSES = {"l2-512k": 512 << 10, "l2-1m": 1 << 20, "l2-2m": 2 << 20}
ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish")
ONNX_OPSET = 17


# --------------------------------------------------------------------------------------------
# Models and sessions
# --------------------------------------------------------------------------------------------

def conv_model(
    x_shape: Sequence,
    w: np.ndarray,
    b: np.ndarray | None = None,
    domain: str = "",
    *,
    w_as_input: bool = False,
    with_z: bool = False,
    node_name: str = "conv",
    **attrs,
) -> onnx.ModelProto:
    """A model with one Conv node: graph input X (x_shape; str/None entries are symbolic), output Y.

    domain "" gives ONNX's Conv, DOMAIN (com.im2win) the custom op. W (and B, when given) are
    initializers, or graph inputs "W"/"B" that the caller feeds when w_as_input is true.
    with_z adds the residual graph input "Z" (com.im2win only). Attributes whose value is None are
    left out; activation_params is written as floats.
    """
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))]
    initializers = []

    def add_tensor(name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        if w_as_input:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            inputs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
        else:
            initializers.append(numpy_helper.from_array(value, name))

    add_tensor("W", w)
    node_inputs = ["X", "W"]
    if b is not None:
        add_tensor("B", b)
        node_inputs.append("B")
    if with_z:
        if b is None:
            node_inputs.append("")  # optional B left out
        node_inputs.append("Z")
        inputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))

    attrs = {k: v for k, v in attrs.items() if v is not None}
    params = attrs.pop("activation_params", None)
    node = helper.make_node("Conv", node_inputs, ["Y"], name=node_name, domain=domain, **attrs)
    if params is not None:
        node.attribute.append(helper.make_attribute("activation_params", [float(p) for p in params]))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "single_conv", inputs, [y], initializer=initializers)
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return make_model(graph, opset_imports=opsets)


def conv_relu_model(channels=16, size=12, seed=3) -> onnx.ModelProto:
    """Conv (3 -> channels, 3x3, pad 1, bias) + Relu on [N, 3, size, size]: the CLI and file tests' model."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "B")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, size, size])],
                              inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def small_net(batch="N", height=16, width=16) -> onnx.ModelProto:
    """Conv+BN+Relu, a depthwise Conv+Clip, a 1x1 Conv with a residual Add, then pooled logits [batch, 8]."""
    rng = np.random.default_rng(3)

    def t(name, shape, scale=0.3, offset=0.0):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale + offset).astype(np.float32), name)

    inits = [t("w1", (8, 3, 3, 3)), t("b1", (8,)), t("s", (8,), 0.1, 1.0), t("bb", (8,)), t("m", (8,)),
             numpy_helper.from_array((rng.random(8) + 0.5).astype(np.float32), "v"),
             t("w2", (8, 1, 3, 3)), t("w3", (8, 8, 1, 1)), t("b3", (8,)),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="clip"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw"),
             helper.make_node("Add", ["c3", "r1"], ["a3"], name="res"),
             helper.make_node("GlobalAveragePool", ["a3"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["logits"], name="flat")]
    graph = helper.make_graph(nodes, "small_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 8])], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def move_conv_to_im2win(model: onnx.ModelProto, name_prefix: str = "conv") -> onnx.ModelProto:
    """A copy of model whose ONNX Conv nodes are com.im2win::Conv nodes (unnamed ones get a name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, node in enumerate(out.graph.node):
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx"):
            node.domain = DOMAIN
            if not node.name:
                node.name = f"{name_prefix}{i}"
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def make_session(model: onnx.ModelProto, threads: int | None = None, im2win: bool = True) -> ort.InferenceSession:
    """A CPU InferenceSession; im2win registers the custom-op library."""
    if im2win:
        so = session_options(threads)
    else:
        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_model(model: onnx.ModelProto, feeds: dict, threads: int | None = None, im2win: bool = True) -> list:
    """Runs model once on feeds and returns all its outputs."""
    return make_session(model, threads, im2win).run(None, feeds)


# --------------------------------------------------------------------------------------------
# NumPy reference
# --------------------------------------------------------------------------------------------

def _trunc_div(a: int, b: int) -> int:
    """C++ integer division (rounds toward zero)."""
    return -(-a // b) if a < 0 else a // b


def resolve_pads(in_sizes, kernel, strides, dilations, auto_pad="NOTSET", pads=None):
    """Begin and end pads per spatial axis under ONNX Conv rules.

    SAME_* follows ORT's Conv, which com.im2win::Conv matches on purpose (ops/conv/conv_params.cc): the
    output size is ceil(in / stride), and when the stride exceeds the dilated kernel the total
    "padding" is negative, i.e. the input is cropped; ORT adds one to that total when it would
    otherwise fall short of the target, and splits it with C++'s truncating division.
    (onnx.reference instead clamps the total at 0; the two agree whenever the total is >= 0.)
    Negative pads returned here mean cropping; reference_conv handles them.
    """
    rank = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(in_sizes, kernel, strides, dilations):
            dilated = (k - 1) * d + 1
            target = -(-n // s)
            total = (target - 1) * s + dilated - n
            if int((n + 2 * total - dilated) / s + 1) < target:
                total += 1
            begin.append(_trunc_div(total, 2) if auto_pad == "SAME_UPPER" else _trunc_div(total + 1, 2))
            end.append(total - begin[-1])
        return begin, end
    if auto_pad == "VALID" or pads is None:
        return [0] * rank, [0] * rank
    return list(pads[:rank]), list(pads[rank:])


def apply_activation(y: np.ndarray, activation: str = "", params: Sequence[float] = ()) -> np.ndarray:
    """The com.im2win epilogue activations, with ONNX semantics and ONNX default parameters."""
    p = list(params)
    if activation in ("", "None"):
        return y
    if activation == "Relu":
        return np.maximum(y, 0)
    if activation == "Clip":
        lo, hi = p if p else (-np.inf, np.inf)
        return np.minimum(np.maximum(y, lo), hi)  # ONNX: min > max gives max everywhere
    if activation == "LeakyRelu":
        alpha = p[0] if p else 0.01
        return np.where(y >= 0, y, alpha * y)
    if activation == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if activation == "HardSigmoid":
        alpha, beta = p if p else (0.2, 0.5)
        return np.clip(alpha * y + beta, 0, 1)
    if activation == "Tanh":
        return np.tanh(y)
    if activation == "HardSwish":
        return y * np.clip(y / 6.0 + 0.5, 0, 1)
    raise ValueError(f"unknown activation {activation!r}")


def conv_output_shape(x_shape, w_shape, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                      pads=None, strides=None) -> tuple:
    """Y's shape under ONNX Conv rules (N x M x out...); out sizes may be <= 0 for an empty output.
    group and kernel_shape are accepted (and ignored) so that a Conv attribute dict can be passed."""
    rank = len(x_shape) - 2
    kernel = list(w_shape[2:])
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    begin, end = resolve_pads(x_shape[2:], kernel, strides, dilations, auto_pad, pads)
    out = [(n + b + e - ((k - 1) * d + 1)) // s + 1
           for n, b, e, k, d, s in zip(x_shape[2:], begin, end, kernel, dilations, strides)]
    return (x_shape[0], w_shape[0], *out)


def reference_conv(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   pads=None, strides=None, activation="", activation_params=()):
    """activation(conv(x, w) + b + z) in float64 by a loop over kernel taps; returns float32.

    x is N x C x spatial..., w is M x C/group x kernel...; any spatial rank.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    rank = x.ndim - 2
    kernel = list(w.shape[2:])
    if kernel_shape is not None:
        assert list(kernel_shape) == kernel
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    begin, end = resolve_pads(x.shape[2:], kernel, strides, dilations, auto_pad, pads)
    # Negative pads (SAME_* with a stride above the kernel) crop the input; the rest is zero padding.
    crop = tuple(slice(max(0, -b), n - max(0, -e)) for b, e, n in zip(begin, end, x.shape[2:]))
    zero_pads = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    xp = np.pad(x[(slice(None), slice(None)) + crop], [(0, 0), (0, 0)] + zero_pads)
    out_sizes = [(xp.shape[2 + i] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(rank)]
    assert all(o > 0 for o in out_sizes), f"empty output {out_sizes}"
    n = x.shape[0]
    m, cg = w.shape[:2]
    mg = m // group
    y = np.zeros((n, m, *out_sizes))
    for g in range(group):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * mg:(g + 1) * mg]
        for tap in itertools.product(*(range(k) for k in kernel)):
            window = tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in zip(tap, dilations, strides, out_sizes)
            )
            patch = xg[(slice(None), slice(None)) + window]  # N x C/group x out...
            y[:, g * mg:(g + 1) * mg] += np.einsum("nc...,mc->nm...", patch, wg[(slice(None), slice(None)) + tap])
    if b is not None:
        y += np.asarray(b, np.float64).reshape((1, m) + (1,) * rank)
    if z is not None:
        y += np.asarray(z, np.float64)
    return apply_activation(y, activation, activation_params).astype(np.float32)


def assert_close(got, want, rtol: float = 1e-4, atol_scale: float = 1e-5) -> None:
    """rtol on each element plus an atol of atol_scale times the largest |want| (float32 sums)."""
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol_scale * max(scale, 1e-30))


def random_conv_inputs(rng: np.random.Generator, x_shape, w_shape, bias: bool = True):
    """float32 X, W (scaled so outputs are O(1)) and optional B."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    fan_in = int(np.prod(w_shape[1:]))
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
    b = (0.1 * rng.standard_normal(w_shape[0])).astype(np.float32) if bias else None
    return x, w, b
