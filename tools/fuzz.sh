#!/usr/bin/env bash
# Coverage-guided fuzzing of the hostile-input readers (native/fuzz/), under ASan + UBSan.
#
#   tools/fuzz.sh build                      clang build of the core, the C++ harnesses and the C++ tests
#                                            with -fsanitize=fuzzer(-no-link),address,undefined (build/fuzz)
#   tools/fuzz.sh ctest                      the C++ unit tests from that build (ASan + UBSan)
#   tools/fuzz.sh pytest [PYTEST ARGS]       pytest against that build's edge_rt._core (ASan + UBSan runtime
#                                            preloaded into Python; default: the hostile-input tests)
#   tools/fuzz.sh seeds                      seed corpora (tools/fuzz_seeds.py) into build/fuzz/seeds/
#   tools/fuzz.sh run HARNESS SECONDS [ARGS] fuzz one harness for SECONDS (0: no time limit, e.g. with
#                                            -runs=1000000 in ARGS; one process); new
#                                            inputs go to build/fuzz/corpus/HARNESS, crashes to
#                                            build/fuzz/artifacts/HARNESS/; ARGS go to libFuzzer
#   tools/fuzz.sh regress [HARNESS...]       every input of native/fuzz/regressions/HARNESS/ once
#   tools/fuzz.sh list                       the harness names
#
# Harnesses: fuzz_gguf, fuzz_streaming, fuzz_capi (C++, libFuzzer), fuzz_tokenizer, fuzz_safetensors (Python,
# atheris; they import the edge_rt on PYTHONPATH, e.g. a tree built by tools/devbuild.sh, or the
# installed one). A crash, a sanitizer report, an uncaught exception, an input slower than
# EDGE_RT_FUZZ_TIMEOUT seconds (default 10) or more than EDGE_RT_FUZZ_RSS_MB (default 2048) of memory
# makes the command fail and leaves the input in the artifacts folder: minimize it (ARGS -minimize_crash=1
# -runs=10000 with the crash file), fix it, and add it to native/fuzz/regressions/HARNESS/ with a test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=build/fuzz
cpp_harnesses=(fuzz_gguf fuzz_streaming fuzz_capi)
py_harnesses=(fuzz_tokenizer fuzz_safetensors)
timeout_s=${EDGE_RT_FUZZ_TIMEOUT:-10}
rss_mb=${EDGE_RT_FUZZ_RSS_MB:-2048}
# halt_on_error + abort: every report is fatal and leaves a crash file; leaks are findings too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

is_py() { [[ " ${py_harnesses[*]} " == *" $1 "* ]]; }
is_harness() { [[ " ${cpp_harnesses[*]} ${py_harnesses[*]} " == *" $1 "* ]]; }

build() {
  mkdir -p build
  (
    flock 9
    # No libedge_rt.so (EDGE_RT_C_API=OFF): a shared library of sanitized objects would need the sanitizer
    # runtimes linked into it; fuzz_capi compiles the C ABI's source into itself instead.
    cmake -S . -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DEDGE_RT_FUZZ=ON -DEDGE_RT_BUILD_TESTS=ON -DEDGE_RT_PYTHON=ON -DEDGE_RT_C_API=OFF \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
    cmake --build "$dir" -j"${EDGE_RT_FUZZ_BUILD_JOBS:-2}"
  ) 9>build/.fuzzbuild.lock
}

seeds() {
  rm -rf "$dir/seeds"
  python3 tools/fuzz_seeds.py "$dir/seeds"
}

vocabs() {  # the real vocabularies fuzz_tokenizer loads (the same order as tools/fuzz_seeds.py)
  python3 -c "import sys; sys.path.insert(0, 'tools'); import fuzz_seeds; print(':'.join(map(str, fuzz_seeds.real_vocabs())))"
}

# Runs harness $1 with libFuzzer arguments "${@:2}".
invoke() {
  local h=$1
  shift
  if is_py "$h"; then
    EDGE_RT_FUZZ_VOCABS=$(vocabs) python3 "$root/native/fuzz/$h.py" "$@"
  else
    "$dir/native/fuzz/$h" "$@"
  fi
}

