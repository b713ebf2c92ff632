"""The im2win-ort command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="im2win-ort", description="im2win convolution for ONNX Runtime")
    from .sysinfo import version

    parser.add_argument("--version", action="version", version=f"im2win-ort {version()}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run a small built-in network on com.im2win::Conv and check it against ORT")
    demo.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ORT's)")
    demo.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    rw = sub.add_parser("rewrite", help="rewrite a model's Conv nodes to com.im2win::Conv",
                        description="Rewrites MODEL's Conv nodes to com.im2win::Conv (folding BatchNormalization, "
                                    "constant Mul/Add, fusing residual Add and activations) and writes the result.")
    rw.add_argument("model", help="the ONNX model to read (never modified)")
    rw.add_argument("-o", "--output", help="where to write the rewritten model (default: MODEL.im2win.onnx)")
    rw.add_argument("--validate", action="store_true",
                    help="run both models in ORT and fail if any output differs beyond --tolerance")
    rw.add_argument("--inputs", metavar="NPZ", help="inputs for --validate (default: random, symbolic dims = 1)")
    rw.add_argument("--tolerance", type=float, default=None,
                    help="largest |difference| / max(1, max |output|) --validate accepts (default 1e-3)")
    rw.add_argument("--skip-pointwise", action="store_true", help="keep 1x1 convs on ORT")
    rw.add_argument("--skip-depthwise", action="store_true", help="keep depthwise convs on ORT")
    rw.add_argument("--no-prepack", action="store_true",
                    help="keep weights in ONNX's OIHW order (the session then also holds a packed copy)")
    rw.add_argument("--plan", choices=["measure", "heuristic"], default="measure",
                    help="how each packed weight's tile family is chosen: measure (default) times the layer's "
                         "families on this CPU, as a session does; heuristic takes the planner's rules (the same "
                         "output on every run)")
    rw.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto",
                    help="nhwc: run each region of two or more connected convs channels-last, transposing at its "
                         "borders only; nchw: ONNX's layout throughout; auto (default): each region timed both "
                         "ways on this CPU at --threads, channels-last where that is at least 3%% faster "
                         "(with --plan heuristic: nchw)")
    rw.add_argument("--threads", default="1",
                    help="intra-op threads the model will run with, at which --layout auto times the regions "
                         "(default 1)")
    rw.add_argument("--algorithm", choices=["auto", "direct"], default="auto",
                    help="auto (default): channels-last 3x3 convs of stride 1 run Winograd, whose transformed "
                         "weights U take 16/9 to 4x W; direct: none does (less memory)")
    rw.add_argument("--winograd-weights", choices=["auto", "transformed", "original"], default="auto",
                    help="how the W of a Winograd conv is stored: transformed (as U: the session holds U alone, "
                         "not W and U, but the file and ORT's peak while loading grow), original (as W), auto "
                         "(default: transformed where the file grows by no more than the W it saves)")
    rw.add_argument("--report", action="store_true", help="print what was replaced, fused, folded and left to ORT")
    rw.add_argument("--external-data", choices=["auto", "yes", "no"], default="auto",
                    help="write tensors to MODEL.data next to the output (auto: when the input had external "
                         "data or the model is over 2 GB)")
    info = sub.add_parser("info", help="print what a bug report needs: versions, CPU, ISAs, caches, threads")
    info.add_argument("--probe", action="store_true", help="also measure the FP32 FMA peak (about 0.3 s a thread count)")
    info.add_argument("--threads", default="1", help="thread counts for --probe, comma-separated (default 1)")
    sub.add_parser("bench", help="per-layer benchmark against ORT's Conv (see `im2win-ort bench --help`)",
                   add_help=False)
    sub.add_parser("compare", help="peak memory and latency of a whole model: rewritten vs ORT's Conv and PyTorch "
                                   "(see `im2win-ort compare --help`)", add_help=False)
    sub.add_parser("plan", help="the plan com.im2win::Conv runs per Conv node for T threads (see `im2win-ort plan "
                                "--help`)", add_help=False)
    sub.add_parser("profile", help="where a model's time goes, op type by op type, in ORT and on com.im2win::Conv "
                                   "(see `im2win-ort profile --help`)", add_help=False)
    sub.add_parser("triton-config", help="write a Triton Inference Server model repository for a model on "
                                         "com.im2win::Conv (see `im2win-ort triton-config --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from .measure.bench import main as bench_main

        return bench_main(rest)
    if args.command == "compare":
        from .measure.compare import main as compare_main

        return compare_main(rest)
    if args.command == "plan":
        from .measure.plan import main as plan_main

        return plan_main(rest)
    if args.command == "profile":
        from .measure.profile import main as profile_main

        return profile_main(rest)
    if args.command == "triton-config":
        from .deploy.triton import main as triton_main

        return triton_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command in (None, "demo"):
        from .demo import run_demo

        return run_demo(threads=getattr(args, "threads", None), batch=getattr(args, "batch", 4))
    if args.command == "rewrite":
        return _rewrite_command(args)
    if args.command == "info":
        from .sysinfo import info_main

        try:
            threads = [int(t) for t in args.threads.split(",") if t]
        except ValueError:
            threads = []
        if not threads or min(threads) < 1:
            parser.error(f"--threads takes comma-separated positive integers, got {args.threads!r}")
        return info_main(probe=args.probe, threads=threads)
    parser.print_help(sys.stderr)
    return 2


def _rewrite_command(args) -> int:
    """Reads, rewrites, optionally validates, then writes atomically; errors end with exit code 1."""
    from pathlib import Path

    import numpy as np

    from . import _args
    from .rewriter.model_io import ModelError, check_outputs, load_model_with_files, output_files, save_model
    from .rewriter import RewriteError, rewrite_with_report
    from .rewriter.validate import DEFAULT_TOLERANCE, compare, random_inputs

    source = Path(args.model)
    target = Path(args.output) if args.output else source.with_name(source.stem + ".im2win.onnx")
    try:
        if args.tolerance is not None:
            _args.number(args.tolerance, "--tolerance", minimum=0)
        original, inputs = load_model_with_files(source)
        external = {"yes": True, "no": False}.get(args.external_data)
        if external is None and len(inputs) > 1:  # auto: the input had external data
            external = True
        threads = _args.integer(args.threads, "--threads", minimum=1, maximum=1024)
        check_outputs(output_files(target, external), inputs)  # before the work, not after it
        rewritten, report = rewrite_with_report(original, skip_pointwise=args.skip_pointwise,
                                                skip_depthwise=args.skip_depthwise, prepack=not args.no_prepack,
                                                plan=args.plan, layout=args.layout, threads=threads,
                                                algorithm=args.algorithm, winograd_weights=args.winograd_weights)
        if args.report:
            print(report.summary())
        if args.validate:
            tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
            if args.inputs:
                try:
                    with np.load(args.inputs) as data:
                        feeds = {k: data[k] for k in data.files}
                except Exception as e:
                    raise ModelError(f"{args.inputs}: cannot read the inputs ({e})") from None
            else:
                feeds = random_inputs(original)
            differences = compare(original, rewritten, feeds)
            failed = [d for d in differences if not d.ok(tolerance)]
            for d in differences:
                print(f"{d.name}: max abs error {d.max_abs:.3g}, max relative error {d.max_rel:.3g}"
                      f"{'  FAILED' if d in failed else ''}")
            if failed:
                print(f"im2win-ort rewrite: validation failed (tolerance {tolerance:g}); nothing written",
                      file=sys.stderr)
                return 1
        save_model(rewritten, target, external_data=external, inputs=inputs)
    except (ModelError, RewriteError, ValueError) as e:
        print(f"im2win-ort rewrite: error: {_args.one_line(e)}", file=sys.stderr)
        return 1
    print(f"wrote {target} ({len(report.replaced)} Conv node(s) on com.im2win::Conv, {len(report.fused)} fused, "
          f"{len(report.left)} left to ORT)")
    return 0
