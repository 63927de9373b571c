"""The C++ integer kernels (native/include/edge_rt/int_kernels.h) with ``intref``'s signatures.

Every function here returns, bit for bit, what the function of the same name in
``edge_rt.quantize.intref`` returns (tests/test_intref.py checks it on every op of real exports), so
the two are interchangeable, e.g. as ``impl`` of ``int_ops.run_op``. Extra keyword ``isa``: the kernels
to run ("scalar", "avx2"; default: the active ISA, which ``EDGE_RT_ISA`` can lower). The AVX512-VNNI
level runs the AVX2 kernels (no VNNI kernel is shipped: nothing here could test one).

Inputs are codes of exactly their width's dtype (uint8 for 8 bits, uint16 for 16; weights int8 codes),
as ``intref`` produces them; the tables (``exp_table``, ``sigmoid_table``) are built by ``intref`` and
passed in: their bytes are part of the spec. Errors are ``edge_rt.InvalidArgumentError``.

Example (one projection)::

    from edge_rt.quantize import intkernels
    y = intkernels.gemm(a, s_a, z_a, 8, w_codes, w_scales, 4, s_y, z_y, 8)        # (T, N) uint8
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np

from .intref import exp_table, sigmoid_table  # noqa: F401  (the tables the kernels take)

__all__ = ["multiplier", "precision_for", "gemm", "matmul", "add", "mul", "requantize", "rmsnorm", "softmax",
           "lut", "exp_table", "sigmoid_table", "pack_int4", "on_isa"]


def _core():
    from edge_rt import _core as core

    return core


def _codes(a: np.ndarray, bits: int) -> np.ndarray:
    dt = np.uint16 if bits == 16 else np.uint8
    if np.asarray(a).dtype != dt:
        raise TypeError(f"[intkernels] {bits}-bit codes must be {np.dtype(dt).name}, got {np.asarray(a).dtype}")
    return np.ascontiguousarray(a)


def multiplier(real: float, precision: int) -> Tuple[int, int]:
    return tuple(_core().int_fixed_multiplier(float(real), int(precision)))


def precision_for(acc_bound: int) -> int:
    return int(_core().int_precision_for(int(acc_bound)))


def pack_int4(w: np.ndarray) -> np.ndarray:
    """int4 codes (N, K) held as int8 -> (N, (K + 1) // 2) uint8, two per byte, low nibble first."""
    w = np.asarray(w, np.int8)
    if w.ndim != 2 or w.size and (w.min() < -7 or w.max() > 7):
        raise ValueError("[intkernels] int4 weight codes must be a 2-D array in [-7, 7]")
    nib = (w.astype(np.int16) & 0xF).astype(np.uint8)
    if nib.shape[1] % 2:
        nib = np.pad(nib, ((0, 0), (0, 1)))
    return np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4))


def gemm(a: np.ndarray, s_a: float, z_a: int, a_bits: int, w: np.ndarray, s_w: np.ndarray, w_bits: int,
         s_y: float, z_y: int, y_bits: int, isa: Optional[str] = None) -> np.ndarray:
    """Projection GEMM (T, N) from a (T, K) and int8 weight codes w (N, K); 4-bit weights run packed: pass
    ``pack_int4(w)`` (uint8, (N, (K + 1) // 2)) to pack them once instead of on every call."""
    w = np.asarray(w)
    if w.dtype == np.uint8:
        wq = np.ascontiguousarray(w)                 # already packed int4 (the kernel checks the width)
    else:
        wq = pack_int4(w) if w_bits == 4 else np.ascontiguousarray(w, np.int8)
    return _core().int_gemm(_codes(a, a_bits), (float(s_a), int(z_a), a_bits), wq, int(w_bits),
                            np.ascontiguousarray(s_w, np.float32), (float(s_y), int(z_y), y_bits), isa)