max_len() {
  case $1 in
    # The GGUF reader's logic is all in the header: small inputs run ~10x faster. The streaming
    # reader needs whole models (its seeds are below this).
    fuzz_gguf) echo 65536 ;;
    fuzz_streaming | fuzz_capi) echo 1048576 ;;
    fuzz_safetensors) echo 262144 ;;
    *) echo 65536 ;;
  esac
}

run() {
  local h=$1 secs=$2
  shift 2
  is_harness "$h" || { echo "fuzz.sh: unknown harness '$h' (tools/fuzz.sh list)" >&2; exit 2; }
  is_py "$h" || [[ -x $dir/native/fuzz/$h ]] || build
  [[ -d $dir/seeds/$h ]] || seeds
  mkdir -p "$dir/corpus/$h" "$dir/artifacts/$h"
  # The first folder receives new inputs; the others only seed it.
  local corpora=("$dir/corpus/$h" "$dir/seeds/$h")
  [[ -d native/fuzz/regressions/$h ]] && corpora+=("native/fuzz/regressions/$h")
  local limit=()
  [[ $secs == 0 ]] || limit=(-max_total_time="$secs")
  invoke "$h" "${limit[@]}" -timeout="$timeout_s" -rss_limit_mb="$rss_mb" -max_len="$(max_len "$h")" \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/$h/" "$@" "${corpora[@]}"
}

regress() {
  local hs=("$@")
  [[ ${#hs[@]} -gt 0 ]] || hs=("${cpp_harnesses[@]}" "${py_harnesses[@]}")
  for h in "${hs[@]}"; do
    local files=(native/fuzz/regressions/"$h"/*)
    [[ -e ${files[0]} ]] || { echo "$h: no regression inputs"; continue; }
    is_py "$h" || [[ -x $dir/native/fuzz/$h ]] || build
    echo "$h: ${#files[@]} regression inputs"
    invoke "$h" -timeout="$timeout_s" -rss_limit_mb="$rss_mb" "${files[@]}"
  done
}

# pytest with the sanitized _core: a throwaway package folder holds links to the Python sources and
# that module; clang's shared ASan runtime (which carries UBSan's) is preloaded into Python.
sanitized_pytest() {
  build
  local pkg
  pkg=$(mktemp -d)
  trap 'rm -rf "$pkg"' RETURN
  mkdir -p "$pkg/edge_rt"
  for f in edge_rt/*; do
    case $(basename "$f") in _core*.so | quantize | devices | __pycache__) ;; *) ln -s "$root/$f" "$pkg/edge_rt/" ;; esac
  done
  ln -s "$root/quantize" "$pkg/edge_rt/quantize"
  ln -s "$root/devices" "$pkg/edge_rt/devices"
  cp "$dir"/native/_core*.so "$pkg/edge_rt/"
  ln -s "$root/tests" "$pkg/tests"
  # Run from $pkg: `python -m` puts the working directory first on sys.path, and the checkout's own
  # edge_rt (with a devbuild _core, or none) must not shadow the sanitized one; checked before pytest.
  # Leaks: CPython's own allocations at exit are not ours to judge; everything else is fatal.
  (
    cd "$pkg"
    export LD_PRELOAD="$(clang++ -print-file-name=libclang_rt.asan-x86_64.so)"
    export ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 PYTHONPATH="$pkg"
    python3 -c "import sys, edge_rt._core as c; sys.exit(None if c.__file__.startswith('$pkg/') else 'not the sanitized _core: ' + c.__file__)"
    python3 -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" "${@:-tests/test_gguf_hostile.py}"
  )
}

case ${1:-} in
  pytest) shift; sanitized_pytest "$@" ;;
  build) build ;;
  ctest) build && ctest --test-dir "$dir/native" --output-on-failure ;;
  seeds) seeds ;;
  run) [[ $# -ge 3 ]] || { echo "usage: tools/fuzz.sh run HARNESS SECONDS [libFuzzer args]" >&2; exit 2; }; shift; run "$@" ;;
  regress) shift; regress "$@" ;;
  list) printf '%s\n' "${cpp_harnesses[@]}" "${py_harnesses[@]}" ;;
  *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
