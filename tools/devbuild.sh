#!/usr/bin/env bash
# Developer build: compiles the C++ core, its ctest tests, edge_rt._core and libedge_rt.so (the C ABI) into
# build/dev, and copies the module and the library next to the Python sources so `PYTHONPATH=. pytest tests/...`
# runs against the working tree. Builds are serialized with flock because several people (or agents) may share one tree.
# Usage: tools/devbuild.sh [--asan] [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/dev
extra=()
if [[ "${1:-}" == "--asan" ]]; then dir=build/asan; extra=(-DEDGE_RT_SANITIZE=address -DCMAKE_BUILD_TYPE=RelWithDebInfo); shift; fi
mkdir -p build
(
  flock 9
  if [[ ! -f $dir/build.ninja ]]; then
    cmake -S . -B "$dir" -G Ninja -DEDGE_RT_PYTHON=ON -DEDGE_RT_BUILD_TESTS=ON \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" "${extra[@]}" >/dev/null
  fi
  cmake --build "$dir" -j2
  if [[ $dir == build/dev ]]; then
    # Copy then rename: replacing the file in place would crash processes that have it mapped.
    for so in "$dir"/native/_core*.so "$dir"/native/libedge_rt.so; do
      cp -f "$so" "edge_rt/.$(basename "$so").tmp" && mv -f "edge_rt/.$(basename "$so").tmp" "edge_rt/$(basename "$so")"
    done
    # The wheel installs quantize/ and devices/ as edge_rt.quantize / edge_rt.devices; mirror that in-tree.
    ln -sfn ../quantize edge_rt/quantize
    ln -sfn ../devices edge_rt/devices
  fi
  if [[ "${1:-}" == "--test" ]]; then ctest --test-dir "$dir/native" --output-on-failure; fi
) 9>build/.devbuild.lock
