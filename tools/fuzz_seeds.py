"""Seed corpora for the fuzz harnesses in native/fuzz/ (tools/fuzz.sh runs this; nothing is committed).

Writes OUT/<harness>/ for each harness:

* fuzz_gguf, fuzz_streaming, fuzz_capi: synthetic models (edge_rt.synthetic) of every architecture, every weight
  type and the MoE variants, shrunk to one layer and the smallest rows each type allows, plus
  truncations of a few of them (inside the header, the metadata, the tensor infos and the data);
  fuzz_gguf also gets the header of every real vocabulary (tokenizer metadata, no tensors).
* fuzz_tokenizer: mode byte + text for every real vocabulary (llama.cpp's test inputs, .inp files),
  and mode 255 + a header-only GGUF holding a tiny vocabulary (SPM, and BPE with several pre-tokenizers;
  a dozen tokens each, so an input costs a few milliseconds, not the 25 ms a 400-token one does under
  atheris) + text.
* fuzz_safetensors: tiny Hugging Face checkpoints (config.json, tokenizer.json, one shard) of every
  model_type the reader supports, in the harness's framing.

Real vocabularies are llama.cpp's ggml-vocab-*.gguf (those named in FUZZ_VOCABS) from
EDGE_RT_VOCAB_DIR (default ../shared/vocab next to the checkout, then the test-data cache the tokenizer
tests fill, ~/.cache/edge_rt/test-data); without them those seeds are skipped with a note.

Usage: python tools/fuzz_seeds.py OUT   (imports the edge_rt on PYTHONPATH, or the installed one)
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from edge_rt.gguf_file import HEADER_PREFIX_BYTES, split_kv_records
from edge_rt.quantize.block_types import BLOCK_TYPES
from edge_rt.synthetic import WEIGHT_TYPES, _gpt2_vocab, write_synthetic_gguf

ROOT = Path(__file__).resolve().parents[1]

DENSE_ARCHS = ("llama", "qwen2", "qwen3", "phi3", "gemma3")
MOE = (("llama", {}), ("qwen2moe", {"n_ff_shexp": 64}), ("qwen3moe", {}))
VOCAB_GLOB = "ggml-vocab-*.gguf"
# The real vocabularies fuzz_tokenizer loads (each takes a second or more to build, so not all of
# llama.cpp's): SPM, byte-level BPE with the gpt-2, llama3 and qwen2 pre-tokenizers, and phi-3's SPM.
# A vocabulary's index in this order (those present) is its mode byte in fuzz_tokenizer's inputs.
FUZZ_VOCABS = ("gpt-2", "llama-bpe", "llama-spm", "qwen2", "phi-3")


def vocab_dir() -> Path:
    cache = Path(os.environ.get("EDGE_RT_CACHE") or Path.home() / ".cache" / "edge_rt") / "test-data"
    for d in (os.environ.get("EDGE_RT_VOCAB_DIR"), ROOT.parent / "shared" / "vocab",
              *sorted(cache.glob("llama-cpp-python-*/models"))):
        if d and Path(d).is_dir() and list(Path(d).glob(VOCAB_GLOB)):
            return Path(d)
    return Path("/nonexistent")


def real_vocabs() -> List[Path]:
    d = vocab_dir()
    return [d / f"ggml-vocab-{n}.gguf" for n in FUZZ_VOCABS if (d / f"ggml-vocab-{n}.gguf").is_file()]


def row_elems(wtype: str) -> int:
    """The smallest row (multiple of 64 for the heads) the type's block allows."""
    block = BLOCK_TYPES[wtype].block_elems if wtype in BLOCK_TYPES else 1
    return max(64, block)


def synthetic_models(tmp: Path) -> Iterator[Tuple[str, Path]]:
    for arch in DENSE_ARCHS:
        for wtype in WEIGHT_TYPES:
            e = row_elems(wtype)
            p = tmp / f"{arch}-{wtype}.gguf"
            write_synthetic_gguf(p, arch=arch, n_vocab=400, n_embd=e, n_ff=e, n_layer=1, n_head=2,
                                 tokenizer="llama" if arch == "phi3" else "gpt2",
                                 weight_type=wtype, embed_type="Q8_0" if e == 64 else wtype,
                                 output_type="Q8_0" if e == 64 else wtype)
            yield p.stem, p
    for arch, extra in MOE:
        p = tmp / f"{arch}-moe.gguf"
        write_synthetic_gguf(p, arch=arch, n_vocab=300, n_embd=64, n_ff=64, n_layer=2, n_head=2,
                             n_expert=4, n_expert_used=2, weight_type="Q8_0", **extra)
        yield p.stem, p
    p = tmp / "llama-tied-spm.gguf"
    write_synthetic_gguf(p, arch="llama", n_vocab=400, n_embd=64, n_ff=64, n_layer=2, n_head=2,
                         weight_type="Q4_0", tie_embeddings=True, tokenizer="llama", rope_freqs=True)
    yield p.stem, p


