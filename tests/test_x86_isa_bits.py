"""Every x86 ISA's weight kernels compute the bits of llama.cpp's AVX2 code: the avx512vnni ones too, since
llama.cpp's AVX-512 build sums its quantized dot products in the AVX2 code's order (only its float vector
ops differ, which edge_rt mirrors separately at every ISA: kernels.h GgmlVecOps, EDGE_RT_VEC_OPS). Before this test, the
avx512vnni table paired two blocks per 512-bit register (Q4_0, Q8_0 prompts) and summed K-quant and F16 rows
in 16 lanes: single rows of 7 types differed from AVX2, and so did the aarch64 build's NEON bits compared
with an AVX-512 host's. The golden table's avx512vnni column checks whole forward passes."""

from __future__ import annotations

import numpy as np
import pytest
from test_aarch64 import _LAYOUTS, _random_rows

from edge_rt import _core

pytestmark = pytest.mark.skipif(
    not (_core.cpu_supports("avx512vnni") and "avx512vnni" in _core.compiled_isas()),
    reason="this CPU or build runs no AVX512-VNNI")


@pytest.mark.parametrize("type_name", [*_LAYOUTS, "F32", "F16", "BF16"])
def test_avx512vnni_vec_dot_is_the_avx2_bits(type_name):
    rng = np.random.default_rng(11)
    rows, n = 24, 2048 if type_name in _LAYOUTS else 2045  # float rows: steps of 64, 32, 16, 8 and a tail
    x = rng.standard_normal((rows, n)).astype(np.float32)
    x[:, 100] = 9.5  # an outlier, as real activations have
    if type_name in _LAYOUTS:
        w = _random_rows(rng, type_name, rows, n)
    else:
        wf = rng.standard_normal((rows, n)).astype(np.float32)
        w = {"F32": wf, "F16": wf.astype(np.float16),
             "BF16": (wf.view(np.uint32) >> 16).astype(np.uint16)}[type_name].view(np.uint8).reshape(rows, -1)
    for r in range(rows):
        got = np.float32(_core.vec_dot(type_name, w[r].tobytes(), x[r], isa="avx512vnni"))
        want = np.float32(_core.vec_dot(type_name, w[r].tobytes(), x[r], isa="avx2"))
        assert got.view(np.uint32) == want.view(np.uint32), f"row {r}: {got!r} != {want!r}"
