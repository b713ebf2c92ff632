"""Per-layer benchmark: com.im2win::Conv against ORT's own Conv (ORT_ENABLE_ALL: NCHWc; and
ORT_ENABLE_EXTENDED: im2col + SGEMM) and PyTorch's conv2d when torch is installed, with the op both
in NCHW and channels-last (layout NHWC, its input transposed beforehand as inside a region).

    python -m im2win_ort.bench [--sets paper,resnet50,vgg16,mobilenetv2] [--threads 1,2] [--json FILE]

Each configuration runs in its own ORT session with a fixed thread count; runs are timed in
rounds of short blocks per configuration (so that machine noise hits all alike, and no thread pool
spins while another configuration is timed) and each time is the median over repeated runs
after warm-up. GFLOP/s are relative to this machine's FP32 FMA peak, measured by a
probe at the start and at the end of the run (the higher reading: a shared or cloud CPU's clock
moves over minutes), and every speed is also given as a time ratio against ORT from the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from typing import Callable

import numpy as np

from .layer_sets import LAYER_SETS, ConvLayer

BASELINES = ["ort_all", "ort_extended", "torch"]
# Pause before timing another configuration with several threads: long enough for the previous
# configuration's spinning pool threads to go to sleep (measured: 2-thread runs timed without it
# ran at 1-thread speed or below).
SETTLE_SECONDS = 0.05


def conv_model(layer: ConvLayer, domain: str = "", layout: str = "NCHW") -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .._ir_version import make_model

    rng = np.random.default_rng(0)
    fan_in = layer.w_shape[1] * layer.kernel**2
    w = (rng.standard_normal(layer.w_shape) / math.sqrt(fan_in)).astype(np.float32)
    b = (0.1 * rng.standard_normal(layer.out_channels)).astype(np.float32)
    extra = {"layout": layout} if layout != "NCHW" else {}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], domain=domain, strides=[layer.stride] * 2,
                            pads=[layer.pad] * 4, group=layer.group, **extra)
    x_shape = [layer.batch, layer.height, layer.width, layer.channels] if layout == "NHWC" else layer.x_shape
    graph = helper.make_graph(
        [node], layer.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return make_model(graph, opset_imports=opsets).SerializeToString()


def _ort_runner(model: bytes, threads: int, level, im2win: bool, x: np.ndarray):
    import onnxruntime as ort

    from .._library import session_options

    so = session_options(threads) if im2win else ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    return lambda: sess.run(None, feeds)[0]


def _torch_runner(layer: ConvLayer, threads: int, x: np.ndarray):
    try:
        import torch
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    fan_in = layer.w_shape[1] * layer.kernel**2
    w = torch.from_numpy((rng.standard_normal(layer.w_shape) / math.sqrt(fan_in)).astype(np.float32))
    b = torch.from_numpy((0.1 * rng.standard_normal(layer.out_channels)).astype(np.float32))
    xt = torch.from_numpy(x)

    def run():
        torch.set_num_threads(threads)
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt, w, b, stride=layer.stride, padding=layer.pad,
                                              groups=layer.group).numpy()

    return run


def median_times(runners: dict[str, Callable], min_seconds: float, max_runs: int, warmup: int = 2,
                 block: int = 5, settle: float = 0.0) -> dict:
    """Median seconds per runner, timed in rounds until each has min_seconds or max_runs.

    Each round gives every runner, in turn, `settle` seconds of pause, one untimed run and `block`
    timed runs. With several threads the pause matters: a thread pool (ORT's, OpenMP's) spins for a
    while after its run, and a runner timed while another's pool still spins loses a core to it.
    Rounds keep slow drifts of the machine shared by all runners alike.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    first = True
    while True:
        for name, run in runners.items():
            if settle > 0:
                time.sleep(settle)
            for _ in range(warmup if first else 1):
                run()
            for _ in range(block):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        first = False
        n = len(next(iter(times.values())))
        if n >= max_runs or (n >= 2 * block and min(sum(t) for t in times.values()) >= min_seconds):
            return {name: float(np.median(t)) for name, t in times.items()}


