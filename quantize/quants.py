"""Public quantizer API: float32 rows <-> GGUF block bytes, optionally importance-weighted.

    quantize(data, type_name, importance=None) -> uint8 (n_rows, row_bytes)
    dequantize(raw, type_name, n_cols)          -> float32 (n_rows, n_cols)

``importance`` is a float32 ``(n_cols,)`` vector of per-column weights (the mean of the squared
activations that multiply each column, as in llama.cpp's imatrix). With it the scale searches
minimise the importance-weighted squared error the way llama.cpp's imatrix quantizers do
(``quantize_row_*_impl``: the same bytes as ``ggml_quantize_chunk`` given the same imatrix, except
that all-zero groups of importance are filled in first, see ``effective_importance``; Q8_0, which
llama.cpp quantizes without its imatrix, gets a weighted search of our own). Without it every type
gives the bytes of ggml's reference quantizer (``quantize_row_*_ref``); for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1
these are also ``gguf.quants.quantize``'s, except the sign bit of a zero scale in blocks made only of
signed zeros, where we follow the C code.

Work is done in chunks of whole rows (a few hundred KB of float32, so the temporaries of the searches
stay in cache); within a chunk everything is vectorised over blocks.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from . import kquants, quants_legacy
from .block_grid import Grid
from .block_types import BLOCK_TYPES, TYPE_NAMES, row_bytes

__all__ = ["QUANT_TYPES", "GRID_TYPES", "quantize", "dequantize", "levels", "set_levels"]

#: Every type quantize() writes: the whole registry (block_types.TYPE_NAMES).
QUANT_TYPES = TYPE_NAMES

# Elements per chunk: large enough to amortise numpy call overhead, small enough for the ~20 float32
# temporaries of a scale search to stay in L2/L3.
_CHUNK_ELEMS = 1 << 16


def _f32(x: np.ndarray, importance) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint8)


def _f16(x: np.ndarray, importance) -> np.ndarray:
    h = x.astype(np.float16)
    if not np.isfinite(h).all():
        r, c = np.argwhere(~np.isfinite(h))[0]
        raise ValueError(f"[quantize] F16: value {float(x[r, c]):.6g} at row {r}, column {c} overflows "
                         f"float16 (max 65504)")
    return h.view(np.uint8)


def _bf16(x: np.ndarray, importance) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits (input already finite)."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    h = ((n.astype(np.uint64) + (0x7FFF + ((n >> 16) & 1))) >> 16).astype(np.uint16)
    if ((h & 0x7F80) == 0x7F80).any():
        r, c = np.argwhere((h & 0x7F80) == 0x7F80)[0]
        raise ValueError(f"[quantize] BF16: value {float(x[r, c]):.6g} at row {r}, column {c} overflows bfloat16")
    return h.view(np.uint8)


_QUANTIZERS: Dict[str, Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]] = {
    "F32": _f32,
    "F16": _f16,
    "BF16": _bf16,
    "Q8_0": quants_legacy.quantize_q8_0,
    "Q4_0": quants_legacy.quantize_q4_0,
    "Q4_1": quants_legacy.quantize_q4_1,
    "Q5_0": quants_legacy.quantize_q5_0,
    "Q5_1": quants_legacy.quantize_q5_1,
    "Q3_K": kquants.quantize_q3_k,
    "Q4_K": kquants.quantize_q4_k,
    "Q5_K": kquants.quantize_q5_k,
    "Q6_K": kquants.quantize_q6_k,
}

_DEQUANTIZERS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda b: b.view(np.float32),
    "F16": lambda b: b.view(np.float16).astype(np.float32),
    "BF16": lambda b: (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32),
    "Q8_0": quants_legacy.dequantize_q8_0,
    "Q4_0": quants_legacy.dequantize_q4_0,
    "Q4_1": quants_legacy.dequantize_q4_1,
    "Q5_0": quants_legacy.dequantize_q5_0,
    "Q5_1": quants_legacy.dequantize_q5_1,
    "Q3_K": kquants.dequantize_q3_k,
    "Q4_K": kquants.dequantize_q4_k,
    "Q5_K": kquants.dequantize_q5_k,
    "Q6_K": kquants.dequantize_q6_k,
}


_GRIDS = {
    "Q8_0": (quants_legacy.levels_q8_0, quants_legacy.set_levels_q8_0),
    "Q4_0": (quants_legacy.levels_q4_0, quants_legacy.set_levels_q4_0),
    "Q4_1": (quants_legacy.levels_q4_1, quants_legacy.set_levels_q4_1),
    "Q5_0": (quants_legacy.levels_q5_0, quants_legacy.set_levels_q5_0),
    "Q5_1": (quants_legacy.levels_q5_1, quants_legacy.set_levels_q5_1),
    "Q3_K": (kquants.levels_q3_k, kquants.set_levels_q3_k),
    "Q4_K": (kquants.levels_q4_k, kquants.set_levels_q4_k),
    "Q5_K": (kquants.levels_q5_k, kquants.set_levels_q5_k),
    "Q6_K": (kquants.levels_q6_k, kquants.set_levels_q6_k),
}
GRID_TYPES = tuple(_GRIDS)


def _check_type(type_name: str) -> None:
    if type_name not in _QUANTIZERS:
        raise ValueError(f"[quantize] unknown type {type_name!r}; expected one of {', '.join(QUANT_TYPES)}")


def _check_finite(x: np.ndarray, r0: int) -> None:
    if np.isfinite(x).all():
        return
    bad = ~np.isfinite(x)
    r, c = np.argwhere(bad)[0]
    n_nan = int(np.isnan(x).sum())
    n_inf = int(bad.sum()) - n_nan
    what = " and ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if s)
    raise ValueError(f"[quantize] input has {what} value(s) (first: {float(x[r, c])} at row {r0 + r}, "
                     f"column {c}); weights must be finite")


def _check_importance(importance, n_cols: int) -> np.ndarray:
    imp = np.asarray(importance, dtype=np.float32)
    if imp.shape != (n_cols,):
        raise ValueError(f"[quantize] importance has shape {imp.shape}; expected ({n_cols},), one weight per column")
    if not np.isfinite(imp).all():
        raise ValueError("[quantize] importance has NaN or Inf values")
    if (imp < 0).any():
        raise ValueError("[quantize] importance has negative values; weights must be >= 0")
    return np.ascontiguousarray(imp)


def effective_importance(importance: np.ndarray, type_name: str) -> np.ndarray:
    """The importance the searches use: groups of columns whose importance is all zero (columns that
    calibration never activated, e.g. an expert no token was routed to) get the mean of the positive
    values instead. With all-zero weights llama.cpp's searches return a zero scale, which would erase
    those weights; everywhere else the importance is used unchanged (and the bytes match llama.cpp's).
    Groups: the 16-value sub-blocks of Q3_K and Q6_K, 32 values otherwise.
    """
    imp = np.asarray(importance, dtype=np.float32)
    g = imp.reshape(-1, 16 if type_name in ("Q3_K", "Q6_K") else 32)
    dead = ~(g > 0).any(axis=1)
    if not dead.any():
        return imp
    pos = imp[imp > 0]
    g = g.copy()
    g[dead] = pos.mean(dtype=np.float64) if pos.size else 1.0
    return g.reshape(-1)


def quantize(data: np.ndarray, type_name: str, importance: Optional[np.ndarray] = None) -> np.ndarray:
    """Quantize float rows to GGUF block bytes.

    ``data``: (n_rows, n_cols) floats (converted to float32), ``n_cols`` a multiple of the type's block
    size. Other ranks work row-wise too: (n,) gives (row_bytes,), (a, b, n) gives (a, b, row_bytes).
    ``importance``: optional (n_cols,) non-negative per-column weights; ignored by F32/F16/BF16;
    all-zero groups are filled in (see ``effective_importance``).
    Returns uint8 (n_rows, row_bytes(type_name, n_cols)). Raises ValueError for an unknown type, a bad
    shape, NaN/Inf input or values whose block scales overflow float16.
    """
    _check_type(type_name)
    data = np.asarray(data)
    if data.ndim == 0:
        raise ValueError("[quantize] data must have at least one dimension (rows of n_cols values)")
    if data.ndim != 2:
        return quantize(data.reshape(-1, data.shape[-1]), type_name, importance).reshape(
            *data.shape[:-1], row_bytes(type_name, data.shape[-1]))
    x = data
    n_rows, n_cols = x.shape
    rb = row_bytes(type_name, n_cols)
    imp = None
    if importance is not None and type_name not in ("F32", "F16", "BF16"):
        imp = effective_importance(_check_importance(importance, n_cols), type_name)
    fn = _QUANTIZERS[type_name]
    out = np.empty((n_rows, rb), dtype=np.uint8)
    step = max(1, _CHUNK_ELEMS // max(n_cols, 1))
    with np.errstate(all="ignore"):
        for r0 in range(0, n_rows, step):
            chunk = np.ascontiguousarray(x[r0:r0 + step], dtype=np.float32)
            _check_finite(chunk, r0)
            out[r0:r0 + chunk.shape[0]] = fn(chunk, imp)
    return out


def dequantize(raw: np.ndarray, type_name: str, n_cols: int) -> np.ndarray:
    """GGUF block bytes -> float32 (n_rows, n_cols). ``raw``: (n_rows, row_bytes) uint8, or any array
    whose bytes are whole rows."""
    _check_type(type_name)
    rb = row_bytes(type_name, n_cols)
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if b.size % rb:
        raise ValueError(f"[quantize] {b.size} bytes are not whole {type_name} rows of {n_cols} values ({rb} bytes)")
    if b.size == 0:
        return np.zeros((0, n_cols), dtype=np.float32)
    blocks = b.reshape(-1, BLOCK_TYPES[type_name].block_bytes)
    return np.ascontiguousarray(_DEQUANTIZERS[type_name](blocks), dtype=np.float32).reshape(-1, n_cols)


def _row_blocks(raw: np.ndarray, type_name: str, n_cols: int) -> np.ndarray:
    if type_name not in _GRIDS:
        raise ValueError(f"[quantize] {type_name} has no level grid; expected one of {', '.join(GRID_TYPES)}")
    rb = row_bytes(type_name, n_cols)
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if b.size % rb:
        raise ValueError(f"[quantize] {b.size} bytes are not whole {type_name} rows of {n_cols} values ({rb} bytes)")
    return b.reshape(-1, BLOCK_TYPES[type_name].block_bytes)


def levels(raw: np.ndarray, type_name: str, n_cols: int) -> Grid:
    """The grid of quantized rows (see block_grid.py): ``levels``/``scale``/``offset`` with NB = all
    blocks of all rows in order, so ``grid.values().reshape(n_rows, n_cols) == dequantize(...)``."""
    blocks = _row_blocks(raw, type_name, n_cols)
    return _GRIDS[type_name][0](blocks)


def set_levels(raw: np.ndarray, type_name: str, n_cols: int, new_levels: np.ndarray) -> np.ndarray:
    """``raw`` (n_rows, row_bytes) with its levels replaced by ``new_levels`` (n_rows, n_cols) integers
    within the type's [lo, hi]; scales and mins are kept."""
    b = _row_blocks(raw, type_name, n_cols)
    out = _GRIDS[type_name][1](b, np.asarray(new_levels).reshape(b.shape[0], -1))
    return out.reshape(-1, row_bytes(type_name, n_cols))
