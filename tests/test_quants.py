"""Block quantizers (edge_rt.quantize.quantize / dequantize).

Evidence, strongest first:

* bit-exact with llama.cpp's own C quantizer (``ggml_quantize_chunk`` from the libggml-base shipped in
  llama-cpp-python), for every quantized type, without and with an importance matrix;
* bit-exact with the ``gguf`` package's reference quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1);
* our dequantizer equals ``gguf``'s on our bytes, and round trips stay within the per-type bounds below;
* importance-weighted quantization lowers the importance-weighted error;
* edge cases: zero rows/blocks, constant blocks, tiny values, NaN/Inf, overflow, bad arguments.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from typing import Optional

import gguf
import numpy as np
import pytest

from edge_rt.quantize import BLOCK_TYPES, QUANT_TYPES, dequantize, quantize, row_bytes
from edge_rt.quantize.quants import effective_importance
from edge_rt.quantize.quants_search import nearest_int, ssum

QUANTIZED = [t for t in QUANT_TYPES if t.startswith("Q")]
LEGACY = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]

# Round-trip bounds on standard-normal rows: rms(dequantize(quantize(x)) - x) / std(x).
# (Measured, seeds fixed: F16 2.1e-4, BF16 1.7e-3, Q8_0 0.0054, Q4_0 0.087, Q4_1 0.079, Q5_0 0.043,
# Q5_1 0.038, Q3_K 0.151 (0.156 with importance), Q4_K 0.072 (0.077 with importance), Q5_K 0.036 (0.038),
# Q6_K 0.018 (0.019).)
REL_RMSE_MAX = {
    "F32": 0.0, "F16": 3e-4, "BF16": 2.5e-3,
    "Q8_0": 0.0065, "Q4_0": 0.10, "Q4_1": 0.09, "Q5_0": 0.05, "Q5_1": 0.044,
    "Q3_K": 0.17, "Q4_K": 0.085, "Q5_K": 0.043, "Q6_K": 0.021,
}
# Worst single error (without importance) as a fraction of the largest |x| of its block (32 values;
# 256 for K-quants). Half a step, plus fp16 rounding of the scale: Q8_0 amax/254; Q4_1/Q5_1
# range/30, range/62 <= amax/15, amax/31; Q4_0/Q5_0 one full step amax/8, amax/16 where +amax is
# clipped to the top level; K-quants also round their sub-block scales to 6 bits. Q3_K (levels -4..3,
# the largest |x| of a sub-block on -4): a value of the other sign near that magnitude clips at +3, one
# full step, up to amax/4 (measured 0.196).
MAX_ERR_FRAC = {
    "Q8_0": 0.005, "Q4_0": 0.13, "Q4_1": 0.07, "Q5_0": 0.065, "Q5_1": 0.034,
    "Q3_K": 0.25, "Q4_K": 0.09, "Q5_K": 0.05, "Q6_K": 0.03,
}
# Importance-weighted quantization must reduce sum(imp * err**2) by at least this factor against the
# same type without importance (measured 0.52-0.71 on log-normal importance).
WEIGHTED_ERR_RATIO_MAX = 0.85


def _normal(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def _skewed_importance(cols: int, seed: int) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).standard_normal(cols) * 1.5).astype(np.float32)


def _hard_rows(cols: int, seed: int) -> np.ndarray:
    """Rows that hit the corners of the searches: scales over 60 decades, heavy tails, exact ties,
    offsets, one-sided rows, constant/zero/single-value blocks."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((24, cols)).astype(np.float32)
    x[0] *= 1e-3
    x[1] = rng.standard_t(2, cols)
    x[2] = np.abs(x[2]) + 0.5                         # all positive: min clamps to 0
    x[3] = -np.abs(x[3]) - 0.5                        # all negative
    x[4] = np.round(x[4] * 4) / 4                     # many exact ties on the grids
    x[5] = np.round(x[5] * 2)
    x[6] *= np.exp(rng.standard_normal((cols,)) * 3).astype(np.float32)
    x[7, :32] = 0.0
    x[7, 32:64] = -0.7                                 # constant negative block
    x[7, 64:96] = 0.3                                  # constant positive block
    x[7, 96:128] = 0.0
    x[7, 100] = 5.0                                    # single non-zero value
    x[8, :256] = 1.0
    x[8, 256:512] = -2.0
    x[9] = 0.0                                         # all-zero row
    x[10, :16] = 1e-30                                 # below GROUP_MAX_EPS
    x[10, 16:32] = 1e-20
    x[11, 3] = 100.0                                   # one outlier
    x[12] *= 1e-6
    x[13] *= 3e3
    x[14, ::2] = 0.0
    x[15] = rng.integers(-8, 8, cols).astype(np.float32)
    x[16] = rng.random(cols, dtype=np.float32)        # uniform [0, 1)
    x[17] += 3.0
    x[18, 128:] = 0.0
    x[19] = np.float32(1e-39) * rng.standard_normal(cols).astype(np.float32)   # subnormal
    x[20] = np.linspace(-1, 1, cols, dtype=np.float32)
    return x