def matmul(a: np.ndarray, s_a: float, z_a: int, a_bits: int, b: np.ndarray, s_b: float, z_b: int, b_bits: int,
           s_y: float, z_y: int, y_bits: int, isa: Optional[str] = None) -> np.ndarray:
    """a (..., M, K) times b (..., N, K)^T, leading dimensions broadcast; one kernel call per matrix."""
    a, b = _codes(a, a_bits), _codes(b, b_bits)
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, lead + a.shape[-2:])
    b = np.broadcast_to(b, lead + b.shape[-2:])
    out = np.empty(lead + (a.shape[-2], b.shape[-2]), np.uint16 if y_bits == 16 else np.uint8)
    ea, eb, ey = (float(s_a), int(z_a), a_bits), (float(s_b), int(z_b), b_bits), (float(s_y), int(z_y), y_bits)
    core = _core()
    for idx in np.ndindex(*lead):
        out[idx] = core.int_matmul(np.ascontiguousarray(a[idx]), ea, np.ascontiguousarray(b[idx]), eb, ey, isa)
    return out


def add(a: np.ndarray, s_a: float, z_a: int, a_bits: int, b: np.ndarray, s_b: float, z_b: int, b_bits: int,
        s_y: float, z_y: int, y_bits: int, isa: Optional[str] = None) -> np.ndarray:
    a, b = (np.ascontiguousarray(x) for x in np.broadcast_arrays(_codes(a, a_bits), _codes(b, b_bits)))
    return _core().int_add(a, (float(s_a), int(z_a), a_bits), b, (float(s_b), int(z_b), b_bits),
                           (float(s_y), int(z_y), y_bits), isa)


def mul(a: np.ndarray, s_a: float, z_a: int, b: np.ndarray, s_b: float, z_b: int,
        s_y: float, z_y: int, y_bits: int, isa: Optional[str] = None) -> np.ndarray:
    a_bits, b_bits = 8 * np.asarray(a).dtype.itemsize, 8 * np.asarray(b).dtype.itemsize
    a, b = (np.ascontiguousarray(x) for x in np.broadcast_arrays(_codes(a, a_bits), _codes(b, b_bits)))
    return _core().int_mul(a, (float(s_a), int(z_a), a_bits), b, (float(s_b), int(z_b), b_bits),
                           (float(s_y), int(z_y), y_bits), isa)


def requantize(a: np.ndarray, s_a: float, z_a: int, s_y: float, z_y: int, y_bits: int,
               isa: Optional[str] = None) -> np.ndarray:
    a_bits = 8 * np.asarray(a).dtype.itemsize
    return _core().int_requantize(_codes(a, a_bits), (float(s_a), int(z_a), a_bits), (float(s_y), int(z_y), y_bits),
                                  isa)


def rmsnorm(a: np.ndarray, s_a: float, z_a: int, g: np.ndarray, s_g: float, z_g: int, eps: float,
            s_y: float, z_y: int, y_bits: int, isa: Optional[str] = None) -> np.ndarray:
    a_bits = 8 * np.asarray(a).dtype.itemsize
    return _core().int_rmsnorm(_codes(a, a_bits), (float(s_a), int(z_a), a_bits), _codes(g, 16),
                               (float(s_g), int(z_g), 16), float(eps), (float(s_y), int(z_y), y_bits), isa)


def softmax(a: np.ndarray, table: np.ndarray, s_y: float, z_y: int, y_bits: int,
            isa: Optional[str] = None) -> np.ndarray:
    a_bits = 8 * np.asarray(a).dtype.itemsize
    return _core().int_softmax(_codes(a, a_bits), np.ascontiguousarray(table, np.uint32),
                               (float(s_y), int(z_y), y_bits), isa)


def lut(a: np.ndarray, table: np.ndarray, isa: Optional[str] = None) -> np.ndarray:
    a_bits = 8 * np.asarray(a).dtype.itemsize
    return _core().int_lut(_codes(a, a_bits), np.ascontiguousarray(table), isa)


#: The functions that run kernels (and take ``isa``).
_KERNEL_OPS = ("gemm", "matmul", "add", "mul", "requantize", "rmsnorm", "softmax", "lut")


class _OnIsa:
    def __init__(self, isa: str) -> None:
        self.isa = isa

    def __getattr__(self, name: str):
        if name not in __all__:
            raise AttributeError(f"intkernels has no {name!r}")
        fn = globals()[name]
        return functools.partial(fn, isa=self.isa) if name in _KERNEL_OPS else fn


def on_isa(isa: str) -> "_OnIsa":
    """This module with every kernel call pinned to one ISA, e.g. ``int_ops.run_op(op, codes,
    intkernels.on_isa("scalar"))``."""
    return _OnIsa(isa)
