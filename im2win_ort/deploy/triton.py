"""A Triton Inference Server model repository for a model whose Conv nodes run on com.im2win::Conv.

    im2win-ort triton-config MODEL.onnx -o REPO/ [--name NAME] [--max-batch-size N] [--library-path PATH]

writes
    REPO/NAME/config.pbtxt          backend "onnxruntime", inputs and outputs from the model, and
                                    model_operations { op_library_filename: PATH }
    REPO/NAME/1/model.onnx          MODEL rewritten to com.im2win::Conv (im2win_ort.rewrite)
    REPO/NAME/libim2win_ort.so      the custom-op library, for the server to load from PATH

Triton's onnxruntime backend registers every op_library_filename with the session options before it
loads the model; it takes the path as given, so PATH is where the library is *inside the server*:
by default /models/NAME/libim2win_ort.so, which is where the copy above lands when REPO is mounted at
/models (`tritonserver --model-repository=/models`). The library does not link libonnxruntime: it
works with the backend's ORT as long as that is 1.21 or newer (it refuses older ones with a message).

With --max-batch-size N > 0 (the default, 8, when every input and output has a symbolic first
dimension) Triton owns the batch dimension, so dims leave it out. Other symbolic dimensions are -1.
The whole NAME directory is written in a temporary directory beside it and moved into place: on any
error (one line, exit status 1) nothing of it is left in REPO.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto

from .. import _args

DEFAULT_MOUNT = "/models"  # the model repository's path inside the Triton container, by convention
DEFAULT_MAX_BATCH = 8
LIBRARY_FILE = "libim2win_ort.so"

# ONNX element type -> Triton's DataType (model_config.proto).
TRITON_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.BFLOAT16: "TYPE_BF16", TensorProto.INT8: "TYPE_INT8", TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64", TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16", TensorProto.UINT32: "TYPE_UINT32", TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.BOOL: "TYPE_BOOL", TensorProto.STRING: "TYPE_STRING",
}


class ConfigError(Exception):
    """The repository cannot be written; the message names the problem."""


def pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal: quotes, backslashes and non-printable bytes escaped."""
    out = []
    for byte in value.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_spec(value: onnx.ValueInfoProto, kind: str) -> tuple[str, list[int | str]]:
    """(Triton data type, dims with symbolic dimensions as their names) of a graph input or output."""
    t = value.type
    if t.WhichOneof("value") != "tensor_type":
        raise ConfigError(f"{kind} {value.name!r} is not a tensor (Triton's onnxruntime backend takes tensors only)")
    elem = t.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        name = TensorProto.DataType.Name(elem) if elem in TensorProto.DataType.values() else str(elem)
        raise ConfigError(f"{kind} {value.name!r} has element type {name}, which Triton has no type for")
    if not t.tensor_type.HasField("shape"):
        raise ConfigError(f"{kind} {value.name!r} has no known rank; give the model's {kind}s shapes")
    dims: list[int | str] = []
    for d in t.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return TRITON_TYPES[elem], dims


