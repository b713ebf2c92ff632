"""What a bug report or a stored benchmark run needs to say about the machine and the software.

``machine_info()`` is the machine section that ``im2win-ort bench`` and ``im2win-ort compare`` write
into their JSON, and ``im2win-ort info`` prints it (with the FMA probe when asked, ``--probe``).
``cpu_class()`` names a CPU class the way the stored runs in ``benchmarks/results/`` are named:
vendor, brand, microarchitecture where the CPUID family and model say it unambiguously, and the
widest ISA the kernels can run here (``amd-epyc-zen3-avx2``).
"""

from __future__ import annotations

import os
import platform

# The CPU features that decide which kernels run (and which ORT's MLAS runs).
FEATURES = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"]


def version() -> str:
    """This package's version, from its installed metadata (the source tree's when not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version as metadata_version

        return metadata_version("im2win-ort")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def cpuinfo(path: str = "/proc/cpuinfo") -> dict:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    entries: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if entries:
                        break
                    continue
                key, _, value = line.partition(":")
                entries.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return entries


def _int(text: str | None) -> int | None:
    try:
        return int(text, 0) if text is not None else None
    except ValueError:
        return None


def microarchitecture(vendor: str, family: int | None, model: int | None) -> str:
    """The core's microarchitecture where CPUID's family and model name it alone, else ""."""
    if family is None or model is None:
        return ""
    if vendor == "AuthenticAMD":
        if family == 0x17:
            return "zen1" if model < 0x30 else "zen2"
        if family == 0x19:
            if model < 0x10 or 0x20 <= model < 0x30 or 0x40 <= model < 0x60:
                return "zen3"
            if 0x10 <= model < 0x20 or 0x60 <= model < 0x80 or 0xA0 <= model < 0xB0:
                return "zen4"
        if family == 0x1A:
            return "zen5"
    if vendor == "GenuineIntel" and family == 6:
        return {0x55: "skylake-sp", 0x6A: "icelake-sp", 0x6C: "icelake-sp", 0x8F: "sapphirerapids",
                0xCF: "emeraldrapids", 0xAD: "graniterapids", 0xAE: "graniterapids"}.get(model, "")
    return ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def cpu_class(info: dict | None = None, isa: str | None = None) -> str:
    """A file-name-safe name of this CPU's class, e.g. amd-epyc-zen3-avx2 or intel-xeon-avx512."""
    info = cpuinfo() if info is None else info
    vendor = info.get("vendor_id", "")
    name = info.get("model name", "")
    parts = [{"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, _slug(vendor) or platform.machine())]
    for brand in ("EPYC", "Ryzen", "Threadripper", "Xeon", "Core"):
        if brand.lower() in name.lower():
            parts.append(brand.lower())
            break
    uarch = microarchitecture(vendor, _int(info.get("cpu family")), _int(info.get("model")))
    if uarch:
        parts.append(uarch)
    if isa is None:
        from . import _kernels

        isa = _kernels.available_isas()[0]
    parts.append(isa)
    return "-".join(p for p in parts if p)


def machine_info(threads_list=(1,), probe: bool = True, probe_seconds: float = 0.3) -> dict:
    """The machine section of a stored run: CPU (model, class, family and model numbers, features),
    the ISA the kernels run and those available, the core's L2 and the panel budget derived from it,
    logical CPUs, software versions, and the FMA probe's GFLOP/s per thread count (when probe)."""
    import numpy
    import onnx
    import onnxruntime as ort

    from . import _kernels

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    isas = list(_kernels.available_isas())
    caches = _kernels.cache_sizes()
    machine = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_class": cpu_class(info, isas[0]),
        "vendor": info.get("vendor_id", ""),
        "cpu_family": _int(info.get("cpu family")), "cpu_model": _int(info.get("model")),
        "cores": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": [f for f in FEATURES if f in flags],
        "isa": _kernels.selected_isa(), "isas_available": isas,
        "l2_bytes": int(caches["l2_bytes"]), "panel_budget_bytes": int(caches["panel_budget_bytes"]),
        "im2win_ort": version(), "onnxruntime": ort.__version__, "onnx": onnx.__version__,
        "numpy": numpy.__version__, "python": platform.python_version(),
    }
    if probe:
        machine["fma_peak_gflops"] = {str(t): _kernels.fma_peak_gflops(threads=t, seconds=probe_seconds)
                                      for t in threads_list}
    return machine


def format_info(machine: dict, library: str) -> str:
    """`im2win-ort info`'s text: one line per fact, in the order a bug report reads them."""
    def kib(n: int) -> str:
        return f"{n // 1024} KiB" if n % (1024 * 1024) else f"{n // (1024 * 1024)} MiB"

    lines = [
        f"im2win-ort {machine['im2win_ort']}",
        f"library: {library}",
        f"onnxruntime {machine['onnxruntime']}; onnx {machine['onnx']}; numpy {machine['numpy']}; "
        f"Python {machine['python']}",
        f"CPU: {machine['cpu']} (class {machine['cpu_class']}; family {machine['cpu_family']} "
        f"model {machine['cpu_model']}; features: {' '.join(machine['features']) or 'none of note'})",
        f"ISA selected: {machine['isa']}; available: {', '.join(machine['isas_available'])}",
        f"L2 per core: {kib(machine['l2_bytes'])}; window-panel budget: {kib(machine['panel_budget_bytes'])}",
        f"threads: {machine['cores']} logical CPUs, {machine['cpus_usable']} usable by this process (without "
        "im2win.intra_op_num_threads the op plans for every hardware thread)",
    ]
    peaks = machine.get("fma_peak_gflops")
    if peaks:
        lines.append("FMA probe (FP32 GFLOP/s, ISA " + machine["isa"] + "): "
                     + ", ".join(f"{t} thread{'s' if t != '1' else ''} {g:.1f}" for t, g in peaks.items()))
    return "\n".join(lines)


def info_main(probe: bool = False, threads: list[int] | None = None) -> int:
    """`im2win-ort info [--probe] [--threads T,...]`."""
    from ._library import get_library_path

    print(format_info(machine_info(threads or [1], probe=probe), get_library_path()))
    return 0
