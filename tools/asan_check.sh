#!/usr/bin/env bash
# Runs the hostile-GGUF test matrix (and the C++ reader test) against an AddressSanitizer build of the
# core: builds build/asan, lays out a throwaway package dir with the ASan _core next to the Python
# sources, and runs pytest with the ASan runtime preloaded (libstdc++ too, or the first C++ exception
# thrown inside Python aborts in ASan's __cxa_throw interceptor).
# Usage: tools/asan_check.sh [pytest args...]   (default: tests/test_gguf_hostile.py; tests/test_capi.py runs
# the C ABI's hostile-file and bad-call tests the same way)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/devbuild.sh --asan
build/asan/native/test_gguf_reader
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
mkdir -p "$pkg/edge_rt"
for f in edge_rt/*.py edge_rt/*.pyi; do ln -s "$PWD/$f" "$pkg/edge_rt/"; done
ln -s "$PWD/quantize" "$pkg/edge_rt/quantize"
ln -s "$PWD/devices" "$pkg/edge_rt/devices"
ln -s "$PWD/edge_rt/models" "$pkg/edge_rt/models"
cp build/asan/native/_core*.so build/asan/native/libedge_rt.so "$pkg/edge_rt/"
ln -s "$PWD/tests" "$pkg/tests"
root=$PWD
# From $pkg: `python -m` puts the working directory first on sys.path, where the checkout's own edge_rt
# (with a devbuild _core) would shadow the ASan one.
cd "$pkg"
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$pkg" \
  python3 -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" "${@:-tests/test_gguf_hostile.py}"
