"""One entry point for the block quantizers: :func:`encode` / :func:`decode` and the byte sizes of
each type, for the rest of the toolchain.

Encoding uses the package's own quantizers (``quantize.quants``: ggml's reference rounding, or an
importance-weighted scale search given per-column importance) or, with a GPTQ factor, error-feedback
rounding (``quantize.gptq``); either way the bytes are the ggml block layouts.

Shapes: ``encode(data float32 (n_rows, n_cols), type) -> uint8 (n_rows, row_bytes)``, except F32
and F16 which stay float arrays of ``(n_rows, n_cols)`` (GGUFWriter writes them as is).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InvalidArgumentError, UnsupportedTypeError
from . import quants as _quants
from .block_types import BLOCK_TYPES, FLOAT_TYPES, TYPE_NAMES

__all__ = ["ALL_TYPES", "FLOAT_TYPES", "implementation", "block_info", "tensor_bytes", "supports_gptq", "encode",
           "decode", "roundtrip"]

#: Every type the toolchain can write (the registry, quantize/block_types.py).
ALL_TYPES = TYPE_NAMES


def implementation() -> str:
    """The quantizer implementation, as recorded in recipes and benchmark reports."""
    return "quantize.quants"


def block_info(type_name: str) -> tuple:
    """(elements per block, bytes per block) of a type; UnsupportedTypeError for a type not in the
    registry."""
    t = BLOCK_TYPES.get(type_name)
    if t is None:
        raise UnsupportedTypeError(f"[quantize] unknown type {type_name!r}; expected one of {', '.join(ALL_TYPES)}")
    return t.block_elems, t.block_bytes


def tensor_bytes(type_name: str, shape) -> int:
    """Bytes of a tensor of numpy ``shape`` (rows last-but-one, columns last) stored as ``type_name``."""
    blk, nbytes = block_info(type_name)
    n = int(np.prod(shape))
    if shape[-1] % blk:
        raise InvalidArgumentError(f"[quantize] row of {shape[-1]} is not a multiple of the {type_name} block ({blk})")
    return n // blk * nbytes


def supports_gptq(type_name: str) -> bool:
    """Whether :func:`encode` can round ``type_name`` by error feedback (quantize/gptq.py)."""
    return type_name in _quants.GRID_TYPES


def encode(data: np.ndarray, type_name: str, importance: Optional[np.ndarray] = None,
           gptq_factor: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 (n_rows, n_cols) -> the array written to the file for ``type_name``.

    ``gptq_factor``: ``gptq.inverse_cholesky(H)`` of the input matrix; given (and
    ``supports_gptq(type_name)``), levels are chosen by GPTQ error feedback instead of rounding."""
    if type_name not in ALL_TYPES:
        raise UnsupportedTypeError(f"[quantize] unknown type {type_name!r}; expected one of {', '.join(ALL_TYPES)}")
    x = np.ascontiguousarray(data, dtype=np.float32)
    if type_name == "F32":
        return x
    if gptq_factor is not None and supports_gptq(type_name):
        from .gptq import gptq_quantize

        return gptq_quantize(x, None, type_name, importance, upper=gptq_factor)
    return np.asarray(_quants.quantize(x, type_name, importance))


def decode(raw: np.ndarray, type_name: str, n_cols: int) -> np.ndarray:
    """The inverse of :func:`encode`: float32 (n_rows, n_cols)."""
    if type_name == "F32":
        return np.asarray(raw, dtype=np.float32).reshape(-1, n_cols)
    if type_name == "F16":
        return np.asarray(raw).view(np.float16).astype(np.float32).reshape(-1, n_cols)
    return np.asarray(_quants.dequantize(raw, type_name, n_cols), dtype=np.float32).reshape(-1, n_cols)


def roundtrip(data: np.ndarray, type_name: str, importance: Optional[np.ndarray] = None) -> np.ndarray:
    """``decode(encode(data))``: what the engine will compute with."""
    if type_name == "F32":
        return np.asarray(data, dtype=np.float32)
    return decode(encode(data, type_name, importance), type_name, data.shape[-1])
