"""Block-wise int4 projection weights for the ONNX export: QNN's low-power block quantization (LPBQ).

A weight W (N, K) is stored as int4 codes q in [-8, 7] (in [-7, 7] where s = 16), one unsigned integer
scale s in [1, 16] (4 bits on the HTP) per row and block of ``block`` input columns, and one float32 scale
S per row:

    W[n, k] ~= S[n] * s[n, k // block] * q[n, k]

In the graph a DequantizeLinear of s ((K / block, N) uint8, per-channel scale S, axis 1) makes the float
block scales, which a blocked DequantizeLinear (axis 0, ``block_size``) applies to q (K, N). ONNX
Runtime's QNN EP fuses the pair with its MatMul into one QNN MatMul whose weight has the
BLOCKWISE_EXPANSION encoding (4-bit block scales); on its CPU EP the two DequantizeLinear nodes run as
written.

For the integer spec (docs/integer_spec.md) the product s * q is an int8 code in [-120, 112]: the weight
is an int8 per-channel weight with scale S whose codes lie on a per-block 4-bit lattice, so intref and the
C++ kernels run it as int8 (``expanded``) with no op of their own. The code -8 is refused where s = 16
only because -128 is outside the spec's symmetric int8 range [-127, 127]. S keeps 15 significant bits so
that S * s * q is exact in float32, as ONNX Runtime dequantizes it.

Rounding (``round_blocks``): with calibration statistics, GPTQ walks the columns and picks each block's
scale when it reaches the block, from the weights as its error feedback has left them (GPTQ's own group
quantization does the same); S is fixed first so that the row's largest weight takes s = 16.

Measured on SmolLM2-135M (its Q4_1 weights dequantized, residual rotated; perplexity of the float model
with only the projection weights rounded, benchmarks/w4_weights_only.py): blocks of 32 with codes in
[-7, 7] and scales fixed before GPTQ +9.7%; codes down to -8 +8.4%; scales picked during GPTQ +7.9%;
blocks of 16 +6.5% (the export's default, onnx_export.DEFAULT_W4_BLOCK).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

#: Largest per-block integer scale (AIMET's LPBQ range, 2^(8 - 4); QNN's 4-bit block scales take it).
BLOCK_SCALE_MAX = 16
#: Largest int4 code; the smallest is -QMAX - 1, except under the block scale BLOCK_SCALE_MAX (``code_min``).
QMAX = 7
#: Factors tried on each row's float scale S (1.0: the largest block uses s = 16 unclipped).
ROW_SCALE_GRID = (1.0, 0.9, 0.8)
#: Rows of W searched at once.
ROWS_PER_PASS = 256
#: Significant bits kept in S: S * s * q (s < 2^5, |q| < 2^3) then fits float32's 24-bit mantissa.
ROW_SCALE_BITS = 15


def block_of(k: int, block: int) -> int:
    """The block size used for a projection with K input columns: ``block`` where it divides K, else 0
    (the weight stays per-channel)."""
    return block if block and k % block == 0 and k > block else 0


def code_min(s: np.ndarray) -> np.ndarray:
    """Smallest int4 code under block scales ``s``: -8, or -7 where s = 16 (s * q stays >= -127)."""
    return np.where(np.asarray(s) == BLOCK_SCALE_MAX, -QMAX, -QMAX - 1)


def _round_significand(x: np.ndarray, bits: int) -> np.ndarray:
    m, e = np.frexp(x.astype(np.float64))
    return np.ldexp(np.round(m * (1 << bits)) / (1 << bits), e).astype(np.float32)


def block_scales(w: np.ndarray, block: int, col_weight: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(S (N,) float32, s (N, K / block) uint8 in [1, 16]) for W (N, K). For each row and each factor of
    ROW_SCALE_GRID, every block takes the integer scale of [1, 16] with the least round-to-nearest error
    weighted by ``col_weight`` (K,) (the diagonal of H = sum x x^T; None: uniform); each row keeps the
    factor with the least total error. Rows go ROWS_PER_PASS at a time (bounded temporaries)."""
    if w.shape[0] > ROWS_PER_PASS:
        parts = [_block_scales(w[i:i + ROWS_PER_PASS], block, col_weight) for i in range(0, w.shape[0], ROWS_PER_PASS)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return _block_scales(w, block, col_weight)


def _block_scales(w: np.ndarray, block: int, col_weight: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    n, k = w.shape
    wb = w.reshape(n, k // block, block).astype(np.float32)
    cw = (np.ones(k, np.float32) if col_weight is None else np.maximum(col_weight, 0).astype(np.float32)
          ).reshape(k // block, block)
    amax = np.abs(wb).max(axis=2)                                  # (N, B)
    base = np.maximum(amax.max(axis=1), 1e-30) / (QMAX * BLOCK_SCALE_MAX)
    best_err = np.full(n, np.inf)
    best_s = np.ones((n, k // block), np.uint8)
    best_row = np.ones(n, np.float32)
    for f in ROW_SCALE_GRID:
        row = _round_significand(base * f, ROW_SCALE_BITS)
        s_best, err = _pick_scales(wb, row, cw)
        total = err.sum(axis=1)
        better = total < best_err
        best_err[better] = total[better]
        best_s[better] = s_best[better]
        best_row[better] = row[better]
    return best_row, best_s


def element_scales(row: np.ndarray, s: np.ndarray, block: int) -> np.ndarray:
    """(N, K) float64 step of every weight: S[n] * s[n, k // block]."""
    return row.astype(np.float64)[:, None] * np.repeat(s.astype(np.float64), block, axis=1)


def expanded(q: np.ndarray, s: np.ndarray, block: int) -> np.ndarray:
    """The int8 codes s * q (N, K) the integer spec runs for int4 codes q (N, K) and block scales s."""
    return (q.astype(np.int16) * np.repeat(s.astype(np.int16), block, axis=1)).astype(np.int8)


def _pick_scales(wb: np.ndarray, row: np.ndarray, col_weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For blocks ``wb`` (N, B, block) under row scales ``row`` (N,): each block's scale s (N, B) uint8 in
    [1, 16] with the least round-to-nearest error weighted by ``col_weight`` (B, block), and that error."""
    err = np.full(wb.shape[:2], np.inf)
    best = np.ones(wb.shape[:2], np.uint8)
    for s in range(1, BLOCK_SCALE_MAX + 1):
        step = (row * s)[:, None, None]
        e = wb - np.clip(np.round(wb / step), code_min(s), QMAX) * step
        es = np.einsum("nbk,bk->nb", e * e, col_weight)
        better = es < err
        err[better] = es[better]
        best[better] = s
    return best, err


def round_blocks(w: np.ndarray, block: int, gram: Optional[np.ndarray] = None, gptq: bool = True
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W (N, K) -> (int8 codes s * q (N, K), S (N,), s (N, K / block)).

    Without ``gram`` (H = sum x x^T, K x K): scales from ``block_scales``, codes rounded to nearest; with
    it and ``gptq`` False the same, the search weighted by H's diagonal. With ``gram`` and ``gptq``: S is
    the row's largest |weight| / (7 * 16); GPTQ's error feedback (onnx_ranges.gptq_walk) rounds the
    columns in order, and each block's s is picked (H-diagonal weighted) when the walk reaches the block,
    from the weights as the feedback left them. Measured on SmolLM2's projections this beats scales fixed
    before the walk (module docstring); a row scale below the largest weight's (0.9x) did worse."""
    n, k = w.shape
    if gram is None or not gptq:
        row, s = block_scales(w, block, None if gram is None else np.diag(gram))
        q = np.clip(np.round(w / element_scales(row, s, block)), code_min(np.repeat(s, block, axis=1)), QMAX)
        return expanded(q.astype(np.int8), s, block), row, s
    from .onnx_ranges import gptq_walk

    row = _round_significand(np.maximum(np.abs(w).max(axis=1), 1e-30) / (QMAX * BLOCK_SCALE_MAX), ROW_SCALE_BITS)
    row64 = row.astype(np.float64)
    col_weight = np.maximum(np.diag(gram), 0).astype(np.float64)
    s = np.ones((n, k // block), np.uint8)
    q = np.zeros(w.shape, np.int8)
    step = lo = None

    def round_column(j: int, work: np.ndarray) -> np.ndarray:
        nonlocal step, lo
        if j % block == 0:
            b = j // block
            s[:, b] = _pick_scales(work[:, None, j:j + block], row64, col_weight[None, j:j + block])[0][:, 0]
            step, lo = row64 * s[:, b], code_min(s[:, b])
        q[:, j] = np.clip(np.round(work[:, j] / step), lo, QMAX)
        return q[:, j] * step

    gptq_walk(w, gram, round_column)
    return expanded(q, s, block), row, s


def split(codes: np.ndarray, s: np.ndarray, block: int) -> np.ndarray:
    """The int4 codes q (N, K) of expanded codes s * q (exact: every code is a multiple of its block's s)."""
    return (codes.astype(np.int16) // np.repeat(s.astype(np.int16), block, axis=1)).astype(np.int8)


def stored_bytes(shape: Tuple[int, int], block: int) -> int:
    """Bytes of one (N, K) block-wise int4 weight in the graph: packed codes, int4 zero points per block,
    uint8 block scales, float32 row scales, uint8 zero points of the block scales."""
    n, k = shape
    nb = n * (k // block)
    return (n * k + 1) // 2 + (nb + 1) // 2 + nb + 4 * n + n
