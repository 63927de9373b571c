"""The source tree passes ``ruff check`` with the configuration in pyproject.toml ([tool.ruff]), and
the C++ in native/ is formatted as .clang-format says (clang-format pinned in the test extra: its
output changes between releases).

This is how CI lints: .ci/run runs the README's test command, and this test is part of it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed; install the test extras (pip install '.[test]')")
    return [exe]


def test_ruff_check() -> None:
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_clang_format() -> None:
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.fail("clang-format is not installed; install the test extras (pip install '.[test]')")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "native").rglob("*") if p.suffix in (".cpp", ".h"))
    files += sorted(str(p.relative_to(REPO)) for p in (REPO / "apps").rglob("*.c"))  # the JNI bridge
    assert files
    r = subprocess.run([exe, "--dry-run", "--Werror", *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, "run clang-format -i on these files:\n" + r.stderr[-6000:]
