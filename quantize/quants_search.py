"""Scale searches shared by the block quantizers, vectorised over blocks.

These follow the searches in llama.cpp's ``ggml-quants.c`` (``make_qx_quants``, ``make_qkx2_quants`` /
``make_qkx3_quants``, ``make_qp_quants``) closely enough to give the same bytes as its C reference:

* Layout: every function takes ``x`` and ``w`` as float32 ``(n, NB)``: element index first, one column
  per block. Summing over axis 0 of a C-contiguous array is a sequential float32 sum, ``((a0 + a1) +
  a2) + ...``, which is the order of the C loops. Summing along the contiguous axis would use numpy's
  pairwise summation and round differently, so the callers transpose blocks into this layout.
* Arithmetic stays in float32 and keeps the C expression order (``w*x*l`` is ``(w*x)*l``), because a
  one-ulp difference in a sum can flip which candidate scale wins.
* ``nearest_int`` reproduces ggml's magic-number rounding bit for bit, including what it returns for
  inf/NaN (ties go to even, like ``np.rint``, for ``|v| < 2**22``).

Blocks are independent: every loop here runs over candidates or over the few elements of a block,
never over blocks.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # ggml: a block whose largest |x| is below this is all zero
_MAGIC = F32(12582912.0)    # 1.5 * 2**23: adding it leaves round-to-nearest-even(v) in the low mantissa bits


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: float32 -> int32, round half to even, same bits as the C trick."""
    t = (np.asarray(v, dtype=F32) + _MAGIC).view(np.int32)
    t &= 0x007FFFFF
    t -= 0x00400000
    return t


def ssum(a: np.ndarray) -> np.ndarray:
    """Sequential float32 sum over axis 0 (the C loop order) of a C-contiguous ``(n, NB)`` array.

    numpy reduces axis 0 of such an array row by row (an elementwise add per row), which is the
    sequential order. With a single column (or 1-D input) the reduced axis becomes the contiguous
    inner loop and numpy would switch to pairwise summation, so that case goes through ``accumulate``.
    """
    if a.ndim == 1 or a.shape[1] == 1:
        return np.add.accumulate(a, axis=0)[-1]
    return np.add.reduce(np.ascontiguousarray(a), axis=0)


def first_extreme(x: np.ndarray, arg) -> np.ndarray:
    """x[arg(x, axis=0)] per column: the first of equal extremes (so -0.0 vs 0.0 follows the C loop)."""
    return x[arg(x, axis=0), np.arange(x.shape[1])]


_SAFE = 2.0 ** 20   # |iscale| * bound below this keeps |v| < 2**22 with room for rounding


def _levels(v: np.ndarray, lo: int, hi: int, fast: bool) -> np.ndarray:
    """In place: ``v`` (a scaled block) -> ``clamp(nearest_int(v), lo, hi)`` as float32.

    ``fast`` says every ``|v|`` is known to be below 2**22; then ``np.rint`` rounds exactly as
    ``nearest_int`` (half to even). Otherwise (e.g. an infinite ``iscale`` from a subnormal range)
    the bit-exact integer emulation runs, so even such blocks get C's bytes.
    """
    if fast:
        np.rint(v, out=v)
        np.clip(v, F32(lo), F32(hi), out=v)
    else:
        l = nearest_int(v)
        np.clip(l, lo, hi, out=l)
        v[...] = l
    return v