# ------------------------------------------------------------------------------------------------
# llama.cpp's C quantizer, through ctypes (skipped where llama-cpp-python is not installed)
# ------------------------------------------------------------------------------------------------

def _load_ggml() -> Optional[ctypes.CDLL]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
            p = os.path.join(d, "lib", name)
            if os.path.exists(p):
                try:
                    lib = ctypes.CDLL(p)
                except OSError:
                    return None
                f = lib.ggml_quantize_chunk
                f.restype = ctypes.c_size_t
                f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
                return lib
    return None


GGML = _load_ggml()
requires_ggml = pytest.mark.skipif(GGML is None, reason="libggml-base from llama-cpp-python not loadable")


def ggml_quantize(x: np.ndarray, type_name: str, importance: Optional[np.ndarray] = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    out = np.zeros((rows, row_bytes(type_name, cols)), dtype=np.uint8)
    imp = None if importance is None else np.ascontiguousarray(importance, dtype=np.float32)
    n = GGML.ggml_quantize_chunk(BLOCK_TYPES[type_name].type_id, x.ctypes.data, out.ctypes.data, 0, rows,
                                 cols, None if imp is None else imp.ctypes.data)
    assert n == out.nbytes
    return out


def _block_diff(a: np.ndarray, b: np.ndarray, type_name: str) -> str:
    bb = BLOCK_TYPES[type_name].block_bytes
    bad = np.flatnonzero((a.reshape(-1, bb) != b.reshape(-1, bb)).any(axis=1))
    return f"{len(bad)} of {a.size // bb} blocks differ (first: {bad[:5].tolist()})"


@requires_ggml
@pytest.mark.parametrize("type_name", QUANTIZED)
@pytest.mark.parametrize("with_importance", [False, True], ids=["ref", "imatrix"])
def test_bit_exact_with_llama_cpp(type_name, with_importance):
    """Same bytes as ggml_quantize_chunk: quantize_row_*_ref without an imatrix, quantize_row_*_impl
    (make_qx_quants / make_qkx3_quants / make_qp_quants) with one."""
    if with_importance and type_name == "Q8_0":
        pytest.skip("llama.cpp ignores the imatrix for Q8_0 (ours: test_q8_0_importance_never_worse)")
    cols = 1024
    imp = _skewed_importance(cols, 7) if with_importance else None
    if with_importance:
        imp[3:15] = 0.0                                # some columns never activated (no group
        imp[100:108] = 0.0                             # entirely: see the test below)
    for x in (_normal(16, cols, 1) * 0.05, _hard_rows(cols, 2), _normal(8, cols, 3) + 0.2):
        ours = quantize(x, type_name, imp)
        ref = ggml_quantize(x, type_name, imp)
        assert np.array_equal(ours, ref), _block_diff(ours, ref, type_name)


@requires_ggml
@pytest.mark.parametrize("type_name", ["Q4_0", "Q5_1", "Q3_K", "Q4_K", "Q6_K"])
def test_all_zero_importance_groups_are_filled(type_name):
    """A group of columns with all-zero importance would get a zero scale from llama.cpp's search
    (weights erased); we fill such groups with the mean importance, and otherwise match llama.cpp."""
    cols = 1024
    x = _normal(8, cols, 4)
    imp = _skewed_importance(cols, 5)
    imp[256:512] = 0.0                                 # a whole super-block never activated
    eff = effective_importance(imp, type_name)
    assert (eff[256:512] == imp[imp > 0].mean(dtype=np.float64).astype(np.float32)).all()
    assert np.array_equal(eff[:256], imp[:256]) and np.array_equal(eff[512:], imp[512:])
    ours = quantize(x, type_name, imp)
    assert np.array_equal(ours, ggml_quantize(x, type_name, eff))
    y = dequantize(ours, type_name, cols)
    rel = np.sqrt(np.mean((y - x)[:, 256:512] ** 2)) / x.std()
    assert rel <= REL_RMSE_MAX[type_name]
    if type_name != "Q5_1":   # make_qkx3_quants keeps its min/max start; the others return scale 0
        raw = dequantize(ggml_quantize(x, type_name, imp), type_name, cols)[:, 256:512]
        assert not raw.any(), "llama.cpp itself zeroes such blocks (the reason for the fill)"


@requires_ggml
@pytest.mark.parametrize("type_name", QUANTIZED)
def test_bit_exact_with_llama_cpp_single_rows_and_blocks(type_name, monkeypatch):
    """One row per chunk (what very long rows get) and one-block rows: the sums that run over a
    single column must stay sequential too."""
    import edge_rt.quantize.quants as quants

    monkeypatch.setattr(quants, "_CHUNK_ELEMS", 1)
    blk = BLOCK_TYPES[type_name].block_elems
    for cols in (blk, 2048):
        x = _normal(3, cols, cols) * np.exp(_normal(3, cols, cols + 1) * 2)   # wide dynamic range
        imp = _skewed_importance(cols, 9)
        for w in (None, imp) if type_name != "Q8_0" else (None,):
            ours = quantize(x, type_name, w)
            ref = ggml_quantize(x, type_name, w)
            assert np.array_equal(ours, ref), _block_diff(ours, ref, type_name)


# ------------------------------------------------------------------------------------------------
# gguf's reference quantizers and dequantizers
# ------------------------------------------------------------------------------------------------

def _no_signed_zero_blocks(x: np.ndarray) -> np.ndarray:
    """Drop rows with a 32-block made only of zeros that include -0.0 (see test_signed_zero_blocks)."""
    b = x.reshape(x.shape[0], -1, 32)
    bad = ((b == 0).all(axis=-1) & np.signbit(b).any(axis=-1)).any(axis=1)
    return x[~bad]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # gguf's own casts of the subnormal row
@pytest.mark.parametrize("type_name", LEGACY)
def test_bit_exact_with_gguf(type_name):
    qt = gguf.GGMLQuantizationType[type_name]
    for x in (_normal(32, 512, 11), _hard_rows(512, 12), _normal(4, 4096, 13) * 1e-4):
        x = _no_signed_zero_blocks(x)
        ours = quantize(x, type_name)
        ref = gguf.quants.quantize(x, qt)
        assert np.array_equal(ours, ref), _block_diff(ours, ref, type_name)


@pytest.mark.parametrize("type_name", LEGACY)
def test_signed_zero_blocks(type_name):
    """All-zero blocks holding -0.0: ggml's C loops start from +0.0 (Q4_0/Q5_0) or keep the first of
    equal extremes (Q4_1/Q5_1); gguf's numpy takes the sign from argmax/min. We follow ggml; the
    difference is only the sign bit of a zero scale, so both decode to the same zeros."""
    x = np.zeros((4, 64), dtype=np.float32)
    x[0, :32] = -0.0
    x[1, ::2] = -0.0
    x[2, 1::3] = -0.0
    x[3, 32:] = -0.0
    ours = quantize(x, type_name)
    if GGML is not None:
        assert np.array_equal(ours, ggml_quantize(x, type_name))
    y = dequantize(ours, type_name, 64)
    assert np.array_equal(y, 0 * y) and np.array_equal(
        y, gguf.quants.dequantize(gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name]),
                                  gguf.GGMLQuantizationType[type_name]))


