"""K-quants Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 values with quantized per-sub-block scales.

Byte layouts (ggml ``block_q3_K`` / ``block_q4_K`` / ``block_q5_K`` / ``block_q6_K``, little-endian):

* Q3_K (110 B): ``hmask[32]``, ``qs[64]``, ``scales[12]``, ``d`` f16. 16 sub-blocks of 16:
  ``x = d*(s[j]-32)*q``, ``q`` in -4..3, ``s`` 6-bit. Element ``e = 128h + 32t + l`` stores ``q + 4``:
  bits 0-1 in bits ``2t..2t+1`` of ``qs[32h + l]``, bit 2 in bit ``e // 32`` of ``hmask[e % 32]``.
  ``scales[j]`` (j < 8) holds the low nibbles of ``s[j]`` (low) and ``s[j+8]`` (high);
  ``scales[8+k]`` holds the top 2 bits of ``s[k]``, ``s[k+4]``, ``s[k+8]``, ``s[k+12]`` at bits 0, 2, 4, 6.
* Q4_K (144 B): ``d`` f16, ``dmin`` f16, ``scales[12]``, ``qs[128]``.
  8 sub-blocks of 32: ``x = d*sc[j]*q - dmin*m[j]``, ``q`` in 0..15, ``sc``/``m`` 6-bit, packed
  as: bytes 0-3 ``sc[0..3] | (sc[4..7]>>4)<<6``, bytes 4-7 ``m[0..3] | (m[4..7]>>4)<<6``,
  bytes 8-11 ``(sc[4..7]&15) | (m[4..7]&15)<<4``. ``qs[32*c + l]`` holds element ``64*c + l`` in
  its low nibble and ``64*c + 32 + l`` in its high nibble.
* Q5_K (176 B): ``d``, ``dmin``, ``scales[12]`` as Q4_K, ``qh[32]``, ``qs[128]``; ``q`` in 0..31:
  the low 4 bits as Q4_K, bit 4 of element ``64*c + l`` in bit ``2c`` of ``qh[l]`` and of element
  ``64*c + 32 + l`` in bit ``2c+1``.
* Q6_K (210 B): ``ql[128]``, ``qh[64]``, ``scales[16]`` int8, ``d`` f16. 16 sub-blocks of 16:
  ``x = d*scales[s]*(q-32)``, ``q`` in 0..63. For half ``h`` (128 values) and ``l < 32``:
  ``ql[64h+l]`` = low nibbles of elements ``128h+l`` (low) and ``128h+l+64`` (high),
  ``ql[64h+32+l]`` = those of ``128h+l+32`` and ``128h+l+96``, ``qh[32h+l]`` = their top 2 bits at
  bit offsets 0, 2, 4, 6 (``+0, +32, +64, +96``).

The quantizers follow llama.cpp's: without importance ``quantize_row_q{3,4,5,6}_K_ref`` (weights
``rms(sub-block) + |x|`` for Q4_K/Q5_K, ``x**2`` for Q6_K; Q3_K fits each sub-block by the coordinate
descent of ``make_q3_quants`` and rounds the 16 scales against the largest), with importance
``quantize_row_q*_K_impl`` (weights ``imp * sqrt(sigma2 + x**2)`` for Q3_K/Q4_K/Q5_K with
``sigma2 = 2*mean(x**2)`` over the super-block, ``imp`` itself for Q6_K; the 6-bit scales/mins fitted
by ``make_qp_quants``, Q3_K's signed scales by ``make_qx_quants`` weighted by the sub-block weight
sums). The outputs are bit-identical to ``ggml_quantize_chunk`` (tests/test_quants.py checks this).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .block_grid import Grid
from .quants_legacy import _f16_bytes, to_f16
from .quants_search import (
    F32,
    GROUP_MAX_EPS,
    make_q3_quants,
    make_qkx_quants,
    make_qp_quants,
    make_qx_quants,
    nearest_int,
    ssum,
)

QK_K = 256


def _superblocks_t(x: np.ndarray, sub: int) -> np.ndarray:
    """(rows, cols) -> (sub, NB) with one column per sub-block, sub-block b = 256/sub*s + j."""
    return np.ascontiguousarray(x.reshape(-1, sub).T)


def _sum_x2_superblock(x: np.ndarray) -> np.ndarray:
    """Sequential sum of x**2 over each super-block's 256 values, (NS,)."""
    x256 = np.ascontiguousarray(x.reshape(-1, QK_K).T)
    return ssum(x256 * x256)


