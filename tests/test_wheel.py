"""The portable wheel (scripts/build_wheel.sh: pip wheel + auditwheel repair) installs where nothing can
compile and works there: a fresh virtual environment (no system site-packages) gets the wheel and its
dependencies from a local directory only (--no-index --only-binary :all: --no-build-isolation), then runs
`im2win-ort demo` (the detected ISA and the generic kernels) and `im2win-ort rewrite --validate`.

IM2WIN_WHEEL names an already built wheel (CI builds it once); otherwise the test builds one (about a
minute on 2 cores). The dependencies are fetched once with `pip download` (from pip's cache when it has
them), at the versions installed here; without network the test is skipped, unless IM2WIN_WHEEL is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import onnx
import pytest

from helpers import small_net

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("numpy", "onnx", "onnxruntime", "tqdm")  # pyproject's [project] dependencies


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def _isolated_env(**extra) -> dict:
    """The environment without pip's configuration (no index, no find-links but the ones given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("IM2WIN_WHEEL")
    if given:
        path = Path(given)
        assert path.is_file() and path.suffix == ".whl", f"IM2WIN_WHEEL={given} is not a wheel file"
        return path
    out = tmp_path_factory.mktemp("wheel")
    built = _run(["bash", ROOT / "scripts" / "build_wheel.sh", out], cwd=ROOT)
    assert built.returncode == 0, f"scripts/build_wheel.sh failed:\n{built.stderr[-4000:]}"
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheelhouse(wheel, tmp_path_factory) -> Path:
    """The wheel plus binary wheels of its dependencies (at the versions installed here) in one directory."""
    house = tmp_path_factory.mktemp("wheelhouse")
    (house / wheel.name).write_bytes(wheel.read_bytes())
    pins = [f"{name}=={version(name)}" for name in DEPENDENCIES]
    got = _run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", house, *pins])
    if got.returncode != 0:
        message = f"pip download {' '.join(pins)} failed:\n{got.stderr[-2000:]}"
        if os.environ.get("IM2WIN_WHEEL"):
            pytest.fail(message)
        pytest.skip(message)
    return house


@pytest.fixture(scope="module")
def venv(wheelhouse, tmp_path_factory) -> Path:
    """A fresh virtual environment holding only the wheel and its dependencies, installed offline."""
    root = tmp_path_factory.mktemp("venv") / "env"
    made = _run([sys.executable, "-m", "venv", root])
    assert made.returncode == 0, made.stderr
    installed = _run([root / "bin" / "python", "-m", "pip", "install", "--no-index", "--find-links", wheelhouse,
                      "--only-binary=:all:", "--no-build-isolation", "--no-cache-dir", "im2win-ort"],
                     env=_isolated_env())
    assert installed.returncode == 0, f"installing the wheel offline failed:\n{installed.stdout[-2000:]}\n" \
                                      f"{installed.stderr[-3000:]}"
    return root


def test_wheel_is_manylinux_with_both_binaries_and_no_grafted_libraries(wheel):
    assert "-manylinux_" in wheel.name and wheel.name.endswith("_x86_64.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        tags = [line for line in z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode().splitlines()
                if line.startswith("Tag:")]
        library = z.read("im2win_ort/libim2win_ort.so")
    assert tags and all("manylinux_" in t for t in tags), tags
    assert any(n.startswith("im2win_ort/_kernels.") and n.endswith(".so") for n in names)
    assert not [n for n in names if ".libs/" in n], "auditwheel grafted shared libraries into the wheel"
    assert b"RegisterCustomOps" in library and b"libonnxruntime" not in library


def test_installed_wheel_runs_demo_and_rewrite(venv, tmp_path):
    python, cli = venv / "bin" / "python", venv / "bin" / "im2win-ort"
    env = _isolated_env()
    # The package and its library come from the virtual environment, and nothing was built for it.
    where = _run([python, "-c", "import im2win_ort, onnxruntime, sys; print(im2win_ort.get_library_path()); "
                                "print(onnxruntime.__version__); print(sys.prefix)"], cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    library, ort_version, prefix = where.stdout.split()
    assert Path(library).is_relative_to(venv.resolve()) and Path(prefix).resolve() == venv.resolve()
    listed = _run([python, "-m", "pip", "list", "--format=freeze"], env=env).stdout.lower()
    assert "im2win-ort==" in listed or "im2win_ort==" in listed
    assert "pybind11" not in listed and "scikit-build" not in listed

    for isa in ("auto", "generic"):  # run-time dispatch: the detected ISA, and the kernels for any x86-64
        demo = _run([cli, "demo", "--batch", "2"], cwd=tmp_path, env={**env, "IM2WIN_ISA": isa})
        assert demo.returncode == 0, f"demo (IM2WIN_ISA={isa}) failed:\n{demo.stdout}\n{demo.stderr}"
        assert "OK: outputs match ORT" in demo.stdout
        if isa == "generic":
            assert "ISA generic" in demo.stdout

    onnx.save_model(small_net(), str(tmp_path / "model.onnx"))
    rewrite = _run([cli, "rewrite", "model.onnx", "-o", "out.onnx", "--validate"], cwd=tmp_path, env=env)
    assert rewrite.returncode == 0, f"rewrite failed:\n{rewrite.stdout}\n{rewrite.stderr}"
    assert "max abs error" in rewrite.stdout and "FAILED" not in rewrite.stdout
    assert "3 Conv node(s) on com.im2win::Conv" in rewrite.stdout, rewrite.stdout
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert sum(n.domain == "com.im2win" for n in out.graph.node) == 3

    repo = _run([python, "-m", "im2win_ort.deploy.triton", "model.onnx", "-o", "repo"], cwd=tmp_path, env=env)
    assert repo.returncode == 0, repo.stderr
    assert (tmp_path / "repo" / "model" / "config.pbtxt").is_file()
    print(f"wheel {Path(library).parent.parent.name}: demo and rewrite ran with onnxruntime {ort_version}")


def test_only_the_isa_kernel_files_get_isa_flags():
    """Run-time dispatch needs the baseline x86-64 everywhere but in the per-ISA kernel files: no -march,
    and -mavx*/-mfma only as those files' own compile options (the demo above runs IM2WIN_ISA=generic)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "-march" not in cmake and "-mtune=native" not in cmake
    flagged = [line for line in cmake.splitlines() if "-mavx" in line or "-mfma" in line]
    assert flagged and all(line.startswith("set_source_files_properties(ops/kernels/avx") for line in flagged), flagged
