"""NCHW against channels-last (NHWC) com.im2win::Conv, and both against ORT's own Conv, on ResNet-50's
first bottleneck (1x1 256->64, 3x3 64->64, 1x1 64->256 + the block's input, Relu after each; 56x56):
as three single-conv models (each layer alone, its input hot in cache) and as the three-node block
(activations passed from conv to conv in one layout; ORT at ENABLE_ALL keeps its NCHWc blocks between
them). All sessions run interleaved in one process, round by round, so a drift of a shared machine
hits them alike; the table gives medians, GFLOP/s, the share of the FMA peak and the time against
ORT ENABLE_ALL's.

    python -m im2win_ort.measure.layouts --threads 1,2 --runs 30 --json layouts.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

LAYERS = (  # name, C, M, kernel, pads
    ("1x1 256->64", 256, 64, 1, 0),
    ("3x3 64->64", 64, 64, 3, 1),
    ("1x1 64->256", 64, 256, 1, 0),
)
SIZE = 56


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32) for _, c, m, k, _ in LAYERS]


def _onnx_model(layers, nhwc: bool, im2win: bool, block: bool, size: int = SIZE):
    """The block (or one layer when `layers` has one entry) as ONNX: ONNX Conv + Relu (+ Add), or
    com.im2win::Conv with the epilogue fused, in NCHW or NHWC."""
    from onnx import TensorProto, helper, numpy_helper

    from .._ir_version import make_model
    from .._library import DOMAIN

    c_in = layers[0][0][1]
    shape = [1, size, size, c_in] if nhwc else [1, c_in, size, size]
    nodes, inits, value = [], [], "X"
    for i, ((name, c, m, k, pad), w) in enumerate(layers):
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        last = i == len(layers) - 1
        residual = block and last
        out = f"Y{i}"
        if im2win:
            inputs = [value, f"W{i}"] + (["", "X"] if residual else [])
            attrs = dict(pads=[pad] * 4, activation="Relu")
            if nhwc:
                attrs["layout"] = "NHWC"
            nodes.append(helper.make_node("Conv", inputs, [out], name=f"conv{i}", domain=DOMAIN, **attrs))
        else:
            nodes.append(helper.make_node("Conv", [value, f"W{i}"], [f"C{i}"], name=f"conv{i}", pads=[pad] * 4))
            pre = f"C{i}"
            if residual:
                nodes.append(helper.make_node("Add", [pre, "X"], [f"S{i}"]))
                pre = f"S{i}"
            nodes.append(helper.make_node("Relu", [pre], [out]))
        value = out
    graph = helper.make_graph(nodes, "bottleneck", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if im2win else [])
    return make_model(graph, opset_imports=opsets)


CONFIGS = ("ORT ALL", "im2win NCHW", "im2win NHWC")


def _sessions(model_for, threads: int):
    import onnxruntime as ort

    from .._library import session_options

    out = {}
    for config in CONFIGS:
        if config == "ORT ALL":
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            model = model_for(nhwc=False, im2win=False)
        else:
            so = session_options(threads, plan="measure")
            model = model_for(nhwc=config.endswith("NHWC"), im2win=True)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        out[config] = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return out


def _time(sessions, inputs, runs: int, feeds=None):
    def feed(name):
        return feeds if feeds is not None else {"X": inputs[name]}

    for name, s in sessions.items():  # warm-up: plans timed, buffers allocated
        for _ in range(3):
            s.run(None, feed(name))
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed(name))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def _check(sessions, inputs):
    outs = {name: s.run(None, {"X": inputs[name]})[0] for name, s in sessions.items()}
    want = outs["ORT ALL"]
    nhwc = np.moveaxis(outs["im2win NHWC"], -1, 1)
    scale = max(1.0, float(np.abs(want).max()))
    return max(float(np.abs(outs["im2win NCHW"] - want).max()), float(np.abs(nhwc - want).max())) / scale


def measure(threads_list, runs: int, size: int = SIZE) -> dict:
    from .. import _kernels

    weights = _weights()
    rng = np.random.default_rng(1)
    results = {"machine": _machine(threads_list), "runs": runs, "rows": []}
    for threads in threads_list:
        peak = _kernels.fma_peak_gflops(threads=threads, seconds=0.3)
        cases = [(name, [(layer, w)]) for layer, w in zip(LAYERS, weights) for name in [layer[0]]]
        cases.append(("bottleneck (3 convs)", list(zip(LAYERS, weights))))
        for name, layers in cases:
            block = len(layers) > 1
            x = rng.standard_normal((1, layers[0][0][1], size, size)).astype(np.float32)
            inputs = {c: np.ascontiguousarray(np.moveaxis(x, 1, -1)) if c.endswith("NHWC") else x for c in CONFIGS}
            sessions = _sessions(lambda nhwc, im2win: _onnx_model(layers, nhwc, im2win, block, size), threads)
            error = _check(sessions, inputs)
            seconds = _time(sessions, inputs, runs)
            flops = sum(2.0 * size * size * c * m * k * k for (_, c, m, k, _), _ in layers)
            row = {"case": name, "threads": threads, "fma_peak_gflops": peak, "max_rel_err": error}
            for config, t in seconds.items():
                row[config] = {"seconds": t, "gflops": flops / t / 1e9, "peak_share": flops / t / 1e9 / peak,
                               "vs_ort_all": t / seconds["ORT ALL"]}
            results["rows"].append(row)
            print(_format_row(row), flush=True)
    return results


def measure_models(paths, threads_list, runs: int) -> list[dict]:
    """Whole models: ORT ALL on the model as given, and the model rewritten to com.im2win::Conv,
    in NCHW and with its conv regions channels-last (batch 1, random inputs)."""
    import onnx
    import onnxruntime as ort

    from .._library import session_options
    from ..rewriter.graph_rewrite import rewrite
    from ..rewriter.layout_regions import inferred_dims, to_channels_last
    from ..rewriter.model_io import load_model
    from ..rewriter.validate import random_inputs

    rows = []
    for path in paths:
        original = load_model(path)
        nchw = rewrite(original)
        nhwc = onnx.ModelProto()
        nhwc.CopyFrom(nchw)
        report = to_channels_last(nhwc, shapes=inferred_dims(original))
        feeds = random_inputs(original)
        models = {"ORT ALL": original, "im2win NCHW": nchw, "im2win NHWC": nhwc}
        for threads in threads_list:
            sessions = {}
            for config, model in models.items():
                so = ort.SessionOptions() if config == "ORT ALL" else session_options(threads, plan="measure")
                so.intra_op_num_threads = threads
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                sessions[config] = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            outs = {c: s.run(None, feeds)[0] for c, s in sessions.items()}
            scale = max(1.0, float(np.abs(outs["ORT ALL"]).max()))
            error = max(float(np.abs(outs[c] - outs["ORT ALL"]).max()) for c in models) / scale
            seconds = _time(sessions, {c: None for c in sessions}, runs, feeds)
            row = {"model": str(path), "threads": threads, "max_rel_err": error, "regions": report.summary()}
            for config, t in seconds.items():
                row[config] = {"seconds": t, "vs_ort_all": t / seconds["ORT ALL"]}
            rows.append(row)
            print(f"{path} {threads} thr | " + " | ".join(
                f"{c}: {row[c]['seconds'] * 1e3:.2f} ms {row[c]['vs_ort_all']:.3f}x" for c in models) +
                f" | err {error:.1e} | {report.summary()}", flush=True)
    return rows


def measure_layers(set_names, threads_list, runs: int) -> list[dict]:
    """Each conv of the benchmark's layer sets (batch 1) alone, in the three configurations."""
    from onnx import TensorProto, helper, numpy_helper

    from .._ir_version import make_model
    from .._library import DOMAIN
    from .layer_sets import LAYER_SETS

    def model(layer, nhwc, im2win):
        w = (np.random.default_rng(0).standard_normal(layer.w_shape) / 10).astype(np.float32)
        shape = [1, layer.height, layer.width, layer.channels] if nhwc else layer.x_shape
        attrs = dict(pads=[layer.pad] * 4, strides=[layer.stride] * 2, group=layer.group)
        if nhwc:
            attrs["layout"] = "NHWC"
        node = helper.make_node("Conv", ["X", "W"], ["Y"], domain=DOMAIN if im2win else "", **attrs)
        graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(w, "W")])
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(DOMAIN, 1)] if im2win else [])
        return make_model(graph, opset_imports=opsets)

    rows = []
    for set_name in set_names:
        layers = LAYER_SETS[set_name]((1,)) if set_name == "paper" else LAYER_SETS[set_name]()
        for threads in threads_list:
            totals = dict.fromkeys(CONFIGS, 0.0)
            for layer in layers:
                x = np.random.default_rng(1).standard_normal(layer.x_shape).astype(np.float32)
                inputs = {c: np.ascontiguousarray(np.moveaxis(x, 1, -1)) if c.endswith("NHWC") else x for c in CONFIGS}
                sessions = _sessions(lambda nhwc, im2win: model(layer, nhwc, im2win), threads)
                seconds = _time(sessions, inputs, runs)
                row = {"layer": layer.name, "shape": layer.describe(), "threads": threads, "gflop": layer.flops / 1e9,
                       "error": _check(sessions, inputs)}
                for config, t in seconds.items():
                    totals[config] += t
                    row[config] = {"seconds": t, "vs_ort_all": t / seconds["ORT ALL"]}
                rows.append(row)
                print(f"{layer.name:15} {layer.describe():38} {threads:2} thr | ORT ALL {seconds['ORT ALL'] * 1e3:7.3f} ms"
                      f" | NCHW {row['im2win NCHW']['vs_ort_all']:.2f}x | NHWC {row['im2win NHWC']['vs_ort_all']:.2f}x",
                      flush=True)
            print(f"{set_name} {threads} thr, sum over layers: NCHW {totals['im2win NCHW'] / totals['ORT ALL']:.3f}x, "
                  f"NHWC {totals['im2win NHWC'] / totals['ORT ALL']:.3f}x ORT ALL", flush=True)
    return rows


