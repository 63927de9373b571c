#!/usr/bin/env bash
# Installs edge_rt in Termux (Android, no root) from this checkout: `pip install .`, which compiles the C++ core
# on the phone with Termux's clang, then completes a prompt with the embedded default model as a check.
#
# Usage (in Termux, from the repository root): bash apps/android/termux/install.sh [--no-run]
# Termux packages: python, clang (the compiler pip's build uses), cmake and ninja (scikit-build-core runs them;
# PyPI has no Android wheels of either), binutils, and python-numpy (NumPy from source takes very long on a
# phone). regex and psutil are compiled by pip; typer and gguf are pure Python.
set -euo pipefail
cd "$(dirname "$0")/../../.."

run_check=1
[[ "${1:-}" == "--no-run" ]] && run_check=0

if [[ "${PREFIX:-}" != *com.termux* ]]; then
  echo "install.sh: this is for Termux on Android (\$PREFIX is '${PREFIX:-}'); elsewhere run: pip install ." >&2
  exit 2
fi

pkg update -y
pkg install -y python clang cmake ninja binutils python-numpy
# Never `pip install --upgrade pip` in Termux: pip belongs to the python package there.
pip install .

if [[ $run_check -eq 1 ]]; then
  threads=$(nproc 2>/dev/null || echo 2)
  edge-rt run -p "def fibonacci(n):" -n 48 --threads "$threads"
fi
echo "edge_rt installed: edge-rt run MODEL.gguf -p '...' runs any supported GGUF"
