"""edge_rt: on-device LLM inference (C++ core, numpy sampling, Typer CLI).

    import edge_rt
    with edge_rt.load("model.gguf") as m:
        print(m.generate("Once upon a time", max_tokens=32, seed=0))

The compiled core (``edge_rt._core``) is imported only when a model is loaded, so ``import edge_rt``
works, and says what to do, even where the extension has not been built.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import (
    BackendUnavailableError,
    ChatTemplateError,
    EdgeRTError,
    InvalidArgumentError,
    ModelFormatError,
    ModelIOError,
    OutOfMemoryError,
    UnsupportedArchitectureError,
    UnsupportedTypeError,
)
from .sampling import Sampler, SamplingParams


def _package_version() -> str:
    """The installed distribution's version; "0.0.0+dev" for a source tree that was never installed."""
    try:
        return _metadata.version("edge_rt")
    except _metadata.PackageNotFoundError:
        return "0.0.0+dev"


__version__: str = _package_version()

if TYPE_CHECKING:
    from .benchmark import bench
    from .inspection import inspect
    from .loading import load, minimum_budget
    from .model import GenerationResult, Model
    from .tokenizer import Tokenizer

# Resolved on first use (PEP 562): keeps `import edge_rt` light and independent of the extension.
_LAZY = {
    "load": "loading",
    "minimum_budget": "loading",
    "Model": "model",
    "GenerationResult": "model",
    "Tokenizer": "tokenizer",
    "inspect": "inspection",
    "bench": "benchmark",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'edge_rt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "load",
    "minimum_budget",
    "inspect",
    "bench",
    "Model",
    "GenerationResult",
    "Tokenizer",
    "Sampler",
    "SamplingParams",
    "errors",
    "EdgeRTError",
    "ModelFormatError",
    "UnsupportedArchitectureError",
    "UnsupportedTypeError",
    "InvalidArgumentError",
    "ModelIOError",
    "OutOfMemoryError",
    "BackendUnavailableError",
    "ChatTemplateError",
]
