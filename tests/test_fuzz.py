"""CI legs of the fuzzing and sanitizer work (issue 21; tools/fuzz.sh, native/fuzz/, FUZZING.md).

* The clang build with ASan + UBSan (tools/fuzz.sh build) and the C++ unit tests in it (ctest).
* Every input of the regression corpus (native/fuzz/regressions/HARNESS/) through its harness once.
* Each harness fuzzed for EDGE_RT_FUZZ_SECONDS (default 30) from the generated seeds: a crash, a
  sanitizer report, an uncaught exception, a leak, an input slower than 10 s (hang) or over 2 GiB
  fails the test, and the input is left in build/fuzz/artifacts/HARNESS/.
* The hostile-input pytest modules against the sanitized edge_rt._core (tools/fuzz.sh pytest).

The long campaign (>= 1M executions per harness) is not run here: see FUZZING.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

import vocab_data
from helpers import edge_rt_env, requires_system_tool

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "tools" / "fuzz.sh"
SECONDS = int(os.environ.get("EDGE_RT_FUZZ_SECONDS", "30"))
CPP_HARNESSES = ["fuzz_gguf", "fuzz_streaming", "fuzz_capi"]
PY_HARNESSES = ["fuzz_tokenizer", "fuzz_safetensors"]

requires_atheris = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None and os.environ.get("CI", "").lower() != "true",
    reason="atheris is not installed (pip install '.[fuzz]')")


def fuzz_sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """tools/fuzz.sh ARGS against the edge_rt under test (the installed one in CI, PYTHONPATH=. here),
    with llama.cpp's vocabularies (the tokenizer tests' cache) for the tokenizer seeds when available."""
    env = edge_rt_env()
    vocabs = vocab_data.vocab_dir()
    if vocabs is not None:
        env.setdefault("EDGE_RT_VOCAB_DIR", str(vocabs))
    r = subprocess.run(["bash", str(FUZZ), *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"tools/fuzz.sh {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n" \
                              f"{r.stderr[-8000:]}"
    return r


def executions(output: str) -> int:
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    assert m, f"no libFuzzer final stats in the output:\n{output[-3000:]}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def sanitized_build() -> None:
    fuzz_sh("build", timeout=1800)


@requires_system_tool("clang++")
def test_cpp_unit_tests_under_asan_and_ubsan(sanitized_build) -> None:
    out = fuzz_sh("ctest", timeout=900).stdout
    assert "100% tests passed" in out, out[-3000:]


@requires_system_tool("clang++")
def test_hostile_input_pytest_under_asan_and_ubsan(sanitized_build) -> None:
    # Not tests/test_metadata_budget.py: it measures process growth, which ASan's shadow memory and
    # redzones inflate, and its children import the package by its resolved path, not the sanitized one.
    out = fuzz_sh("pytest", "tests/test_gguf_hostile.py", timeout=900).stdout
    assert " passed" in out and "failed" not in out, out[-3000:]


@requires_system_tool("clang++")
@pytest.mark.parametrize("harness", CPP_HARNESSES)
def test_cpp_harness_regressions_and_bounded_run(sanitized_build, harness: str) -> None:
    fuzz_sh("regress", harness, timeout=600)
    r = fuzz_sh("run", harness, str(SECONDS), timeout=SECONDS + 600)
    assert executions(r.stderr) > 0


@requires_atheris
@pytest.mark.parametrize("harness", PY_HARNESSES)
def test_python_harness_regressions_and_bounded_run(harness: str) -> None:
    fuzz_sh("regress", harness, timeout=600)
    r = fuzz_sh("run", harness, str(SECONDS), timeout=SECONDS + 600)
    assert executions(r.stderr) > 0
