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
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.random(shape) < 0.5
        else:
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def compare(original, rewritten, feeds: dict[str, np.ndarray], threads: int | None = None) -> list[OutputDifference]:
    """Runs both models (ORT's Conv for the original, the im2win library for the rewritten one)."""
    import onnxruntime as ort

    from ..session import InferenceSession

    def serialized(m):
        return m.SerializeToString() if isinstance(m, onnx.ModelProto) else m

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    want = ort.InferenceSession(serialized(original), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    sess = InferenceSession(serialized(rewritten), threads=threads, rewrite=False)
    got = sess.run(None, feeds)
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


__all__ = ["DEFAULT_TOLERANCE", "OutputDifference", "compare", "random_inputs"]
