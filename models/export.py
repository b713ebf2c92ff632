"""Export the networks of models/ to ONNX files.

    python -m models.export resnet50                       # ./resnet50.onnx
    python -m models.export --all --out exported/ --width 0.25 --resolution 64
    python -m models.export mobilenet_v2 --backend onnx --fold-bn
    python -m models.export --list

Run from the repository root (models/ is not installed). The backend defaults to torch
(torch.onnx.export of torch_models) when PyTorch is importable, else the onnx builder; both write
the same graph and weights. Files are written atomically (a temporary file, then os.replace).
Exit status: 0 on success, 2 for bad arguments (an unknown name among them), 1 when an export fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python models/export.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "models"

import onnx

import models
from models import specs


def save_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> str:
    """Writes `model` to `path` through a temporary file in the same directory and os.replace, so
    that a reader never sees a partial file; returns the path. An existing `path` that is not a
    regular file (a FIFO, a device, a link) is refused with ModelError, never replaced."""
    from im2win_ort.rewriter.model_io import check_outputs

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    check_outputs([path])
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        check_outputs([path])
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def export(
    name: str,
    out_dir: str | os.PathLike = ".",
    backend: str = "auto",
    **options,
) -> str:
    """Builds network `name` with `backend` ("onnx", "torch" or "auto") and writes
    out_dir/NAME.onnx; returns the path. Options as in models.build."""
    name = models.resolve(name)
    model = models.build(name, backend=backend, **options)
    return save_atomic(model, Path(out_dir) / f"{name}.onnx")


def _positive_float(text: str) -> float:
    from im2win_ort import _args

    try:  # finite too: a width of inf or nan builds no network
        return _args.number(text, "value", above=0)
    except _args.ArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    from im2win_ort import _args

    try:
        return _args.integer(text, "value", minimum=1, maximum=_args.INT32_MAX)
    except _args.ArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Export standard CNNs (seeded weights, dynamic batch) to NAME.onnx.",
        epilog="networks: " + ", ".join(models.names()),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="network(s) to export (see --list)")
    p.add_argument("--all", action="store_true", help="export every network")
    p.add_argument("--list", action="store_true", help="print the network names and exit")
    p.add_argument("--out", default=".", metavar="DIR", help="output directory (default: .)")
    p.add_argument(
        "--backend", choices=("torch", "onnx"), default=None,
        help="torch (torch.onnx.export) or onnx (the onnx.helper builder); default: torch when "
        "PyTorch is importable, else onnx",
    )
    p.add_argument("--width", type=_positive_float, default=1.0, help="channel multiplier (default 1.0)")
    p.add_argument("--resolution", type=_positive_int, default=specs.DEFAULT_RESOLUTION,
                   help=f"input height and width (default {specs.DEFAULT_RESOLUTION})")
    p.add_argument("--num-classes", type=_positive_int, default=specs.DEFAULT_NUM_CLASSES,
                   help=f"classifier outputs (default {specs.DEFAULT_NUM_CLASSES})")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.add_argument("--fold-bn", action="store_true",
                   help="fold each BatchNormalization after a Conv into it (torch.onnx.export's "
                   "constant folding); default: keep them")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(models.names()))
        return 0
    if args.all and args.names:
        p.error("give network names or --all, not both")
    if not args.all and not args.names:
        p.error(f"give a network name or --all; networks: {', '.join(models.names())}")
    names = models.names() if args.all else []
    for n in args.names:
        try:
            names.append(models.resolve(n))
        except KeyError:
            p.error(f"unknown network {n!r}; choose from: {', '.join(models.names())}")
    backend = args.backend or models.default_backend()
    if backend == "torch" and not models.torch_available():
        p.error("--backend torch needs PyTorch, which is not importable here; use --backend onnx")
    options = dict(
        width=args.width, resolution=args.resolution, num_classes=args.num_classes, seed=args.seed,
        fold_bn=args.fold_bn,
    )
    from im2win_ort.rewriter.model_io import ModelError

    for name in names:
        start = time.perf_counter()
        try:
            path = export(name, args.out, backend=backend, **options)
        except (ValueError, OSError, RuntimeError, ImportError, ModelError) as e:
            print(f"error: {e}" if name in str(e) else f"error: {name}: {e}", file=sys.stderr)
            return 1
        size = os.path.getsize(path) / 2**20
        print(f"{path}  ({name}, {backend} backend, {size:.1f} MiB, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
