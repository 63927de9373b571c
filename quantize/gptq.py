"""Error-feedback rounding (GPTQ) onto a GGUF block type's grid.

Round-to-nearest picks each weight's level on its own, but what the model sees is the output error
``(W - Q) x``: errors in columns whose inputs are correlated can cancel. GPTQ (Frantar et al., 2022,
"Optimal Brain Quantization" applied column by column) walks the input columns in order, rounds one
column, and spreads its rounding error over the columns not yet rounded through the inverse of the
input second-moment matrix ``H = E[x x^T]``, which minimises ``E||(W - Q) x||^2`` greedily.

Here it is fitted to GGUF: the type's own scale search (``quants.quantize``, importance-weighted like
llama.cpp's imatrix quantizers) chooses each group's scales and mins from the weights *as updated so
far*, when the walk reaches the group (a 32-value block, or a 256-value K-quant super-block); then only
the levels are chosen by error feedback (``quants.levels`` / ``quants.set_levels``). The output is
ordinary GGUF bytes of that type; llama.cpp and edge_rt decode it unchanged.

Contract:
  * ``w``: float32 (rows, cols); ``hessian``: (cols, cols) symmetric, the mean of ``x x^T`` over the
    calibration tokens that reach this matrix (``CalibStats.hessian``); ``importance``: optional
    (cols,) for the scale search (the diagonal of ``hessian`` is a fine choice).
  * returns uint8 (rows, row_bytes(type, cols)), the same as ``quants.quantize`` would, levels aside.
  * columns that calibration never activated (zero diagonal) are rounded to nearest and pass no error
    on; ``damp`` (a fraction of the mean diagonal added to it) keeps H invertible.
  * rows are independent; large matrices are processed in row chunks to bound the float64 copies.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import quants
from .block_types import BLOCK_TYPES

__all__ = ["DAMP", "gptq_quantize", "inverse_cholesky"]

DAMP = 0.01
_ROW_CHUNK_ELEMS = 1 << 22   # float64 working copy per chunk: 32 MiB


def inverse_cholesky(hessian: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """Upper-triangular U with U^T U = (H + damp*mean(diag H)*I)^-1 (dead columns get the mean
    diagonal first). Damping grows tenfold until H is positive definite."""
    h = np.array(hessian, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"[gptq] hessian must be square, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("[gptq] hessian has NaN or Inf values")
    h = (h + h.T) * 0.5
    diag = np.diag(h).copy()
    live = diag > 0
    mean = float(diag[live].mean()) if live.any() else 1.0
    dead = np.flatnonzero(~live)
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = mean
    eye = np.eye(h.shape[0])
    for lam in (damp, damp * 10, damp * 100, 1.0):
        try:
            lower = np.linalg.cholesky(h + lam * mean * eye)
        except np.linalg.LinAlgError:
            continue
        inv_lower = np.linalg.solve(lower, eye)              # L^-1; H^-1 = L^-T L^-1
        hinv = inv_lower.T @ inv_lower
        return np.linalg.cholesky(hinv).T
    raise ValueError("[gptq] hessian is not positive definite even with damping")


def gptq_quantize(w: np.ndarray, hessian: Optional[np.ndarray], type_name: str, importance: Optional[np.ndarray] = None,
                  damp: float = DAMP, upper: Optional[np.ndarray] = None) -> np.ndarray:
    """GGUF bytes of ``w`` as ``type_name`` with levels chosen by error feedback (see the module doc).
    ``upper``: a precomputed ``inverse_cholesky(hessian, damp)`` (several types of one matrix share it)."""
    if type_name not in quants.GRID_TYPES:
        raise ValueError(f"[gptq] {type_name} has no level grid; expected one of {', '.join(quants.GRID_TYPES)}")
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"[gptq] weights must be 2-D (rows, cols), got shape {w.shape}")
    rows, cols = w.shape
    if not np.isfinite(w).all():
        quants.quantize(w, type_name)                       # raises the quantizer's message naming the value
    if upper is None and hessian is None:
        raise ValueError("[gptq] give the hessian or its inverse Cholesky factor")
    u = inverse_cholesky(hessian, damp) if upper is None else upper
    if u.shape != (cols, cols):
        raise ValueError(f"[gptq] hessian is {u.shape[0]}x{u.shape[1]}, the weights have {cols} columns")
    group = BLOCK_TYPES[type_name].block_elems
    step = max(1, _ROW_CHUNK_ELEMS // cols)
    return np.concatenate([_rows(w[r:r + step], u, type_name, importance, group) for r in range(0, rows, step)])


def _rows(w: np.ndarray, u: np.ndarray, type_name: str, importance: Optional[np.ndarray], group: int) -> np.ndarray:
    rows, cols = w.shape
    work = w.astype(np.float64)
    out = []
    for s in range(0, cols, group):
        e = s + group
        imp = None if importance is None else importance[s:e]
        raw = quants.quantize(work[:, s:e].astype(np.float32), type_name, imp)
        grid = quants.levels(raw, type_name, group)
        shape = grid.levels.shape
        scale = np.broadcast_to(grid.scale, shape).reshape(rows, group).astype(np.float64)
        offset = (np.zeros((rows, group)) if grid.offset is None
                  else np.broadcast_to(grid.offset, shape).reshape(rows, group).astype(np.float64))
        levels = grid.levels.reshape(rows, group).copy()
        live = scale != 0                                     # a zero scale keeps the search's levels
        err = np.empty((rows, group))
        for j in range(group):
            c = s + j
            x = work[:, c]
            q = np.clip(np.rint((x - offset[:, j]) / np.where(live[:, j], scale[:, j], 1.0)), grid.lo, grid.hi)
            q = np.where(live[:, j], q, levels[:, j])
            levels[:, j] = q
            err[:, j] = (x - (scale[:, j] * q + offset[:, j])) / u[c, c]
            if j + 1 < group:
                work[:, c + 1:e] -= np.outer(err[:, j], u[c, c + 1:e])
        if e < cols:
            work[:, e:] -= err @ u[s:e, e:]
        out.append(quants.set_levels(raw, type_name, group, levels))
    return np.concatenate(out, axis=1)
