"""Exceptions raised by edge_rt.

The C++ core throws one error type with a kind; the binding maps each kind to one class here, so
callers can catch precisely (``except edge_rt.ModelFormatError``) or broadly (``except edge_rt.EdgeRTError``).
Messages start with the operation in brackets and name the tensor or key involved.
"""

from __future__ import annotations


class EdgeRTError(Exception):
    """Base class of every error raised by edge_rt."""


class ModelFormatError(EdgeRTError, ValueError):
    """The model file is malformed or internally inconsistent (bad GGUF, contradictory metadata)."""


class UnsupportedArchitectureError(EdgeRTError, ValueError):
    """The file is well formed but its architecture is not one edge_rt runs."""


class UnsupportedTypeError(EdgeRTError, ValueError):
    """A tensor uses an element type edge_rt cannot compute with."""


class InvalidArgumentError(EdgeRTError, ValueError):
    """An argument passed to edge_rt is out of range or inconsistent."""


class ModelIOError(EdgeRTError, OSError):
    """The model file could not be opened or read."""


class OutOfMemoryError(EdgeRTError, MemoryError):
    """An allocation failed or the memory budget is too small."""


class BackendUnavailableError(EdgeRTError, ImportError):
    """An execution backend that was asked for cannot run here (its package is missing, or it is not
    built yet); the message says why and what to install. Never replaced by another backend silently."""


class ChatTemplateError(EdgeRTError, ValueError):
    """A chat template failed: a syntax error, a sandbox violation, a size or time limit, or the
    template's own ``raise_exception``."""


__all__ = [
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
