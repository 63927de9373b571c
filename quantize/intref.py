"""NumPy reference of docs/integer_spec.md: fixed-point multipliers, rounding, the projection GEMM and
the elementwise Add/Mul, on integer codes only (float64 appears only where it is exact).

Every function takes and returns integer codes; the float scales enter only through ``multiplier``,
as the spec says. RMSNorm, softmax and the lookup tables are not specified yet (see the spec).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

#: Largest shift the spec allows (products stay below 2^62).
MAX_SHIFT = 62


def multiplier(real: float, precision: int) -> Tuple[int, int]:
    """(m, s) with 2^(P-1) <= m < 2^P and real ~= m * 2^-s (spec: Fixed-point multipliers)."""
    if not real > 0 or not math.isfinite(real):
        raise ValueError(f"[intref] multiplier must be positive and finite, got {real}")
    if not 16 <= precision <= 31:
        raise ValueError(f"[intref] multiplier precision {precision} outside [16, 31]")
    e = math.floor(math.log2(real)) + 1
    m = int(np.round(real * 2.0 ** (precision - e)))      # numpy rounds half to even
    if m == 1 << precision:
        m, e = 1 << (precision - 1), e + 1
    s = precision - e
    if not 1 <= s <= MAX_SHIFT:
        raise ValueError(f"[intref] multiplier {real} needs shift {s}, outside [1, {MAX_SHIFT}]")
    return m, s


def precision_for(acc_bound: int) -> int:
    """Multiplier bits P = min(31, 62 - ceil(log2(bound + 1))); P >= 16 or the op is rejected."""
    p = min(31, 62 - math.ceil(math.log2(acc_bound + 1)))
    if p < 16:
        raise ValueError(f"[intref] accumulator bound {acc_bound} leaves {p} multiplier bits (< 16)")
    return p


def round_shift(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """floor((x + 2^(s-1)) / 2^s) on int64 (round half toward +infinity)."""
    x = np.asarray(x, np.int64)
    s = np.asarray(s, np.int64)
    return (x + (np.int64(1) << (s - 1))) >> s


def saturate(y: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(y, 0, (1 << bits) - 1).astype(np.uint16 if bits == 16 else np.uint8)


def gemm_bound(k: int, a_bits: int, w_bits: int) -> int:
    """Largest |acc| of a GEMM over K with a_bits activations and w_bits symmetric weights."""
    return k * ((1 << a_bits) - 1) * ((1 << (w_bits - 1)) - 1)


def accumulate(a: np.ndarray, z_a: int, w: np.ndarray, bound: int) -> np.ndarray:
    """acc (T, N) int64 = sum_k (a[t, k] - z_a) * w[n, k], exactly."""
    x = a.astype(np.int64) - int(z_a)
    if bound < 2 ** 53:      # every partial sum is an exact integer in float64
        return (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
    return x @ w.astype(np.int64).T


def gemm(a: np.ndarray, s_a: float, z_a: int, a_bits: int, w: np.ndarray, s_w: np.ndarray, w_bits: int,
         s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Output codes (T, N) of the projection y = x W^T (spec: GEMM)."""
    bound = gemm_bound(w.shape[1], a_bits, w_bits)
    p = precision_for(bound)
    mults = [multiplier(float(np.float64(s_a) * np.float64(sw) / np.float64(s_y)), p) for sw in s_w]
    m = np.array([v[0] for v in mults], np.int64)
    s = np.array([v[1] for v in mults], np.int64)
    acc = accumulate(a, z_a, w, bound)
    if bound * (1 << p) >= 2 ** 63:
        raise AssertionError("precision_for keeps |acc| * m below 2^62")
    return saturate(int(z_y) + round_shift(acc * m[None, :], s[None, :]), y_bits)


def add(a: np.ndarray, s_a: float, z_a: int, a_bits: int, b: np.ndarray, s_b: float, z_b: int, b_bits: int,
        s_y: float, z_y: int, y_bits: int) -> np.ndarray:
    """Elementwise a + b on codes (spec: Add); a and b broadcast as NumPy arrays do."""
    m_a, s = multiplier(float(np.float64(s_a) / np.float64(s_y)), 31)
    m_b = int(np.round(float(np.float64(s_b) / np.float64(s_y)) * 2.0 ** s))
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