def _importance_weights(x: np.ndarray, xt: np.ndarray, importance: np.ndarray, group: int):
    """llama.cpp's K-quant imatrix weights w = imp * sqrt(sigma2 + x**2), sigma2 = 2*mean(x**2) over the
    super-block, for sub-blocks of ``group`` values laid out as ``xt`` (group, NB); returns (w, sum of
    w per sub-block (NB,))."""
    rows = x.shape[0]
    sigma2 = (F32(2) * _sum_x2_superblock(x)) / F32(QK_K)                   # (NS,)
    sig = np.repeat(sigma2, QK_K // group)[None, :]                         # (1, NB)
    qw = np.tile(importance.reshape(-1, group).T, (1, rows))                # (group, NB)
    w = qw * np.sqrt(sig + xt * xt)
    return w, ssum(w)


def _pack_scale_min(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(NS, 8) uint8 scales and mins -> (NS, 12) bytes (``get_scale_min_k4`` layout; uint8 wrap as C)."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    return out


def _unpack_scale_min(s: np.ndarray):
    """(NS, 12) bytes -> (sc, m) each (NS, 8) uint8 (ggml ``get_scale_min_k4``)."""
    sc = np.empty((s.shape[0], 8), dtype=np.uint8)
    m = np.empty_like(sc)
    sc[:, 0:4] = s[:, 0:4] & 63
    m[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, m


def _pack_q3_scales(ls: np.ndarray) -> np.ndarray:
    """(NS, 16) 6-bit scales (stored values, 0..63) -> (NS, 12) bytes (Q3_K layout above)."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:8] = (ls[:, 0:8] & 0x0F) | ((ls[:, 8:16] & 0x0F) << 4)
    hi = (ls >> 4).reshape(-1, 4, 4)                              # (NS, quarter q, k): s[4q + k]
    out[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    return out


def _unpack_q3_scales(s: np.ndarray) -> np.ndarray:
    """(NS, 12) bytes -> (NS, 16) stored 6-bit scales (0..63; the scale is the value minus 32)."""
    low = np.concatenate([s[:, 0:8] & 0x0F, s[:, 0:8] >> 4], axis=1)                 # s[0..7], s[8..15]
    hi = (s[:, None, 8:12] >> (2 * np.arange(4, dtype=np.uint8))[None, :, None]) & 3  # (NS, q, k)
    return low | (hi.reshape(-1, 16) << 4)


def _q45_k(x: np.ndarray, importance: Optional[np.ndarray], nmax: int, type_name: str):
    """Shared Q4_K/Q5_K search. Returns (d f16 (NS,), dmin f16 (NS,), scales (NS, 12), L (NS, 256))."""
    rows, cols = x.shape
    xt = _superblocks_t(x, 32)                            # (32, NB), NB = 8*NS
    nb = xt.shape[1]
    ns = nb // 8
    if importance is None:
        # quantize_row_q*_K_ref: weights = rms of the sub-block + |x|, scales/mins by round-to-nearest
        av_x = np.sqrt(ssum(xt * xt) / F32(32))
        w = av_x + np.abs(xt)
        if nmax == 15:
            scales, mins, L = make_qkx_quants(xt, w, 15, -1.0, 0.1, 20)
        else:
            scales, mins, L = make_qkx_quants(xt, w, 31, -0.5, 0.1, 15)
        scales = scales.reshape(ns, 8)
        mins = mins.reshape(ns, 8)
        max_scale = scales.max(axis=1)
        max_scale = np.where(max_scale > 0, max_scale, F32(0))
        max_min = mins.max(axis=1)
        max_min = np.where(max_min > 0, max_min, F32(0))
        pos_s = max_scale > 0
        pos_m = max_min > 0
        inv_scale = np.where(pos_s, F32(63) / np.where(pos_s, max_scale, F32(1)), F32(0))
        inv_min = np.where(pos_m, F32(63) / np.where(pos_m, max_min, F32(1)), F32(0))
        ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
        lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
        d = to_f16(max_scale / F32(63), type_name)
        dmin = to_f16(max_min / F32(63), type_name, "block minimum")
    else:
        # quantize_row_q*_K_impl: imatrix weights, then fit the 8 scales and 8 mins with make_qp_quants
        w, sw = _importance_weights(x, xt, importance, 32)
        scales, mins, L = make_qkx_quants(xt, w, nmax, -0.9, 0.05, 36)
        sw_t = np.ascontiguousarray(sw.reshape(ns, 8).T)                      # (8, NS)
        d_block, Ls = make_qp_quants(np.ascontiguousarray(scales.reshape(ns, 8).T), 63, sw_t)
        m_block, Lm = make_qp_quants(np.ascontiguousarray(mins.reshape(ns, 8).T), 63, sw_t)
        ls = np.ascontiguousarray(Ls.T)
        lm = np.ascontiguousarray(Lm.T)
        if nmax == 31:                                                        # only the Q5_K impl clamps
            np.minimum(ls, 63, out=ls)
            np.minimum(lm, 63, out=lm)
        d = to_f16(d_block, type_name)
        dmin = to_f16(m_block, type_name, "block minimum")
    packed = _pack_scale_min(ls, lm)
    sc, m = _unpack_scale_min(packed)
    # Requantize every sub-block against the stored (f16, 6-bit) scale and min; sub-blocks whose
    # scale rounds to 0 keep the levels of the search, as in C.
    dj = (d.astype(F32)[:, None] * sc.astype(F32)).reshape(1, nb)
    dmj = (dmin.astype(F32)[:, None] * m.astype(F32)).reshape(1, nb)
    live = dj != 0
    l = nearest_int((xt + dmj) / np.where(live, dj, F32(1)))
    np.clip(l, 0, nmax, out=l)
    L = np.where(live, l.astype(np.uint8), L)
    L = np.ascontiguousarray(L.T).reshape(ns, QK_K)
    return d, dmin, packed, L


def quantize_q3_k(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    rows, cols = x.shape
    xt = _superblocks_t(x, 16)                                   # (16, NB), NB = 16*NS
    nb = xt.shape[1]
    ns = nb // 16
    if importance is None:
        # quantize_row_q3_K_ref: per sub-block make_q3_quants, then the 16 scales rounded on the grid
        # that maps the largest-magnitude one (the first, as C's strict >) to -32.
        scales, L = make_q3_quants(xt, 4)
        scales = scales.reshape(ns, 16)
        a = np.abs(scales)
        a = np.where(np.isnan(a), F32(0), a)                     # C's "fabsf(s) > amax" skips NaN
        imax = np.argmax(a, axis=1)
        live = a[np.arange(ns), imax] > 0
        max_scale = np.where(live, scales[np.arange(ns), imax], F32(1))
        iscale = F32(-32) / max_scale
        l = nearest_int(iscale[:, None] * scales)
        l = ((l + 128) & 0xFF) - 128                             # C stores it in an int8_t first
        ls = (np.clip(l, -32, 31) + 32).astype(np.uint8)
        ls[~live] = 0                                            # scales stay memset to zero
        d = to_f16(np.where(live, F32(1) / iscale, F32(0)), "Q3_K")
    else:
        # quantize_row_q3_K_impl: imatrix weights, make_qx_quants per sub-block, then the 16 signed
        # scales fitted by make_qx_quants (nmax 32) weighted by each sub-block's weight sum.
        w, sw = _importance_weights(x, xt, importance, 16)
        scales, L = make_qx_quants(xt, 4, w)
        d_block, Ls = make_qx_quants(np.ascontiguousarray(scales.reshape(ns, 16).T), 32,
                                     np.ascontiguousarray(sw.reshape(ns, 16).T))
        ls = np.ascontiguousarray(Ls.T)
        d = to_f16(d_block, "Q3_K")
    packed = _pack_q3_scales(ls)
    sc = _unpack_q3_scales(packed).astype(np.int32) - 32
    # Requantize against the stored (f16, 6-bit) scales; sub-blocks whose scale is 0 keep the levels
    # of the search, as in C.
    dj = (d.astype(F32)[:, None] * sc.astype(F32)).reshape(1, nb)
    live = dj != 0
    l = nearest_int(xt / np.where(live, dj, F32(1)))
    np.clip(l, -4, 3, out=l)
    L = np.where(live, (l + 4).astype(np.uint8), L)
    L = np.ascontiguousarray(L.T).reshape(ns, QK_K)
    return np.concatenate([_pack_q3_k_levels(L), packed, _f16_bytes(d)], axis=1).reshape(rows, -1)


def _pack_q3_k_levels(L: np.ndarray) -> np.ndarray:
    """(NS, 256) stored levels 0..7 -> (NS, 96) bytes: hmask[32], qs[64]."""
    ns = L.shape[0]
    hbit = (L >> 2).reshape(ns, 8, 32)                           # element 32k + l -> bit k of hmask[l]
    hmask = np.bitwise_or.reduce(hbit << np.arange(8, dtype=np.uint8)[None, :, None], axis=1).astype(np.uint8)
    low = (L & 3).reshape(ns, 2, 4, 32)                          # (s, half h, t, l)
    qs = (low[:, :, 0] | (low[:, :, 1] << 2) | (low[:, :, 2] << 4) | (low[:, :, 3] << 6)).reshape(ns, 64)
    return np.concatenate([hmask, qs], axis=1)


def quantize_q4_k(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    rows = x.shape[0]
    d, dmin, scales, L = _q45_k(x, importance, 15, "Q4_K")
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, _pack_q4_k_levels(L)], axis=1).reshape(rows, -1)


def _pack_q4_k_levels(L: np.ndarray) -> np.ndarray:
    """(NS, 256) levels 0..15 -> (NS, 128) bytes qs."""
    q = L.reshape(L.shape[0], 4, 2, 32)
    return (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(L.shape[0], 128)


def quantize_q5_k(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    rows = x.shape[0]
    d, dmin, scales, L = _q45_k(x, importance, 31, "Q5_K")
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, _pack_q5_k_levels(L)], axis=1).reshape(rows, -1)


def _pack_q5_k_levels(L: np.ndarray) -> np.ndarray:
    """(NS, 256) levels 0..31 -> (NS, 160) bytes: qh[32], qs[128]."""
    ns = L.shape[0]
    q = L.reshape(ns, 4, 2, 32)                                  # (s, chunk c, half, l)
    qs = ((q[:, :, 0, :] & 0x0F) | ((q[:, :, 1, :] & 0x0F) << 4)).reshape(ns, 128)
    hi = (q >> 4).astype(np.uint8)                               # bit 4 of each level
    shifts = (2 * np.arange(4, dtype=np.uint8)[:, None] + np.arange(2, dtype=np.uint8)[None, :])
    qh = np.bitwise_or.reduce(hi << shifts[None, :, :, None], axis=(1, 2)).astype(np.uint8)
    return np.concatenate([qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray, importance: Optional[np.ndarray]) -> np.ndarray:
    rows, cols = x.shape
    xt = _superblocks_t(x, 16)                                   # (16, NB), NB = 16*NS
    nb = xt.shape[1]
    ns = nb // 16
    if importance is None:
        w = xt * xt                                              # make_qx_quants rmse_type 1, no qw
    else:
        w = np.tile(importance.reshape(-1, 16).T, (1, rows))     # the impl passes the imatrix as is
    scales, L = make_qx_quants(xt, 32, w)
    scales = scales.reshape(ns, 16)
    imax = np.argmax(np.abs(scales), axis=1)                     # first largest |scale|
    max_scale = scales[np.arange(ns), imax]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = F32(-128) / np.where(zero, F32(1), max_scale)
    d = to_f16(np.where(zero, F32(0), F32(1) / iscale), "Q6_K")
    sc = (np.minimum(nearest_int(iscale[:, None] * scales), 127) & 0xFF).astype(np.uint8).view(np.int8)
    sc[zero] = 0
    dj = (d.astype(F32)[:, None] * sc.astype(F32)).reshape(1, nb)
    live = dj != 0
    l = nearest_int(xt / np.where(live, dj, F32(1)))
    np.clip(l, -32, 31, out=l)
    L = np.where(live, (l + 32).astype(np.uint8), L)
    L = np.ascontiguousarray(L.T).reshape(ns, QK_K)
    L[zero] = 0
    out = np.concatenate([_pack_q6_k_levels(L), sc.view(np.uint8), _f16_bytes(d)], axis=1)
    return out.reshape(rows, -1)


def _pack_q6_k_levels(L: np.ndarray) -> np.ndarray:
    """(NS, 256) stored levels 0..63 -> (NS, 192) bytes: ql[128], qh[64]."""
    ns = L.shape[0]
    q = L.reshape(ns, 2, 4, 32)                                  # (s, half h, quarter r, l)
    ql = np.empty((ns, 2, 2, 32), dtype=np.uint8)
    ql[:, :, 0, :] = (q[:, :, 0, :] & 0x0F) | ((q[:, :, 2, :] & 0x0F) << 4)
    ql[:, :, 1, :] = (q[:, :, 1, :] & 0x0F) | ((q[:, :, 3, :] & 0x0F) << 4)
    hi = q >> 4
    qh = hi[:, :, 0, :] | (hi[:, :, 1, :] << 2) | (hi[:, :, 2, :] << 4) | (hi[:, :, 3, :] << 6)
    return np.concatenate([ql.reshape(ns, 128), qh.reshape(ns, 64)], axis=1)


# ------------------------------------------------------------------------------------------------
# Dequantizers (ggml's formulas and evaluation order: (d*sc)*q - dmin*m)
# ------------------------------------------------------------------------------------------------

def _d_dmin(b: np.ndarray):
    d = b[:, 0:2].copy().view(np.float16).astype(F32)
    dmin = b[:, 2:4].copy().view(np.float16).astype(F32)
    return d, dmin


def levels_q3_k(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 110)
    ns = b.shape[0]
    hm = b[:, 0:32]
    qs = b[:, 32:96].reshape(ns, 2, 1, 32)                       # (s, h, -, l)
    sc = (_unpack_q3_scales(b[:, 96:108]).astype(np.int8) - np.int8(32)).astype(F32)
    d = b[:, 108:110].copy().view(np.float16).astype(F32)
    low = (qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3         # (s, h, t, l)
    hbit = (hm[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1        # (s, 4h + t, l)
    q = low.reshape(ns, 8, 32).astype(np.int16) + (hbit.astype(np.int16) << 2) - 4
    return Grid(q.reshape(ns, 16, 16), (d * sc)[:, :, None], None, -4, 3)


def set_levels_q3_k(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 110).copy()
    b[:, 0:96] = _pack_q3_k_levels((levels.reshape(-1, QK_K) + 4).astype(np.uint8))
    return b


def _levels_q45_k(b: np.ndarray, qbytes: np.ndarray, hi: int) -> Grid:
    d, dmin = _d_dmin(b)
    sc, m = _unpack_scale_min(b[:, 4:16])
    # offset = -(dmin*m): scale*q + offset equals ggml's (d*sc)*q - dmin*m bit for bit
    return Grid(qbytes, (d * sc.astype(F32))[:, :, None], -(dmin * m.astype(F32))[:, :, None], 0, hi)


def levels_q4_k(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 144)
    ns = b.shape[0]
    qs = b[:, 16:].reshape(ns, 4, 1, 32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(ns, 8, 32).astype(np.int16)
    return _levels_q45_k(b, q, 15)


def set_levels_q4_k(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 144).copy()
    b[:, 16:] = _pack_q4_k_levels(levels.reshape(-1, QK_K).astype(np.uint8))
    return b


def levels_q5_k(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 176)
    ns = b.shape[0]
    qh = b[:, 16:48]
    qs = b[:, 48:].reshape(ns, 4, 1, 32)
    lo = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(ns, 8, 32)
    hi = ((qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1) << 4   # (ns, 8, 32)
    return _levels_q45_k(b, (lo | hi).astype(np.int16), 31)


def set_levels_q5_k(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 176).copy()
    b[:, 16:] = _pack_q5_k_levels(levels.reshape(-1, QK_K).astype(np.uint8))
    return b


def levels_q6_k(raw: np.ndarray) -> Grid:
    b = raw.reshape(-1, 210)
    ns = b.shape[0]
    ql = b[:, 0:128].reshape(ns, 2, 2, 32)                      # (s, h, half, l)
    qh = b[:, 128:192].reshape(ns, 2, 1, 32)
    sc = b[:, 192:208].view(np.int8).astype(F32)
    d = b[:, 208:210].copy().view(np.float16).astype(F32)
    lo = np.concatenate([ql & 0x0F, ql >> 4], axis=2)          # quarters r = 0, 1, 2, 3
    hi = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    q = (lo | (hi << 4)).astype(np.int16) - 32
    return Grid(q.reshape(ns, 16, 16), (d * sc)[:, :, None], None, -32, 31)


def set_levels_q6_k(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 210).copy()
    b[:, 0:192] = _pack_q6_k_levels((levels.reshape(-1, QK_K) + 32).astype(np.uint8))
    return b


def dequantize_q3_k(raw: np.ndarray) -> np.ndarray:
    return levels_q3_k(raw).values()


def dequantize_q4_k(raw: np.ndarray) -> np.ndarray:
    return levels_q4_k(raw).values()


def dequantize_q5_k(raw: np.ndarray) -> np.ndarray:
    return levels_q5_k(raw).values()


def dequantize_q6_k(raw: np.ndarray) -> np.ndarray:
    return levels_q6_k(raw).values()
