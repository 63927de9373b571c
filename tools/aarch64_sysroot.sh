#!/usr/bin/env bash
# Lays out an arm64 Debian Python for tools/cross_aarch64.sh --python in build/aarch64-sysroot, without
# touching the host's packages: apt-get runs against a private state folder (arm64 indices of the host's
# Debian release, an empty dpkg status), downloads python3.11, libpython3.11-dev (headers, pyconfig.h)
# and libstdc++6 with their dependency closure, and dpkg-deb -x unpacks them into root/; pip then puts
# the aarch64 wheels of edge_rt's dependencies (pyproject.toml [project] dependencies) and of cffi (the
# C ABI's Python binding, edge_rt.capi, which tests/test_aarch64.py runs under qemu) into site/.
# qemu-aarch64 -L root runs root/usr/bin/python3.11. Reuses what an earlier run left.
# Usage: tools/aarch64_sysroot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD/build/aarch64-sysroot
root=$top/root
python_version=3.11  # bookworm's python3; the module is built for this ABI (cpython-311-aarch64-linux-gnu)
deps=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
deps+=$'\ncffi'
# site/.complete holds the requirements it was made for: a changed list makes it again.
if [[ -x $root/usr/bin/python$python_version && -f $top/site/.complete && $(<"$top/site/.complete") == "$deps" ]]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "aarch64_sysroot.sh: needs apt-get (Debian)" >&2; exit 2; }
. /etc/os-release
mkdir -p "$top/apt/lists/partial" "$top/apt/cache/archives/partial"
: >"$top/apt/status"
cat >"$top/apt/sources.list" <<SOURCES
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $VERSION_CODENAME main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $VERSION_CODENAME-security main
SOURCES
apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Dir::State="$top/apt"
  -o Dir::State::Lists="$top/apt/lists" -o Dir::State::status="$top/apt/status" -o Dir::Cache="$top/apt/cache"
  -o Dir::Etc::SourceList="$top/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o Debug::NoLocking=1
  -o APT::Sandbox::User=root)
echo "aarch64_sysroot.sh: arm64 package indices and python$python_version .debs"
apt-get "${apt_opts[@]}" -qq update
apt-get "${apt_opts[@]}" -qq install -y --download-only --no-install-recommends \
  "python$python_version" "libpython$python_version-dev" libstdc++6 >/dev/null
rm -rf "$root" && mkdir -p "$root"
for deb in "$top"/apt/cache/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
echo "aarch64_sysroot.sh: aarch64 wheels of edge_rt's dependencies"
rm -rf "$top/site"
mapfile -t dep_list <<<"$deps"
python3 -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$top/site" \
  --platform manylinux2014_aarch64 --only-binary=:all: --python-version "$python_version" --implementation cp \
  "${dep_list[@]}"
printf '%s' "$deps" >"$top/site/.complete"
