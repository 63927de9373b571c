"""The synthetic model generator writes GGUF files that llama.cpp loads, with the expected metadata,
tensors and shapes, deterministically, and with peaked output distributions."""

from __future__ import annotations

import numpy as np
import pytest

from edge_rt import synthetic
from edge_rt.synthetic import WEIGHT_TYPES, ensure_synthetic_model, write_synthetic_gguf

from helpers import requires_llama_cpp

gguf = pytest.importorskip("gguf")


def _fields(path):
    r = gguf.GGUFReader(str(path))
    return r, {k: v.contents() for k, v in r.fields.items()}


def _tensors(reader):
    # GGUF lists dimensions innermost first (ne0 = row length).
    return {t.name: (tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_tensors_and_metadata(synthetic_model, arch):
    hd = 128 if arch == "qwen3" else None  # qwen3 with head_dim != n_embd / n_head
    p = synthetic_model(arch=arch, n_head=4, n_head_kv=2, head_dim=hd, weight_type="Q4_0",
                        rope_theta=500000.0, rope_scaling_linear=4.0, n_ctx_train=4096)
    r, f = _fields(p)
    head_dim = hd or 256 // 4
    assert f["general.architecture"] == arch
    assert f["general.name"].startswith("synthetic")
    assert f[f"{arch}.context_length"] == 4096
    assert f[f"{arch}.embedding_length"] == 256
    assert f[f"{arch}.feed_forward_length"] == 512
    assert f[f"{arch}.block_count"] == 2
    assert f[f"{arch}.attention.head_count"] == 4
    assert f[f"{arch}.attention.head_count_kv"] == 2
    assert f[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f[f"{arch}.rope.freq_base"] == pytest.approx(500000.0)
    assert f[f"{arch}.rope.dimension_count"] == head_dim
    assert f[f"{arch}.rope.scaling.type"] == "linear"
    assert f[f"{arch}.rope.scaling.factor"] == pytest.approx(4.0)
    assert f["general.file_type"] == 2  # MOSTLY_Q4_0
    if hd is not None:
        assert f[f"{arch}.attention.key_length"] == hd
        assert f[f"{arch}.attention.value_length"] == hd
    else:
        assert f"{arch}.attention.key_length" not in f

    t = _tensors(r)
    assert t["token_embd.weight"] == ((256, 512), "Q4_0")
    assert t["output.weight"] == ((256, 512), "Q4_0")
    assert t["output_norm.weight"] == ((256,), "F32")
    for i in range(2):
        b = f"blk.{i}."
        assert t[b + "attn_norm.weight"] == ((256,), "F32")
        assert t[b + "ffn_norm.weight"] == ((256,), "F32")
        assert t[b + "attn_q.weight"] == ((256, 4 * head_dim), "Q4_0")
        assert t[b + "attn_k.weight"] == ((256, 2 * head_dim), "Q4_0")
        assert t[b + "attn_v.weight"] == ((256, 2 * head_dim), "Q4_0")
        assert t[b + "attn_output.weight"] == ((4 * head_dim, 256), "Q4_0")
        assert t[b + "ffn_gate.weight"] == ((256, 512), "Q4_0")
        assert t[b + "ffn_up.weight"] == ((256, 512), "Q4_0")
        assert t[b + "ffn_down.weight"] == ((512, 256), "Q4_0")
        assert (b + "attn_q.bias" in t) == (arch == "qwen2")
        assert (b + "attn_q_norm.weight" in t) == (arch == "qwen3")
        if arch == "qwen2":
            assert t[b + "attn_q.bias"] == ((4 * head_dim,), "F32")
            assert t[b + "attn_k.bias"] == ((2 * head_dim,), "F32")
            assert t[b + "attn_v.bias"] == ((2 * head_dim,), "F32")
        if arch == "qwen3":
            assert t[b + "attn_q_norm.weight"] == ((head_dim,), "F32")
            assert t[b + "attn_k_norm.weight"] == ((head_dim,), "F32")
    n_per_layer = {"llama": 9, "qwen2": 12, "qwen3": 11}[arch]
    assert len(t) == 3 + 2 * n_per_layer


@pytest.mark.parametrize("long_short", [False, True], ids=["4k", "128k"])
def test_phi3_tensors_and_metadata(synthetic_model, long_short):
    """phi3 as convert_hf_to_gguf's Phi3MiniModel writes it: fused attn_qkv and gate-up ffn_up, the
    original context length and sliding window; the 128k variant's long/short factors and attn_factor
    (here with Phi-4-mini's partial rotary embedding: n_rot 48 of head_dim 64)."""
    extra = dict(n_ctx_train=4096, n_ctx_orig=256, rope_long_short=True, n_rot=48) if long_short else {}
    p = synthetic_model(arch="phi3", tokenizer="llama", n_head=4, n_head_kv=2, weight_type="Q8_0",
                        sliding_window=2047, **extra)
    r, f = _fields(p)
    assert f["general.architecture"] == "phi3"
    assert f["phi3.rope.scaling.original_context_length"] == (256 if long_short else 2048)
    assert f["phi3.attention.sliding_window"] == 2047
    assert f["phi3.rope.dimension_count"] == (48 if long_short else 64)
    assert "phi3.rope.scaling.type" not in f
    assert f["tokenizer.ggml.tokens"][-1] == "<|endoftext|>"
    t = _tensors(r)
    for i in range(2):
        b = f"blk.{i}."
        assert t[b + "attn_qkv.weight"] == ((256, 256 + 2 * 128), "Q8_0")
        assert t[b + "attn_output.weight"] == ((256, 256), "Q8_0")
        assert t[b + "ffn_up.weight"] == ((256, 2 * 512), "Q8_0")
        assert t[b + "ffn_down.weight"] == ((512, 256), "Q8_0")
        assert not {b + n for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight")} & set(t)
    if long_short:
        assert f["phi3.rope.scaling.attn_factor"] == pytest.approx(np.sqrt(1 + np.log(16) / np.log(256)))
        assert t["rope_factors_long.weight"] == ((24,), "F32")
        assert t["rope_factors_short.weight"] == ((24,), "F32")
        assert len(t) == 5 + 2 * 6
    else:
        assert "phi3.rope.scaling.attn_factor" not in f
        assert len(t) == 3 + 2 * 6


def test_tied_embeddings_and_mixed_types(synthetic_model):
    p = synthetic_model(tie_embeddings=True, weight_type="Q4_K", embed_type="Q6_K")
    r, _ = _fields(p)
    t = _tensors(r)
    assert "output.weight" not in t
    assert t["token_embd.weight"][1] == "Q6_K"
    assert t["blk.0.ffn_down.weight"][1] == "Q4_K"
    p = synthetic_model(weight_type="Q4_0", output_type="Q8_0")
    t = _tensors(_fields(p)[0])
    assert t["output.weight"][1] == "Q8_0" and t["token_embd.weight"][1] == "Q4_0"


def test_norms_near_one(synthetic_model):
    r, _ = _fields(synthetic_model())
    for t in r.tensors:
        if t.name.endswith("norm.weight"):
            w = np.asarray(t.data, dtype=np.float32)
            assert np.all(np.abs(w - 1.0) < 0.1), t.name


@pytest.mark.parametrize("wtype", ["Q4_K", "Q6_K"])
def test_k_quantizers_match_gguf_dequantizer(wtype):
    """Our K-quant packers must produce the layout ggml reads: round trip through gguf's dequantizer."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 512)).astype(np.float32) * 0.05
    x[1] += 0.03  # offset rows exercise Q4_K's mins
    q = synthetic._encode(x, wtype)
    y = gguf.quants.dequantize(q, gguf.GGMLQuantizationType[wtype])
    rel = np.sqrt(np.mean((y - x) ** 2)) / x.std()
    # Uniform-grid min/max quantizers: 4-bit ~ 1/15 of the range per step, 6-bit ~ 1/63.
    assert rel < {"Q4_K": 0.12, "Q6_K": 0.04}[wtype]


def test_deterministic_and_seeded(tmp_path):
    a = write_synthetic_gguf(tmp_path / "a.gguf", weight_type="Q4_K", seed=7)
    b = write_synthetic_gguf(tmp_path / "b.gguf", weight_type="Q4_K", seed=7)
    c = write_synthetic_gguf(tmp_path / "c.gguf", weight_type="Q4_K", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]  # no temporary file


def test_ensure_synthetic_model_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RT_CACHE", str(tmp_path))
    p1 = ensure_synthetic_model("tiny", weight_type="Q4_0")
    assert p1.parent == tmp_path / "synthetic" and p1.is_file()
    mtime = p1.stat().st_mtime_ns
    assert ensure_synthetic_model("tiny", weight_type="Q4_0") == p1
    assert p1.stat().st_mtime_ns == mtime  # not regenerated
    p2 = ensure_synthetic_model("tiny", weight_type="Q4_0", seed=1)
    assert p2 != p1
    p3 = ensure_synthetic_model("tiny", cache_dir=tmp_path / "elsewhere")
    assert p3.parent == tmp_path / "elsewhere"
    with pytest.raises(KeyError):
        ensure_synthetic_model("no-such-preset")
    with pytest.raises(TypeError):
        ensure_synthetic_model("tiny", n_embed=3)


def test_presets_have_real_shapes():
    tl = synthetic.PRESETS["tinyllama-1.1b"]
    assert (tl["n_vocab"], tl["n_embd"], tl["n_ff"], tl["n_layer"], tl["n_head"], tl["n_head_kv"]) == \
        (32000, 2048, 5632, 22, 32, 4)
    l3 = synthetic.PRESETS["llama-3.2-3b"]
    assert (l3["n_vocab"], l3["n_embd"], l3["n_ff"], l3["n_layer"], l3["n_head"], l3["n_head_kv"]) == \
        (128256, 3072, 8192, 28, 24, 8)
    assert l3["rope_theta"] == 500000.0


def test_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="block size"):
        write_synthetic_gguf(tmp_path / "x.gguf", n_embd=96, n_head=2, weight_type="Q4_K")
    with pytest.raises(ValueError, match="arch"):
        write_synthetic_gguf(tmp_path / "x.gguf", arch="gpt-neox")
    with pytest.raises(ValueError, match="n_head_kv"):
        write_synthetic_gguf(tmp_path / "x.gguf", n_head=4, n_head_kv=3)
    with pytest.raises(ValueError, match="phi3 needs tokenizer='llama'"):
        write_synthetic_gguf(tmp_path / "x.gguf", arch="phi3")
    with pytest.raises(ValueError, match="phi3 needs head_dim"):
        write_synthetic_gguf(tmp_path / "x.gguf", arch="phi3", tokenizer="llama", head_dim=32)
    with pytest.raises(ValueError, match="n_ctx_orig"):
        write_synthetic_gguf(tmp_path / "x.gguf", arch="phi3", tokenizer="llama", n_ctx_orig=4096)
    with pytest.raises(ValueError, match="n_rot"):
        write_synthetic_gguf(tmp_path / "x.gguf", arch="phi3", tokenizer="llama", n_rot=66)
    with pytest.raises(ValueError, match="phi3's"):
        write_synthetic_gguf(tmp_path / "x.gguf", rope_long_short=True)
    # phi3's parameters do not enter other models' cache keys (their cached files stay valid)
    dense = synthetic._canonical_params(synthetic.PRESETS["tiny"])
    assert synthetic._cache_key(dense) == synthetic._cache_key(
        {k: v for k, v in dense.items() if k not in synthetic._PHI3_PARAMS})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- llama.cpp


@requires_llama_cpp
@pytest.mark.parametrize("wtype", WEIGHT_TYPES)
def test_llama_cpp_loads_every_weight_type(synthetic_model, llama_cpp_peer, wtype):
    p = synthetic_model(weight_type=wtype)
    llm = llama_cpp_peer(p)
    assert llm.n_vocab() == 512 and llm.n_embd() == 256
    ids = list(range(300, 310))
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    assert np.all(np.isfinite(logits))
    assert logits.std() > 0.5


@requires_llama_cpp
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "phi3"])
def test_llama_cpp_loads_every_arch(synthetic_model, llama_cpp_peer, arch):
    p = synthetic_model(arch=arch, n_head=8, n_head_kv=2, head_dim=64 if arch == "qwen3" else None,
                        rope_scaling_linear=2.0, tokenizer="llama" if arch == "phi3" else "gpt2")
    llm = llama_cpp_peer(p)
    assert llm.metadata["general.architecture"] == arch
    llm.eval([300, 301, 302])
    assert np.all(np.isfinite(np.array(llm.scores[:3])))


@requires_llama_cpp
@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_llama_cpp_vocab(synthetic_model, llama_cpp_peer, tokenizer):
    p = synthetic_model(tokenizer=tokenizer, n_vocab=1024)
    llm = llama_cpp_peer(p)
    assert llm.n_vocab() == 1024
    md = llm.metadata
    assert md["tokenizer.ggml.model"] == tokenizer
    text = "the quick brown fox, 42 times!\nsee"
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert all(0 <= i < 1024 for i in ids)
    assert len(ids) < len(text.encode())  # merges are used
    assert llm.detokenize(ids).decode().lstrip(" ") == text
    if tokenizer == "gpt2":
        assert llm.token_eos() == llm.token_bos() == 1024 - 3
        assert llm.detokenize([llm.token_eos()], special=True) == b"<|endoftext|>"
    else:
        assert (llm.token_bos(), llm.token_eos()) == (1, 2)
        assert llm.tokenize(b"hi", add_bos=True)[0] == 1


@requires_llama_cpp
@pytest.mark.parametrize("tie", [False, True])
def test_output_is_peaked(synthetic_model, llama_cpp_peer, tie):
    """Greedy parity between engines needs a large top-1 margin at every position."""
    p = synthetic_model(n_layer=4, tie_embeddings=tie)
    llm = llama_cpp_peer(p)
    ids = np.random.default_rng(0).integers(259, 509, 64).tolist()
    llm.eval(ids)
    s = np.sort(np.array(llm.scores[: len(ids)]), axis=1)
    margin = (s[:, -1] - s[:, -2]) / s.std(axis=1)
    assert margin.min() > 2.0, margin.min()


# ------------------------------------------------------------------------------------ Mixture-of-Experts

MOE_PRESETS = ["tiny-moe", "tiny-qwen2moe", "tiny-qwen3moe"]
MOE_TYPES = ["F32", "Q8_0", "Q4_0", "Q4_K"]


def _moe_model(synthetic_model, preset, wtype):
    return synthetic_model(**{**synthetic.PRESETS[preset], "weight_type": wtype})


def _moe_expected(preset, wtype):
    """GGUF ne (innermost first) and type of every tensor llama.cpp's loader asks for, per layer."""
    c = synthetic.PRESETS[preset]
    arch, e, d = c["arch"], c["n_expert"], c["n_embd"]
    hd = c.get("head_dim") or d // c["n_head"]
    q, kv = c["n_head"] * hd, c["n_head_kv"] * hd
    f = c["n_ff"] if arch == "llama" else c["n_ff_exp"]
    t = {"token_embd.weight": ((d, c["n_vocab"]), wtype), "output.weight": ((d, c["n_vocab"]), wtype),
         "output_norm.weight": ((d,), "F32")}
    for i in range(c["n_layer"]):
        b = f"blk.{i}."
        t.update({
            b + "attn_norm.weight": ((d,), "F32"), b + "ffn_norm.weight": ((d,), "F32"),
            b + "attn_q.weight": ((d, q), wtype), b + "attn_k.weight": ((d, kv), wtype),
            b + "attn_v.weight": ((d, kv), wtype), b + "attn_output.weight": ((q, d), wtype),
            b + "ffn_gate_inp.weight": ((d, e), "F32"),
            b + "ffn_gate_exps.weight": ((d, f, e), wtype), b + "ffn_up_exps.weight": ((d, f, e), wtype),
            b + "ffn_down_exps.weight": ((f, d, e), wtype),
        })
        if arch == "qwen2moe":
            s = c["n_ff_shexp"]
            t.update({
                b + "attn_q.bias": ((q,), "F32"), b + "attn_k.bias": ((kv,), "F32"),
                b + "attn_v.bias": ((kv,), "F32"),
                b + "ffn_gate_inp_shexp.weight": ((d,), "F32"),
                b + "ffn_gate_shexp.weight": ((d, s), wtype), b + "ffn_up_shexp.weight": ((d, s), wtype),
                b + "ffn_down_shexp.weight": ((s, d), wtype),
            })
        if arch == "qwen3moe":
            t.update({b + "attn_q_norm.weight": ((hd,), "F32"), b + "attn_k_norm.weight": ((hd,), "F32")})
    return t


@pytest.mark.parametrize("wtype", MOE_TYPES)
@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_moe_tensors_and_metadata(synthetic_model, preset, wtype):
    c = synthetic.PRESETS[preset]
    arch = c["arch"]
    p = _moe_model(synthetic_model, preset, wtype)
    r, f = _fields(p)
    assert f["general.architecture"] == arch
    assert f[f"{arch}.expert_count"] == c["n_expert"]
    assert f[f"{arch}.expert_used_count"] == c["n_expert_used"]
    assert f[f"{arch}.feed_forward_length"] == c["n_ff"]  # llama.cpp reads it for every arch
    if arch == "llama":
        assert f"{arch}.expert_feed_forward_length" not in f
    else:
        assert f[f"{arch}.expert_feed_forward_length"] == c["n_ff_exp"]
    if arch == "qwen2moe":
        assert f[f"{arch}.expert_shared_feed_forward_length"] == c["n_ff_shexp"]
    else:
        assert f"{arch}.expert_shared_feed_forward_length" not in f
    if c.get("head_dim"):
        assert f[f"{arch}.attention.key_length"] == c["head_dim"]
    # Exactly the tensors llama.cpp asks for (no dense ffn_gate/up/down), with its shapes and types.
    assert _tensors(r) == _moe_expected(preset, wtype)
    # synthetic_tensor_bytes (no generation) agrees with the file.
    nbytes = synthetic.synthetic_tensor_bytes(preset, weight_type=wtype)
    assert nbytes == {t.name: int(t.n_bytes) for t in r.tensors}


@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_moe_routing_is_not_degenerate(synthetic_model, preset):
    """Router top-k on the normed embeddings of the normal tokens (what dominates the hidden state
    every layer sees): tokens spread over all experts, and the k-th choice usually clears the next."""
    c = synthetic.PRESETS[preset]
    n_expert, k = c["n_expert"], c["n_expert_used"]
    r = gguf.GGUFReader(str(_moe_model(synthetic_model, preset, "F32")))
    t = {x.name: np.asarray(x.data, dtype=np.float64) for x in r.tensors}
    emb = t["token_embd.weight"][259:509]  # normal (non-special) tokens of the gpt2 vocabulary
    x = emb / np.sqrt(np.mean(emb ** 2, axis=1, keepdims=True) + c.get("rms_eps", 1e-5))
    gaps, ratios = [], []
    for i in range(c["n_layer"]):
        router = t[f"blk.{i}.ffn_gate_inp.weight"]
        assert router.shape == (n_expert, c["n_embd"])
        logits = (x * t[f"blk.{i}.ffn_norm.weight"]) @ router.T
        assert 1.5 < logits.std() < 2.5
        order = np.argsort(-logits, axis=1)
        top = order[:, :k]
        load = np.bincount(top.ravel(), minlength=n_expert) / top.size
        assert load.min() > 0.5 / n_expert and load.max() < 2.0 / n_expert, load
        assert len({tuple(sorted(row)) for row in top}) >= 20  # many distinct expert sets
        s = np.take_along_axis(logits, order, axis=1)
        gaps.append(s[:, k - 1] - s[:, k])
        ratios.append(np.exp(gaps[-1]))  # p_k / p_(k+1)
    gaps = np.concatenate(gaps)
    assert np.median(gaps) > 0.35, np.median(gaps)
    assert np.mean(gaps < 0.05) < 0.15, np.mean(gaps < 0.05)
    assert np.median(np.concatenate(ratios)) > 1.4
    # Different layers route the same token differently (independent routers).
    l0 = np.argsort(-(x @ t["blk.0.ffn_gate_inp.weight"].T), axis=1)[:, 0]
    l1 = np.argsort(-(x @ t["blk.1.ffn_gate_inp.weight"].T), axis=1)[:, 0]
    assert np.mean(l0 == l1) < 0.4


def test_mixtral_3g_shape_and_size():
    c = synthetic.PRESETS["mixtral-3g"]
    assert (c["arch"], c["n_vocab"], c["n_embd"], c["n_head"], c["n_head_kv"], c["n_expert"],
            c["n_expert_used"]) == ("llama", 32000, 2048, 32, 8, 8, 2)
    nbytes = synthetic.synthetic_tensor_bytes("mixtral-3g", weight_type="Q4_0")
    total = sum(nbytes.values())
    assert total >= 3.0e9
    # Q4_0: 18 bytes per 32 weights; each layer's experts: 3 matrices of n_embd x n_ff per expert.
    per_layer_experts = 3 * 8 * 2048 * c["n_ff"] // 32 * 18
    assert nbytes["blk.0.ffn_gate_exps.weight"] * 3 == per_layer_experts
    experts = sum(v for k, v in nbytes.items() if "_exps." in k)
    assert experts == c["n_layer"] * per_layer_experts
    assert experts / total > 0.9  # experts are most of the bytes, as in Mixtral
    assert nbytes["blk.0.ffn_gate_inp.weight"] == 8 * 2048 * 4  # router stays F32


def test_moe_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RT_CACHE", str(tmp_path))
    p1 = ensure_synthetic_model("tiny-moe", weight_type="Q4_0")
    assert p1.name.startswith("tiny-moe-llama-Q4_0-") and p1.is_file()
    assert ensure_synthetic_model("tiny-moe", weight_type="Q4_0") == p1
    assert ensure_synthetic_model("tiny-moe", weight_type="Q4_0", n_expert_used=3) != p1
    assert ensure_synthetic_model("tiny-moe", weight_type="Q4_0", n_expert=4) != p1
    # Dense models' keys do not see the MoE parameters (their cached files stay valid).
    dense = synthetic._canonical_params(synthetic.PRESETS["tinyllama-1.1b"])
    assert synthetic._cache_key(dense) == synthetic._cache_key(
        {k: v for k, v in dense.items() if k not in synthetic._MOE_PARAMS})
    moe = synthetic._canonical_params(synthetic.PRESETS["tiny-qwen2moe"])
    assert synthetic._cache_key(moe) != synthetic._cache_key(dict(moe, n_ff_shexp=256))


def test_moe_rejects_bad_parameters(tmp_path):
    out = tmp_path / "x.gguf"
    with pytest.raises(ValueError, match="n_expert > 0"):
        write_synthetic_gguf(out, arch="qwen3moe")
    with pytest.raises(ValueError, match="n_expert > 0"):
        write_synthetic_gguf(out, n_expert_used=2)
    with pytest.raises(ValueError, match="n_expert_used"):
        write_synthetic_gguf(out, n_expert=4, n_expert_used=5)
    with pytest.raises(ValueError, match="n_expert_used"):
        write_synthetic_gguf(out, n_expert=4)
    with pytest.raises(ValueError, match="Mixtral"):
        write_synthetic_gguf(out, n_expert=4, n_expert_used=2, n_ff_exp=256)
    with pytest.raises(ValueError, match="shared"):
        write_synthetic_gguf(out, arch="qwen3moe", n_expert=4, n_expert_used=2, n_ff_shexp=256)
    with pytest.raises(ValueError, match="head_dim"):
        write_synthetic_gguf(out, arch="qwen2moe", n_expert=4, n_expert_used=2, head_dim=128)
    with pytest.raises(ValueError, match="tied"):
        write_synthetic_gguf(out, arch="qwen2moe", n_expert=4, n_expert_used=2, tie_embeddings=True)
    with pytest.raises(ValueError, match="no experts"):
        write_synthetic_gguf(out, arch="qwen2", n_expert=4, n_expert_used=2)
    with pytest.raises(ValueError, match="block size"):
        write_synthetic_gguf(out, arch="qwen3moe", n_expert=4, n_expert_used=2, n_ff_exp=96,
                             weight_type="Q4_K")
    assert not list(tmp_path.iterdir())


@requires_llama_cpp
@pytest.mark.parametrize("wtype", MOE_TYPES)
@pytest.mark.parametrize("preset", MOE_PRESETS)
def test_llama_cpp_loads_moe(synthetic_model, llama_cpp_peer, preset, wtype):
    c = synthetic.PRESETS[preset]
    llm = llama_cpp_peer(_moe_model(synthetic_model, preset, wtype))
    md = llm.metadata
    assert md["general.architecture"] == c["arch"]
    assert int(md[f"{c['arch']}.expert_count"]) == c["n_expert"]
    assert llm.n_vocab() == c["n_vocab"] and llm.n_embd() == c["n_embd"]
    ids = np.random.default_rng(0).integers(259, 509, 64).tolist()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    assert np.all(np.isfinite(logits))
    assert 0.5 < logits.std() < 10 and np.abs(logits).max() < 100
    s = np.sort(logits, axis=1)
    margin = (s[:, -1] - s[:, -2]) / s.std(axis=1)
    assert margin.min() > 2.0, margin.min()  # peaked, like the dense models
