"""Reading and writing models safely: clear errors for bad input, atomic writes, external data,
and the one guard every command that writes goes through (check_outputs): an output is written by
renaming a finished file onto its path, so that path must be absent or a regular file, and never
one of the files the command reads."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_tensor

# Protobuf cannot serialize a message of 2 GiB or more: such models keep their tensors outside.
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024


class ModelError(Exception):
    """The model cannot be read or written; the message names the file and the problem."""


def load_model(model) -> onnx.ModelProto:
    """An onnx.ModelProto from a path, bytes or a ModelProto (returned as is), external data included."""
    return load_model_with_files(model)[0]


def load_model_with_files(model) -> tuple[onnx.ModelProto, list[Path]]:
    """(the model, the files it was read from: the model file, then its external data files); no
    files for bytes or a ModelProto. Writers protect these files (check_outputs)."""
    if isinstance(model, onnx.ModelProto):
        return model, []
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model)), []
        except Exception as e:
            raise ModelError(f"the bytes given are not an ONNX model ({e})") from None
    path = Path(model)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    if not proto.graph.node and not proto.graph.input and not proto.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no graph)")
    external = [t for t in all_tensors(proto) if t.data_location == TensorProto.EXTERNAL]
    locations = list(dict.fromkeys(_location(t) for t in external))
    # is_file: a missing file, a directory or a FIFO (whose read would block) are all missing data.
    missing = [loc for loc in locations if not (loc and (path.parent / loc).is_file())]
    if missing:
        names = ", ".join(sorted(loc if loc.isprintable() and loc else repr(loc) for loc in missing))
        raise ModelError(f"{path}: external data file(s) missing next to the model: {names}")
    for tensor in external:
        try:
            load_external_data_for_tensor(tensor, str(path.parent))
        except Exception as e:
            raise ModelError(f"{path}: external data could not be read ({_one_line(e)})") from None
    return proto, [path] + [path.parent / loc for loc in locations]


def _one_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _location(tensor) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _node_tensors(node):
    for attr in node.attribute:
        # By field, not by attr.type: a tensor stored under another declared type is still data to load.
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors)
        for s in sparse:
            yield s.values
            yield s.indices
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from _graph_tensors(sub)


def _graph_tensors(graph):
    yield from graph.initializer
    for s in graph.sparse_initializer:
        yield s.values
        yield s.indices
    for node in graph.node:
        yield from _node_tensors(node)


def all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model that ONNX can keep outside it: initializers (sparse ones too)
    and tensor attributes of the graph, of every subgraph and of the model-local functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def uses_external_data(path) -> bool:
    """Whether the model file at `path` keeps tensors in external files."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(t.data_location == TensorProto.EXTERNAL for t in all_tensors(proto))


def tensor_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in all_tensors(model))


def data_file(path) -> Path:
    """Where save_model writes the external data of a model written to `path`."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def output_files(path, external_data: bool | None = True) -> list[Path]:
    """The files save_model may write for `path`: the model, and its data file unless external_data is False."""
    return [Path(path)] + ([data_file(path)] if external_data is not False else [])


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _same_file(a: Path, a_stat, b: Path) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        if a_stat is None:
            return False
        b_stat = os.stat(b)
    except (OSError, ValueError):
        return False
    return (a_stat.st_dev, a_stat.st_ino) == (b_stat.st_dev, b_stat.st_ino)


def _inside(path: Path, directory: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(directory)]) == os.path.realpath(directory)
    except (OSError, ValueError):
        return False


def check_outputs(outputs, inputs=(), directory: bool = False) -> None:
    """Raises ModelError (one line) unless every path of `outputs` may be replaced by a rename.

    An existing output must be a regular file (a directory when `directory`), not a symbolic link,
    FIFO or device: a rename would put a file where /dev/null or a link was. No output may be one
    of `inputs` (the files the command reads), by path or as the same file under another name,
    and a directory output may not hold one of them. Writers call it before they start, so that
    nothing is done for an output they cannot write, and again just before the rename."""
    inputs = [Path(i) for i in inputs]
    for out in outputs:
        out = Path(out)
        try:
            st = os.lstat(out)
        except FileNotFoundError:
            st = None
        except (OSError, ValueError) as e:  # a name too long, a path through a file, a NUL byte
            raise ModelError(f"{out}: cannot write ({getattr(e, 'strerror', None) or e})") from None
        wanted = stat.S_ISDIR if directory else stat.S_ISREG
        if st is not None and not wanted(st.st_mode):
            what = "a directory" if directory else "a regular file"
            raise ModelError(f"{out}: exists and is {_kind(st.st_mode)}, not {what}; refusing to replace it")
        for index, source in enumerate(inputs):
            if _same_file(out, st, source) or (directory and _inside(source, out)):
                which = "the input model" if index == 0 else f"the input's external data file {source.name}"
                how = "holds" if directory and not _same_file(out, st, source) else "is"
                raise ModelError(f"{out}: {how} {which}; the output would overwrite the input, choose another output")


def save_model(model: onnx.ModelProto, path, external_data: bool | None = None, inputs=()) -> None:
    """Writes `model` to `path` atomically: the file (and its external data file) appear complete or
    not at all. external_data None: external when the tensors would not fit in one protobuf. With
    external data, onnx moves the tensors of `model` itself out to the file (no second copy).
    inputs: the files the model was read from (load_model_with_files), which are never written."""
    path = Path(path)
    if external_data is None:
        external_data = tensor_bytes(model) >= EXTERNAL_DATA_THRESHOLD
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelError(f"{path}: cannot write, directory {directory} does not exist")
    outputs = output_files(path, external_data)
    check_outputs(outputs, inputs)
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=f".{path.name}.") as tmp:
            staged = Path(tmp) / path.name
            data_name = data_file(path).name
            if external_data:
                onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
            else:
                onnx.save_model(model, str(staged))
            check_outputs(outputs, inputs)  # again: the paths may have changed while the model was written
            # onnx writes no data file when every tensor is under the threshold (kept inline).
            if external_data and (Path(tmp) / data_name).exists():
                os.replace(Path(tmp) / data_name, directory / data_name)
            os.replace(staged, path)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot write ({e})") from None