def _machine(threads_list) -> dict:
    """The machine section every stored run carries (im2win_ort.sysinfo), FMA probe included."""
    from ..sysinfo import machine_info

    return machine_info(threads_list)


def _format_row(row) -> str:
    cells = [f"{row['case']:<22}", f"{row['threads']:>2} thr"]
    for config in CONFIGS:
        r = row[config]
        cells.append(f"{config}: {r['seconds'] * 1e3:7.3f} ms {r['gflops']:6.1f} GF/s {100 * r['peak_share']:3.0f}% "
                     f"{r['vs_ort_all']:.2f}x")
    return " | ".join(cells) + f" | err {row['max_rel_err']:.1e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m im2win_ort.measure.layouts", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each session (default 30)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--size", type=int, default=SIZE, help=f"the bottleneck's height and width (default {SIZE})")
    parser.add_argument("--models", help="comma-separated ONNX files: whole models instead of the bottleneck")
    parser.add_argument("--layers", help="comma-separated layer sets (resnet50, vgg16, mobilenetv2, paper): each "
                                         "layer alone instead of the bottleneck")
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if (not threads or min(threads) < 1 or max(threads) > 1024 or not 1 <= args.runs <= 100000
                or not 1 <= args.size <= 1024):
            raise ValueError
    except ValueError:
        print("--threads takes comma-separated counts from 1 to 1024, --runs 1 to 100000, --size 1 to 1024",
              file=sys.stderr)
        return 1
    if args.layers:
        from .layer_sets import LAYER_SETS

        unknown = [n for n in args.layers.split(",") if n not in LAYER_SETS]
        if unknown:
            print(f"unknown layer set(s) {', '.join(unknown)}; choose from {', '.join(LAYER_SETS)}", file=sys.stderr)
            return 1
        results = {"machine": _machine(threads), "runs": args.runs,
                   "rows": measure_layers(args.layers.split(","), threads, args.runs)}
    elif args.models:
        results = {"machine": _machine(threads), "runs": args.runs,
                   "rows": measure_models(args.models.split(","), threads, args.runs)}
    else:
        results = measure(threads, args.runs, args.size)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