def bench_layer(layer: ConvLayer, threads: int, peak_gflops: float, min_seconds: float = 0.3,
                max_runs: int = 30, with_torch: bool = True, nhwc: bool = True) -> dict:
    import onnxruntime as ort

    from .. import _kernels

    x = np.random.default_rng(1).standard_normal(layer.x_shape).astype(np.float32)
    reference = conv_model(layer)
    runners = {
        "im2win": _ort_runner(conv_model(layer, "com.im2win"), threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                              True, x),
        "ort_all": _ort_runner(reference, threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, False, x),
        "ort_extended": _ort_runner(reference, threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, False, x),
    }
    if nhwc:  # the channels-last op on the same input, transposed once here (a region's interior)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        runners["im2win_nhwc"] = _ort_runner(conv_model(layer, "com.im2win", "NHWC"), threads,
                                             ort.GraphOptimizationLevel.ORT_ENABLE_ALL, True, x_nhwc)
    torch_run = _torch_runner(layer, threads, x) if with_torch else None
    if torch_run is not None:
        runners["torch"] = torch_run
    # Never time a wrong answer: check ours against ORT first.
    want, got = runners["ort_all"](), runners["im2win"]()
    err = float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
    if nhwc:
        nhwc_err = float(np.max(np.abs(runners["im2win_nhwc"]().transpose(0, 3, 1, 2) - want)) /
                         max(1.0, float(np.max(np.abs(want)))))
        err = max(err, nhwc_err)
    if not err <= 1e-4:
        raise RuntimeError(f"{layer.name}: com.im2win::Conv differs from ORT's Conv (relative error {err:.3g})")

    seconds = median_times(runners, min_seconds, max_runs, settle=SETTLE_SECONDS if threads > 1 else 0.0)
    ws = _kernels.workspace_bytes(layer.x_shape, layer.w_shape, strides=[layer.stride] * 2, pads=[layer.pad] * 4,
                                  group=layer.group)
    record = {
        "layer": layer.name, "shape": layer.describe(), "batch": layer.batch, "threads": threads,
        "gflop": layer.flops / 1e9, "max_rel_err": err, "seconds": seconds,
        "gflops": {name: layer.flops / t / 1e9 for name, t in seconds.items()},
        "ratio": {name: seconds["im2win"] / seconds[name] for name in BASELINES if name in seconds},
        # The channels-last op against ORT_ENABLE_ALL and against the NCHW op, where it was timed.
        **({"nhwc_ratio": {"ort_all": seconds["im2win_nhwc"] / seconds["ort_all"],
                           "im2win": seconds["im2win_nhwc"] / seconds["im2win"]}} if nhwc else {}),
        "workspace_bytes": {"im2win_per_thread": ws["im2win_per_thread"], "im2col": ws["im2col"]},
        "tile": f"{ws['tile_family']} {ws['tile']}",
    }
    record["pct_peak"] = 100.0 * record["gflops"]["im2win"] / peak_gflops
    return record


def machine_info(threads_list) -> dict:
    """The machine section of the JSON (im2win_ort.sysinfo): CPU model and class, ISAs, L2, cores,
    versions, and the FMA probe per thread count."""
    from ..sysinfo import machine_info as info

    return info(threads_list)


def _geomean(values) -> float:
    values = list(values)
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if values else float("nan")


