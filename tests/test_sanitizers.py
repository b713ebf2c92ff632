"""The library and the module built with AddressSanitizer and UndefinedBehaviorSanitizer
(CMake option IM2WIN_SANITIZE), running the error tests, the hostile cases, the fuzzer and a
larger seeded sweep of valid cases on every ISA path this CPU has. Any sanitizer report fails.

It builds in a cache folder (IM2WIN_SANITIZE_BUILD, default .sanitize-build in the checkout) so
that a second run only rebuilds what changed; IM2WIN_SKIP_SANITIZERS=1 skips it (the plain suite
still runs everything else)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("IM2WIN_SANITIZE_BUILD", ROOT / ".sanitize-build"))
# 1700 random cases x 3 tile families = 5100 valid cases per ISA path; 1000 hostile ones each.
SWEEP_CASES, FUZZ_EXAMPLES = "1700", "1000"
TESTS = ["test_errors.py", "test_hostile.py", "test_fuzz.py", "test_oracle_sweep.py", "test_kernels_numpy.py",
         "test_concurrency.py", "test_plan_measure.py", "test_nhwc.py", "test_winograd.py", "test_pool_nhwc.py", "test_layout_regions.py"]
REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")

pytestmark = pytest.mark.skipif(os.environ.get("IM2WIN_SKIP_SANITIZERS") == "1", reason="IM2WIN_SKIP_SANITIZERS=1")


@pytest.fixture(autouse=True)
def _build_tools():
    """The sanitized build needs what `pip install .` needs, outside pip's isolated build."""
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the sanitized build needs {' and '.join(missing)} on PATH")
    pytest.importorskip("pybind11", reason='the sanitized build needs pybind11: pip install ".[test]"')


def _build() -> Path:
    import pybind11

    from im2win_ort import _kernels

    # The ISA files this CPU cannot run are built uninstrumented: the tests never reach them here,
    # and instrumented they take most of the build's time.
    skip = ";".join(isa for isa in ("avx2", "avx512") if isa not in _kernels.available_isas())
    configure = ["cmake", "-S", str(ROOT), "-B", str(BUILD), "-DIM2WIN_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DIM2WIN_SANITIZE_SKIP={skip}",
                 f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    for command in (configure, ["cmake", "--build", str(BUILD), "-j", str(os.cpu_count() or 2)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return BUILD


def test_sanitized_build_passes_the_error_fuzz_and_sweep_tests(tmp_path):
    build = _build()
    # The package's Python files with the sanitized binaries beside them, imported first.
    package = tmp_path / "im2win_ort"
    shutil.copytree(ROOT / "im2win_ort", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for library in list(build.glob("libim2win_ort*.so")) + list(build.glob("_kernels*.so")):
        shutil.copy(library, package)
    # The ASan runtime must come first; libstdc++ too, or ASan cannot find the __cxa_throw it wraps
    # (python itself does not link it) and our first C++ exception aborts.
    preload = " ".join(subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
                       for name in ("libasan.so", "libstdc++.so"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), LD_PRELOAD=preload,
               # Python's own allocations are not ours to report; everything else is fatal.
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               IM2WIN_SWEEP_CASES=SWEEP_CASES, IM2WIN_FUZZ_EXAMPLES=FUZZ_EXAMPLES, IM2WIN_SKIP_SANITIZERS="1",
               # Sessions that do not say take the rules' plans: timing every fuzz case's candidates
               # under ASan would multiply the job's time; test_plan_measure.py asks for each mode.
               IM2WIN_PLAN="heuristic")
    check = subprocess.run([sys.executable, "-c", "import im2win_ort, sys; print(im2win_ort.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith(str(tmp_path)), check.stdout + check.stderr
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider",
                           *[str(ROOT / "tests" / t) for t in TESTS]],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800)
    output = done.stdout + done.stderr
    summary = "\n".join(line for line in output.splitlines() if line.startswith("fuzz [") or " passed" in line)
    print(summary)
    first = min((output.find(r) for r in REPORTS if r in output), default=-1)
    assert first < 0, output[max(0, first - 2000):first + 4000]
    assert done.returncode == 0, output[-6000:]
