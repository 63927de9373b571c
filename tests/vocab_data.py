"""llama.cpp's vocabulary test files, for the tokenizer and GGUF-reader tests.

llama.cpp ships real tokenizer vocabularies with expected tokenizations in ``models/``:
``ggml-vocab-<name>.gguf`` and, for most, ``.gguf.inp`` (inputs separated by
``__ggml_vocab_test__`` lines) and ``.gguf.out`` (one line of token ids per input, made by
tests/test-tokenizer-0.cpp with ``common_tokenize(ctx, text, add_special=false, parse_special=false)``).
llama-cpp-python's sdist vendors that source tree, so :func:`vocab_dir` gets them with pip -- the
version pinned in the test extra, ``pip download --no-deps --no-binary llama-cpp-python`` -- extracts
only those members, and caches them under ``$EDGE_RT_CACHE/test-data`` (default
``~/.cache/edge_rt/test-data``); later runs, and offline ones, use the cache. ``EDGE_RT_VOCAB_DIR``
names a folder holding the files instead (a machine without network access).

:func:`llama_cpp_source` likewise gives the vendored llama.cpp sources the pre-tokenizer tables are
read from (``src/llama-vocab.cpp``, ``.h``, ``src/unicode.cpp``, ``.h``, ``src/unicode-data.cpp``,
``.h``), cached next to the models; ``EDGE_RT_LLAMA_CPP_SRC`` names a folder holding them instead.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

#: llama-cpp-python release whose vendored llama.cpp supplies the files (the test extra's pin).
LLAMA_CPP_PYTHON = "0.3.36"
SEP = "\n__ggml_vocab_test__\n"
_MEMBER = re.compile(r"^[^/]+/vendor/llama\.cpp/models/(ggml-vocab-[A-Za-z0-9._-]+\.gguf(?:\.inp|\.out)?)$")
#: the llama.cpp source files llama_cpp_source can give
SOURCES = ("llama-vocab.cpp", "llama-vocab.h", "unicode.cpp", "unicode.h", "unicode-data.cpp", "unicode-data.h")
_SOURCE_MEMBER = re.compile(r"^[^/]+/vendor/llama\.cpp/src/(" + "|".join(map(re.escape, SOURCES)) + ")$")

_state: dict = {}


def cache_root() -> Path:
    root = os.environ.get("EDGE_RT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "edge_rt") / "test-data"


def pip_download(folder: str, pattern: str, *args: str) -> Path:
    """``pip download --no-deps ARGS`` into ``folder``; the one file it fetched that matches ``pattern``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", folder,
           *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    found = list(Path(folder).glob(pattern))
    if r.returncode != 0 or len(found) != 1:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return found[0]


def fetch_once(dest: Path, fetch: Callable[[Path], None]) -> None:
    """Runs ``fetch(dest)`` unless ``dest`` exists, holding a lock in its folder so that concurrent test
    processes download once. ``fetch`` must leave ``dest`` complete or absent (stage, then os.replace)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.exists():
            fetch(dest)


def _extract(sdist: Path, member: "re.Pattern[str]", dest: Path) -> None:
    """Extract the members of ``sdist`` whose name ``member`` matches (group 1: the file name) into
    ``dest``, staged beside it: ``dest`` ends up complete or absent, never half-written."""
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + "."))
    try:
        n = 0
        with tarfile.open(sdist, "r:gz") as tar:
            for m_info in tar:
                m = member.match(m_info.name)
                if m is None or not m_info.isfile():
                    continue
                src = tar.extractfile(m_info)
                assert src is not None
                with src, open(staging / m.group(1), "wb") as out:
                    shutil.copyfileobj(src, out)
                n += 1
        if n == 0:
            raise RuntimeError(f"{sdist.name} holds no member matching {member.pattern}")
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_and_extract(dest: Path) -> None:
    """Download the sdist with pip into a temporary folder and extract ``dest`` (the models or the
    sources) from it; the other of the two is extracted too when it is not cached yet, so a fresh
    cache downloads the sdist once. Called with fetch_once's lock held (both share its folder)."""
    root = dest.parent
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        sdist = pip_download(tmp, "llama_cpp_python-*.tar.gz", "--no-binary", "llama-cpp-python",
                             f"llama-cpp-python=={LLAMA_CPP_PYTHON}")
        for name, member in (("models", _MEMBER), ("src", _SOURCE_MEMBER)):
            if root / name == dest or not (root / name).exists():
                _extract(sdist, member, root / name)


