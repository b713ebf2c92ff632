#!/usr/bin/env bash
# Runs the op's core tests against one onnxruntime release: a fresh virtual environment gets the built
# wheel (scripts/build_wheel.sh; built here when not given), exactly that onnxruntime, pytest and
# hypothesis, and runs the tests of the op, the rewriter and the deploy tools from tests/.
#   usage: scripts/test_ort_version.sh VERSION [WHEEL]
# .ci/run calls it with the oldest release pyproject.toml claims (the main test run has the newest).
set -euo pipefail
die() { echo "test_ort_version: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: scripts/test_ort_version.sh VERSION [WHEEL]"
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
version=$1
wheel=${2:-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "$wheel" ] || wheel=$("$root/scripts/build_wheel.sh" "$work/wheel")
[ -f "$wheel" ] || die "$wheel: no such wheel"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel" "onnxruntime==$version" "pytest>=7" "hypothesis>=6" ||
  die "could not install the wheel with onnxruntime==$version"
installed=$("$work/venv/bin/python" -c "import onnxruntime; print(onnxruntime.__version__)")
[ "$installed" = "$version" ] || die "asked for onnxruntime $version, got $installed"
echo "test_ort_version: onnxruntime $installed, $(basename "$wheel")" >&2

# test_fuzz.py is not among them: it runs ORT's own Conv on hostile nodes as the oracle, and
# onnxruntime 1.21's Conv dies of a floating point exception on some of them.
# From the repository root (the tests' rootdir), with the venv's pytest script: unlike `python -m pytest`,
# it does not put the source tree's im2win_ort (no compiled library) before the installed one.
cd "$root"
"$work/venv/bin/pytest" -q -p no:cacheprovider \
  tests/test_oracle_sweep.py tests/test_onnx_conformance.py tests/test_runtime_version.py \
  tests/test_shape_inference.py tests/test_errors.py tests/test_concurrency.py tests/test_rewrite.py \
  tests/test_rewrite_cli.py tests/test_ort_versions.py tests/test_deploy.py tests/test_hostile.py \
  tests/test_plan_measure.py
