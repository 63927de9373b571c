"""The 32-element block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: quantizers and dequantizers.

Byte layouts (ggml ``block_q*`` structs, little-endian, one block of 32 values):

* Q8_0 (34 B): ``d`` f16, ``qs[32]`` int8;                          x = d*q
* Q4_0 (18 B): ``d`` f16, ``qs[16]``;                              x = d*(q-8),  q in 0..15
* Q4_1 (20 B): ``d`` f16, ``m`` f16, ``qs[16]``;                   x = d*q + m,  q in 0..15
* Q5_0 (22 B): ``d`` f16, ``qh`` u32, ``qs[16]``;                  x = d*(q-16), q in 0..31
* Q5_1 (24 B): ``d`` f16, ``m`` f16, ``qh`` u32, ``qs[16]``;       x = d*q + m,  q in 0..31

``qs[j]`` holds element ``j`` in its low nibble and element ``j+16`` in its high nibble; bit ``i`` of
``qh`` is bit 4 of element ``i``.

Without importance the quantizers are ggml's reference ones (``quantize_row_q*_ref``), bit-exact with
``gguf.quants.quantize``. With importance they are llama.cpp's imatrix quantizers
(``quantize_row_q4_0_impl`` etc.: weights ``imp[j] * sqrt(sigma2 + x[j]**2)`` with ``sigma2`` the
row's mean square); Q8_0, for which llama.cpp ignores the imatrix, gets a weighted scale search of
its own that never does worse than round-to-nearest on the importance-weighted squared error.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .block_grid import Grid
from .quants_search import F32, make_qkx_quants, make_qx_quants, search_symmetric_int8, ssum

QK = 32


def to_f16(a: np.ndarray, type_name: str, what: str = "block scale") -> np.ndarray:
    """float32 -> float16 (round to nearest even, as ggml), refusing values that overflow."""
    h = a.astype(np.float16)
    if not np.isfinite(h).all():
        big = float(np.max(np.abs(a[~np.isfinite(h)])))
        raise ValueError(f"[quantize] {type_name}: a {what} of {big:.6g} overflows float16 "
                         f"(max 65504); the input values are too large for this type")
    return h


def _f16_bytes(h: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(h, dtype=np.float16).reshape(-1, 1).view(np.uint8)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf`` (half away from zero), exact in float32."""
    a = np.abs(v)
    fl = np.floor(a)
    return np.copysign(fl + np.floor(F32(2) * (a - fl)), v)


def _to_level(v: np.ndarray, inv: np.ndarray, dtype) -> np.ndarray:
    """float -> integer level as C's cast does on x86: a subnormal scale makes ``1/d`` infinite and
    ``v`` inf/NaN, which the x86 conversion turns into 0 (numpy's cast is platform-defined there)."""
    if not np.isfinite(inv).all():
        v = np.where(np.isfinite(v), v, F32(0))
    return v.astype(dtype)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(NB, 32) levels -> (NB, 16) bytes: element j low nibble, element j+16 high nibble."""
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _pack_qh(q: np.ndarray) -> np.ndarray:
    """(NB, 32) 5-bit levels -> (NB, 4) bytes: bit i = bit 4 of element i."""
    return np.packbits((q >> 4) & 1, axis=-1, bitorder="little")


def _transposed(x: np.ndarray) -> np.ndarray:
    """(rows, cols) -> (32, NB): one column per block, the layout of the scale searches."""
    return np.ascontiguousarray(x.reshape(-1, QK).T)


def _imatrix_weights(x: np.ndarray, xt: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """llama.cpp's legacy-quant weights ``imp * sqrt(sigma2 + x**2)``, sigma2 = row mean square."""
    rows, cols = x.shape
    sum_x2 = ssum(np.ascontiguousarray((x * x).T))          # sequential over the row, as in C
    sigma2 = sum_x2 / F32(cols)
    sig = np.repeat(sigma2, cols // QK)[None, :]             # (1, NB)
    return _importance_t(importance, rows) * np.sqrt(sig + xt * xt)


def _importance_t(importance: np.ndarray, rows: int) -> np.ndarray:
    """(cols,) -> (32, NB): the importance of each element in the block-column layout."""
    return np.tile(importance.reshape(-1, QK).T, (1, rows))


# ------------------------------------------------------------------------------------------------
# Q8_0
# ------------------------------------------------------------------------------------------------

def _q8_0_rtn(b: np.ndarray):
    d = np.abs(b).max(axis=1, keepdims=True) / F32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d)
    return d[:, 0], _to_level(_roundf(b * inv), inv, np.int8)