@pytest.mark.parametrize("type_name", QUANT_TYPES)
def test_dequantize_matches_gguf(type_name):
    qt = gguf.GGMLQuantizationType[type_name]
    x = np.concatenate([_normal(8, 512, 21), _hard_rows(512, 22)])
    for imp in (None, _skewed_importance(512, 23)):
        q = quantize(x, type_name, imp)
        ours = dequantize(q, type_name, 512)
        ref = gguf.quants.dequantize(q, qt).reshape(ours.shape)
        assert ours.dtype == np.float32 and ours.shape == x.shape
        np.testing.assert_array_equal(ours, ref)


def test_type_table_matches_gguf():
    assert set(QUANT_TYPES) <= set(BLOCK_TYPES)
    for t in QUANT_TYPES:
        qt = gguf.GGMLQuantizationType[t]
        assert BLOCK_TYPES[t].type_id == int(qt)
        assert (BLOCK_TYPES[t].block_elems, BLOCK_TYPES[t].block_bytes) == gguf.GGML_QUANT_SIZES[qt]
        assert row_bytes(t, 1024) == 1024 // BLOCK_TYPES[t].block_elems * BLOCK_TYPES[t].block_bytes
    assert (BLOCK_TYPES["Q5_K"].type_id, BLOCK_TYPES["Q5_K"].block_bytes) == (13, 176)
    assert (BLOCK_TYPES["Q3_K"].type_id, BLOCK_TYPES["Q3_K"].block_bytes) == (11, 110)
    assert BLOCK_TYPES["Q3_K"].bits_per_weight == 3.4375


