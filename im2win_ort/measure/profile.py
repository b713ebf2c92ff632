"""`im2win-ort profile MODEL.onnx`: where a whole network's time goes, node type by node type, in
ORT at ORT_ENABLE_ALL (its blocked NCHWc Conv) and rewritten to com.im2win::Conv (NCHW, and with its
conv regions channels-last: rewrite --layout nhwc), from ORT's own
profiler (SessionOptions.enable_profiling): per run, the time of each op type, the layout reorders
ORT inserts, the sum of the nodes and the run as a whole (the rest is ORT's executor: scheduling,
allocation, copies between nodes)."""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

from .compare import CompareError, parse_input_shapes, plan_inputs

CONFIGS = ("ort_all", "im2win", "im2win_nhwc")


class ProfileError(Exception):
    pass


def _session(model_bytes: bytes, threads: int, profile_dir: Path, prefix: str, library: bool, disabled: list):
    import onnxruntime as ort

    from .._library import THREADS_ENTRY, get_library_path

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = str(profile_dir / prefix)
    if library:
        so.add_session_config_entry(THREADS_ENTRY, str(threads))
        so.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def node_times(trace: list[dict], runs: int) -> dict:
    """From ORT's profile events: per op type, milliseconds per run and node count, over the last
    `runs` model runs; the runs' own time and the sum of their nodes."""
    model_runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])[-runs:]
    if not model_runs:
        raise ProfileError("ORT's profile holds no model_run event")
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in model_runs]
    per_op = collections.defaultdict(float)
    nodes = collections.defaultdict(set)
    for e in trace:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if any(begin <= e["ts"] <= end for begin, end in windows):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] += e["dur"] / 1000.0 / len(windows)
            nodes[op].add(e["name"][: -len("_kernel_time")])
    run_ms = sum(e["dur"] for e in model_runs) / 1000.0 / len(windows)
    return {"ops": {op: {"ms": ms, "nodes": len(nodes[op])} for op, ms in per_op.items()},
            "run_ms": run_ms, "nodes_ms": sum(per_op.values())}


def profile(model, feeds: dict, threads: int = 1, runs: int = 10, warmup: int = 3) -> dict:
    """Runs the model as given (ORT ENABLE_ALL) and rewritten (com.im2win::Conv), profiled."""
    from ..rewriter import rewrite
    from ..session import NCHWC_FREE, _has_onnx_conv

    rewritten = {"im2win": rewrite(model), "im2win_nhwc": rewrite(model, layout="nhwc")}
    # As im2win_ort.InferenceSession runs a model whose every Conv is ours: no NCHWc reorders.
    disabled = {"ort_all": []}
    disabled.update({c: [] if _has_onnx_conv(m.graph) else NCHWC_FREE for c, m in rewritten.items()})
    result = {}
    with tempfile.TemporaryDirectory(prefix="im2win-profile-") as tmp:
        for config in CONFIGS:
            model_bytes = rewritten.get(config, model).SerializeToString()
            try:
                sess = _session(model_bytes, threads, Path(tmp), config, config != "ort_all", disabled[config])
                for _ in range(warmup):
                    sess.run(None, feeds)
                wall = []
                for _ in range(runs):
                    start = time.perf_counter()
                    sess.run(None, feeds)
                    wall.append((time.perf_counter() - start) * 1000.0)
                trace = json.loads(Path(sess.end_profiling()).read_text())
            except Exception as e:  # ORT's errors are several classes; its first line says enough
                raise ProfileError(f"{config}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
            result[config] = {**node_times(trace, runs), "median_wall_ms": sorted(wall)[len(wall) // 2]}
    return result


def _is_conv(op: str) -> bool:
    return op in ("Conv", "FusedConv")


def format_breakdown(result: dict, batch: int, threads: int) -> str:
    sides = [result[c] for c in CONFIGS]
    ops = sorted(set().union(*(side["ops"] for side in sides)),
                 key=lambda op: -max(side["ops"].get(op, {}).get("ms", 0) for side in sides))
    lines = [f"ms per run, batch {batch}, {threads} thread(s) (ORT's profiler; nodes are op types; the "
             f"differences are against ORT ENABLE_ALL)",
             "| | ORT ENABLE_ALL | com.im2win::Conv | difference | channels-last regions | difference |",
             "|---|---|---|---|---|---|"]

    def row(label, values):
        a, b, c = values
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {c:.3f} | {c - a:+.3f} |")

    def cell(side, op):
        entry = side["ops"].get(op)
        return (entry["ms"], entry["nodes"]) if entry else (0.0, 0)

    for op in ops:
        cells = [cell(side, op) for side in sides]
        row(f"{op} ({' / '.join(str(n) for _, n in cells)} nodes)", [ms for ms, _ in cells])
    convs = [sum(v["ms"] for op, v in side["ops"].items() if _is_conv(op)) for side in sides]
    row("all convolutions", convs)
    row("everything else", [side["nodes_ms"] - conv for side, conv in zip(sides, convs)])
    row("sum of the nodes", [side["nodes_ms"] for side in sides])
    row("executor (run - nodes)", [side["run_ms"] - side["nodes_ms"] for side in sides])
    row("run (profiled)", [side["run_ms"] for side in sides])
    row("run (median wall time)", [side["median_wall_ms"] for side in sides])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im2win-ort profile",
        description="Where a model's time goes, op type by op type (ORT's profiler), in ORT at ENABLE_ALL and "
                    "rewritten to com.im2win::Conv.")
    parser.add_argument("model", help="an ONNX model with ONNX Conv nodes (the original)")
    parser.add_argument("--batch", type=int, default=1, help="batch for a symbolic first dimension (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=10, help="profiled runs after the warm-up (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="shape of an input with other symbolic dimensions, e.g. input=Nx3x224x224")
    parser.add_argument("--json", metavar="FILE", help="also write the breakdown as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..rewriter import RewriteError
    from ..rewriter.model_io import ModelError, load_model
    from ..rewriter.validate import random_inputs
    from .compare import input_stub
    from .compare_report import write_atomic

    try:
        for name, value, least in (("--batch", args.batch, 1), ("--threads", args.threads, 1),
                                   ("--runs", args.runs, 1), ("--warmup", args.warmup, 0)):
            if value < least:
                raise ProfileError(f"{name} must be >= {least}, got {value}")
        model = load_model(args.model)
        _, shapes = plan_inputs(model, [args.batch], parse_input_shapes(args.input_shape))
        feeds = random_inputs(input_stub(model, shapes[args.batch]))
        result = profile(model, feeds, args.threads, args.runs, args.warmup)
        print(format_breakdown(result, args.batch, args.threads))
        if args.json:
            write_atomic(Path(args.json), json.dumps({"batch": args.batch, "threads": args.threads, **result},
                                                     indent=1))
    except (ProfileError, CompareError, ModelError, RewriteError, ValueError, OSError) as e:
        print(f"im2win-ort profile: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