def quantize_q8_0(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    rows, cols = x.shape
    b = x.reshape(-1, QK)
    d, q = _q8_0_rtn(b)
    if importance is not None:
        xt = _transposed(x)
        w = _importance_t(importance, rows)
        with np.errstate(over="ignore"):
            s16 = search_symmetric_int8(xt, w).astype(np.float16)
        fits = np.isfinite(s16)  # a searched scale past float16's range: that block keeps round-to-nearest
        s = np.where(fits, s16, np.float16(0)).astype(F32)
        qt = np.clip(np.rint(xt / np.where(s == 0, F32(1), s)), -127, 127)
        qt[:, s == 0] = 0
        e = (s * qt) - xt
        err_s = ssum(w * (e * e))
        dr = to_f16(d, "Q8_0").astype(F32)
        e = (dr * q.T.astype(F32)) - xt
        err_r = ssum(w * (e * e))
        use = fits & (err_s < err_r)                         # never worse than round-to-nearest
        d = np.where(use, s, d)
        q = np.where(use[:, None], qt.T.astype(np.int8), q)
    out = np.concatenate([_f16_bytes(to_f16(d, "Q8_0")), q.view(np.uint8)], axis=1)
    return out.reshape(rows, -1)


def levels_q8_0(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 34)
    d = b[:, :2].copy().view(np.float16).astype(F32)
    return Grid(b[:, 2:].view(np.int8).astype(np.int16)[:, None, :], d[:, :, None], None, -128, 127)


def set_levels_q8_0(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 34).copy()
    b[:, 2:] = levels.reshape(-1, QK).astype(np.int8).view(np.uint8)
    return b


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    return levels_q8_0(raw).values()


# ------------------------------------------------------------------------------------------------
# Q4_0 / Q5_0 (symmetric, offset levels)
# ------------------------------------------------------------------------------------------------

def _sym_rtn(b: np.ndarray, nmax: int):
    """ggml q4_0/q5_0 reference: d = max/-nmax (signed value of largest magnitude), q = trunc(x/d + nmax + .5)."""
    imax = np.abs(b).argmax(axis=1)[:, None]
    vmax = np.take_along_axis(b, imax, axis=1)
    vmax[vmax == 0] = 0                     # all-zero block: C keeps its +0.0 start, so d = -0.0
    d = vmax / F32(-nmax)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d)
    q = _to_level(np.trunc(b * inv + F32(nmax + 0.5)), inv, np.uint8)
    np.minimum(q, 2 * nmax - 1, out=q)
    return d[:, 0], q


def _sym_quantize(x: np.ndarray, importance: Optional[np.ndarray], nmax: int, type_name: str):
    rows = x.shape[0]
    if importance is None:
        d, q = _sym_rtn(x.reshape(-1, QK), nmax)
    else:
        xt = _transposed(x)
        d, L = make_qx_quants(xt, nmax, _imatrix_weights(x, xt, importance))
        q = np.ascontiguousarray(L.T)
    return to_f16(d, type_name), q, rows


def quantize_q4_0(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    d, q, rows = _sym_quantize(x, importance, 8, "Q4_0")
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1).reshape(rows, -1)