# ------------------------------------------------------------------------------------------------
# Round trips and importance
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", QUANT_TYPES)
@pytest.mark.parametrize("with_importance", [False, True], ids=["plain", "importance"])
def test_round_trip_error_bounds(type_name, with_importance):
    cols = 1024
    x = _normal(64, cols, 31)
    x[::4] += 0.3                                       # offset rows exercise the mins
    imp = _skewed_importance(cols, 32) if with_importance else None
    q = quantize(x, type_name, imp)
    assert q.dtype == np.uint8 and q.shape == (64, row_bytes(type_name, cols))
    y = dequantize(q, type_name, cols)
    assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
    rel = float(np.sqrt(np.mean((y - x) ** 2)) / x.std())
    assert rel <= REL_RMSE_MAX[type_name], f"{type_name}: relative RMS error {rel:.5f}"
    if type_name in MAX_ERR_FRAC and imp is None:       # importance trades error between columns
        blk = BLOCK_TYPES[type_name].block_elems
        amax = np.abs(x).reshape(64, -1, blk).max(axis=-1, keepdims=True)
        worst = float((np.abs(y - x).reshape(64, -1, blk) / amax).max())
        assert worst <= MAX_ERR_FRAC[type_name], f"{type_name}: worst error {worst:.4f} of block max"


@pytest.mark.parametrize("type_name", QUANTIZED)
def test_importance_lowers_weighted_error(type_name):
    cols = 1024
    x = _normal(48, cols, 41)
    x[::3] += 0.2
    imp = _skewed_importance(cols, 42)
    e_plain = np.sum(imp * (dequantize(quantize(x, type_name), type_name, cols) - x) ** 2)
    e_imp = np.sum(imp * (dequantize(quantize(x, type_name, imp), type_name, cols) - x) ** 2)
    assert e_imp <= WEIGHTED_ERR_RATIO_MAX * e_plain, f"{type_name}: ratio {e_imp / e_plain:.3f}"


def test_q8_0_importance_never_worse():
    """Our Q8_0 search keeps round-to-nearest for any block where it would not help."""
    cols = 512
    imp = _skewed_importance(cols, 51)
    imp[:64] = 0.0
    for x in (_normal(32, cols, 52), _hard_rows(cols, 53)):
        e0 = (imp * (dequantize(quantize(x, "Q8_0"), "Q8_0", cols) - x) ** 2).reshape(len(x), -1, 32).sum(-1)
        e1 = (imp * (dequantize(quantize(x, "Q8_0", imp), "Q8_0", cols) - x) ** 2).reshape(len(x), -1, 32).sum(-1)
        assert (e1 <= e0).all()