def make_qx_quants(x: np.ndarray, nmax: int, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search (llama.cpp ``make_qx_quants`` with ``rmse_type=1``).

    ``x``, ``w``: float32 ``(n, NB)``. Levels are ``l`` in ``[-nmax, nmax-1]`` with the block's
    largest-magnitude value mapped to ``-nmax``; the scale minimising ``sum(w*(x - scale*l)**2)`` is
    searched over 19 grids (``nmax + 0.1*k``, ``k = -9..9``) with a least-squares scale per grid.
    Returns ``(scale (NB,), L uint8 (n, NB))`` with ``L = l + nmax``; all-zero blocks give
    ``scale == 0`` and ``L == 0``.
    """
    n, nb = x.shape
    ax = np.abs(x)
    imax = np.argmax(ax, axis=0)                       # first occurrence, as the C loop keeps
    cols = np.arange(nb)
    vmax = x[imax, cols]
    zero = ax[imax, cols] < GROUP_MAX_EPS
    vmax = np.where(zero, F32(1), vmax)
    fnmax = F32(nmax)
    wx = w * x
    lf = np.empty_like(x)
    tmp = np.empty_like(x)

    # |iscale * x| <= nmax + 0.9 because |x| <= |vmax|: always the fast rounding path.
    def sums(iscale):
        np.multiply(x, iscale, out=lf)
        _levels(lf, -nmax, nmax - 1, True)
        np.multiply(wx, lf, out=tmp)
        sumlx = ssum(tmp)
        np.multiply(w, lf, out=tmp)
        np.multiply(tmp, lf, out=tmp)
        return sumlx, ssum(tmp)

    best_iscale = -fnmax / vmax
    sumlx, suml2 = sums(best_iscale)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for k in range(-9, 10):
        if k == 0:
            continue
        iscale = -(fnmax + F32(0.1) * F32(k)) / vmax
        sumlx, suml2 = sums(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        if better.any():
            best_iscale = np.where(better, iscale, best_iscale)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    # Levels of the winning grid (recomputed with the same float ops, so the same as when it won).
    np.multiply(x, best_iscale, out=lf)
    _levels(lf, -nmax, nmax - 1, True)
    lf += fnmax
    L = lf.astype(np.uint8)
    L[:, zero] = 0
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32, copy=False), L


def make_q3_quants(x: np.ndarray, nmax: int) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric scale by coordinate descent (llama.cpp ``make_q3_quants`` with ``do_rmse``), weights
    ``x**2``: levels ``l`` in ``[-nmax, nmax-1]`` start from the grid that maps the block's
    largest-magnitude value to ``-nmax``; then up to 5 passes move single levels to
    ``round(x*suml2/sumlx)`` (the sums without that element) whenever that raises ``sumlx**2/suml2``.
    ``x``: float32 ``(n, NB)``. Returns ``(scale = sumlx/suml2 (NB,), L uint8 (n, NB))`` with
    ``L = l + nmax``; all-zero blocks give ``scale == 0`` and ``L == 0``.
    """
    n, nb = x.shape
    ax = np.abs(x)
    imax = np.argmax(ax, axis=0)                       # first occurrence, as the C loop keeps
    cols = np.arange(nb)
    zero = ax[imax, cols] < GROUP_MAX_EPS
    vmax = np.where(zero, F32(1), x[imax, cols])
    iscale = -F32(nmax) / vmax
    L = nearest_int(iscale * x)                        # |iscale * x| <= nmax: no overflow
    np.clip(L, -nmax, nmax - 1, out=L)
    w = x * x
    wx = w * x
    lf = L.astype(F32)
    sumlx = ssum(wx * lf)
    suml2 = ssum((w * lf) * lf)
    # Sequential over elements (each accepted change updates the sums the next one sees); a pass that
    # changes nothing leaves the state as it was, so running all 5 equals the C early exit.
    for _ in range(5):
        for i in range(n):
            li = L[i].astype(F32)
            slx = sumlx - wx[i] * li
            ok = slx > 0
            sl2 = suml2 - (w[i] * li) * li
            new_l = nearest_int((x[i] * sl2) / np.where(ok, slx, F32(1)))
            np.clip(new_l, -nmax, nmax - 1, out=new_l)
            nf = new_l.astype(F32)
            slx2 = slx + wx[i] * nf
            sl22 = sl2 + (w[i] * nf) * nf
            acc = ok & (new_l != L[i]) & (sl22 > 0) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            if acc.any():
                L[i] = np.where(acc, new_l, L[i])
                sumlx = np.where(acc, slx2, sumlx)
                suml2 = np.where(acc, sl22, suml2)
    out = (L + nmax).astype(np.uint8)
    out[:, zero] = 0
    scale = np.where(zero, F32(0), sumlx / np.where(zero, F32(1), suml2))
    return scale.astype(F32, copy=False), out


def make_qkx_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                    nstep: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric scale + min search (llama.cpp ``make_qkx2_quants`` / ``make_qkx3_quants``, squared error).

    Fits ``x ~ scale*l + min`` with ``l`` in ``[0, nmax]`` and ``min <= 0``: starts from the min/max
    grid, then tries grids ``(nmax + rmin + rdelta*k)/(max - min)`` for ``k = 0..nstep``, each with a
    weighted least-squares (scale, min), keeping the one with the lowest ``sum(w*(x - fit)**2)``. As
    in the C code the grid of later candidates is built from the best min found so far.
    ``x``, ``w``: float32 ``(n, NB)``. Returns ``(scale (NB,), the_min = -min (NB,), L uint8 (n, NB))``.
    """
    fnmax = F32(nmax)
    mn = first_extreme(x, np.argmin)       # the C loop keeps the first of equal values: the sign of
    mx = first_extreme(x, np.argmax)       # a zero min/max ends up in the stored bytes
    xlo = mn
    sum_w = ssum(w)
    sum_x = ssum(w * x)
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    flat_min = mn
    mx = np.where(flat, F32(1), mx)        # keeps the arithmetic finite; results are masked below
    mn = np.where(flat, F32(0), mn)
    xm = x - mn
    lf = np.empty_like(x)
    wl = np.empty_like(x)
    tmp = np.empty_like(x)

    def spread(shift):
        """max over blocks of |x - shift| / (max - shift): |iscale * (x - shift)| <= it * |grid|."""
        r = mx - shift
        return float(np.max(np.maximum(np.abs(r), np.abs(xlo - shift)) / np.abs(r)))

    # Initial fit: the min/max grid. Its levels are kept as (iscale, min) and rebuilt at the end.
    iscale = fnmax / (mx - mn)
    scale = F32(1) / iscale
    best_iscale, best_shift = iscale, mn
    ratio = spread(mn)
    np.multiply(xm, iscale, out=lf)
    _levels(lf, 0, nmax, nmax * ratio < _SAFE)
    np.multiply(lf, scale, out=tmp)
    tmp += mn
    tmp -= x
    tmp *= tmp
    tmp *= w
    best = ssum(tmp)
    for k in range(nstep + 1):
        grid = F32(rmin) + F32(rdelta) * F32(k) + fnmax
        iscale = grid / (mx - mn)
        np.multiply(xm, iscale, out=lf)
        _levels(lf, 0, nmax, abs(float(grid)) * ratio < _SAFE)
        np.multiply(w, lf, out=wl)
        sum_l = ssum(wl)
        np.multiply(wl, lf, out=tmp)
        sum_l2 = ssum(tmp)
        np.multiply(wl, x, out=tmp)
        sum_xl = ssum(tmp)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = np.where(pos, F32(0), this_min)
        this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
        np.multiply(lf, this_scale, out=tmp)
        tmp += this_min
        tmp -= x
        tmp *= tmp
        tmp *= w
        err = ssum(tmp)
        upd = (D > 0) & (err < best)
        if upd.any():
            best_iscale = np.where(upd, iscale, best_iscale)
            best_shift = np.where(upd, mn, best_shift)     # the min these levels were built from
            best = np.where(upd, err, best)
            scale = np.where(upd, this_scale, scale)
            mn = np.where(upd, this_min, mn)
            np.subtract(x, mn, out=xm)
            ratio = spread(mn)
    np.subtract(x, best_shift, out=lf)
    lf *= best_iscale
    bound = np.maximum(np.abs(mx - best_shift), np.abs(xlo - best_shift))
    _levels(lf, 0, nmax, bool(np.all(np.abs(best_iscale) * bound < F32(_SAFE))))
    L = lf.astype(np.uint8)
    scale = np.where(flat, F32(0), scale)
    the_min = np.where(flat, -flat_min, -mn)
    L[:, flat] = 0
    return scale.astype(F32, copy=False), the_min.astype(F32, copy=False), L


def make_qp_quants(x: np.ndarray, nmax: int, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Quantize non-negative values (super-block scales or mins) to ``0..nmax`` with one scale
    (llama.cpp ``make_qp_quants``): a grid search over 9 scales, then up to 5 passes of per-element
    level changes that raise ``sumlx**2/suml2`` (the weighted fit). ``x``, ``w``: float32 ``(n, NB)``.
    Returns ``(scale (NB,), L uint8 (n, NB))``. ``L`` wraps like the C ``uint8_t`` it is stored in.
    """
    n, nb = x.shape
    fnmax = F32(nmax)
    mx = x[0].copy()
    mx[:] = 0
    for i in range(n):                     # MAX(max, x[i]) from 0, exactly as in C (signed zeros too)
        mx = np.where(mx > x[i], mx, x[i])
    zero = mx < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)
    iscale = fnmax / mx
    L = nearest_int(iscale * x) & 0xFF
    scale = F32(1) / iscale
    diff = x - scale * L.astype(F32)
    best = ssum((w * diff) * diff)
    for k in range(-4, 5):
        if k == 0:
            continue
        iscale_k = (F32(0.1) * F32(k) + fnmax) / mx
        scale_k = F32(1) / iscale_k
        l = np.minimum(nearest_int(iscale_k * x), nmax)
        diff = x - scale_k * l.astype(F32)
        mse = ssum((w * diff) * diff)
        upd = mse < best
        best = np.where(upd, mse, best)
        iscale = np.where(upd, iscale_k, iscale)
    l = np.minimum(nearest_int(iscale * x), nmax)
    Lf = l.astype(F32)                     # the sums use the int level, L keeps its uint8 wrap
    L = l & 0xFF
    wx = w * x
    sumlx = ssum(wx * Lf)
    suml2 = ssum((w * Lf) * Lf)
    # Coordinate passes: sequential over elements (each change updates the sums the next one sees).
    # A pass that changes nothing leaves the state as it was, so running all 5 equals the C early exit.
    for _ in range(5):
        for i in range(n):
            li = L[i].astype(F32)
            slx = sumlx - wx[i] * li
            sl2 = suml2 - (w[i] * li) * li
            ok = (slx > 0) & (sl2 > 0)
            new_l = np.minimum(nearest_int((x[i] * sl2) / np.where(ok, slx, F32(1))), nmax)
            ch = ok & (new_l != L[i])
            nf = new_l.astype(F32)
            slx2 = slx + wx[i] * nf
            sl22 = sl2 + (w[i] * nf) * nf
            acc = ch & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            if acc.any():
                L[i] = np.where(acc, new_l & 0xFF, L[i])
                sumlx = np.where(acc, slx2, sumlx)
                suml2 = np.where(acc, sl22, suml2)
    scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, F32(1)), F32(0))
    L = L.astype(np.uint8)
    L[:, zero] = 0
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32, copy=False), L