_TINY_TEXT = b"Hello world! \xc3\xa9 abc <ctl><ud> <|end|>\n12345  \t"


def tiny_vocabularies(tmp: Path) -> Iterator[Tuple[str, bytes]]:
    """Header-only GGUFs of a dozen-token vocabulary each: SPM (with a few byte tokens, controls and a
    user-defined token) and BPE under several pre-tokenizers. Small on purpose: fuzz_tokenizer builds a
    tokenizer from every input, and the constructor's cost grows with the vocabulary."""
    import gguf
    spm = (["<unk>", "<s>", "</s>", "<0x0A>", "<0xC3>", "<0xA9>", "\u2581", "a", "b", "c", "\u2581a", "ab",
            "\u2581ab", "abc", "<ctl>", "<ud>"], [2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 3, 4])
    bpe_tokens = ["h", "e", "l", "o", "w", "r", "d", "\u0120", "he", "ll", "hell", "hello", "\u0120w", "<|end|>"]
    bpe_merges = ["h e", "l l", "he ll", "hell o", "\u0120 w"]
    variants = [("spm", "llama", None, spm[0], spm[1], None)]
    for pre in ("gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm", "falcon", "default"):
        variants.append((f"bpe-{pre}", "gpt2", pre, bpe_tokens, [1] * 13 + [3], bpe_merges))
    for name, model, pre, tokens, types, merges in variants:
        path = tmp / f"tiny-{name}.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tokenizer_model(model)
        if pre:
            w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        if model == "llama":
            w.add_token_scores([0.0] * 6 + [-1.0, -2.0, -2.0, -2.0, -3.0, -3.0, -4.0, -5.0, 0.0, 0.0])
            w.add_bos_token_id(1)
            w.add_eos_token_id(2)
        else:
            w.add_token_merges(merges)
            w.add_eos_token_id(len(tokens) - 1)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        yield name, path.read_bytes()


def header_only(path: Path) -> bytes:
    """A real vocabulary file's metadata without its tensors (the vocab files have none or few)."""
    raw = path.read_bytes()
    _, n_t, n_kv = struct.unpack_from("<IQQ", raw, 4)
    records = split_kv_records(raw, n_kv, str(path), "[fuzz_seeds]")
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(records)) + b"".join(r for _, r in records)


def vocab_texts(path: Path) -> List[bytes]:
    inp = Path(str(path) + ".inp")
    if not inp.is_file():
        return [b"Hello world"]
    return [t.strip(b"\n") for t in inp.read_bytes().split(b"__ggml_vocab_test__") if t.strip(b"\n")]


