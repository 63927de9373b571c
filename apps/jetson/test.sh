#!/usr/bin/env bash
# Device test of edge_rt on a Jetson: run inside the image apps/jetson/Dockerfile builds (its default command).
# Runs on any Linux machine with edge_rt installed too (x86-64 included: tests/test_apps.py runs it there).
#   1. parity (apps/jetson/parity.py) on the embedded default model against the x86-64 reference:
#      EDGE_RT_ISA=scalar bit for bit (tokens and logits; in the AVX2 flavour of float vector ops, which ARM
#      computes and the reference holds: EDGE_RT_VEC_OPS=avx2), the best kernels token for token up to a near-tie;
#   2. edge-rt bench --json on the default model -> OUT/bench.json (skipped with --no-bench: never time
#      anything under emulation);
#   3. the execution providers ONNX Runtime offers in the image (CUDA, TensorRT), for the NPU/GPU stage, or
#      that it is absent -> OUT/onnxruntime.json;
#   4. the prefill stage (apps/jetson/npu_stage.py): the default model exported (w8a8), prompts prefilled on
#      the best backend the image has (tensorrt, cuda, else cpu-ep standing in) and decoded on the CPU,
#      first tokens against the all-CPU run -> OUT/npu.json (skipped with --no-npu; needs ONNX Runtime).
# Usage: apps/jetson/test.sh [--no-bench] [--no-npu] [OUT_DIR]   (OUT_DIR default: ./jetson-test-out)
# Environment: EDGE_RT_PYTHON (interpreter, default python3), EDGE_RT_THREADS (bench threads, default: all
# CPUs), EDGE_RT_BENCH_ARGS (extra bench options, e.g. "-p 64 -n 32 -r 5").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=1 npu=1
while [[ "${1:-}" == --no-* ]]; do
  case $1 in
    --no-bench) bench=0 ;;
    --no-npu) npu=0 ;;
    *) echo "test.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
out=${1:-jetson-test-out}
py=${EDGE_RT_PYTHON:-python3}
mkdir -p "$out"

status=0
echo "== parity: scalar kernels vs the x86-64 reference"
EDGE_RT_ISA=scalar EDGE_RT_VEC_OPS=avx2 "$py" "$here/parity.py" --check scalar | tee "$out/parity_scalar.json" || status=1
echo "== parity: best kernels vs the x86-64 reference"
"$py" "$here/parity.py" --check best | tee "$out/parity_best.json" || status=1

if [[ $bench -eq 1 ]]; then
  echo "== edge-rt bench --json (default model)"
  model=$("$py" -c 'import edge_rt, pathlib; print(pathlib.Path(edge_rt.__file__).parent / "models" / "default.gguf")')
  threads=${EDGE_RT_THREADS:-$(nproc)}
  # shellcheck disable=SC2086  # EDGE_RT_BENCH_ARGS is a list of options
  "$py" -m edge_rt bench "$model" --json --threads "$threads" ${EDGE_RT_BENCH_ARGS:-} > "$out/bench.json"
  cat "$out/bench.json"
fi

echo "== ONNX Runtime execution providers"
"$py" - > "$out/onnxruntime.json" <<'PY'
import json
try:
    import onnxruntime as ort
except ImportError:
    print(json.dumps({"onnxruntime": None, "note": "not installed in this image"}))
else:
    print(json.dumps({"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}))
PY
cat "$out/onnxruntime.json"

if [[ $npu -eq 1 ]]; then
  echo "== prefill stage on the image's accelerator (cpu-ep where it has none)"
  if "$py" -c 'import onnxruntime' 2>/dev/null; then
    "$py" "$here/npu_stage.py" > "$out/npu.json" || status=1
    cat "$out/npu.json"
  else
    echo '{"backend": null, "note": "onnxruntime not installed"}' > "$out/npu.json"
  fi
fi

if [[ $status -ne 0 ]]; then
  echo "test.sh: parity FAILED (see $out/parity_*.json)" >&2
  exit 1
fi
echo "test.sh: parity ok; results in $out"