def test_q8_0_importance_keeps_blocks_whose_searched_scale_overflows():
    """A block round-to-nearest can encode (scale max|x| / 127 <= 65504) but whose searched scale is
    past float16 stays round-to-nearest (it raised 'block scale overflows float16')."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 32)).astype(np.float32)
    x *= np.float32(65400 * 127) / np.abs(x).max()   # round-to-nearest's scale: 65400
    imp = (rng.random(32) ** 4).astype(np.float32)   # the weighted search then wants a scale of 65617
    assert np.array_equal(quantize(x, "Q8_0", imp), quantize(x, "Q8_0"))


# ------------------------------------------------------------------------------------------------
# Edge cases and errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", QUANT_TYPES)
def test_zero_constant_and_tiny_blocks(type_name):
    cols = 512
    x = _hard_rows(cols, 61)
    imp = _skewed_importance(cols, 62)
    imp[256:] = 0.0                                    # all-zero importance for whole super-blocks
    for w in (None, imp):
        q = quantize(x, type_name, w)
        y = dequantize(q, type_name, cols)
        assert np.isfinite(y).all()
        assert not y[9].any(), "an all-zero row must decode to zeros"
        assert not y[7, :32].any()
        assert not y[18, 128:].any() if BLOCK_TYPES[type_name].block_elems <= 128 else True
        assert np.abs(y[10, :32]).max() <= 1e-15        # values below GROUP_MAX_EPS stay ~0
    z = quantize(np.zeros((3, cols), np.float32), type_name)
    assert np.isfinite(dequantize(z, type_name, cols)).all()
    assert not dequantize(z, type_name, cols).any()


@pytest.mark.parametrize("type_name", QUANT_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(type_name, bad):
    x = _normal(3, 256, 71)
    x[2, 17] = bad
    with pytest.raises(ValueError, match=r"(NaN|Inf).*row 2, column 17"):
        quantize(x, type_name)


def test_overflowing_scales_rejected():
    with pytest.raises(ValueError, match="F16.*overflows"):
        quantize(np.full((1, 32), 1e6, np.float32), "F16")
    with pytest.raises(ValueError, match="Q8_0.*overflows float16"):
        quantize(np.full((1, 32), 1e10, np.float32), "Q8_0")
    with pytest.raises(ValueError, match="Q4_K.*overflows float16"):
        quantize(np.full((1, 256), -1e9, np.float32), "Q4_K")


def test_bad_arguments():
    x = _normal(2, 256, 81)
    with pytest.raises(ValueError, match="unknown type 'Q2_K'"):
        quantize(x, "Q2_K")
    with pytest.raises(ValueError, match="at least one dimension"):
        quantize(np.float32(1), "Q8_0")
    with pytest.raises(ValueError, match="not a multiple of the Q4_K block"):
        quantize(x[:, :128], "Q4_K")
    with pytest.raises(ValueError, match=r"importance has shape \(128,\)"):
        quantize(x, "Q4_0", np.ones(128, np.float32))
    with pytest.raises(ValueError, match="negative"):
        quantize(x, "Q4_0", -np.ones(256, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize(x, "Q4_0", np.full(256, np.nan, np.float32))
    with pytest.raises(ValueError, match="not whole Q8_0 rows"):
        dequantize(np.zeros(35, np.uint8), "Q8_0", 32)


def test_input_dtypes_and_shapes():
    x = _normal(3, 256, 91)
    ref = quantize(x, "Q4_K")
    assert np.array_equal(quantize(x.astype(np.float64), "Q4_K"), ref)
    assert np.array_equal(quantize(np.asfortranarray(x), "Q4_K"), ref)
    assert np.array_equal(dequantize(ref.reshape(-1), "Q4_K", 256), dequantize(ref, "Q4_K", 256))
    assert quantize(np.zeros((0, 256), np.float32), "Q6_K").shape == (0, 210)
    assert np.array_equal(quantize(x[1], "Q4_K"), ref[1])                       # 1-D: one row
    x3 = np.stack([x, 2 * x])                                                   # 3-D: experts
    assert np.array_equal(quantize(x3, "Q4_K")[1], quantize(2 * x, "Q4_K"))
    # F16 bytes are numpy's float16 bytes; importance is ignored for float types
    assert np.array_equal(quantize(x, "F16", np.ones(256, np.float32)), x.astype(np.float16).view(np.uint8))


def test_chunking_does_not_change_bytes(monkeypatch):
    import edge_rt.quantize.quants as quants

    x = _normal(40, 512, 95)
    imp = _skewed_importance(512, 96)
    ref = {t: quantize(x, t, imp) for t in ("Q4_0", "Q3_K", "Q4_K", "Q6_K")}
    monkeypatch.setattr(quants, "_CHUNK_ELEMS", 1000)   # one row per chunk
    for t, r in ref.items():
        assert np.array_equal(quantize(x, t, imp), r)


def test_search_primitives_follow_c_arithmetic():
    """The exactness rests on two numpy facts: axis-0 reduction of a C-contiguous array is a
    sequential float32 sum (the C loop order), and nearest_int reproduces ggml's magic-number trick."""
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((32, 300)) * np.exp(rng.standard_normal((32, 300)) * 4)).astype(np.float32)
    for cols in (300, 3, 2, 1):
        b = np.ascontiguousarray(a[:, :cols])
        s = b[0].copy()
        for i in range(1, 32):
            s += b[i]
        assert np.array_equal(ssum(b), s)
    assert np.array_equal(ssum(np.ascontiguousarray(a[:, 0])), s[0])
    v = (rng.standard_normal(10000) * 50).astype(np.float32)
    v[:6] = [0.5, 1.5, 2.5, -0.5, -1.5, 4194303.0]
    assert np.array_equal(nearest_int(v), np.rint(v).astype(np.int32))
    assert nearest_int(np.array([np.inf], np.float32))[0] == -4194304   # what the C trick returns
