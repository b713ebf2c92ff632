"""`im2win-ort plan MODEL.onnx --threads T [--batch N]`: for every Conv node, the plan the op would
run with an intra-op pool of T threads: tile family and shape, rows per block, work items (blocks of
rows x chunks of output channels x images) and their balance, and the workspace per thread and
shared. The numbers come from the op's own planner (_kernels.workspace_bytes), on the ISA this CPU
selects (or --isa); with --measure, each layer's tile families are timed on this CPU first
(_kernels.measure_plan) and the fastest is planned, as the op does by default."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .compare import CompareError, _attrs, conv_geometry, conv_nodes, parse_input_shapes, plan_inputs

CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


class PlanError(Exception):
    pass


def _as_onnx_conv(model):
    """A copy whose com.im2win::Conv / FusedConv nodes are ONNX Convs, so that ONNX shape inference
    sizes what follows them (Y's shape is ONNX Conv's either way)."""
    import onnx

    from .._library import DOMAIN

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if (node.domain == DOMAIN and node.op_type == "Conv") or (node.domain == "com.microsoft"
                                                                  and node.op_type == "FusedConv"):
            kept = [a for a in node.attribute if a.name in CONV_ATTRIBUTES]
            inputs = list(node.input)[:3]
            del node.attribute[:]
            node.attribute.extend(kept)
            del node.input[:]
            node.input.extend(inputs)
            node.domain = ""
    return out


def layer_plans(model, shapes: dict, threads: int, isa: str = "", measure: bool = False) -> list[dict]:
    """One record per Conv node of the top-level graph (in graph order) at the given input shapes.

    measure: time each layer's candidate tile families on this CPU (_kernels.measure_plan), as the op
    does under im2win.plan=measure, and plan the fastest; the record's "measured" holds each
    candidate's time in seconds."""
    from .. import _kernels

    plans = []
    for name, node, x_shape, w_shape, _ in conv_nodes(_as_onnx_conv(model), shapes):
        record = {"node": name, "x_shape": x_shape, "w_shape": w_shape}
        if x_shape is None:
            plans.append({**record, "note": "shapes unknown to ONNX shape inference"})
            continue
        try:
            strides, dilations, begin, end, group = conv_geometry(x_shape, w_shape, _attrs(node))
            kw = dict(strides=strides, pads=begin + end, dilations=dilations, group=group, isa=isa, threads=threads)
            chosen = {}
            if measure:
                timed = _kernels.measure_plan(list(x_shape), list(w_shape), **kw)
                record["measured"] = {f"{c['tile_family']} {c['tile']}": c["seconds"] for c in timed["candidates"]}
                if timed["tile_family"] != "depthwise":
                    chosen = {key: timed[key] for key in ("channel_vectors", "read_in_place")}
                    chosen["tiles"] = timed["tile_family"]
            plan = _kernels.workspace_bytes(list(x_shape), list(w_shape), **chosen, **kw)
        except Exception as e:  # the op refuses this layer: say why, as the op would
            plans.append({**record, "note": str(e).splitlines()[0]})
            continue
        items = int(plan["work_items"])
        record.update({k: plan[k] for k in ("tile_family", "tile", "rows_per_block", "row_blocks", "row_quantum",
                                            "channel_chunks",
                                            "channel_run", "prefetch_weights", "strip_panel", "work_items", "threads",
                                            "balance", "im2win_per_thread", "im2win_shared", "im2col", "l2_bytes")})
        record["items_per_thread"] = items / threads
        plans.append(record)
    return plans


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _measured(p: dict) -> str:
    return " / ".join(f"{tile} {seconds * 1e3:.3g} ms" for tile, seconds in p.get("measured", {}).items())


def format_table(plans: list[dict], threads: int, batch: int, isa: str) -> str:
    from .. import _kernels

    caches = _kernels.cache_sizes()
    measured = any("measured" in p for p in plans)
    lines = [f"plan for {threads} thread(s), batch {batch}, ISA {isa}; L2 {caches['l2_bytes'] >> 10} KiB, "
             f"panel budget {caches['panel_budget_bytes'] >> 10} KiB"
             + ("; tile families timed on this CPU" if measured else ""),
             "| node | X -> W | tile | rows/block | blocks x chunks | items | items/thread | balance "
             "| per thread | shared |" + (" measured |" if measured else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if measured else "")]
    for p in plans:
        shapes = f"{'x'.join(map(str, p['x_shape'] or ['?']))} -> {'x'.join(map(str, p['w_shape'] or ['?']))}"
        if "note" in p:
            lines.append(f"| {p['node']} | {shapes} | {p['note']} | | | | | | | |" + (" |" if measured else ""))
            continue
        lines.append(f"| {p['node']} | {shapes} | {p['tile_family']} {p['tile']} | {p['rows_per_block']} | "
                     f"{p['row_blocks']} x {p['channel_chunks']} | {p['work_items']} | {p['items_per_thread']:.1f} | "
                     f"{p['balance']:.2f} | {_bytes(p['im2win_per_thread'])} | {_bytes(p['im2win_shared'])} |"
                     + (f" {_measured(p)} |" if measured else ""))
    planned = [p for p in plans if "note" not in p]
    if planned:
        fewest = min(p["items_per_thread"] for p in planned)
        worst = min(p["balance"] for p in planned)
        lines.append(f"{len(planned)} Conv node(s) planned: fewest items per thread {fewest:.1f}, lowest balance "
                     f"{worst:.2f}; largest shared panel {_bytes(max(p['im2win_shared'] for p in planned))}, "
                     f"largest per-thread workspace {_bytes(max(p['im2win_per_thread'] for p in planned))}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im2win-ort plan",
        description="The plan com.im2win::Conv runs for every Conv node of MODEL with an intra-op pool of T threads: "
                    "tile, rows per block, work items and their balance, workspace per thread and shared.")
    parser.add_argument("model", help="an ONNX model (original or rewritten)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads the work is cut for (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="the batch for a symbolic first dimension (default 1)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="shape of an input with other symbolic dimensions, e.g. input=Nx3x224x224")
    parser.add_argument("--isa", default="", help="plan for this ISA (avx512, avx2, generic; default: this CPU's)")
    parser.add_argument("--measure", action="store_true",
                        help="time each layer's tile families on this CPU and plan the fastest, as the op does under "
                             "its default session entry im2win.plan=measure (without it: the planner's rules, "
                             "im2win.plan=heuristic)")
    parser.add_argument("--json", metavar="FILE", help="also write the plans as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .. import _kernels
    from ..rewriter.model_io import ModelError, load_model

    try:
        if not 1 <= args.threads <= 1024:
            raise PlanError(f"--threads must be between 1 and 1024, got {args.threads}")
        if args.batch < 1:
            raise PlanError(f"--batch must be >= 1, got {args.batch}")
        isa = _kernels.selected_isa(args.isa)
        model = load_model(args.model)
        _, shapes = plan_inputs(model, [args.batch], parse_input_shapes(args.input_shape))
        plans = layer_plans(model, shapes[args.batch], args.threads, isa, measure=args.measure)
        if not plans:
            raise PlanError(f"{args.model}: the model has no Conv node")
        print(format_table(plans, args.threads, args.batch, isa))
        if args.json:
            from ..measure.compare_report import write_atomic

            write_atomic(Path(args.json), json.dumps({"threads": args.threads, "batch": args.batch, "isa": isa,
                                                "measured": args.measure, "layers": plans}, indent=1))
    except (PlanError, CompareError, ModelError, ValueError, OSError) as e:
        print(f"im2win-ort plan: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
