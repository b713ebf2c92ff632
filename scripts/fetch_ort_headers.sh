#!/usr/bin/env bash
# Puts ONNX Runtime's C/C++ headers in a cache and prints the include directory.
# Debian's libonnxruntime-dev (trixie: 1.21.0) is fetched with `apt-get download` from the Debian
# mirror that this machine's apt sources already name, using a private apt state directory:
# nothing is installed system-wide and only the headers are unpacked.
#   usage: fetch_ort_headers.sh [CACHE_DIR]
set -euo pipefail

suite="${IM2WIN_ORT_DEB_SUITE:-trixie}"
cache="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/im2win-ort}"
dest="$cache/ort-headers-$suite"
if [ -f "$dest/include/onnxruntime/onnxruntime_c_api.h" ]; then
  echo "$dest/include/onnxruntime"
  exit 0
fi

die() { echo "fetch_ort_headers: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found; set ORT_INCLUDE_DIR to a directory holding onnxruntime_c_api.h"

# The first Debian archive URI the apt sources name (deb822 .sources or one-line .list files).
mirror=$( { cat /etc/apt/sources.list 2>/dev/null; cat /etc/apt/sources.list.d/*.list 2>/dev/null; \
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null; } |
          grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
[ -n "$mirror" ] || die "no Debian mirror found in the apt sources; set ORT_INCLUDE_DIR instead"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "$keyring not found (package debian-archive-keyring); set ORT_INCLUDE_DIR instead"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial" "$work/etc/sources.list.d" \
         "$work/etc/preferences.d" "$work/deb"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$work/etc/sources.list"
opts=(-o "Dir::State=$work/state" -o "Dir::State::status=/dev/null" -o "Dir::Cache=$work/cache"
      -o "Dir::Etc::sourcelist=$work/etc/sources.list" -o "Dir::Etc::sourceparts=$work/etc/sources.list.d"
      -o "Dir::Etc::preferencesparts=$work/etc/preferences.d" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -qq update >&2 || die "apt-get update of $suite from the Debian mirror failed"
(cd "$work/deb" && apt-get "${opts[@]}" -qq download libonnxruntime-dev >&2) ||
  die "apt-get download libonnxruntime-dev ($suite) failed"
deb=$(ls "$work"/deb/libonnxruntime-dev_*.deb)
dpkg-deb -x "$deb" "$work/root"
[ -f "$work/root/usr/include/onnxruntime/onnxruntime_c_api.h" ] || die "$deb holds no onnxruntime_c_api.h"
mkdir -p "$dest.tmp/include"
cp -r "$work/root/usr/include/onnxruntime" "$dest.tmp/include/"
basename "$deb" > "$dest.tmp/SOURCE"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "$dest/include/onnxruntime"
