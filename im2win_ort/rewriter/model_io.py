"""Reading and writing models safely: clear errors for bad input, atomic writes, external data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto

# Protobuf cannot serialize a message of 2 GiB or more: such models keep their tensors outside.
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024


class ModelError(Exception):
    """The model cannot be read or written; the message names the file and the problem."""


def load_model(model) -> onnx.ModelProto:
    """An onnx.ModelProto from a path, bytes or a ModelProto (returned as is), external data included."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
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
    missing = [loc for loc in _external_locations(proto) if not (path.parent / loc).is_file()]
    if missing:
        raise ModelError(f"{path}: external data file(s) missing next to the model: {', '.join(sorted(set(missing)))}")
    if any(True for _ in _external_locations(proto)):
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as e:
            raise ModelError(f"{path}: external data could not be read ({e})") from None
    return proto


def _tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _tensors(sub)


def _external_locations(model: onnx.ModelProto):
    for t in _tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            yield next((e.value for e in t.external_data if e.key == "location"), "")


def uses_external_data(path) -> bool:
    """Whether the model file at `path` keeps tensors in external files."""
    try:
        return any(True for _ in _external_locations(onnx.load(str(path), load_external_data=False)))
    except Exception:
        return False


def tensor_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in _tensors(model.graph))


def save_model(model: onnx.ModelProto, path, external_data: bool | None = None) -> None:
    """Writes `model` to `path` atomically: the file (and its external data file) appear complete or
    not at all. external_data None: external when the tensors would not fit in one protobuf. With
    external data, onnx moves the tensors of `model` itself out to the file (no second copy)."""
    path = Path(path)
    if external_data is None:
        external_data = tensor_bytes(model) >= EXTERNAL_DATA_THRESHOLD
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelError(f"{path}: cannot write, directory {directory} does not exist")
    if path.is_dir():
        raise ModelError(f"{path}: cannot write, it is a directory")
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=f".{path.name}.") as tmp:
            staged = Path(tmp) / path.name
            data_name = path.name + ".data"
            if external_data:
                onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
                # onnx writes no data file when every tensor is under the threshold (kept inline).
                if (Path(tmp) / data_name).exists():
                    os.replace(Path(tmp) / data_name, directory / data_name)
            else:
                onnx.save_model(model, str(staged))
            os.replace(staged, path)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot write ({e})") from None
