"""One configuration of `im2win-ort compare`, measured in a process of its own.

    python /path/to/im2win_ort/measure/compare_worker.py SPEC.json

The parent (im2win_ort.measure.compare) writes SPEC.json, starts this file as a script in a fresh
interpreter, and reads back one line of stdout that starts with RESULT_MARKER followed by JSON.
So that a configuration's memory is only its own, this file imports nothing but the standard
library and NumPy at start, then either onnxruntime (ORT configurations) or torch and models/
(PyTorch configurations; models/ also imports onnx, with which it makes the seeded weights), never
both runtimes, and not the im2win_ort package (whose rewriter and sessions import onnx and onnxruntime). One
configuration per process, so its runs are simply consecutive (no other pool spins beside them).
The custom-op library path comes in the spec.

Measured, in this order:
  rss_base   VmRSS once the runtime (and for PyTorch models/) is imported and the inputs are
             loaded, before the model;
  rss_load   VmRSS after the session / network is created, before the first run;
  peak_load  VmHWM (the high-water mark of the resident set) at that point, after which the mark
             is restarted (Linux's /proc/self/clear_refs);
  times      `warmup` untimed runs, then `runs` timed runs (time.perf_counter around each);
  peak_run   VmHWM after the last run: the peak while running (None where it cannot be restarted);
  peak_rss   the process's peak, max(peak_load, peak_run) (VmHWM after the runs without restart).
The outputs of the last run are saved to spec["outputs"] (an .npz, output order kept) after the
memory readings, for the parent to compare with ORT_ENABLE_ALL's.

Spec keys: kind ("ort" | "torch"), inputs (.npz), outputs (.npz), threads, runs, warmup; for ort:
model, level ("all" | "extended"), arena (bool), library (custom-op library path or null); for
torch: models_root (the directory that holds models/), network, options (dict for the network's
builder), mkldnn (bool).
"""

from __future__ import annotations

import json
import os
import sys
import time

RESULT_MARKER = "IM2WIN_COMPARE_RESULT "

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script: the package directory is sys.path[0]; keep its module names from shadowing others.
    sys.path.pop(0)

import numpy as np  # noqa: E402


def _status_kib(field: str):
    """A field of /proc/self/status in bytes (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    value = _status_kib("VmHWM")
    if value is None:  # not Linux: getrusage's high-water mark (KiB on Linux/BSD, bytes on macOS)
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value *= 1 if sys.platform == "darwin" else 1024
    return value


def current_rss():
    return _status_kib("VmRSS")


def reset_peak() -> bool:
    """Restarts VmHWM from the current RSS (Linux >= 4.0: "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load_inputs(path: str) -> dict:
    with np.load(path) as data:
        return {k: np.ascontiguousarray(data[k]) for k in data.files}


def _ort_runner(spec: dict, feeds: dict):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if spec.get("library"):
        # The pool size the op cuts its work for (im2win_ort._library.THREADS_ENTRY), before registering.
        so.add_session_config_entry("im2win.intra_op_num_threads", str(int(spec["threads"])))
        so.register_custom_ops_library(spec["library"])
    so.intra_op_num_threads = int(spec["threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[spec["level"]]
    so.enable_cpu_mem_arena = bool(spec["arena"])
    sess = ort.InferenceSession(spec["model"], so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=spec.get("disabled_optimizers") or [])
    names = [o.name for o in sess.get_outputs()]
    return (lambda: sess.run(None, feeds)), names, {"onnxruntime": ort.__version__}


def _torch_models(spec: dict):
    """models.torch_models, whose create() gives the network as a torch.nn.Module in eval mode with
    the seeded weights that the ONNX model of the same options holds."""
    root = spec["models_root"]
    if root not in sys.path:
        sys.path.append(root)
    from models import torch_models

    return torch_models


def _torch_runner(spec: dict, feeds: dict):
    import torch

    torch.set_num_threads(int(spec["threads"]))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (cannot happen in a fresh process, but harmless)
        pass
    flags = {"mkldnn": bool(spec["mkldnn"])}
    torch.backends.mkldnn.enabled = flags["mkldnn"]
    if not flags["mkldnn"]:
        # oneDNN off: leave PyTorch no fast path but its im2col + GEMM (slow_conv2d); NNPACK would
        # otherwise take some batched convolutions.
        torch.backends.nnpack.set_flags(False)
    nnpack_enabled = getattr(torch._C, "_get_nnpack_enabled", None)
    flags["nnpack"] = bool(nnpack_enabled()) if nnpack_enabled else None
    module = _torch_models(spec).create(spec["network"], **spec.get("options", {})).eval()
    if len(feeds) != 1:
        raise ValueError(f"the PyTorch network takes one input, the model has {len(feeds)}")
    x = torch.from_numpy(next(iter(feeds.values())))

    def run():
        with torch.inference_mode():
            out = module(x)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.numpy() for o in outs]

    return run, None, {"torch": torch.__version__, **flags}


def measure(spec: dict) -> dict:
    t0 = time.perf_counter()
    feeds = _load_inputs(spec["inputs"])
    # The runtime and the code that builds the network are part of the base reading.
    if spec["kind"] == "ort":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401

        _torch_models(spec)
    rss_base = current_rss()
    t1 = time.perf_counter()
    run, names, versions = (_ort_runner if spec["kind"] == "ort" else _torch_runner)(spec, feeds)
    load_seconds = time.perf_counter() - t1
    rss_load = current_rss()
    peak_load = peak_rss()
    reset = reset_peak()
    outputs = None
    for _ in range(int(spec.get("warmup", 1))):
        outputs = run()
    times = []
    for _ in range(int(spec["runs"])):
        start = time.perf_counter()
        outputs = run()
        times.append(time.perf_counter() - start)
    peak_run = peak_rss() if reset else None
    peak = max(peak_load, peak_run) if reset else peak_rss()
    names = names or [f"output{i}" for i in range(len(outputs))]
    if spec.get("outputs"):
        staged = spec["outputs"] + ".tmp.npz"
        np.savez(staged, **{f"{i:04d}": np.asarray(o) for i, o in enumerate(outputs)})
        os.replace(staged, spec["outputs"])
    return {
        "rss_base_bytes": rss_base, "rss_load_bytes": rss_load, "peak_rss_bytes": peak,
        "peak_load_rss_bytes": peak_load, "peak_run_rss_bytes": peak_run,
        "latency_s": float(np.median(times)) if times else None, "times_s": times,
        "load_s": load_seconds, "wall_s": time.perf_counter() - t0, "output_names": names,
        "versions": versions,
        "runtimes_imported": sorted(m for m in ("onnx", "onnxruntime", "torch") if m in sys.modules),
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: compare_worker.py SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    try:
        result = measure(spec)
    except Exception as e:  # reported to the parent as this configuration's error
        message = " ".join(f"{type(e).__name__}: {e}".split())
        print(RESULT_MARKER + json.dumps({"error": message[:500]}), flush=True)
        return 1
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