def quantize_q5_0(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    d, q, rows = _sym_quantize(x, importance, 16, "Q5_0")
    return np.concatenate([_f16_bytes(d), _pack_qh(q), _pack_nibbles(q)], axis=1).reshape(rows, -1)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _unpack_qh(qh: np.ndarray) -> np.ndarray:
    return np.unpackbits(qh, axis=1, bitorder="little") << 4


def levels_q4_0(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 18)
    d = b[:, :2].copy().view(np.float16).astype(F32)
    q = _unpack_nibbles(b[:, 2:]).astype(np.int16) - 8
    return Grid(q[:, None, :], d[:, :, None], None, -8, 7)


def set_levels_q4_0(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 18).copy()
    b[:, 2:] = _pack_nibbles((levels.reshape(-1, QK) + 8).astype(np.uint8))
    return b


def levels_q5_0(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 22)
    d = b[:, :2].copy().view(np.float16).astype(F32)
    q = (_unpack_nibbles(b[:, 6:]) | _unpack_qh(b[:, 2:6])).astype(np.int16) - 16
    return Grid(q[:, None, :], d[:, :, None], None, -16, 15)


def set_levels_q5_0(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 22).copy()
    q = (levels.reshape(-1, QK) + 16).astype(np.uint8)
    b[:, 2:6] = _pack_qh(q)
    b[:, 6:] = _pack_nibbles(q)
    return b


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    return levels_q4_0(raw).values()


def dequantize_q5_0(raw: np.ndarray) -> np.ndarray:
    return levels_q5_0(raw).values()


# ------------------------------------------------------------------------------------------------
# Q4_1 / Q5_1 (scale and min)
# ------------------------------------------------------------------------------------------------

def _asym_rtn(b: np.ndarray, nmax: int):
    """ggml q4_1/q5_1 reference: d = (max-min)/nmax, m = min, q = trunc((x-min)/d + .5)."""
    # first of equal extremes, as the C loop (decides the sign of a zero min or max)
    vmax = np.take_along_axis(b, b.argmax(axis=1)[:, None], axis=1)
    vmin = np.take_along_axis(b, b.argmin(axis=1)[:, None], axis=1)
    d = (vmax - vmin) / F32(nmax)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d)
    q = _to_level(np.trunc((b - vmin) * inv + F32(0.5)), inv, np.uint8)
    np.minimum(q, nmax, out=q)
    return d[:, 0], vmin[:, 0], q


def _asym_quantize(x: np.ndarray, importance: Optional[np.ndarray], nmax: int, type_name: str):
    rows = x.shape[0]
    if importance is None:
        d, m, q = _asym_rtn(x.reshape(-1, QK), nmax)
    else:
        xt = _transposed(x)
        d, the_min, L = make_qkx_quants(xt, _imatrix_weights(x, xt, importance), nmax, -0.9, 0.05, 36)
        m = -the_min
        q = np.ascontiguousarray(L.T)
    return to_f16(d, type_name), to_f16(m, type_name, "block minimum"), q, rows


def quantize_q4_1(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    d, m, q, rows = _asym_quantize(x, importance, 15, "Q4_1")
    return np.concatenate([_f16_bytes(d), _f16_bytes(m), _pack_nibbles(q)], axis=1).reshape(rows, -1)


def quantize_q5_1(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    d, m, q, rows = _asym_quantize(x, importance, 31, "Q5_1")
    return np.concatenate([_f16_bytes(d), _f16_bytes(m), _pack_qh(q), _pack_nibbles(q)],
                          axis=1).reshape(rows, -1)


def levels_q4_1(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 20)
    d = b[:, 0:2].copy().view(np.float16).astype(F32)
    m = b[:, 2:4].copy().view(np.float16).astype(F32)
    return Grid(_unpack_nibbles(b[:, 4:]).astype(np.int16)[:, None, :], d[:, :, None], m[:, :, None], 0, 15)


def set_levels_q4_1(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 20).copy()
    b[:, 4:] = _pack_nibbles(levels.reshape(-1, QK).astype(np.uint8))
    return b


def levels_q5_1(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 24)
    d = b[:, 0:2].copy().view(np.float16).astype(F32)
    m = b[:, 2:4].copy().view(np.float16).astype(F32)
    q = (_unpack_nibbles(b[:, 8:]) | _unpack_qh(b[:, 4:8])).astype(np.int16)
    return Grid(q[:, None, :], d[:, :, None], m[:, :, None], 0, 31)


def set_levels_q5_1(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 24).copy()
    q = levels.reshape(-1, QK).astype(np.uint8)
    b[:, 4:8] = _pack_qh(q)
    b[:, 8:] = _pack_nibbles(q)
    return b


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    return levels_q4_1(raw).values()


def dequantize_q5_1(raw: np.ndarray) -> np.ndarray:
    return levels_q5_1(raw).values()