def vocab_dir() -> Optional[Path]:
    """The folder holding the ``ggml-vocab-*`` files, fetched on first use; None when they cannot be
    had (then :func:`unavailable_reason` says why). Safe to call from several processes at once."""
    if "dir" in _state:
        return _state["dir"]
    override = os.environ.get("EDGE_RT_VOCAB_DIR")
    if override:
        path: Optional[Path] = Path(override)
        _state["reason"] = f"EDGE_RT_VOCAB_DIR={override} holds no ggml-vocab-*.gguf"
        if not any(path.glob("ggml-vocab-*.gguf")):
            path = None
    else:
        dest = _sdist_cache() / "models"
        path = dest
        try:
            fetch_once(dest, _download_and_extract)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _state["reason"] = f"llama.cpp's vocabulary files are not available: {e}"
            path = None
    _state["dir"] = path
    return path


def unavailable_reason() -> str:
    return _state.get("reason", "")


def _sdist_cache() -> Path:
    return cache_root() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"


def llama_cpp_source(name: str) -> Tuple[Optional[Path], str]:
    """(path, '') of llama.cpp's ``src/<name>`` (one of :data:`SOURCES`) as vendored in the pinned
    llama-cpp-python sdist, fetched on first use (not when ``EDGE_RT_VOCAB_DIR`` says the machine is
    set up without network access); (None, why) when it cannot be had."""
    assert name in SOURCES, name
    override = os.environ.get("EDGE_RT_LLAMA_CPP_SRC")
    if override:
        path = Path(override) / name
        return (path, "") if path.is_file() else (None, f"EDGE_RT_LLAMA_CPP_SRC={override} holds no {name}")
    if "src" not in _state:
        dest = _sdist_cache() / "src"
        if dest.is_dir() and not all((dest / n).is_file() for n in SOURCES):
            shutil.rmtree(dest, ignore_errors=True)  # cached by a version that took fewer files: again
        if os.environ.get("EDGE_RT_VOCAB_DIR") and not dest.is_dir():
            # a machine set up without network access: do not try to download
            return None, (f"EDGE_RT_VOCAB_DIR is set and {dest} does not exist; "
                          f"EDGE_RT_LLAMA_CPP_SRC names a folder holding {', '.join(SOURCES)}")
        try:
            fetch_once(dest, _download_and_extract)
            _state["src"] = (dest, "")
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _state["src"] = (None, f"llama.cpp's sources are not available: {e}")
    folder, why = _state["src"]
    if folder is None:
        return None, why
    path = folder / name
    return (path, "") if path.is_file() else (None, f"{folder} holds no {name}")


def vocab_files() -> List[str]:
    """Names of every ``ggml-vocab-*.gguf`` at hand, sorted (empty when none are available)."""
    d = vocab_dir()
    return sorted(p.name for p in d.glob("ggml-vocab-*.gguf")) if d is not None else []


def has_cases(name: str) -> bool:
    d = vocab_dir()
    return d is not None and (d / (name + ".inp")).is_file() and (d / (name + ".out")).is_file()


def read_cases(name: str) -> List[Tuple[str, List[int]]]:
    """(input text, expected token ids) pairs of ``name``, parsed exactly as test-tokenizer-0.cpp's
    read_tests does."""
    d = vocab_dir()
    assert d is not None
    raw = (d / (name + ".inp")).read_bytes().decode("utf-8")
    inputs: List[str] = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt == -1:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    lines = (d / (name + ".out")).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    assert len(inputs) == len(lines), f"{name}: {len(inputs)} inputs but {len(lines)} outputs"
    return [(s, [int(t) for t in line.split()]) for s, line in zip(inputs, lines)]
