"""The engine's logits are bitwise those of the golden table (tests/golden_logits.py): code moves
in the forward pass must not change its math. One child process per ISA this CPU runs."""

from __future__ import annotations

import json

import golden_logits
import pytest

TABLE = json.loads(golden_logits.TABLE.read_text())


@pytest.mark.parametrize("isa", golden_logits.ISAS)
def test_logits_match_golden_table(isa):
    if isa not in golden_logits.available_isas():
        pytest.skip(f"this CPU does not run {isa}")
    if isa not in TABLE:
        pytest.skip(f"no golden digests recorded for {isa} (recorded on a CPU without it)")
    got = golden_logits.run_isa(isa)
    want = TABLE[isa]
    assert set(got) == set(want), "the golden cases changed: rerun tests/golden_logits.py --update on purpose"
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, f"{isa}: logits changed for {changed}"


# Dense models whose every op has a scalar twin emulating the AVX2 lanes (the 32-element block formats,
# ggml's float vector ops): the scalar ISA must compute the AVX2 bits, which are llama.cpp's.
SCALAR_EQUALS_AVX2 = ["llama-gqa-Q4_0", "llama-gqa-Q4_1", "llama-gqa-Q5_0", "llama-gqa-Q5_1", "llama-gqa-Q8_0",
                      "llama-gqa-Q8_0@stream", "llama-tied-Q8_0", "qwen2-mha-Q8_0", "qwen2-mqa-Q4_0",
                      "qwen2-ropelinear2-Q8_0", "qwen3-mha-Q8_0", "qwen3-mqa-Q4_0"]


def test_scalar_twins_compute_the_avx2_bits():
    if "scalar" not in TABLE or "avx2" not in TABLE:
        pytest.skip("the table lacks a scalar or an avx2 column")
    differ = [k for k in SCALAR_EQUALS_AVX2 if TABLE["scalar"][k] != TABLE["avx2"][k]]
    assert not differ, f"scalar and avx2 digests differ for {differ}"



def test_scalar_twins_compute_the_avx512_bits_in_that_flavour():
    """The scalar ISA with the AVX-512 flavour of the float vector ops (EDGE_RT_VEC_OPS=avx512, the default
    on an AVX-512 CPU) computes the avx512vnni column's bits: on one machine every ISA gives the bits of
    the llama.cpp built for it."""
    if "avx512vnni" not in TABLE:
        pytest.skip("the table lacks an avx512vnni column")
    got = golden_logits.run_isa("scalar", vec_ops="avx512", case_ids=SCALAR_EQUALS_AVX2)
    differ = [k for k in SCALAR_EQUALS_AVX2 if got[k] != TABLE["avx512vnni"][k]]
    assert not differ, f"scalar (avx512 flavour) and avx512vnni digests differ for {differ}"
