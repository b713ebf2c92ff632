"""The built-in demo: a small network whose Conv nodes run on com.im2win::Conv, checked against
the same network on ORT's own Conv (the oracle)."""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ._ir_version import make_model
from ._library import DOMAIN, session_options

# (name, input, out_channels, kernel, attributes, ONNX activation node or None, residual input or None)
_LAYERS = [
    ("stem", "x", 32, 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}, ("Relu", {}), None),
    ("depthwise", "stem", 32, 3, {"pads": [1, 1, 1, 1], "group": 32}, ("Clip", {"min": 0.0, "max": 6.0}), None),
    ("project", "depthwise", 32, 1, {}, ("Relu", {}), "stem"),
    ("wide", "project", 64, 5, {"dilations": [2, 2], "pads": [4, 4, 4, 4]}, ("LeakyRelu", {"alpha": 0.1}), None),
]


def build_models(seed: int = 0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The demo network twice: with ONNX Conv + activation/Add nodes, and with com.im2win::Conv."""
    rng = np.random.default_rng(seed)
    channels = {"x": 3}
    inits, ref_nodes, our_nodes = [], [], []
    for name, src, m, k, attrs, (act, act_attrs), residual in _LAYERS:
        c = channels[src] // attrs.get("group", 1)
        w = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(m)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        channels[name] = m
        # Reference: Conv -> [Add residual] -> activation.
        conv_out = f"{name}.conv"
        ref_nodes.append(helper.make_node("Conv", [src, f"{name}.w", f"{name}.b"], [conv_out], name=f"{name}.conv", **attrs))
        if residual:
            ref_nodes.append(helper.make_node("Add", [conv_out, residual], [f"{name}.sum"], name=f"{name}.add"))
            conv_out = f"{name}.sum"
        if act == "Clip":
            for bound in ("min", "max"):
                inits.append(numpy_helper.from_array(np.array(act_attrs[bound], np.float32), f"{name}.{bound}"))
            ref_nodes.append(helper.make_node("Clip", [conv_out, f"{name}.min", f"{name}.max"], [name]))
            params = [act_attrs["min"], act_attrs["max"]]
        else:
            ref_nodes.append(helper.make_node(act, [conv_out], [name], **act_attrs))
            params = list(act_attrs.values())
        # im2win: one node with the epilogue fused.
        inputs = [src, f"{name}.w", f"{name}.b"] + ([residual] if residual else [])
        node = helper.make_node("Conv", inputs, [name], name=name, domain=DOMAIN, activation=act, **attrs)
        if params:
            node.attribute.append(helper.make_attribute("activation_params", [float(p) for p in params]))
        our_nodes.append(node)
    tail = [helper.make_node("GlobalAveragePool", [_LAYERS[-1][0]], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 56, 56])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels[_LAYERS[-1][0]], 1, 1])

    def model(nodes, extra_opsets):
        graph = helper.make_graph(nodes + tail, "im2win_demo", [x], [y], initializer=inits)
        opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in extra_opsets]
        return make_model(graph, opset_imports=opsets)

    return model(ref_nodes, []), model(our_nodes, [DOMAIN])


def _median_ms(sess, feeds, runs: int) -> float:
    sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def run_demo(threads: int | None = None, batch: int = 4, runs: int = 20) -> int:
    import onnxruntime as ort

    from . import _kernels

    reference, ours = build_models()
    x = np.random.default_rng(1).standard_normal((batch, 3, 56, 56)).astype(np.float32)
    ref_opts = ort.SessionOptions()
    ort.set_default_logger_severity(3)  # ORT notes that it folded the Clip bounds; not the user's concern
    if threads is not None:
        ref_opts.intra_op_num_threads = threads
    ref = ort.InferenceSession(reference.SerializeToString(), ref_opts, providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(ours.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    (want,) = ref.run(None, {"x": x})
    (got,) = sess.run(None, {"x": x})
    err = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want))) or 1.0
    print(f"im2win-ort demo: 4 Conv layers (stride 2, depthwise + Clip, 1x1 + residual, dilated 5x5) "
          f"on a {batch}x3x56x56 input, ISA {_kernels.selected_isa()}")
    print(f"  max |im2win - ORT| = {err:.3g} (relative to max |y| = {err / scale:.3g})")
    t_ref, t_ours = _median_ms(ref, {"x": x}, runs), _median_ms(sess, {"x": x}, runs)
    print(f"  median latency over {runs} runs: ORT Conv {t_ref:.2f} ms, com.im2win::Conv {t_ours:.2f} ms "
          f"(ratio {t_ours / t_ref:.2f})")
    if not err <= 1e-4 * scale:
        print("  FAILED: outputs differ from ORT beyond 1e-4 relative")
        return 1
    print("  OK: outputs match ORT")
    return 0
