"""Runs the C++ unit tests (native/tests, via ctest) as part of the pytest suite.

The C++ tests compare every SIMD kernel with its scalar twin and exercise the GGUF reader directly.
They are built from the same sources as the installed extension, in build/native-tests (ignored by
git) so repeated runs are incremental.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; install the test extras (pip install '.[test]')")
    return path


def test_ctest_suite() -> None:
    build = REPO / "build" / "native-tests"
    build.mkdir(parents=True, exist_ok=True)
    cmake = _tool("cmake")
    env = dict(os.environ)
    configure = [cmake, "-S", str(REPO / "native"), "-B", str(build), "-DEDGE_RT_BUILD_TESTS=ON",
                 "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"] if not (build / "CMakeCache.txt").exists() else []
    subprocess.run(configure, check=True, env=env, capture_output=True, text=True)
    built = subprocess.run([cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)],
                           env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    ran = subprocess.run([_tool("ctest"), "--test-dir", str(build), "--output-on-failure"],
                         env=env, capture_output=True, text=True)
    print(ran.stdout[-6000:])
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    assert "tests passed" in ran.stdout
