"""Where the compiled custom-op library lives, and session options that load it."""

from __future__ import annotations

from pathlib import Path

DOMAIN = "com.im2win"
OP_TYPE = "Conv"
_LIBRARY_NAME = "libim2win_ort.so"


def get_library_path() -> str:
    """Absolute path of the ORT custom-op library that registers com.im2win::Conv."""
    path = Path(__file__).resolve().parent / _LIBRARY_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: im2win_ort was not built; install it with `pip install .` from the source tree"
        )
    return str(path)


def session_options(threads: int | None = None, graph_optimization_level=None):
    """onnxruntime.SessionOptions with the im2win library registered.

    threads sets intra_op_num_threads (None keeps ORT's default: one per core).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    if graph_optimization_level is not None:
        so.graph_optimization_level = graph_optimization_level
    return so
