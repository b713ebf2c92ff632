"""`im2win-ort --version` and `im2win-ort info`: what a bug report needs, and the machine section
that the stored benchmark runs carry."""

from __future__ import annotations

import importlib.metadata

import pytest

from im2win_ort import _kernels, cli, sysinfo


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"im2win-ort {importlib.metadata.version('im2win-ort')}"


def test_info_prints_versions_cpu_isas_caches_and_threads(capsys):
    import onnx
    import onnxruntime

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    caches = _kernels.cache_sizes()
    for text in (f"im2win-ort {sysinfo.version()}", f"onnxruntime {onnxruntime.__version__}",
                 f"onnx {onnx.__version__}", f"ISA selected: {_kernels.selected_isa()}",
                 "available: " + ", ".join(_kernels.available_isas()), sysinfo.cpu_class(),
                 "library: ", "logical CPUs"):
        assert text in out
    assert f"{caches['l2_bytes'] // 1024} KiB" in out or f"{caches['l2_bytes'] // 1024 // 1024} MiB" in out
    assert "FMA probe" not in out  # only when asked


def test_info_probe_measures_each_thread_count(capsys):
    assert cli.main(["info", "--probe", "--threads", "1,2"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("FMA probe"))
    assert "1 thread " in line and "2 threads " in line


def test_info_refuses_bad_thread_counts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "--probe", "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_machine_section_has_what_a_stored_run_needs():
    m = sysinfo.machine_info([1], probe=True, probe_seconds=0.05)
    for key in ("cpu", "cpu_class", "cores", "features", "isa", "isas_available", "l2_bytes", "panel_budget_bytes",
                "im2win_ort", "onnxruntime", "onnx", "python"):
        assert key in m
    assert m["isa"] in m["isas_available"] and m["fma_peak_gflops"]["1"] > 0
    assert "fma_peak_gflops" not in sysinfo.machine_info([1], probe=False)


@pytest.mark.parametrize("entries, isa, want", [
    ({"vendor_id": "AuthenticAMD", "model name": "AMD EPYC", "cpu family": "25", "model": "1"}, "avx2",
     "amd-epyc-zen3-avx2"),
    ({"vendor_id": "AuthenticAMD", "model name": "AMD EPYC 9R14 96-Core Processor", "cpu family": "25",
      "model": "17"}, "avx512", "amd-epyc-zen4-avx512"),
    ({"vendor_id": "AuthenticAMD", "model name": "AMD EPYC 7R32", "cpu family": "23", "model": "49"}, "avx2",
     "amd-epyc-zen2-avx2"),
    ({"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Platinum 8488C", "cpu family": "6",
      "model": "143"}, "avx512", "intel-xeon-sapphirerapids-avx512"),
    # A model number that names no single microarchitecture (or a masked one in a VM): no guess.
    ({"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Processor", "cpu family": "6", "model": "167"},
     "avx512", "intel-xeon-avx512"),
    ({}, "generic", None),
])
def test_cpu_class_names(entries, isa, want):
    got = sysinfo.cpu_class(entries, isa)
    if want is None:
        assert got.endswith("-generic") and "/" not in got
    else:
        assert got == want
