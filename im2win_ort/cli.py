"""The im2win-ort command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="im2win-ort", description="im2win convolution for ONNX Runtime")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run a small built-in network on com.im2win::Conv and check it against ORT")
    demo.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ORT's)")
    demo.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    sub.add_parser("info", help="print the library path and the ISAs this CPU can run")
    sub.add_parser("bench", help="per-layer benchmark against ORT's Conv (see `im2win-ort bench --help`)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command in (None, "demo"):
        from .demo import run_demo

        return run_demo(threads=getattr(args, "threads", None), batch=getattr(args, "batch", 4))
    if args.command == "info":
        from . import _kernels, get_library_path

        print(f"library: {get_library_path()}")
        print(f"ISAs available: {', '.join(_kernels.available_isas())}; selected: {_kernels.selected_isa()}")
        return 0
    parser.print_help(sys.stderr)
    return 2
