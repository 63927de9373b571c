"""The synthetic model generator writes GGUF files that llama.cpp loads, with the expected metadata,
tensors and shapes, deterministically, and with peaked output distributions."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import requires_llama_cpp
from edge_rt import synthetic
from edge_rt.synthetic import WEIGHT_TYPES, ensure_synthetic_model, write_synthetic_gguf

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
    assert not list(tmp_path.glob(".*.tmp"))


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
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_llama_cpp_loads_every_arch(synthetic_model, llama_cpp_peer, arch):
    p = synthetic_model(arch=arch, n_head=8, n_head_kv=2, head_dim=64 if arch == "qwen3" else None,
                        rope_scaling_linear=2.0)
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
