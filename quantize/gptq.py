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
            # H = R R^T with R upper (Cholesky of H with rows and columns reversed), so
            # H^-1 = R^-T R^-1 and U = R^-1 is the upper factor: one factorisation, one triangular inverse.
            r = np.linalg.cholesky((h + lam * mean * eye)[::-1, ::-1])[::-1, ::-1]
        except np.linalg.LinAlgError:
            continue
        return _upper_inverse(np.ascontiguousarray(r))
    raise ValueError("[gptq] hessian is not positive definite even with damping")


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    """Inverse of an upper-triangular matrix by 2x2 block recursion (matrix products do the work):
    [[A, B], [0, C]]^-1 = [[A^-1, -A^-1 B C^-1], [0, C^-1]]."""
    n = r.shape[0]
    if n <= 256:
        return np.triu(np.linalg.inv(r))
    m = n // 2
    ai = _upper_inverse(r[:m, :m])
    ci = _upper_inverse(r[m:, m:])
    out = np.zeros_like(r)
    out[:m, :m] = ai
    out[m:, m:] = ci
    out[:m, m:] = -(ai @ r[:m, m:]) @ ci
    return out


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
