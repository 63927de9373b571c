#!/usr/bin/env bash
# System packages the test suite needs beyond pip (the README's test command runs this first).
# Each entry says which tests use it. Installs only what is missing; needs root (or sudo) and apt.
# Without apt (not Debian/Ubuntu) it says so and continues: the tests that need these packages skip
# locally, and fail under CI=true (tests/helpers.py requires_system_tool), so CI never skips them.
set -euo pipefail
packages=(
  chromium         # tests/test_chat_page.py: the chat page of edge-rt serve in a headless browser
  chromium-driver  # tests/test_chat_page.py: chromedriver, which selenium drives chromium through
  openjdk-17-jdk-headless  # javac, java, jni.h: tests/test_android_jni.py builds and runs the JNI bridge
  gcc-aarch64-linux-gnu    # tests/test_android_jni.py cross-compiles the JNI bridge for aarch64
  g++-aarch64-linux-gnu  # tests/test_aarch64.py: cross-compiles the core for aarch64 (tools/cross_aarch64.sh)
  qemu-user              # tests/test_aarch64.py: runs the aarch64 tests and Python under qemu-aarch64
  clang              # tests/test_fuzz.py: libFuzzer harnesses and the ASan/UBSan build (tools/fuzz.sh)
  libclang-rt-dev    # tests/test_fuzz.py: clang's libFuzzer, ASan and UBSan runtimes
)
[[ ${#packages[@]} -eq 0 ]] && exit 0
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system_deps.sh: no apt-get; install by hand: ${missing[*]} (the tests that need them will skip)" >&2
  exit 0
fi
sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
