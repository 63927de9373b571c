"""The benchmark scripts run from a fresh checkout with the installed edge_rt (ARCHITECTURE.md: every
command the docs give also runs from a plain checkout after the README's first command).

A fresh checkout has neither the compiled ``edge_rt/_core*.so`` nor the ``edge_rt/quantize`` and
``edge_rt/devices`` links that tools/devbuild.sh makes, so a script that puts the checkout first on
``sys.path`` imports a broken edge_rt. The copy here makes that visible: its ``edge_rt/__init__.py``
raises on import, so each script must get edge_rt from the environment (the installed package, or the
tree under test when the suite runs with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import edge_rt_env

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))


def _git_files() -> list:
    """The files a clone of the working tree would hold: tracked and untracked-but-not-ignored ones."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no fresh clone to make")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh") / "edge_rt-checkout"
    for name in _git_files():
        src = REPO / name
        if src.is_file() and not src.is_symlink():  # deleted-but-tracked files are absent in a clone too
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / name)
    (root / "edge_rt" / "__init__.py").write_text(
        "raise ImportError('the checkout was imported instead of the installed edge_rt')\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help_from_fresh_checkout(checkout: Path, script: str) -> None:
    assert (checkout / "benchmarks" / script).is_file()
    r = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=checkout,
                       env=edge_rt_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "usage:" in r.stdout
