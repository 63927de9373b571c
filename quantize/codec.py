"""One entry point for the block quantizers, whichever implementation is present.

The toolchain calls :func:`encode` / :func:`decode` only. They use the package's own quantizers
(``quantize.quants``: round-to-nearest plus an importance-weighted scale search) when that module is
importable, and otherwise a stand-in: ``gguf.quants`` for F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1
(importance ignored; no K-quants). Either way the
bytes are the ggml block layouts, so the files are the same format.

Shapes: ``encode(data float32 (n_rows, n_cols), type) -> uint8 (n_rows, row_bytes)``, except F32
and F16 which stay float arrays of ``(n_rows, n_cols)`` (GGUFWriter writes them as is).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InvalidArgumentError, UnsupportedTypeError

try:  # the quantizer engineer's implementation (importance-aware); absent in early checkouts
    from . import quants as _quants  # type: ignore[attr-defined]
    _HAVE_OWN = hasattr(_quants, "quantize") and hasattr(_quants, "dequantize")
except ImportError:  # pragma: no cover - depends on the checkout
    _quants = None
    _HAVE_OWN = False

#: Every type the toolchain can write.
ALL_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
FLOAT_TYPES = ("F32", "F16", "BF16")


def implementation() -> str:
    """``"quantize.quants"`` or ``"stand-in (gguf.quants)"``."""
    return "quantize.quants" if _HAVE_OWN else "stand-in (gguf.quants)"


def block_info(type_name: str) -> tuple:
    """(elements per block, bytes per block) of a ggml type."""
    import gguf

    try:
        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    except KeyError:
        raise UnsupportedTypeError(f"[quantize] unknown type {type_name!r}; expected one of {', '.join(ALL_TYPES)}")


def tensor_bytes(type_name: str, shape) -> int:
    """Bytes of a tensor of numpy ``shape`` (rows last-but-one, columns last) stored as ``type_name``."""
    blk, nbytes = block_info(type_name)
    n = int(np.prod(shape))
    if shape[-1] % blk:
        raise InvalidArgumentError(f"[quantize] row of {shape[-1]} is not a multiple of the {type_name} block ({blk})")
    return n // blk * nbytes


def supports_gptq(type_name: str) -> bool:
    """Whether :func:`encode` can round ``type_name`` by error feedback (quantize/gptq.py)."""
    return _HAVE_OWN and type_name in getattr(_quants, "GRID_TYPES", ())


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
    if type_name == "F16" and not _HAVE_OWN:
        return x.astype(np.float16)
    if gptq_factor is not None and supports_gptq(type_name):
        from .gptq import gptq_quantize

        return gptq_quantize(x, None, type_name, importance, upper=gptq_factor)
    if _HAVE_OWN:
        return np.asarray(_quants.quantize(x, type_name, importance))
    return _standin_encode(x, type_name)


def decode(raw: np.ndarray, type_name: str, n_cols: int) -> np.ndarray:
    """The inverse of :func:`encode`: float32 (n_rows, n_cols)."""
    if type_name == "F32":
        return np.asarray(raw, dtype=np.float32).reshape(-1, n_cols)
    if type_name == "F16":
        return np.asarray(raw).view(np.float16).astype(np.float32).reshape(-1, n_cols)
    if _HAVE_OWN:
        return np.asarray(_quants.dequantize(raw, type_name, n_cols), dtype=np.float32).reshape(-1, n_cols)
    import gguf.quants

    return gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType[type_name]).reshape(-1, n_cols)


def roundtrip(data: np.ndarray, type_name: str, importance: Optional[np.ndarray] = None) -> np.ndarray:
    """``decode(encode(data))``: what the engine will compute with."""
    if type_name == "F32":
        return np.asarray(data, dtype=np.float32)
    return decode(encode(data, type_name, importance), type_name, data.shape[-1])


def _standin_encode(x: np.ndarray, type_name: str) -> np.ndarray:
    import gguf
    import gguf.quants

    try:
        return gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name])
    except NotImplementedError:
        raise UnsupportedTypeError(
            f"[quantize] no {type_name} quantizer in this build (quantize.quants is missing and the gguf "
            "package cannot encode it)")
