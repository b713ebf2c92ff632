"""The main job, start to finish: export a network of models/ (ResNet-50 by default) to ONNX,
rewrite it to com.im2win::Conv, validate the rewrite against ORT, then compare memory and speed
with ORT's own Conv (and PyTorch when installed), and say where the report and charts are.

    python -m models [NAME] [--out DIR] [--batch 1] [--threads 1] [--runs 5] [--width W] [--resolution R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import NETWORKS
from .export import export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="resnet50", help=f"one of {', '.join(NETWORKS)} (default resnet50)")
    parser.add_argument("--out", default="im2win-run", help="working directory (default ./im2win-run)")
    parser.add_argument("--batch", default="1", help="batch sizes to compare (default 1)")
    parser.add_argument("--threads", default="1", help="intra-op threads to compare (default 1)")
    parser.add_argument("--runs", default="5", help="timed runs per configuration (default 5)")
    parser.add_argument("--width", type=float, default=None, help="channel multiplier of the network (default 1)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default 224)")
    args = parser.parse_args(argv)
    if args.name not in NETWORKS:
        parser.error(f"unknown network {args.name!r}; choose from {', '.join(NETWORKS)}")

    def im2win_ort(arguments: list[str]) -> int:
        # The installed package, run from outside the source tree (whose im2win_ort has no
        # compiled library; `python -m models` runs from the repository root), told where models/
        # is so that compare can build the PyTorch twin of the network.
        env = dict(os.environ, IM2WIN_MODELS_ROOT=str(Path(__file__).resolve().parent.parent))
        return subprocess.call([sys.executable, "-m", "im2win_ort"] + arguments, cwd=out, env=env)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"1/3 exporting {args.name} to ONNX", flush=True)
    options = {k: v for k, v in (("width", args.width), ("resolution", args.resolution)) if v is not None}
    model = Path(export(args.name, out, **options))
    print(f"    {model}")
    rewritten = out / f"{args.name}.im2win.onnx"
    print("2/3 rewriting its Conv nodes to com.im2win::Conv and validating against ORT", flush=True)
    if im2win_ort(["rewrite", str(model), "-o", str(rewritten), "--validate"]) != 0:
        return 1
    report = out / "compare"
    print("3/3 comparing memory and speed with ORT's Conv (each configuration in a fresh process)", flush=True)
    status = im2win_ort(["compare", str(model), "--out", str(report), "--batch", args.batch, "--threads", args.threads,
                         "--runs", args.runs] + (["--torch", args.name] if options else []))
    print(f"\nrewritten model: {rewritten}\nreport and charts: {report}/ (report.md, report.json, *.png)")
    return status


if __name__ == "__main__":
    sys.exit(main())
