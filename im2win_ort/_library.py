"""Where the compiled custom-op library lives, and session options that load it."""

from __future__ import annotations

from pathlib import Path

DOMAIN = "com.im2win"
OP_TYPE = "Conv"
_LIBRARY_NAME = "libim2win_ort.so"
# The session config entry that tells the op the intra-op pool's size (see session_options).
THREADS_ENTRY = "im2win.intra_op_num_threads"
# The session config entry that says how the op chooses each layer's plan: "measure" (the default:
# time the candidate tile families the first time a shape runs, keep the fastest for the session),
# "heuristic" (the planner's rules, no timing), or a pinned tile family, "positions" or "channels".
PLAN_ENTRY = "im2win.plan"
PLAN_MODES = ("measure", "heuristic", "positions", "channels")


def get_library_path() -> str:
    """Absolute path of the ORT custom-op library that registers com.im2win::Conv."""
    path = Path(__file__).resolve().parent / _LIBRARY_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: im2win_ort was not built; install it with `pip install .` from the source tree"
        )
    return str(path)


def session_options(threads: int | None = None, graph_optimization_level=None, plan: str | None = None):
    """onnxruntime.SessionOptions with the im2win library registered.

    threads sets intra_op_num_threads (None keeps ORT's default: one per core) and tells the op the
    same, in the session config entry THREADS_ENTRY, which must be set before the library is
    registered: ORT gives a custom op no way to read the pool's size, and the op cuts its work for it.
    plan sets PLAN_ENTRY (one of PLAN_MODES; None leaves the op's default, measure).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.add_session_config_entry(THREADS_ENTRY, str(int(threads)))
    if plan is not None:
        so.add_session_config_entry(PLAN_ENTRY, check_plan_mode(plan))
    so.register_custom_ops_library(get_library_path())
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    if graph_optimization_level is not None:
        so.graph_optimization_level = graph_optimization_level
    return so


def check_plan_mode(plan: str) -> str:
    if plan not in PLAN_MODES:
        raise ValueError(f"plan must be one of {', '.join(PLAN_MODES)}, got {plan!r}")
    return plan