def _io_specs(model: onnx.ModelProto):
    """Inputs (graph inputs that are not initializers) and outputs, with shapes from shape inference
    where the model does not state them."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # too large for protobuf or inference failed: what the model states
        inferred = model
    initializers = {t.name for t in model.graph.initializer}
    inputs = [(v.name, *_tensor_spec(v, "input")) for v in inferred.graph.input if v.name not in initializers]
    outputs = [(v.name, *_tensor_spec(v, "output")) for v in inferred.graph.output]
    if not inputs:
        raise ConfigError("the model has no inputs")
    return inputs, outputs


def _batchable(specs) -> bool:
    return all(dims and isinstance(dims[0], str) for _, _, dims in specs)


def config_pbtxt(name: str, inputs, outputs, max_batch_size: int, library_path: str, instances: int = 1,
                 threads: int | None = None, dynamic_batching: bool = False) -> str:
    """The config.pbtxt text; inputs/outputs are (name, Triton type, dims) with symbolic dims as str."""
    lines = [f"name: {pbtxt_string(name)}", 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}"]

    def tensors(key, specs):
        lines.append(f"{key} [")
        for i, (tensor, dtype, dims) in enumerate(specs):
            if max_batch_size > 0:
                dims = dims[1:]
            shown = [d if isinstance(d, int) else -1 for d in dims]
            lines.extend(["  {", f"    name: {pbtxt_string(tensor)}", f"    data_type: {dtype}"])
            if shown:
                lines.append(f"    dims: [ {', '.join(str(d) for d in shown)} ]")
            else:  # a tensor that is only the batch (or a scalar): Triton needs dims; reshape takes it back
                lines.extend(["    dims: [ 1 ]", "    reshape: { shape: [ ] }"])
            lines.append("  }," if i + 1 < len(specs) else "  }")
        lines.append("]")

    tensors("input", inputs)
    tensors("output", outputs)
    lines += ["instance_group [", "  {", f"    count: {instances}", "    kind: KIND_CPU", "  }", "]"]
    if dynamic_batching:
        lines.append("dynamic_batching { }")
    if threads is not None:
        lines += ["parameters {", '  key: "intra_op_thread_count"',
                  f"  value: {{ string_value: {pbtxt_string(str(threads))} }}", "}"]
    lines += ["model_operations {", f"  op_library_filename: {pbtxt_string(library_path)}", "}"]
    return "\n".join(lines) + "\n"


def write_repository(model_path, repo, name: str | None = None, max_batch_size: int | None = None,
                     library_path: str | None = None, version: int = 1, instances: int = 1,
                     threads: int | None = None, dynamic_batching: bool = False, force: bool = False,
                     validate: bool = False):
    """Writes REPO/NAME (see the module docstring); returns (its path, the RewriteReport, the
    max_batch_size written). Raises ConfigError or
    im2win_ort's ModelError/RewriteError with a one-line message; nothing is left behind then."""
    from .. import get_library_path
    from ..rewriter import rewrite_with_report
    from ..rewriter.model_io import ModelError, check_outputs, load_model_with_files, save_model

    source = Path(model_path)
    try:
        # Triton's model_config: version int64, max_batch_size and instance count int32.
        name = _args.name(name, "--name") if name is not None else \
            _args.name(source.stem, "model name (MODEL's file name)")
        version = _args.integer(version, "--version", minimum=1)
        instances = _args.integer(instances, "--instances", minimum=1, maximum=_args.INT32_MAX)
        if threads is not None:
            threads = _args.integer(threads, "--threads", minimum=1, maximum=_args.INT32_MAX)
        if max_batch_size is not None:
            max_batch_size = _args.integer(max_batch_size, "--max-batch-size", minimum=0, maximum=_args.INT32_MAX)
    except _args.ArgumentError as e:
        raise ConfigError(str(e)) from None
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise ConfigError(f"{repo}: exists and is not a directory")
    target = repo / name
    if os.path.lexists(target) and not force:
        raise ConfigError(f"{target} exists; remove it or pass --force to replace it")
    library = Path(get_library_path())

    original, model_files = load_model_with_files(source)
    # --force replaces only a real directory, and never one that holds the model it reads.
    check_outputs([target], model_files, directory=True)
    inputs, outputs = _io_specs(original)
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH if _batchable(inputs + outputs) else 0
    elif max_batch_size > 0 and not _batchable(inputs + outputs):
        fixed = next(n for n, _, dims in inputs + outputs if not (dims and isinstance(dims[0], str)))
        raise ConfigError(f"--max-batch-size {max_batch_size}: {fixed!r} has no symbolic first (batch) dimension; "
                          f"use --max-batch-size 0")
    rewritten, report = rewrite_with_report(original)
    if validate:
        from ..rewriter.validate import DEFAULT_TOLERANCE, compare, random_inputs

        bad = [d for d in compare(original, rewritten, random_inputs(original)) if not d.ok(DEFAULT_TOLERANCE)]
        if bad:
            raise ConfigError("validation failed: " + ", ".join(
                f"{d.name} max abs error {d.max_abs:.3g}" for d in bad) + "; nothing written")
    library_path = library_path or f"{DEFAULT_MOUNT}/{name}/{LIBRARY_FILE}"
    config = config_pbtxt(name, inputs, outputs, max_batch_size, library_path, instances, threads, dynamic_batching)

    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{repo}: cannot create the repository ({e.strerror})") from None
    try:
        staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{name}."))
    except OSError as e:
        raise ConfigError(f"{repo}: cannot write ({e.strerror})") from None
    try:
        (staging / str(version)).mkdir()
        save_model(rewritten, staging / str(version) / "model.onnx",
                   external_data=True if len(model_files) > 1 else None)
        shutil.copyfile(library, staging / LIBRARY_FILE)
        (staging / "config.pbtxt").write_text(config)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the server may run as another user
        check_outputs([target], model_files, directory=True)
        if os.path.lexists(target):  # --force: the old directory goes only once the new one is complete
            old = Path(tempfile.mkdtemp(dir=repo, prefix=f".{name}.old."))
            os.replace(target, old / name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except (OSError, ModelError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(str(e) if isinstance(e, ModelError) else f"{target}: cannot write ({e})") from None
    return target, report, max_batch_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="im2win-ort triton-config",
        description="Writes a Triton Inference Server model repository entry for MODEL with its Conv nodes on "
                    "com.im2win::Conv: REPO/NAME/config.pbtxt, REPO/NAME/VERSION/model.onnx and the custom-op "
                    "library REPO/NAME/libim2win_ort.so.")
    parser.add_argument("model", help="the ONNX model (never modified)")
    parser.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository directory")
    parser.add_argument("--name", help="the model's name in the repository (default: MODEL's file name stem)")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help=f"Triton's max_batch_size; 0 leaves the first dimension in dims (default: "
                             f"{DEFAULT_MAX_BATCH} when every input and output has a symbolic first dimension, else 0)")
    parser.add_argument("--library-path", metavar="PATH",
                        help=f"op_library_filename: where the server finds {LIBRARY_FILE} "
                             f"(default: {DEFAULT_MOUNT}/NAME/{LIBRARY_FILE}, the copy in REPO/NAME when REPO is "
                             f"mounted at {DEFAULT_MOUNT})")
    parser.add_argument("--version", type=int, default=1, help="the model version directory (default 1)")
    parser.add_argument("--instances", type=int, default=1, help="CPU instances of the model (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of each instance (the backend's intra_op_thread_count)")
    parser.add_argument("--dynamic-batching", action="store_true", help="add dynamic_batching { }")
    parser.add_argument("--validate", action="store_true",
                        help="run the original and the rewritten model in ORT first and fail if they differ")
    parser.add_argument("--force", action="store_true", help="replace REPO/NAME if it exists")
    args = parser.parse_args(argv)

    from ..rewriter import RewriteError
    from ..rewriter.model_io import ModelError

    try:
        target, report, batch = write_repository(
            args.model, args.output, name=args.name, max_batch_size=args.max_batch_size,
            library_path=args.library_path, version=args.version, instances=args.instances, threads=args.threads,
            dynamic_batching=args.dynamic_batching, force=args.force, validate=args.validate)
    except (ConfigError, ModelError, RewriteError, FileNotFoundError, ValueError) as e:
        print(f"im2win-ort triton-config: error: {_args.one_line(e)}", file=sys.stderr)
        return 1
    print(f"wrote {target}: config.pbtxt (max_batch_size {batch}), {args.version}/model.onnx "
          f"({len(report.replaced)} Conv node(s) on com.im2win::Conv, {len(report.left)} left to ORT), {LIBRARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
