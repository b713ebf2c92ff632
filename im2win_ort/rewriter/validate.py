"""Runs a model and its rewritten form in ORT on the same inputs and compares every output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

DEFAULT_TOLERANCE = 1e-3  # relative to each output's largest magnitude


@dataclass
class OutputDifference:
    name: str
    max_abs: float
    max_rel: float  # max |a - b| / max(1, max |a|)

    def ok(self, tolerance: float) -> bool:
        return self.max_rel <= tolerance


def random_inputs(model: onnx.ModelProto, seed: int = 0, symbolic_dim: int = 1) -> dict[str, np.ndarray]:
    """One array per graph input (not initializers): symbolic dims set to symbolic_dim, floats ~N(0, 1)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ValueError(f"input '{value.name}' is not a tensor; give inputs with --inputs")
        shape = [d.dim_value if d.HasField("dim_value") else symbolic_dim for d in tensor.shape.dim]
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(object)
        # np.asarray: a scalar input (shape []) must still be an array for ORT.
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
        elif dtype == np.bool_:
            feeds[value.name] = np.asarray(rng.random(shape) < 0.5)
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = np.asarray(rng.integers(0, 4, shape), dtype=dtype)
        else:
            kind = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "unknown"
            raise ValueError(f"input '{value.name}' has element type {kind}, which random inputs do not cover; "
                             "give inputs with --inputs")
    return feeds


def check_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Raises ValueError naming the first input that the model cannot take: a missing or unknown
    name, another element type, rank or fixed dimension."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    names = {v.name for v in inputs}
    unknown = sorted(set(feeds) - names)
    if unknown:
        raise ValueError(f"inputs {unknown} are not inputs of the model (it takes {sorted(names)})")
    for value in inputs:
        if value.name not in feeds:
            raise ValueError(f"input '{value.name}' is missing")
        if not value.type.HasField("tensor_type"):
            continue
        tensor, given = value.type.tensor_type, np.asarray(feeds[value.name])
        try:
            expected = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            expected = None
        if expected is not None and expected != object and given.dtype != expected:
            raise ValueError(f"input '{value.name}' must be {expected}, got {given.dtype}")
        if tensor.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if given.ndim != len(dims) or any(d is not None and d != g for d, g in zip(dims, given.shape)):
                shape = ["?" if d is None else d for d in dims]
                raise ValueError(f"input '{value.name}' must have shape {shape}, got {list(given.shape)}")


def compare(original, rewritten, feeds: dict[str, np.ndarray], threads: int | None = None) -> list[OutputDifference]:
    """Runs both models (ORT's Conv for the original, the im2win library for the rewritten one)."""
    import onnxruntime as ort

    from ..session import InferenceSession

    def serialized(m):
        return m.SerializeToString() if isinstance(m, onnx.ModelProto) else m

    if isinstance(original, onnx.ModelProto):
        check_feeds(original, feeds)
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    try:
        want = ort.InferenceSession(serialized(original), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as e:  # ORT's own errors are several classes; one line of its message says enough
        raise ValueError(f"the original model does not run in ORT: {_first_line(e)}") from None
    try:
        sess = InferenceSession(serialized(rewritten), threads=threads, rewrite=False)
        got = sess.run(None, feeds)
    except Exception as e:
        raise ValueError(f"the rewritten model does not run in ORT: {_first_line(e)}") from None
    differences = []
    for out, a, b in zip(sess.get_outputs(), want, got):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            differences.append(OutputDifference(out.name, float("inf"), float("inf")))
            continue
        abs_err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        scale = max(1.0, float(np.max(np.abs(a64)))) if a64.size else 1.0
        differences.append(OutputDifference(out.name, abs_err, abs_err / scale))
    return differences


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


__all__ = ["DEFAULT_TOLERANCE", "OutputDifference", "check_feeds", "compare", "random_inputs"]