def search_symmetric_int8(x: np.ndarray, w: np.ndarray, qmax: int = 127) -> np.ndarray:
    """Weighted scale search for symmetric levels ``[-qmax, qmax]`` (our Q8_0 imatrix path; llama.cpp
    has none). Tries grids ``(qmax + 0.1*k)/amax``, ``k = -9..9``, each with its least-squares scale,
    and returns the best float32 scale per block (0 where the block or its weights are all zero).
    The caller rounds the scale to fp16, requantizes and compares with round-to-nearest.
    """
    amax = np.abs(x).max(axis=0)
    zero = amax < GROUP_MAX_EPS
    amax = np.where(zero, F32(1), amax)
    wx = w * x
    best = np.zeros(x.shape[1], dtype=F32)
    scale = np.zeros(x.shape[1], dtype=F32)
    for k in range(-9, 10):
        iscale = (F32(qmax) + F32(0.1) * F32(k)) / amax
        l = np.clip(np.rint(iscale * x), -qmax, qmax)
        sumlx = ssum(wx * l)
        suml2 = ssum((w * l) * l)
        ok = suml2 > 0
        s = np.where(ok, sumlx / np.where(ok, suml2, F32(1)), F32(0))
        score = s * sumlx                     # = sumlx**2/suml2: the error it removes
        upd = ok & (score > best)
        best = np.where(upd, score, best)
        scale = np.where(upd, s, scale)
    return np.where(zero, F32(0), scale).astype(F32, copy=False)

