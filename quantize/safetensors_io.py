"""Hugging Face checkpoints (a directory with config.json, *.safetensors, tokenizer.json) as a SourceModel.

safetensors is parsed with numpy alone: 8-byte little-endian header length, a JSON header
(name -> dtype, shape, data_offsets relative to the end of the header), then raw little-endian data.
Tensors are memory-mapped and converted to float32 when the quantizer asks for them.

Architectures (HF ``model_type`` -> GGUF architecture), names mapped as llama.cpp's
convert_hf_to_gguf.py maps them:

  llama / mistral  -> llama     (Q and K rows permuted from HF's rotate-half RoPE layout to the
                                 interleaved pairs llama.cpp's ``llama`` graph rotates)
  mixtral          -> llama     (+ experts stacked into ffn_{gate,up,down}_exps, router ffn_gate_inp)
  qwen2            -> qwen2     (Q/K/V biases)
  qwen3            -> qwen3     (Q/K norms)
  qwen2_moe        -> qwen2moe  (+ shared expert ffn_*_shexp and its gate ffn_gate_inp_shexp)
  qwen3_moe        -> qwen3moe

Tokenizer: tokenizer.json with a byte-level BPE model (GPT-2 style: ``ByteLevel`` pre-tokenizer or
decoder); the pre-tokenizer name is chosen as llama.cpp would for these families (``qwen2`` for Qwen,
``llama-bpe`` for Llama 3 vocabularies, else ``gpt-2``). SentencePiece/byte-fallback vocabularies
(Llama 2, Mistral v0.1) are refused with a message pointing at llama.cpp's converter.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelFormatError, ModelIOError, UnsupportedArchitectureError, UnsupportedTypeError
from .gguf_io import SourceModel, SourceTensor

#: HF model_type -> GGUF architecture.
HF_ARCHS = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
            "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors_header(path: Path) -> Tuple[Dict[str, Any], int]:
    """(header dict, byte offset of the data section). Checks every offset against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelFormatError(f"[quantize] {path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > 100 * 2**20:
            raise ModelFormatError(f"[quantize] {path}: safetensors header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"[quantize] {path}: safetensors header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ModelFormatError(f"[quantize] {path}: safetensors header is a JSON {type(header).__name__}, "
                               "not an object")
    data_start = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        _check_tensor_entry(path, name, info)
        a, b = info["data_offsets"]
        if not (0 <= a <= b <= size - data_start):
            raise ModelFormatError(f"[quantize] {path}: tensor '{name}' data offsets {a}..{b} are outside the file")
    return header, data_start


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_tensor_entry(path: Path, name: str, info: Any) -> None:
    """A header entry is {"dtype": str, "shape": [int >= 0, ...], "data_offsets": [int, int]}."""
    why = None
    if not isinstance(info, dict):
        why = f"is a JSON {type(info).__name__}, not an object"
    elif not isinstance(info.get("dtype"), str):
        why = "has no string 'dtype'"
    elif not isinstance(info.get("shape"), list) or not all(_is_count(d) for d in info["shape"]):
        why = f"has shape {info.get('shape')!r:.60}, expected a list of non-negative integers"
    elif (not isinstance(info.get("data_offsets"), list) or len(info["data_offsets"]) != 2
          or not all(_is_count(o) for o in info["data_offsets"])):
        why = f"has data_offsets {info.get('data_offsets')!r:.60}, expected [begin, end] byte offsets"
    if why:
        raise ModelFormatError(f"[quantize] {path}: tensor '{name}' {why}")


class _StTensor:
    def __init__(self, path: Path, name: str, info: Dict[str, Any], data_start: int) -> None:
        self.path, self.name = path, name
        self.dtype = info["dtype"]
        self.shape = tuple(int(d) for d in info["shape"])
        if self.dtype not in _ST_DTYPES:
            raise UnsupportedTypeError(f"[quantize] {path}: tensor '{name}' has dtype {self.dtype}; "
                                       "expected F32, F16 or BF16")
        a, b = info["data_offsets"]
        n = int(np.prod(self.shape)) if self.shape else 1
        if b - a != n * np.dtype(_ST_DTYPES[self.dtype]).itemsize:
            raise ModelFormatError(f"[quantize] {path}: tensor '{name}' has {b - a} bytes for shape {self.shape}")
        self.offset = data_start + a

    def load(self) -> np.ndarray:
        dt = _ST_DTYPES[self.dtype]
        arr = np.memmap(self.path, dtype=np.dtype(dt).newbyteorder("<"), mode="r", offset=self.offset,
                        shape=self.shape or (1,))
        if self.dtype == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return np.asarray(arr, dtype=np.float32)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half layout -> llama.cpp interleaved pairs (convert_hf_to_gguf LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _layer_map(arch_hf: str) -> List[Tuple[str, str]]:
    """(HF suffix regex within a layer, GGUF name) for the per-layer tensors, experts excluded."""
    m = [
        (r"input_layernorm\.weight", "attn_norm.weight"),
        (r"post_attention_layernorm\.weight", "ffn_norm.weight"),
        (r"self_attn\.q_proj\.weight", "attn_q.weight"),
        (r"self_attn\.k_proj\.weight", "attn_k.weight"),
        (r"self_attn\.v_proj\.weight", "attn_v.weight"),
        (r"self_attn\.o_proj\.weight", "attn_output.weight"),
        (r"self_attn\.q_proj\.bias", "attn_q.bias"),
        (r"self_attn\.k_proj\.bias", "attn_k.bias"),
        (r"self_attn\.v_proj\.bias", "attn_v.bias"),
        (r"self_attn\.q_norm\.weight", "attn_q_norm.weight"),
        (r"self_attn\.k_norm\.weight", "attn_k_norm.weight"),
        (r"mlp\.gate_proj\.weight", "ffn_gate.weight"),
        (r"mlp\.up_proj\.weight", "ffn_up.weight"),
        (r"mlp\.down_proj\.weight", "ffn_down.weight"),
        (r"block_sparse_moe\.gate\.weight", "ffn_gate_inp.weight"),
        (r"mlp\.gate\.weight", "ffn_gate_inp.weight"),
        (r"mlp\.shared_expert\.gate_proj\.weight", "ffn_gate_shexp.weight"),
        (r"mlp\.shared_expert\.up_proj\.weight", "ffn_up_shexp.weight"),
        (r"mlp\.shared_expert\.down_proj\.weight", "ffn_down_shexp.weight"),
        (r"mlp\.shared_expert_gate\.weight", "ffn_gate_inp_shexp.weight"),
    ]
    return [(re.compile(r"^model\.layers\.(\d+)\." + a + "$"), b) for a, b in m]


_EXPERT_RE = [
    (re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w1\.weight$"), "ffn_gate_exps.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w3\.weight$"), "ffn_up_exps.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w2\.weight$"), "ffn_down_exps.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.gate_proj\.weight$"), "ffn_gate_exps.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.up_proj\.weight$"), "ffn_up_exps.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.down_proj\.weight$"), "ffn_down_exps.weight"),
]
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}


def _cfg(cfg: Dict[str, Any], key: str, path: Path, default: Any = None) -> Any:
    v = cfg.get(key, default)
    if v is None:
        raise ModelFormatError(f"[quantize] {path}/config.json: key '{key}' is missing")
    return v


def _cfg_int(cfg: Dict[str, Any], key: str, path: Path, default: Optional[int] = None, minimum: int = 1) -> int:
    """An integer hyperparameter of config.json (absent or null: ``default``, else required)."""
    v = cfg.get(key)
    if v is None:
        v = _cfg(cfg, key, path, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ModelFormatError(f"[quantize] {path}/config.json: key '{key}' is {v!r:.40}, "
                               f"expected an integer >= {minimum}")
    return v


def _read_json(path: Path) -> Dict[str, Any]:
    """A JSON object from ``path``; anything else is a ModelFormatError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"[quantize] {path}: not JSON: {e}") from e
    if not isinstance(value, dict):
        raise ModelFormatError(f"[quantize] {path}: a JSON {type(value).__name__}, expected an object")
    return value


def read_hf_dir(path: Path) -> SourceModel:
    """A Hugging Face checkpoint directory as a SourceModel (see the module doc)."""
    import gguf

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelIOError(f"[quantize] {path} is a directory without config.json: expected a Hugging Face "
                           "checkpoint (config.json + *.safetensors) or a GGUF file")
    cfg = _read_json(cfg_path)
    model_type = cfg.get("model_type")
    if model_type not in HF_ARCHS:
        raise UnsupportedArchitectureError(
            f"[quantize] {path}: model_type '{model_type}' is not supported; supported: {', '.join(HF_ARCHS)}")
    arch = HF_ARCHS[model_type]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelIOError(f"[quantize] {path}: no *.safetensors files (PyTorch .bin checkpoints are not read)")

    st: Dict[str, _StTensor] = {}
    for f in files:
        header, start = read_safetensors_header(f)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if name in st:  # the last shard would silently win
                raise ModelFormatError(f"[quantize] {path}: tensor '{name}' is in both {st[name].path.name} "
                                       f"and {f.name}")
            st[name] = _StTensor(f, name, info, start)

    n_embd = _cfg_int(cfg, "hidden_size", path)
    n_layer = _cfg_int(cfg, "num_hidden_layers", path)
    n_head = _cfg_int(cfg, "num_attention_heads", path)
    n_head_kv = _cfg_int(cfg, "num_key_value_heads", path, default=n_head)
    head_dim = _cfg_int(cfg, "head_dim", path, default=n_embd // n_head)
    n_ff = _cfg_int(cfg, "intermediate_size", path, default=0, minimum=0)
    n_vocab = _cfg_int(cfg, "vocab_size", path)
    n_expert = _cfg_int(cfg, "num_local_experts", path,
                        default=_cfg_int(cfg, "num_experts", path, default=0, minimum=0), minimum=0)
    n_expert_used = _cfg_int(cfg, "num_experts_per_tok", path, default=0, minimum=0)
    if n_head % n_head_kv or head_dim % 2:
        raise ModelFormatError(f"[quantize] {path}/config.json: num_attention_heads {n_head} is not a multiple of "
                               f"num_key_value_heads {n_head_kv}, or head_dim {head_dim} is odd")
    is_llama = arch == "llama"

    tensors: List[SourceTensor] = []
    experts: Dict[Tuple[int, str], Dict[int, _StTensor]] = {}
    layer_map = _layer_map(model_type)
    unknown = []
    for name, t in st.items():
        if name in _GLOBAL:
            if name != "model.norm.weight" and tuple(t.shape) != (n_vocab, n_embd):
                raise ModelFormatError(f"[quantize] {path}: tensor '{name}' has shape {list(t.shape)}, expected "
                                       f"[{n_vocab}, {n_embd}] (config.json vocab_size, hidden_size)")
            tensors.append(_source(t, _GLOBAL[name]))
            continue
        if name.endswith("rotary_emb.inv_freq"):
            continue
        hit = False
        for rx, gname in _EXPERT_RE:
            m = rx.match(name)
            if m:
                experts.setdefault((int(m.group(1)), gname), {})[int(m.group(2))] = t
                hit = True
                break
        if hit:
            continue
        for rx, gname in layer_map:
            m = rx.match(name)
            if m:
                il = int(m.group(1))
                full = f"blk.{il}.{gname}"
                rows = {"attn_q.weight": n_head * head_dim, "attn_k.weight": n_head_kv * head_dim}.get(gname)
                if rows is not None and (len(t.shape) != 2 or t.shape[0] != rows):
                    raise ModelFormatError(f"[quantize] {path}: tensor '{name}' has shape {list(t.shape)}, expected "
                                           f"{rows} rows (config.json heads x head_dim)")
                if il >= n_layer:
                    raise ModelFormatError(f"[quantize] {path}: tensor '{name}' is beyond num_hidden_layers {n_layer}")
                if is_llama and gname == "attn_q.weight":
                    tensors.append(_source(t, full, lambda x: _permute(x, n_head)))
                elif is_llama and gname == "attn_k.weight":
                    tensors.append(_source(t, full, lambda x: _permute(x, n_head_kv)))
                elif gname == "ffn_gate_inp_shexp.weight":
                    tensors.append(_source(t, full, lambda x: x.reshape(-1)))  # (1, n_embd) -> (n_embd,)
                else:
                    tensors.append(_source(t, full))
                hit = True
                break
        if not hit:
            unknown.append(name)
    if unknown:
        raise UnsupportedArchitectureError(
            f"[quantize] {path}: tensors not understood for model_type '{model_type}': {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else ""))
    for (il, gname), by_e in sorted(experts.items()):
        if sorted(by_e) != list(range(n_expert)):
            raise ModelFormatError(f"[quantize] {path}: layer {il} {gname}: experts {sorted(by_e)} of {n_expert}")
        parts = [by_e[e] for e in range(n_expert)]
        shape = (n_expert, *parts[0].shape)

        def load(parts=parts) -> np.ndarray:
            return np.stack([p.load() for p in parts])

        tensors.append(SourceTensor(f"blk.{il}.{gname}", shape, parts[0].dtype, load))

    names = {t.name for t in tensors}
    if "token_embd.weight" not in names:
        raise ModelFormatError(f"[quantize] {path}: model.embed_tokens.weight is missing")
    if "output.weight" not in names and not cfg.get("tie_word_embeddings", False):
        raise ModelFormatError(f"[quantize] {path}: lm_head.weight is missing and tie_word_embeddings is false")
    tensors.sort(key=_order)

    G = gguf.GGUFValueType
    kv: List[Tuple[str, Any, Any, Any]] = []

    def add(key: str, val: Any, vt: Any, sub: Any = None) -> None:
        kv.append((key, val, vt, sub))

    add("general.name", str(cfg.get("_name_or_path") or path.name), G.STRING)
    add("general.type", "model", G.STRING)
    add(f"{arch}.context_length", int(cfg.get("max_position_embeddings") or 2048), G.UINT32)
    add(f"{arch}.embedding_length", n_embd, G.UINT32)
    add(f"{arch}.block_count", n_layer, G.UINT32)
    if n_ff:
        add(f"{arch}.feed_forward_length", n_ff, G.UINT32)
    add(f"{arch}.attention.head_count", n_head, G.UINT32)
    add(f"{arch}.attention.head_count_kv", n_head_kv, G.UINT32)
    add(f"{arch}.attention.layer_norm_rms_epsilon", float(cfg.get("rms_norm_eps", 1e-6)), G.FLOAT32)
    add(f"{arch}.rope.freq_base", float(cfg.get("rope_theta", 10000.0)), G.FLOAT32)
    add(f"{arch}.rope.dimension_count", head_dim, G.UINT32)
    if head_dim != n_embd // n_head:
        add(f"{arch}.attention.key_length", head_dim, G.UINT32)
        add(f"{arch}.attention.value_length", head_dim, G.UINT32)
    rs = cfg.get("rope_scaling") or None
    if rs:
        rtype = rs.get("rope_type") or rs.get("type") if isinstance(rs, dict) else None
        if rtype == "linear":
            factor = rs.get("factor")
            if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor < float("inf"):
                raise ModelFormatError(f"[quantize] {path}/config.json: rope_scaling.factor is {factor!r:.40}, "
                                       "expected a positive number")
            add(f"{arch}.rope.scaling.type", "linear", G.STRING)
            add(f"{arch}.rope.scaling.factor", float(factor), G.FLOAT32)
        else:
            raise UnsupportedArchitectureError(f"[quantize] {path}: rope_scaling type '{rtype}' is not supported "
                                               "(linear only)")
    add(f"{arch}.vocab_size", n_vocab, G.UINT32)
    if n_expert:
        add(f"{arch}.expert_count", n_expert, G.UINT32)
        add(f"{arch}.expert_used_count", n_expert_used, G.UINT32)
        moe_ff = cfg.get("moe_intermediate_size")
        if moe_ff:
            add(f"{arch}.expert_feed_forward_length", int(moe_ff), G.UINT32)
        elif n_ff:
            add(f"{arch}.expert_feed_forward_length", n_ff, G.UINT32)
        sh = cfg.get("shared_expert_intermediate_size")
        if sh:
            add(f"{arch}.expert_shared_feed_forward_length", int(sh), G.UINT32)
    kv += _tokenizer_kv(path, cfg, n_vocab, model_type)
    return SourceModel(path=path, arch=arch, kv=kv, tensors=tensors)


def _source(t: _StTensor, name: str, fn: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> SourceTensor:
    shape = t.shape
    if name.endswith("ffn_gate_inp_shexp.weight"):
        shape = (int(np.prod(shape)),)

    def load() -> np.ndarray:
        x = t.load()
        return fn(x) if fn is not None else x

    return SourceTensor(name, shape, t.dtype, load)


def _order(t: SourceTensor) -> Tuple[int, int, str]:
    m = re.match(r"^blk\.(\d+)\.", t.name)
    if t.name == "token_embd.weight":
        return (0, 0, t.name)
    if m:
        return (1, int(m.group(1)), t.name)
    return (2, 0, t.name)


def _tokenizer_kv(path: Path, cfg: Dict[str, Any], n_vocab: int, model_type: str) -> List[Tuple[str, Any, Any, Any]]:
    import gguf

    G = gguf.GGUFValueType
    tj = path / "tokenizer.json"
    if not tj.is_file():
        if (path / "tokenizer.model").is_file():
            raise UnsupportedArchitectureError(
                f"[quantize] {path}: SentencePiece tokenizer.model is not supported; convert with llama.cpp's "
                "convert_hf_to_gguf.py and quantize the GGUF")
        raise ModelFormatError(f"[quantize] {path}: tokenizer.json is missing")
    tok = _read_json(tj)
    model = tok.get("model") or {}
    if not isinstance(model, dict):
        raise ModelFormatError(f"[quantize] {tj}: 'model' is not an object")
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UnsupportedArchitectureError(
            f"[quantize] {path}: tokenizer.json model '{model.get('type')}'"
            f"{' with byte_fallback' if model.get('byte_fallback') else ''} is not supported (byte-level BPE only); "
            "convert with llama.cpp's convert_hf_to_gguf.py and quantize the GGUF")
    if not isinstance(model.get("vocab"), dict) or not model["vocab"]:
        raise ModelFormatError(f"[quantize] {tj}: model.vocab is missing or empty")
    vocab: Dict[str, int] = dict(model["vocab"])
    added = {}
    for a in tok.get("added_tokens") or []:
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise ModelFormatError(f"[quantize] {tj}: added_tokens entry {a!r:.60} has no string 'content'")
        added[a["content"]] = a
        vocab[a["content"]] = a.get("id")
    for text, i in vocab.items():  # ids index the embedding's rows
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_vocab:
            raise ModelFormatError(f"[quantize] {tj}: token {text!r:.40} has id {i!r:.20}, outside the "
                                   f"{n_vocab} embedding rows (config.json vocab_size)")
    size = n_vocab
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = gguf.TokenType.NORMAL
    for _content, a in added.items():
        types[int(a["id"])] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    merges = model.get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    if model_type.startswith("qwen"):
        pre = "qwen2"
    elif size >= 128000:
        pre = "llama-bpe"
    else:
        pre = "gpt-2"
    out = [("tokenizer.ggml.model", "gpt2", G.STRING, None), ("tokenizer.ggml.pre", pre, G.STRING, None),
           ("tokenizer.ggml.tokens", tokens, G.ARRAY, G.STRING),
           ("tokenizer.ggml.token_type", [int(t) for t in types], G.ARRAY, G.INT32),
           ("tokenizer.ggml.merges", merges, G.ARRAY, G.STRING)]
    tcfg = {}
    if (path / "tokenizer_config.json").is_file():
        tcfg = _read_json(path / "tokenizer_config.json")

    def tid(key: str) -> Optional[int]:
        v = tcfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str) and v in vocab:
            return vocab[v]
        cv = cfg.get(key + "_id")
        return int(cv) if isinstance(cv, int) else None

    for key, gkey in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "padding_token_id")):
        i = tid(key)
        if i is not None:
            out.append((f"tokenizer.ggml.{gkey}", i, G.UINT32, None))
    out.append(("tokenizer.ggml.add_bos_token", bool(tcfg.get("add_bos_token", False)), G.BOOL, None))
    return out