def summarize(records: list[dict]) -> list[dict]:
    """Geometric-mean time ratios and the worst layer against ORT_ENABLE_ALL, per set and thread count."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["set"], r["threads"]), []).append(r)
    rows = []
    for (name, threads), rs in groups.items():
        row = {"set": name, "threads": threads, "layers": len(rs)}
        for base in BASELINES:
            ratios = [r["ratio"][base] for r in rs if base in r["ratio"]]
            if ratios:
                row[f"geomean_vs_{base}"] = _geomean(ratios)
        nhwc = [r["nhwc_ratio"]["ort_all"] for r in rs if "nhwc_ratio" in r]
        if nhwc:
            row["geomean_nhwc_vs_ort_all"] = _geomean(nhwc)
        worst = max(rs, key=lambda r: r["ratio"]["ort_all"])
        row["worst_vs_ort_all"] = {"layer": worst["layer"], "batch": worst["batch"], "ratio": worst["ratio"]["ort_all"]}
        row["median_pct_peak"] = float(np.median([r["pct_peak"] for r in rs]))
        # Speed-up over the fewest threads measured, layer by layer, ours and ORT's (the machine's limit).
        fewest = min(t for (n, t) in groups if n == name)
        if threads != fewest:
            base_rs = {(r["layer"], r["batch"]): r for r in groups[(name, fewest)]}
            pairs = [(base_rs[(r["layer"], r["batch"])], r) for r in rs if (r["layer"], r["batch"]) in base_rs]
            row["speedup"] = {"over_threads": fewest, **{
                conf: _geomean(b["seconds"][conf] / r["seconds"][conf] for b, r in pairs)
                for conf in ("im2win", "ort_all")}}
        rows.append(row)
    return rows


def format_table(records: list[dict], summary: list[dict], machine: dict) -> str:
    has_torch = any("torch" in r["gflops"] for r in records)
    has_nhwc = any("nhwc_ratio" in r for r in records)
    peaks = ", ".join(f"{t} thr {p:.1f}" for t, p in machine["fma_peak_gflops"].items())
    if "fma_peak_gflops_end" in machine:
        peaks += " (the higher of the readings at the start and the end: " + ", ".join(
            f"{machine['fma_peak_gflops_start'][t]:.1f} and {machine['fma_peak_gflops_end'][t]:.1f}"
            for t in machine["fma_peak_gflops"]) + ")"
    lines = [
        f"CPU: {machine['cpu']} ({machine['cores']} cores; {' '.join(machine['features'])}); ISA {machine['isa']}; "
        f"onnxruntime {machine['onnxruntime']}",
        f"FP32 FMA peak (probe, GFLOP/s): {peaks}",
        "GFLOP/s per configuration; ratio = time(im2win) / time(baseline), < 1 means im2win is faster; "
        "workspace = bytes per thread (im2win) vs im2col's",
        "",
    ]
    head = (f"{'layer':<16}{'shape':<34}{'thr':>4}{'im2win':>8}{'%peak':>7}{'ORT-ALL':>9}{'ORT-EXT':>9}"
            + (f"{'torch':>8}" if has_torch else "") + f"{'/ALL':>7}{'/EXT':>7}" + (f"{'/torch':>8}" if has_torch else "")
            + (f"{'NHWC/ALL':>9}" if has_nhwc else "")
            + f"{'ws im2win':>11}{'ws im2col':>11}  tile")
    lines.append(head)
    lines.append("-" * len(head))
    for r in records:
        g, q = r["gflops"], r["ratio"]
        line = (f"{r['layer']:<16}{r['shape']:<34}{r['threads']:>4}{g['im2win']:>8.1f}{r['pct_peak']:>6.0f}%"
                f"{g['ort_all']:>9.1f}{g['ort_extended']:>9.1f}")
        if has_torch:
            line += f"{g.get('torch', float('nan')):>8.1f}"
        line += f"{q['ort_all']:>7.2f}{q['ort_extended']:>7.2f}"
        if has_torch:
            line += f"{q.get('torch', float('nan')):>8.2f}"
        if has_nhwc:
            line += f"{r['nhwc_ratio']['ort_all']:>9.2f}" if "nhwc_ratio" in r else f"{'-':>9}"
        ws = r["workspace_bytes"]
        line += f"{_kib(ws['im2win_per_thread']):>11}{_kib(ws['im2col']):>11}  {r['tile']}"
        lines.append(line)
    lines.append("")
    for s in summary:
        parts = [f"{s['set']}, {s['threads']} thread(s), {s['layers']} layers: geomean ratio"]
        parts.append(", ".join(f"vs {b} {s[f'geomean_vs_{b}']:.3f}" for b in BASELINES if f"geomean_vs_{b}" in s))
        if "geomean_nhwc_vs_ort_all" in s:
            parts.append(f"NHWC vs ort_all {s['geomean_nhwc_vs_ort_all']:.3f}")
        w = s["worst_vs_ort_all"]
        parts.append(f"worst vs ort_all {w['ratio']:.2f} ({w['layer']} N{w['batch']}); "
                     f"median {s['median_pct_peak']:.0f}% of peak")
        if "speedup" in s:
            u = s["speedup"]
            parts.append(f"speed-up over {u['over_threads']} thread(s) {u['im2win']:.2f}x (ORT-ALL {u['ort_all']:.2f}x)")
        lines.append("; ".join(parts))
    return "\n".join(lines)


def _kib(n: int) -> str:
    return f"{n / 1024:.0f}K" if n < 10 * 1024 * 1024 else f"{n / 1024 / 1024:.0f}M"


def run(sets: list[str], threads_list: list[int], min_seconds: float = 0.3, max_runs: int = 30,
        progress=None, with_torch: bool = True, nhwc: bool = True) -> dict:
    machine = machine_info(threads_list)
    records = []
    for set_name in sets:
        for layer in LAYER_SETS[set_name]():
            for threads in threads_list:
                peak = machine["fma_peak_gflops"][str(threads)]
                record = bench_layer(layer, threads, peak, min_seconds, max_runs, with_torch, nhwc)
                record["set"] = set_name
                records.append(record)
                if progress:
                    progress(record)
    from .. import _kernels

    # The probe again: % of peak is against the higher reading, so that a clock that rose during
    # the run cannot put a layer above 100%.
    start = machine["fma_peak_gflops"]
    end = {str(t): _kernels.fma_peak_gflops(threads=t) for t in threads_list}
    machine["fma_peak_gflops_start"], machine["fma_peak_gflops_end"] = dict(start), end
    machine["fma_peak_gflops"] = {t: max(start[t], end[t]) for t in start}
    for r in records:
        r["pct_peak"] = 100.0 * r["gflops"]["im2win"] / machine["fma_peak_gflops"][str(r["threads"])]
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"kind": "bench", "created": created, "settings": {"sets": sets, "threads": list(threads_list),
                                                             "min_seconds": min_seconds, "max_runs": max_runs},
            "machine": machine, "records": records, "summary": summarize(records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="im2win-ort bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="paper,resnet50,vgg16,mobilenetv2",
                        help=f"comma-separated layer sets from {', '.join(LAYER_SETS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="least time per configuration and layer")
    parser.add_argument("--max-runs", type=int, default=30, help="most timed runs per configuration and layer")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when it is installed")
    parser.add_argument("--no-nhwc", action="store_true",
                        help="leave out the channels-last op (layout NHWC, its input transposed beforehand)")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in LAYER_SETS]
    if unknown:
        parser.error(f"unknown layer set(s) {', '.join(unknown)}; choose from {', '.join(LAYER_SETS)}")
    try:
        threads_list = [int(t) for t in args.threads.split(",") if t]
    except ValueError:
        parser.error(f"--threads takes comma-separated integers, got {args.threads!r}")
    if not threads_list or min(threads_list) < 1:
        parser.error("--threads needs positive thread counts")

    def progress(r):
        print(f"  {r['layer']:<16} N{r['batch']} {r['threads']} thr: {r['gflops']['im2win']:.1f} GFLOP/s, "
              f"{r['ratio']['ort_all']:.2f} x ORT-ALL", file=sys.stderr, flush=True)

    result = run(sets, threads_list, args.min_seconds, args.max_runs, progress, with_torch=not args.no_torch,
                 nhwc=not args.no_nhwc)
    print(format_table(result["records"], result["summary"], result["machine"]))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
