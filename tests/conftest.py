"""Shared pytest fixtures: synthetic GGUF models generated on the fly, and the llama.cpp peer.

Models are written once per test session into a temporary directory, keyed by their generation
parameters, so tests that ask for the same model share one file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None

# Skip only where llama-cpp-python is not installed (it is a test dependency, so CI runs these).
requires_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP, reason="llama-cpp-python (module llama_cpp) is not installed"
)

# The smallest model shape on which every weight type applies (rows are multiples of 256 for
# K-quants). Tests override what they vary.
TINY_MODEL: Dict[str, Any] = dict(
    arch="llama", n_vocab=512, n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=4,
    weight_type="Q8_0", seed=0, tokenizer="gpt2",
)


def python_child(args: List[str], popen: bool = False, **kwargs: Any):
    """Runs ``python ARGS`` against the edge_rt under test (installed, or a built checkout on PYTHONPATH).

    The child starts in the folder holding that edge_rt, with it first on PYTHONPATH: ``python -c`` and
    ``python -m`` put the cwd first on sys.path, so a child started in a source checkout would import
    the unbuilt sources instead of the installed package. ``popen`` returns a Popen, else run()'s result.
    """
    import edge_rt

    pkg_parent = str(Path(edge_rt.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, *args]
    if popen:
        return subprocess.Popen(cmd, cwd=pkg_parent, env=env, **kwargs)
    return subprocess.run(cmd, cwd=pkg_parent, env=env, **kwargs)


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory) -> Callable[..., Path]:
    """Factory fixture: ``synthetic_model(**params)`` -> path of a GGUF written with
    ``edge_rt.synthetic.write_synthetic_gguf(**{**TINY_MODEL, **params})``, cached for the session."""
    from edge_rt.synthetic import write_synthetic_gguf

    root = tmp_path_factory.mktemp("synthetic_models")
    cache: Dict[str, Path] = {}

    def make(**params: Any) -> Path:
        full = {**TINY_MODEL, **params}
        key = json.dumps(full, sort_keys=True)
        if key not in cache:
            cache[key] = write_synthetic_gguf(root / f"model-{len(cache):03d}.gguf", **full)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_model(synthetic_model) -> Path:
    """The default tiny llama model (Q8_0, gpt2 tokenizer)."""
    return synthetic_model()


@pytest.fixture(scope="session")
def tiny_model_f32(synthetic_model) -> Path:
    """The tiny llama model with F32 weights (exact reference for numerics)."""
    return synthetic_model(weight_type="F32")


@pytest.fixture(scope="session")
def tiny_model_spm(synthetic_model) -> Path:
    """The tiny llama model with the SentencePiece-style ('llama') tokenizer."""
    return synthetic_model(tokenizer="llama")


def open_llama_cpp(path: Path, n_ctx: int = 256, n_threads: int = 1):
    """llama.cpp peer configured for exact comparisons: every position's logits, no flash
    attention, its default fp16 KV cache (as edge_rt's), one batch for any prompt that fits the context. One thread by default:
    ggml's results do not depend on the thread count, and its spinning barrier crawls on a busy machine."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads,
        n_threads_batch=n_threads, logits_all=True, flash_attn=False, verbose=False, seed=0,
    )


@pytest.fixture(scope="session")
def llama_cpp_peer() -> Callable[..., Any]:
    """``llama_cpp_peer(path, n_ctx=256, n_threads=1)`` -> ``llama_cpp.Llama`` (see ``open_llama_cpp``).
    Skips the test when llama-cpp-python is not installed."""
    if not HAVE_LLAMA_CPP:
        pytest.skip("llama-cpp-python (module llama_cpp) is not installed")
    return open_llama_cpp
