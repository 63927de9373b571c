#!/usr/bin/env bash
# Cross-builds the C++ core and its ctest programs for aarch64 Linux (build/aarch64) with Debian's GNU
# toolchain and cmake/aarch64-linux-gnu.cmake, and runs them under qemu-aarch64.
#   --test    run the C++ tests once per CPU model and check that run-time dispatch picked its kernels:
#               cortex-a53  Armv8.0, AdvSIMD only         -> neon          (SDOT would raise SIGILL here)
#               cortex-a76  Armv8.2 + dotprod              -> neon_dotprod
#               max         every feature qemu has (i8mm) -> neon_i8mm
#             Each test_kernels run prints the kernel table dispatch chose and compares every NEON kernel
#             its CPU runs with the scalar twin.
#   --python  also build edge_rt._core for Debian's arm64 CPython (tools/aarch64_sysroot.sh lays it out)
#             and write build/aarch64/python3: that interpreter under qemu-aarch64 (QEMU_CPU picks the
#             model, default max) with this checkout's edge_rt and the aarch64 wheels of its dependencies.
# Emulation says nothing about speed: nothing here is timed.
# Needs: g++-aarch64-linux-gnu, qemu-user (tools/system_deps.sh), cmake and ninja (pip).
# Usage: tools/cross_aarch64.sh [--test] [--python]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/aarch64
test=0 python=0
for arg in "$@"; do
  case $arg in
    --test) test=1 ;;
    --python) python=1 ;;
    *) echo "usage: tools/cross_aarch64.sh [--test] [--python]" >&2; exit 2 ;;
  esac
done
for tool in aarch64-linux-gnu-g++ qemu-aarch64 cmake; do
  command -v "$tool" >/dev/null || { echo "cross_aarch64.sh: $tool not found (tools/system_deps.sh, pip)" >&2; exit 2; }
done
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
sysroot=$PWD/build/aarch64-sysroot
py_opts=()
if ((python)); then
  tools/aarch64_sysroot.sh
  # FindPython asks the arm64 interpreter itself (under qemu) for its version and extension suffix.
  printf '#!/bin/sh\nexec qemu-aarch64 -L %s %s "$@"\n' "$sysroot/root" "$sysroot/root/usr/bin/python3.11" \
    >"$sysroot/python3.11-qemu"
  chmod +x "$sysroot/python3.11-qemu"
  py_opts=(-DEDGE_RT_PYTHON=ON -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)"
    -DPython_EXECUTABLE="$sysroot/python3.11-qemu" -DPython_INCLUDE_DIR="$sysroot/root/usr/include/python3.11"
    # Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>; searched after the toolchain's.
    -DCMAKE_CXX_FLAGS="-idirafter $sysroot/root/usr/include")
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f $dir/CMakeCache.txt ]] || { ((python)) && ! grep -q '^EDGE_RT_PYTHON:BOOL=ON' "$dir/CMakeCache.txt"; }; then
  cmake -S native -B "$dir" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DEDGE_RT_BUILD_TESTS=ON "${py_opts[@]}" >/dev/null
fi
cmake --build "$dir" -j"$(nproc)"

if ((python)); then
  # The package as an install would lay it out: the Python sources linked, the aarch64 module copied.
  pkg=$dir/pkg
  rm -rf "$pkg" && mkdir -p "$pkg/edge_rt"
  for f in edge_rt/*; do
    [[ $f == edge_rt/_core*.so || $f == edge_rt/__pycache__ || $f == edge_rt/quantize || $f == edge_rt/devices ]] && continue
    ln -s "$PWD/$f" "$pkg/edge_rt/"
  done
  ln -s "$PWD/quantize" "$pkg/edge_rt/quantize"
  ln -s "$PWD/devices" "$pkg/edge_rt/devices"
  cp "$dir"/_core*.so "$pkg/edge_rt/"
  # The module needs the libstdc++ it was linked against; the sysroot's (bookworm's libstdc++6) is that one.
  cat >"$dir/python3" <<WRAPPER
#!/bin/sh
# arm64 CPython under qemu-aarch64 with build/aarch64's edge_rt (tools/cross_aarch64.sh --python)
export QEMU_CPU=\${QEMU_CPU:-max}
PYTHONPATH="$PWD/$pkg:$sysroot/site\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64 -L "$sysroot/root" "$sysroot/root/usr/bin/python3.11" "\$@"
WRAPPER
  chmod +x "$dir/python3"
  echo "aarch64 Python: $dir/python3 (e.g. $dir/python3 -m edge_rt.cli run --temp 0)"
fi

((test)) || exit 0
declare -A expect=([cortex-a53]=neon [cortex-a76]=neon_dotprod [max]=neon_i8mm)
for cpu in cortex-a53 cortex-a76 max; do
  echo "== qemu-aarch64 -cpu $cpu"
  log=$dir/test_kernels.$cpu.log
  QEMU_CPU=$cpu qemu-aarch64 "$dir/test_kernels" >"$log" 2>&1 || { cat "$log"; echo "test_kernels failed on $cpu" >&2; exit 1; }
  sed -n '1,/vec ops/p' "$log"
  tail -n 1 "$log"
  got=$(sed -n 's/^best_isa=\([a-z0-9_]*\).*/\1/p' "$log")
  if [[ $got != "${expect[$cpu]}" ]]; then
    echo "dispatch on $cpu chose $got, expected ${expect[$cpu]}" >&2
    exit 1
  fi
  QEMU_CPU=$cpu ctest --test-dir "$dir" --output-on-failure -E '^test_kernels$'
done
echo "aarch64: C++ tests pass on cortex-a53, cortex-a76 and max; dispatch neon, neon_dotprod, neon_i8mm"
