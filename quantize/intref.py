"""NumPy reference of docs/integer_spec.md: every integer op of an exported graph, on codes only.

Ops: the projection GEMM (``gemm``), the activation x activation MatMul (``matmul``), elementwise
``add`` and ``mul``, ``requantize`` (a tensor moved to another encoding), ``rmsnorm``, ``softmax`` and
table lookups (``lut``, with ``sigmoid_table``). Every function takes and returns integer codes; float
scales enter only at "load time", through ``multiplier`` and the table builders, as the spec says.
Float64 appears only where it is exact (a matrix product whose partial sums stay below 2^53) or in a
table builder. ``edge_rt.quantize.intkernels`` has the same signatures over the C++ kernels.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

#: Largest shift the spec allows (products stay below 2^62).
MAX_SHIFT = 62
#: Fraction bits of the softmax's exp table: entry 0 is 2^EXP_BITS.
EXP_BITS = 30


def multiplier(real: float, precision: int) -> Tuple[int, int]:
    """(m, s) with 2^(P-1) <= m < 2^P and real ~= m * 2^-s (spec: Fixed-point multipliers)."""
    if not real > 0 or not math.isfinite(real):
        raise ValueError(f"[intref] multiplier must be positive and finite, got {real}")
    if not 16 <= precision <= 31:
        raise ValueError(f"[intref] multiplier precision {precision} outside [16, 31]")
    e = math.frexp(real)[1]                                # real * 2^-e in [0.5, 1), exactly
    m = int(np.round(math.ldexp(real, precision - e)))     # numpy rounds half to even
    if m == 1 << precision:
        m, e = 1 << (precision - 1), e + 1
    s = precision - e
    if not 1 <= s <= MAX_SHIFT:
        raise ValueError(f"[intref] multiplier {real} needs shift {s}, outside [1, {MAX_SHIFT}]")
    return m, s


def precision_for(acc_bound: int) -> int:
    """Multiplier bits P = min(31, 62 - bitlen(bound)); P >= 16 or the op is rejected."""
    p = min(31, 62 - int(acc_bound).bit_length())
    if p < 16:
        raise ValueError(f"[intref] accumulator bound {acc_bound} leaves {p} multiplier bits (< 16)")
    return p


def round_shift(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """floor((x + 2^(s-1)) / 2^s) on int64 (round half toward +infinity), 1 <= s <= 63, |x| < 2^62."""
    x = np.asarray(x, np.int64)
    s = np.asarray(s, np.int64)
    return (x + (np.int64(1) << (s - 1))) >> s


def saturate(y: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(y, 0, (1 << bits) - 1).astype(np.uint16 if bits == 16 else np.uint8)


def gemm_bound(k: int, a_bits: int, w_bits: int) -> int:
    """Largest |acc| of a GEMM over K with a_bits activations and w_bits symmetric weights."""
    return k * ((1 << a_bits) - 1) * ((1 << (w_bits - 1)) - 1)


def matmul_bound(k: int, a_bits: int, b_bits: int) -> int:
    """Largest |acc| of a MatMul of two asymmetric activations over K."""
    return k * ((1 << a_bits) - 1) * ((1 << b_bits) - 1)


def _exact_matmul(x: np.ndarray, y: np.ndarray, bound: int) -> np.ndarray:
    """x (..., M, K) @ y (..., K, N) exactly, as int64 (float64 while partial sums stay below 2^53)."""
    if bound < 2 ** 53:
        return np.matmul(x.astype(np.float64), y.astype(np.float64)).astype(np.int64)
    return np.matmul(x.astype(np.int64), y.astype(np.int64))


def accumulate(a: np.ndarray, z_a: int, w: np.ndarray, bound: int) -> np.ndarray:
    """acc (T, N) int64 = sum_k (a[t, k] - z_a) * w[n, k], exactly."""
    return _exact_matmul(a.astype(np.int64) - int(z_a), w.T, bound)


def gemm(a: np.ndarray, s_a: float, z_a: int, a_bits: int, w: np.ndarray, s_w: np.ndarray, w_bits: int,
         s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Output codes (T, N) of the projection y = x W^T (spec: GEMM); ``w`` (N, K) int8 codes."""
    bound = gemm_bound(w.shape[1], a_bits, w_bits)
    p = precision_for(bound)
    mults = [multiplier(float(np.float64(s_a) * np.float64(sw) / np.float64(s_y)), p) for sw in s_w]
    m = np.array([v[0] for v in mults], np.int64)
    s = np.array([v[1] for v in mults], np.int64)
    acc = accumulate(a, z_a, w, bound)
    return saturate(int(z_y) + round_shift(acc * m[None, :], s[None, :]), y_bits)


