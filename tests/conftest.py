"""Shared pytest fixtures: synthetic GGUF models generated on the fly, and the llama.cpp peer.

Models are written once per test session into a temporary directory, keyed by their generation
parameters, so tests that ask for the same model share one file. Helpers that tests import live in
tests/helpers.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from helpers import HAVE_LLAMA_CPP, TINY_MODEL, open_llama_cpp


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


@pytest.fixture(scope="session")
def llama_cpp_peer() -> Callable[..., Any]:
    """``llama_cpp_peer(path, n_ctx=256, n_threads=1)`` -> ``llama_cpp.Llama`` (see ``open_llama_cpp``).
    Skips the test when llama-cpp-python is not installed."""
    if not HAVE_LLAMA_CPP:
        pytest.skip("llama-cpp-python (module llama_cpp) is not installed")
    return open_llama_cpp