def hf_checkpoint(model_type: str, seed: int) -> bytes:
    """A tiny HF checkpoint in fuzz_safetensors' framing: u32 + config.json, u32 + tokenizer.json, shard."""
    rng = np.random.default_rng(seed)
    E, F, H, KV, V = 32, 32, 2, 1, 260
    hd = E // H
    w: Dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((V, E)).astype(np.float16),
                                "model.norm.weight": np.ones(E, np.float32),
                                "lm_head.weight": rng.standard_normal((V, E)).astype(np.float16)}
    p = "model.layers.0."
    w[p + "input_layernorm.weight"] = np.ones(E, np.float32)
    w[p + "post_attention_layernorm.weight"] = np.ones(E, np.float32)
    for n, rows in (("q_proj", H * hd), ("k_proj", KV * hd), ("v_proj", KV * hd)):
        w[p + f"self_attn.{n}.weight"] = rng.standard_normal((rows, E)).astype(np.float16)
        if model_type == "qwen2":
            w[p + f"self_attn.{n}.bias"] = rng.standard_normal(rows).astype(np.float32)
    if model_type == "qwen3":
        w[p + "self_attn.q_norm.weight"] = np.ones(hd, np.float32)
        w[p + "self_attn.k_norm.weight"] = np.ones(hd, np.float32)
    w[p + "self_attn.o_proj.weight"] = rng.standard_normal((E, H * hd)).astype(np.float16)
    cfg = {"model_type": model_type, "hidden_size": E, "intermediate_size": F, "num_hidden_layers": 1,
           "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 64}
    if model_type == "mixtral":
        w[p + "block_sparse_moe.gate.weight"] = rng.standard_normal((2, E)).astype(np.float32)
        for e in range(2):
            q = p + f"block_sparse_moe.experts.{e}."
            w[q + "w1.weight"] = rng.standard_normal((F, E)).astype(np.float16)
            w[q + "w3.weight"] = rng.standard_normal((F, E)).astype(np.float16)
            w[q + "w2.weight"] = rng.standard_normal((E, F)).astype(np.float16)
        cfg.update(num_local_experts=2, num_experts_per_tok=1)
    else:
        w[p + "mlp.gate_proj.weight"] = rng.standard_normal((F, E)).astype(np.float16)
        w[p + "mlp.up_proj.weight"] = rng.standard_normal((F, E)).astype(np.float16)
        w[p + "mlp.down_proj.weight"] = rng.standard_normal((E, F)).astype(np.float16)
    if model_type == "llama":
        cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    header, blobs, off = {}, [], 0
    for name, a in w.items():
        header[name] = {"dtype": {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[a.dtype],
                        "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    shard = struct.pack("<Q", len(h)) + h + b"".join(blobs)
    v = _gpt2_vocab(V)
    vocab = {t: i for i, t in enumerate(v["tokens"]) if v["types"][i] == 1}
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(v["tokens"]) if v["types"][i] == 3]
    tok = json.dumps({"added_tokens": added, "pre_tokenizer": {"type": "ByteLevel"},
                      "model": {"type": "BPE", "vocab": vocab, "merges": v["merges"]}}).encode()
    c = json.dumps(cfg).encode()
    return struct.pack("<I", len(c)) + c + struct.pack("<I", len(tok)) + tok + shard


def truncations(raw: bytes) -> Iterator[Tuple[str, bytes]]:
    """Cuts inside the fixed header, the metadata, the tensor infos and the data."""
    _, n_t, n_kv = struct.unpack_from("<IQQ", raw, 4)
    records = split_kv_records(raw, n_kv, "seed", "[fuzz_seeds]")
    kv_end = HEADER_PREFIX_BYTES + sum(len(r) for _, r in records)
    for name, cut in (("header", 12), ("metadata", (HEADER_PREFIX_BYTES + kv_end) // 2), ("infos", kv_end + 40),
                      ("data", (len(raw) + kv_end) // 2), ("last", len(raw) - 1)):
        yield name, raw[:cut]


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    dirs = {h: out / h for h in ("fuzz_gguf", "fuzz_streaming", "fuzz_capi", "fuzz_tokenizer",
                                          "fuzz_safetensors")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, path) in enumerate(synthetic_models(Path(tmp))):
            raw = path.read_bytes()
            (dirs["fuzz_gguf"] / f"{name}.gguf").write_bytes(raw)
            (dirs["fuzz_streaming"] / f"{name}.gguf").write_bytes(raw)
            (dirs["fuzz_capi"] / f"{name}.gguf").write_bytes(raw)
            if i % 7 == 0:  # truncations of a spread of architectures and types
                for cut, data in truncations(raw):
                    (dirs["fuzz_gguf"] / f"{name}.cut-{cut}.gguf").write_bytes(data)
                    (dirs["fuzz_streaming"] / f"{name}.cut-{cut}.gguf").write_bytes(data)
        for name, hdr in tiny_vocabularies(Path(tmp)):
            (dirs["fuzz_tokenizer"] / f"tiny-{name}.tok").write_bytes(
                b"\xff" + struct.pack("<I", len(hdr)) + hdr + _TINY_TEXT)
    vocabs = real_vocabs()
    if not vocabs:
        print("fuzz_seeds: no real vocabularies found (EDGE_RT_VOCAB_DIR); their seeds are skipped", file=sys.stderr)
    for mode, v in enumerate(vocabs):
        if v.stat().st_size <= 2 << 20:  # larger ones would be cut at -max_len anyway
            (dirs["fuzz_gguf"] / f"{v.stem}.header.gguf").write_bytes(header_only(v))
        for k, text in enumerate(vocab_texts(v)):
            (dirs["fuzz_tokenizer"] / f"{v.stem}.{k}.txt").write_bytes(bytes([mode]) + text)
    for k, mt in enumerate(("llama", "mistral", "qwen2", "qwen3", "mixtral")):
        (dirs["fuzz_safetensors"] / f"{mt}.hf").write_bytes(hf_checkpoint(mt, k))
    for h, d in dirs.items():
        files = list(d.iterdir())
        print(f"{h}: {len(files)} seeds, largest {max((f.stat().st_size for f in files), default=0)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