def matmul(a: np.ndarray, s_a: float, z_a: int, a_bits: int, b: np.ndarray, s_b: float, z_b: int, b_bits: int,
           s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Output codes (..., M, N) of a (..., M, K) times b (..., N, K)^T, both activations (spec: MatMul of
    two activations); leading dimensions broadcast as NumPy's matmul does."""
    bound = matmul_bound(a.shape[-1], a_bits, b_bits)
    m, s = multiplier(float(np.float64(s_a) * np.float64(s_b) / np.float64(s_y)), precision_for(bound))
    acc = _exact_matmul(a.astype(np.int64) - int(z_a), np.swapaxes(b.astype(np.int64) - int(z_b), -1, -2), bound)
    return saturate(int(z_y) + round_shift(acc * m, s), y_bits)


def add(a: np.ndarray, s_a: float, z_a: int, a_bits: int, b: np.ndarray, s_b: float, z_b: int, b_bits: int,
        s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Elementwise a + b on codes (spec: Add); a and b broadcast as NumPy arrays do."""
    m_a, s = multiplier(float(np.float64(s_a) / np.float64(s_y)), 31)
    m_b = int(np.round(math.ldexp(float(np.float64(s_b) / np.float64(s_y)), s)))
    if m_b >= 1 << 46:
        raise ValueError(f"[intref] add: scale ratio {s_b / s_a} of the inputs is too large")
    acc = m_a * (a.astype(np.int64) - int(z_a)) + m_b * (b.astype(np.int64) - int(z_b))
    return saturate(int(z_y) + round_shift(acc, s), y_bits)


def mul(a: np.ndarray, s_a: float, z_a: int, b: np.ndarray, s_b: float, z_b: int,
        s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Elementwise a * b on codes (spec: Mul)."""
    m, s = multiplier(float(np.float64(s_a) * np.float64(s_b) / np.float64(s_y)), 30)
    acc = (a.astype(np.int64) - int(z_a)) * (b.astype(np.int64) - int(z_b))
    return saturate(int(z_y) + round_shift(acc * m, s), y_bits)


def requantize(a: np.ndarray, s_a: float, z_a: int, s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Codes of ``a`` re-expressed in another encoding (spec: Requantize)."""
    m, s = multiplier(float(np.float64(s_a) / np.float64(s_y)), 31)
    return saturate(int(z_y) + round_shift((a.astype(np.int64) - int(z_a)) * m, s), y_bits)


def _row_scale(r: int, m: int, width: int) -> Tuple[int, int]:
    """r * m rounded to ``width`` bits: (mu, b) with r * m ~= mu * 2^b (spec: row multipliers)."""
    prod = r * m
    b = prod.bit_length() - width
    return (prod + (1 << (b - 1))) >> b, b


def rmsnorm(a: np.ndarray, s_a: float, z_a: int, g: np.ndarray, s_g: float, z_g: int, eps: float,
            s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """RMSNorm over the last axis of ``a`` (..., D) with weight codes ``g`` (D,) (spec: RMSNorm)."""
    d = a.shape[-1]
    sa = float(np.float64(s_a))
    e_term = int(np.round(float(eps) * d / (sa * sa)))
    if e_term >= 1 << 61:
        raise ValueError(f"[intref] rmsnorm: eps {eps} is too large against the input scale {s_a}")
    m, s = multiplier(float(np.float64(s_g) * math.sqrt(d) / np.float64(s_y)), 30)
    if s < 2:
        raise ValueError("[intref] rmsnorm: output multiplier too large (shift < 2)")
    x = a.reshape(-1, d).astype(np.int64) - int(z_a)
    xg = x * (g.astype(np.int64) - int(z_g))[None, :]
    out = np.empty(x.shape, np.int64)
    for i, v in enumerate((x * x).sum(axis=1)):
        v = max(int(v) + e_term, 1)
        c = (62 - v.bit_length()) // 2
        r = (1 << 62) // math.isqrt(v << (2 * c))
        mu, b = _row_scale(r, m, 30)
        out[i] = round_shift(xg[i] * mu, min(62 - c + s - b, 63))
    return saturate(int(z_y) + out, y_bits).reshape(a.shape)


def exp_table(s_a: float, a_bits: int) -> np.ndarray:
    """uint32 (2^a_bits,): entry d = round_half_even(2^EXP_BITS * exp(-s_a * d)) in float64."""
    d = np.arange(1 << a_bits, dtype=np.float64)
    return np.round(np.exp(-np.float64(s_a) * d) * float(1 << EXP_BITS)).astype(np.uint32)


def softmax(a: np.ndarray, table: np.ndarray, s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Softmax over the last axis of codes ``a`` with the input's ``exp_table`` (spec: Softmax)."""
    m, s = multiplier(1.0 / float(np.float64(s_y)), 31)
    x = a.reshape(-1, a.shape[-1]).astype(np.int64)
    e = table.astype(np.int64)[x.max(axis=1, keepdims=True) - x]
    out = np.empty(x.shape, np.int64)
    for i, total in enumerate(e.sum(axis=1)):
        total = int(total)
        big = total.bit_length()
        r = (1 << 61) // (total >> (big - 31))
        mu, b = _row_scale(r, m, 31)
        out[i] = round_shift(e[i] * mu, min(big + 30 + s - b, 63))
    return saturate(int(z_y) + out, y_bits).reshape(a.shape)


def sigmoid_table(s_a: float, z_a: int, a_bits: int, s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Output codes of Sigmoid for every input code: clamp(z_y + round_half_even(sigmoid(x) / s_y)) with
    x = s_a * (q - z_a), all in float64 (spec: Lookup tables)."""
    x = np.float64(s_a) * (np.arange(1 << a_bits, dtype=np.float64) - int(z_a))
    sig = 1.0 / (1.0 + np.exp(-x))
    return saturate(np.round(sig / np.float64(s_y)).astype(np.int64) + int(z_y), y_bits)


def lut(a: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[a] elementwise (a unary op given as its table of output codes)."""
    if table.shape != (1 << (8 * a.dtype.itemsize),):
        raise ValueError(f"[intref] lut: a table of {table.shape} entries for {a.dtype} codes")
    return table[a]
