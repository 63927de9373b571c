"""Synthetic GGUF models with random weights, for tests and benchmarks.

``write_synthetic_gguf`` writes a llama-family model (``llama``, ``qwen2``, ``qwen3``, ``phi3``) or a
Mixture-of-Experts one (Mixtral-style ``llama`` with experts, ``qwen2moe``, ``qwen3moe``) with seeded
random weights, metadata as llama.cpp's converters write it, and a synthetic tokenizer (byte-level BPE
``gpt2`` or SentencePiece-style ``llama``). The files load in llama.cpp and in edge_rt, so the two
engines can be compared on the same bytes.

MoE layers replace the dense FFN by llama.cpp's tensors (GGUF ne, innermost first; numpy shapes are
reversed): ``ffn_gate_inp`` [n_embd, n_expert] (the router, F32), ``ffn_gate_exps`` and
``ffn_up_exps`` [n_embd, n_ff_exp, n_expert], ``ffn_down_exps`` [n_ff_exp, n_embd, n_expert]; qwen2moe
adds a shared expert: ``ffn_gate_inp_shexp`` [n_embd] (F32), ``ffn_{gate,up}_shexp`` [n_embd,
n_ff_shexp], ``ffn_down_shexp`` [n_ff_shexp, n_embd]. Metadata: ``{arch}.expert_count``,
``expert_used_count``, and for qwen2moe/qwen3moe ``expert_feed_forward_length`` (+ qwen2moe's
``expert_shared_feed_forward_length``). Routing semantics (softmax, top-k, renormalisation, the shared
expert's sigmoid gate) are llama.cpp's per architecture; nothing in the file selects them.

``phi3`` (Phi-3 / Phi-3.5) fuses tensors as llama.cpp's converter does (convert_hf_to_gguf's
Phi3MiniModel): ``attn_qkv`` [n_embd, n_embd + 2 kv_dim] (q, k, v rows) and ``ffn_up`` [n_embd, 2 n_ff]
(gate rows, then up rows), no ``attn_q/k/v`` or ``ffn_gate``; metadata adds
``phi3.rope.scaling.original_context_length`` and ``phi3.attention.sliding_window``. The 128k variants
add ``rope_factors_long.weight`` / ``rope_factors_short.weight`` (n_rot/2 F32) and
``phi3.rope.scaling.attn_factor`` = sqrt(1 + ln(context_length / original) / ln(original)).

How the weights are chosen (why the numbers below are what they are):

* Every matrix is uniform random with the variance of a standard init (``1/fan_in``), so the RMS-normed
  activations entering each matmul stay near unit scale at any depth.
* The residual stream starts at the token embedding (std 1). Each layer adds attention and FFN outputs
  scaled by ``sqrt(0.6 / n_layer)`` so that the sum over all layers has about the embedding's size:
  the transformer really shapes the logits, but does not drown the embedding.
* Routers are random with each expert's logit ~ N(0, ``_ROUTER_LOGIT_STD``^2) on the normed hidden
  state, which the token embedding dominates: different tokens pick different experts, every expert
  gets used, and the k-th and (k+1)-th choices are usually well apart, so two engines' small float
  differences rarely change which experts run. Each expert is drawn like the dense FFN (same output
  size); the mixing weights sum to at most 1, so the routed experts add about what a dense FFN would
  (qwen2moe's sigmoid-gated shared expert adds up to one more).
* The output head is a *permuted copy of the embedding* (plus noise): row ``t`` is ``E[src[t]]``. The
  final hidden state is dominated by the current token's embedding, so the logit of ``t`` with
  ``src[t] == current`` sticks out by about ``sqrt(n_embd)`` standard deviations. The output
  distribution is therefore PEAKED: greedy decoding is robust to the tiny float differences between
  two engines, while all the other logits still carry the random transformer's contribution (which
  is what logit-parity tests compare). With tied embeddings the head is ``E`` itself and greedy
  decoding repeats the current token, also with a large margin.
* Output rows of control/unknown tokens are near zero, so greedy decoding never emits EOS.

Quantized types are produced by the toolchain's quantizers (``edge_rt.quantize.quantize``, the bytes of
ggml's reference quantizers), so K-quant files keep the same structure (and the same peaked outputs)
instead of being random bytes.

Generation is streamed: one tensor chunk at a time is drawn, quantized and written, so a
TinyLlama-shaped file needs little memory (plus a float16 copy of the embedding for the head).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .gguf_file import atomic_write
from .quantize.block_types import BLOCK_TYPES, FILE_TYPE, TYPE_NAMES

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "WEIGHT_TYPES",
    "write_synthetic_gguf",
    "ensure_synthetic_model",
    "synthetic_cache_dir",
    "synthetic_tensor_bytes",
]

# Bump when the bytes produced for a given set of parameters change (invalidates caches).
# 2: Q4_K/Q6_K from edge_rt.quantize (llama.cpp's reference search) instead of min/max scales.
GENERATOR_VERSION = 2

#: Weight types the generator writes: every type of the toolchain's registry (quantize/block_types.py).
WEIGHT_TYPES = TYPE_NAMES

PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(arch="llama", n_vocab=512, n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=4),
    "tinyllama-1.1b": dict(
        arch="llama", n_vocab=32000, n_embd=2048, n_ff=5632, n_layer=22, n_head=32, n_head_kv=4,
        rope_theta=10000.0, rms_eps=1e-5, n_ctx_train=2048, tokenizer="llama",
    ),
    "llama-3.2-3b": dict(
        arch="llama", n_vocab=128256, n_embd=3072, n_ff=8192, n_layer=28, n_head=24, n_head_kv=8,
        rope_theta=500000.0, rms_eps=1e-5, n_ctx_train=131072, tokenizer="gpt2", tie_embeddings=True,
    ),
    # Mixture-of-Experts, small enough for tests (every row a multiple of 256: any weight type applies).
    "tiny-moe": dict(  # Mixtral-style: llama with experts
        arch="llama", n_vocab=512, n_embd=256, n_ff=256, n_layer=4, n_head=4, n_head_kv=2,
        n_expert=8, n_expert_used=2,
    ),
    "tiny-qwen2moe": dict(  # routed experts + a sigmoid-gated shared expert; qkv biases
        arch="qwen2moe", n_vocab=512, n_embd=256, n_ff=512, n_layer=4, n_head=4, n_head_kv=2,
        n_expert=8, n_expert_used=4, n_ff_exp=256, n_ff_shexp=512, rope_theta=1000000.0,
    ),
    "tiny-qwen3moe": dict(  # q/k norms; head_dim (key_length) != n_embd / n_head as in Qwen3-30B-A3B
        arch="qwen3moe", n_vocab=512, n_embd=256, n_ff=512, n_layer=4, n_head=4, n_head_kv=2,
        head_dim=128, n_expert=8, n_expert_used=2, n_ff_exp=256, rope_theta=1000000.0,
    ),
    # Mixtral-8x7B's shape scaled down (n_embd 4096 -> 2048, n_ff 14336 -> 3584; 32 layers, 8 experts,
    # top-2, 32/8 heads, vocab 32000) for MoE benchmarks: 3.44e9 bytes in Q4_0 (the default here), of
    # which experts are 94%.
    "mixtral-3g": dict(
        arch="llama", n_vocab=32000, n_embd=2048, n_ff=3584, n_layer=32, n_head=32, n_head_kv=8,
        n_expert=8, n_expert_used=2, rope_theta=1000000.0, rms_eps=1e-5, n_ctx_train=32768,
        tokenizer="llama", weight_type="Q4_0",
    ),
}

_ARCHS = ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "phi3", "gemma3")
# Architectures that are always Mixture-of-Experts (llama is MoE, Mixtral-style, when n_expert > 0).
_MOE_ARCHS = ("qwen2moe", "qwen3moe")
# llama.cpp's LLAMA_MAX_EXPERTS (src/llama-hparams.h) is 1024 in the vendored source and was 256 in
# older releases: stay within what every version loads.
_MAX_EXPERTS = 256
# MoE parameters of write_synthetic_gguf. They enter ensure_synthetic_model's cache key only when they
# differ from their defaults, so dense models keep the keys (and cached files) they had before MoE.
_MOE_PARAMS = ("n_expert", "n_expert_used", "n_ff_exp", "n_ff_shexp")
# phi3's parameters (and rope_attn_factor, which came with it): keyed like the MoE ones, only when they
# differ from their defaults.
_PHI3_PARAMS = ("n_ctx_orig", "rope_long_short", "sliding_window", "n_rot", "rope_attn_factor")
# Gemma 3 parameters: keyed the same way (only when not default), so other models keep their keys.
_GEMMA3_PARAMS = ("sliding_window", "sliding_window_pattern", "rope_theta_swa", "final_logit_softcap")
# Metadata that changes no tensor (the chat template): keyed the same way, and not part of the tensor plan.
_METADATA_PARAMS = ("chat_template",)
# Standard deviation of each router logit (ffn_gate_inp rows . normed hidden state). Large enough that
# the top-k experts usually stand clear of the rest (with 8 experts, the median logit gap between the
# k-th and (k+1)-th choice is ~0.3 * this), small enough that the router's softmax still mixes the k.
_ROUTER_LOGIT_STD = 2.0

# Elements drawn per chunk while streaming a tensor (bounds peak memory to a few hundred MB).
_CHUNK_ELEMS = 1 << 23

# Logit scale of the untied output head: the non-target logits have about this standard deviation.
_OUTPUT_SCALE = 2.0
# Noise added to the permuted embedding rows of the untied output head (relative to the row's std).
_OUTPUT_NOISE = 0.5


def _encode(x: np.ndarray, wtype: str) -> np.ndarray:
    """float32 rows -> the bytes written to the file, from the toolchain's quantizers (edge_rt.quantize)."""
    from edge_rt.quantize.quants import quantize

    return quantize(x, wtype)


def _type_info(wtype: str) -> Tuple[int, int]:
    """(elements per block, bytes per block) of ``wtype``."""
    t = BLOCK_TYPES[wtype]
    return t.block_elems, t.block_bytes


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------

def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable unicode char map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _leveled_pieces(prefixes: List[str], letters: List[str], count: int) -> Iterator[Tuple[str, str]]:
    """Yield (left, right) pairs whose concatenations are new, distinct strings: level 2 is
    prefix+letter, level k+1 is (level k piece)+letter. Deterministic."""
    produced = 0
    level = list(prefixes)
    seen = set(prefixes) | set(letters)
    while produced < count:
        nxt = []
        for left in level:
            for right in letters:
                s = left + right
                if s in seen:
                    continue
                seen.add(s)
                nxt.append(s)
                yield left, right
                produced += 1
                if produced >= count:
                    return
        if not nxt:
            raise ValueError("[synthetic] cannot build enough vocabulary pieces")
        level = nxt


_GPT2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _gpt2_vocab(n_vocab: int) -> Dict[str, Any]:
    n_merges = n_vocab - 256 - len(_GPT2_SPECIALS)
    if n_merges < 0:
        raise ValueError(f"[synthetic] n_vocab={n_vocab} is too small for the gpt2 tokenizer (min 259)")
    b2u = _bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    letters = [b2u[c] for c in b"etaoinshrdlcumwfgypbvkjxqz"]
    prefixes = [b2u[ord(" ")]] + letters  # 'Ġ' + letters first: word starts
    merges = []
    for left, right in _leveled_pieces(prefixes, letters, n_merges):
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    tokens.extend(_GPT2_SPECIALS)
    types = [1] * (n_vocab - len(_GPT2_SPECIALS)) + [3] * len(_GPT2_SPECIALS)
    eot = n_vocab - len(_GPT2_SPECIALS)
    return dict(model="gpt2", pre="gpt-2", tokens=tokens, types=types, merges=merges,
                scores=None, bos=eot, eos=eot, unk=None, add_bos=False)


def _llama_vocab(n_vocab: int, controls: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """SentencePiece-style vocabulary; ``controls`` are control tokens appended at the end."""
    singles = ["▁"] + list("etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?'-:;()\"")
    n_fixed = 3 + 256
    n_rest = n_vocab - n_fixed - len(controls)
    if n_rest < len(singles):
        raise ValueError(f"[synthetic] n_vocab={n_vocab} is too small for the llama tokenizer "
                         f"(min {n_fixed + len(singles)})")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + singles
    letters = list("etaoinshrdlcumwfgypbvkjxqz")
    for left, right in _leveled_pieces(["▁"] + letters, letters, n_rest - len(singles)):
        tokens.append(left + right)
    tokens.extend(controls)
    types = [2, 3, 3] + [6] * 256 + [1] * n_rest + [3] * len(controls)
    # SentencePiece merges the adjacent pair whose result has the highest score: shorter first.
    scores = [0.0] * n_fixed + [-float(i) for i in range(n_rest)] + [0.0] * len(controls)
    return dict(model="llama", pre="default", tokens=tokens, types=types, merges=None,
                scores=scores, bos=1, eos=2, unk=0, add_bos=True)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------

class _Spec:
    """One tensor: name, numpy shape (rows, cols) or (n,), storage type, and a chunk generator."""

    def __init__(self, name: str, shape: Tuple[int, ...], wtype: str, gen):
        self.name, self.shape, self.wtype, self.gen = name, shape, wtype, gen


def llama3_rope_factors(n_rot: int, base: float, factor: float = 8.0, low_freq_factor: float = 1.0,
                        high_freq_factor: float = 4.0, original_context: int = 8192) -> np.ndarray:
    """The ``rope_freqs.weight`` llama.cpp's converter writes for Llama 3.1 (float32, n_rot / 2):
    1 for wavelengths below original_context / high_freq_factor, ``factor`` above
    original_context / low_freq_factor, interpolated smoothly between."""
    freqs = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    wavelen = 2 * np.pi / freqs
    low_wavelen, high_wavelen = original_context / low_freq_factor, original_context / high_freq_factor
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    out = np.where(wavelen < high_wavelen, 1.0,
                   np.where(wavelen > low_wavelen, factor, 1.0 / ((1 - smooth) / factor + smooth)))
    return out.astype(np.float32)


def phi3_rope_factors(n_rot: int) -> Tuple[np.ndarray, np.ndarray]:
    """(long, short) per-dimension RoPE divisors (float32, n_rot / 2 each) shaped like Phi-3-128k's:
    short ones near 1, long ones growing from 1 to 40 with the wavelength. Distinct at every
    dimension but the first, so using one set for the other changes the logits."""
    x = np.linspace(0.0, 1.0, n_rot // 2)
    long = np.exp(np.log(40.0) * x ** 2)
    short = 1.0 + 0.25 * x
    return long.astype(np.float32), short.astype(np.float32)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), GENERATOR_VERSION])


def _uniform(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """Uniform in [-a, a] with the given std (faster to draw than normals)."""
    x = rng.random(shape, dtype=np.float32)
    x -= 0.5
    x *= np.float32(2.0 * std * np.sqrt(3.0))
    return x


def _check_type(name: str, shape: Tuple[int, ...], wtype: str) -> None:
    block, _ = _type_info(wtype)
    if shape[-1] % block:
        raise ValueError(f"[synthetic] tensor {name}: row length {shape[-1]} is not a multiple of "
                         f"the {wtype} block size {block}")


def write_synthetic_gguf(
    path,
    *,
    arch: str = "llama",
    n_vocab: int = 512,
    n_embd: int = 256,
    n_ff: int = 512,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: Optional[int] = None,
    head_dim: Optional[int] = None,
    weight_type: str = "Q8_0",
    seed: int = 0,
    rope_theta: float = 10000.0,
    rope_scaling_linear: Optional[float] = None,
    rope_freqs: bool = False,
    rms_eps: float = 1e-5,
    tie_embeddings: bool = False,
    n_ctx_train: int = 2048,
    tokenizer: str = "gpt2",
    embed_type: Optional[str] = None,
    output_type: Optional[str] = None,
    n_expert: int = 0,
    n_expert_used: int = 0,
    n_ff_exp: Optional[int] = None,
    n_ff_shexp: Optional[int] = None,
    n_ctx_orig: Optional[int] = None,
    rope_long_short: bool = False,
    sliding_window: Optional[int] = None,
    n_rot: Optional[int] = None,
    rope_attn_factor: Optional[float] = None,
    sliding_window_pattern: Optional[int] = None,
    rope_theta_swa: Optional[float] = None,
    final_logit_softcap: Optional[float] = None,
    chat_template: Optional[str] = None,
) -> Path:
    """Write a random-weight GGUF model to ``path`` and return the path.

    ``chat_template`` is written as ``tokenizer.chat_template`` (Jinja text) when given.

    Matrices use ``weight_type``; the token embedding ``embed_type`` and the output head
    ``output_type`` (both default to ``weight_type``); norms (and qwen2 biases) are F32.
    ``head_dim`` defaults to ``n_embd // n_head``; when it differs, ``{arch}.attention.key_length``
    and ``value_length`` are written. ``rope_scaling_linear`` (a factor) writes linear RoPE scaling;
    ``rope_freqs`` (llama) writes ``rope_freqs.weight`` with Llama 3.1's per-dimension frequency
    divisors (factor 8, low/high frequency factors 1 and 4, original context 8192; see
    :func:`llama3_rope_factors`).

    Mixture-of-Experts (see the module docstring for the tensors): ``n_expert`` experts per layer of
    which ``n_expert_used`` run per token. With ``arch="llama"`` and ``n_expert > 0`` the model is
    Mixtral-style (experts of width ``n_ff``); ``qwen2moe`` and ``qwen3moe`` need ``n_expert > 0``,
    their experts have width ``n_ff_exp`` (default ``n_ff``) and qwen2moe's shared expert
    ``n_ff_shexp`` (default ``n_ff``). Expert matrices use ``weight_type``; routers are F32.

    phi3 only: ``n_ctx_orig`` (``rope.scaling.original_context_length``, default ``n_ctx_train``),
    ``rope_long_short`` (write the 128k variants' long/short RoPE factors, :func:`phi3_rope_factors`,
    and their attention factor), ``sliding_window`` (written as the converter writes it, 0 when
    None; llama.cpp ignores it for phi3) and ``n_rot`` (``rope.dimension_count``, default ``head_dim``;
    smaller for Phi-4-mini's partial rotary embedding). ``rope_attn_factor`` writes
    ``{arch}.rope.scaling.attn_factor`` (any arch; llama.cpp multiplies RoPE's cos and sin by it), in
    place of the one ``rope_long_short`` derives.
    Gemma 3 (``arch="gemma3"``, as convert_hf_to_gguf's Gemma3Model writes it): q/k norms
    (``attn_{q,k}_norm`` [head_dim]), ``post_attention_norm`` and ``post_ffw_norm`` [n_embd] after the
    attention and FFN, a GELU-gated FFN, ``key_length``/``value_length`` always written. Its norm
    weights are stored with Gemma's +1 already added, as the converter does. ``sliding_window`` > 0
    writes ``attention.sliding_window`` (then llama.cpp makes every layer local except each 6th, or
    per ``sliding_window_pattern``, written when given); ``rope_theta_swa`` writes the local layers'
    ``rope.freq_base_swa``; ``final_logit_softcap`` writes ``final_logit_softcapping``.
    """
    params = dict(locals())
    del params["path"]
    for k in _METADATA_PARAMS:
        del params[k]
    import gguf

    plan = _plan(**params)
    vocab = plan.vocab
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    with atomic_write(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        try:
            moe_tag = f"-{n_expert}x{n_expert_used}" if n_expert else ""
            w.add_name(f"synthetic-{arch}{moe_tag}-{weight_type}")
            w.add_type("model")
            w.add_string("general.description",
                         f"edge_rt synthetic random-weight model (generator v{GENERATOR_VERSION}, seed {seed})")
            w.add_context_length(n_ctx_train)
            w.add_embedding_length(n_embd)
            w.add_feed_forward_length(n_ff)
            w.add_block_count(n_layer)
            w.add_head_count(n_head)
            w.add_head_count_kv(plan.n_head_kv)
            w.add_layer_norm_rms_eps(float(rms_eps))
            w.add_rope_freq_base(float(rope_theta))
            w.add_rope_dimension_count(plan.n_rot)
            if plan.head_dim != n_embd // n_head or n_embd % n_head or arch == "gemma3":
                w.add_key_length(plan.head_dim)
                w.add_value_length(plan.head_dim)
            if sliding_window:
                w.add_sliding_window(sliding_window)
            if sliding_window_pattern is not None:
                w.add_sliding_window_pattern(sliding_window_pattern)
            if rope_theta_swa is not None:
                w.add_rope_freq_base_swa(float(rope_theta_swa))
            if final_logit_softcap is not None:
                w.add_final_logit_softcapping(float(final_logit_softcap))
            if rope_scaling_linear is not None:
                w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
                w.add_rope_scaling_factor(float(rope_scaling_linear))
            if arch == "phi3":
                # As convert_hf_to_gguf's Phi3MiniModel writes them.
                w.add_rope_scaling_orig_ctx_len(plan.n_ctx_orig)
                w.add_sliding_window(sliding_window or 0)
                if rope_long_short and rope_attn_factor is None:
                    scale = n_ctx_train / plan.n_ctx_orig
                    w.add_rope_scaling_attn_factors(
                        float(np.sqrt(1 + np.log(scale) / np.log(plan.n_ctx_orig))) if scale > 1.0 else 1.0)
            if rope_attn_factor is not None:
                w.add_rope_scaling_attn_factors(float(rope_attn_factor))
            if n_expert:
                # As llama.cpp's converters write them (convert_hf_to_gguf: TextModel, Qwen2MoeModel).
                w.add_expert_count(n_expert)
                w.add_expert_used_count(n_expert_used)
                if arch in _MOE_ARCHS:
                    w.add_expert_feed_forward_length(plan.n_ff_exp)
                if plan.n_ff_shexp:
                    w.add_expert_shared_feed_forward_length(plan.n_ff_shexp)
            w.add_vocab_size(n_vocab)
            w.add_file_type(FILE_TYPE[weight_type])
            if weight_type not in ("F32", "F16", "BF16"):
                w.add_quantization_version(gguf.GGML_QUANT_VERSION)

            w.add_tokenizer_model(vocab["model"])
            w.add_tokenizer_pre(vocab["pre"])
            w.add_token_list(vocab["tokens"])
            w.add_token_types(vocab["types"])
            if vocab["scores"] is not None:
                w.add_token_scores(vocab["scores"])
            if vocab["merges"] is not None:
                w.add_token_merges(vocab["merges"])
            w.add_bos_token_id(vocab["bos"])
            w.add_eos_token_id(vocab["eos"])
            if vocab["unk"] is not None:
                w.add_unk_token_id(vocab["unk"])
            w.add_add_bos_token(vocab["add_bos"])
            w.add_add_eos_token(False)
            if chat_template is not None:
                w.add_chat_template(chat_template)

            for s in plan.specs:
                if s.wtype in ("F32", "F16"):
                    dt = np.dtype(np.float32 if s.wtype == "F32" else np.float16)
                    w.add_tensor_info(s.name, s.shape, dt, int(np.prod(s.shape)) * dt.itemsize)
                else:
                    block, tsize = _type_info(s.wtype)
                    byte_shape = (*s.shape[:-1], s.shape[-1] // block * tsize)
                    w.add_tensor_info(s.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)),
                                      raw_dtype=gguf.GGMLQuantizationType[s.wtype])
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            fout = w.fout[0]
            for s in plan.specs:
                w.write_padding(fout, fout.tell())
                n = 0
                for chunk in s.gen():
                    data = _encode(chunk, s.wtype)
                    data.tofile(fout)
                    n += data.nbytes
                w.write_padding(fout, n)
        finally:
            w.close()
    return path


class _Plan:
    """What ``write_synthetic_gguf`` writes: the validated, resolved shape parameters, the vocabulary
    and the tensors in file order (their data generators are lazy: planning draws nothing)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _plan(*, arch, n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim, weight_type, seed,
          rope_theta, rope_scaling_linear, rope_freqs, rms_eps, tie_embeddings, n_ctx_train, tokenizer,
          embed_type, output_type, n_expert, n_expert_used, n_ff_exp, n_ff_shexp, n_ctx_orig,
          rope_long_short, sliding_window, n_rot, rope_attn_factor, sliding_window_pattern, rope_theta_swa,
          final_logit_softcap) -> _Plan:
    """Validate ``write_synthetic_gguf``'s parameters and list the tensors (name, numpy shape, type)."""
    if arch not in _ARCHS:
        raise ValueError(f"[synthetic] unknown arch {arch!r}; expected one of {_ARCHS}")
    embed_type = embed_type or weight_type
    output_type = output_type or weight_type
    for t in (weight_type, embed_type, output_type):
        if t not in WEIGHT_TYPES:
            raise ValueError(f"[synthetic] unknown weight type {t!r}; expected one of {WEIGHT_TYPES}")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_head % n_head_kv:
        raise ValueError(f"[synthetic] n_head={n_head} is not a multiple of n_head_kv={n_head_kv}")
    natural_hd = n_embd // n_head
    head_dim = natural_hd if head_dim is None else head_dim
    if head_dim % 2:
        raise ValueError("[synthetic] head_dim must be even (RoPE rotates pairs)")
    if tokenizer not in ("gpt2", "llama"):
        raise ValueError(f"[synthetic] unknown tokenizer {tokenizer!r}; expected 'gpt2' or 'llama'")
    _check_moe(arch, n_embd, n_head, head_dim, tie_embeddings, n_expert, n_expert_used, n_ff_exp,
               n_ff_shexp)
    if arch == "phi3":
        # llama.cpp builds phi3's q and output projection n_embd wide.
        if n_embd % n_head or head_dim != n_embd // n_head:
            raise ValueError("[synthetic] phi3 needs head_dim == n_embd / n_head")
        n_ctx_orig = n_ctx_train if n_ctx_orig is None else n_ctx_orig
        if not 1 <= n_ctx_orig <= n_ctx_train:
            raise ValueError(f"[synthetic] n_ctx_orig={n_ctx_orig} must be in 1..n_ctx_train={n_ctx_train}")
        n_rot = head_dim if n_rot is None else n_rot
        if n_rot % 2 or not 2 <= n_rot <= head_dim:
            raise ValueError(f"[synthetic] n_rot={n_rot} must be even and in 2..head_dim={head_dim}")
    elif n_ctx_orig is not None or rope_long_short or n_rot is not None:
        raise ValueError("[synthetic] n_ctx_orig, rope_long_short and n_rot are phi3's")
    else:
        n_rot = head_dim
    if sliding_window is not None and arch not in ("phi3", "gemma3"):
        raise ValueError("[synthetic] sliding_window is for arch phi3 or gemma3")
    gemma_only = dict(sliding_window_pattern=sliding_window_pattern, rope_theta_swa=rope_theta_swa,
                      final_logit_softcap=final_logit_softcap)
    if arch != "gemma3" and any(gemma_only.values()):
        raise ValueError(f"[synthetic] {sorted(k for k, v in gemma_only.items() if v)} are for arch gemma3")
    if n_expert:
        # llama.cpp: Mixtral-style llama experts are n_ff wide; qwen2moe's shared expert defaults to n_ff.
        n_ff_exp = n_ff if (arch == "llama" or n_ff_exp is None) else n_ff_exp
        if arch == "qwen2moe" and n_ff_shexp is None:
            n_ff_shexp = n_ff

    if arch == "phi3" and tokenizer != "llama":
        raise ValueError("[synthetic] phi3 needs tokenizer='llama' (Phi-3's SentencePiece vocabulary)")
    # llama.cpp looks up <|endoftext|> (besides <unk>, <s>, </s>) in every model whose name says phi3.
    controls = ("<|endoftext|>",) if arch == "phi3" else ()
    vocab = _gpt2_vocab(n_vocab) if tokenizer == "gpt2" else _llama_vocab(n_vocab, controls)

    q_dim = n_head * head_dim
    kv_dim = n_head_kv * head_dim
    layer_scale = float(np.sqrt(0.6 / n_layer))
    post_gain = layer_scale * float(np.sqrt(n_embd))  # gemma3's post-norm weights
    # E[(silu(g)*u)^2] for g, u ~ N(0,1) is about 0.36; compensate so the FFN adds as much as attention.
    ffn_down_gain = 1.0 / 0.6

    normal = np.array([t == 1 or t == 6 for t in vocab["types"]])  # tokens greedy may produce
    specials = np.flatnonzero(~normal)

    # Embedding: std 1 rows. Keep a float16 copy for the untied output head.
    emb_copy: Dict[str, np.ndarray] = {}

    def gen_embd():
        rng = _rng(seed, "token_embd.weight")
        keep = not tie_embeddings
        if keep:
            emb_copy["E"] = np.empty((n_vocab, n_embd), dtype=np.float16)
        step = max(1, _CHUNK_ELEMS // n_embd)
        for r0 in range(0, n_vocab, step):
            x = _uniform(rng, (min(step, n_vocab - r0), n_embd), 1.0)
            if keep:
                emb_copy["E"][r0:r0 + x.shape[0]] = x
            yield x

    # Output head row t = E[src[t]] + noise (src: permutation of the normal tokens); specials ~ 0.
    def gen_output():
        rng = _rng(seed, "output.weight")
        normal_ids = np.flatnonzero(normal)
        src = np.arange(n_vocab)
        src[normal_ids] = normal_ids[rng.permutation(len(normal_ids))]
        E = emb_copy["E"]
        gain = np.float32(_OUTPUT_SCALE / np.sqrt(n_embd * (1.0 + _OUTPUT_NOISE ** 2)))
        step = max(1, _CHUNK_ELEMS // n_embd)
        for r0 in range(0, n_vocab, step):
            r1 = min(n_vocab, r0 + step)
            x = _uniform(rng, (r1 - r0, n_embd), _OUTPUT_NOISE)
            x += E[src[r0:r1]].astype(np.float32)
            sp = specials[(specials >= r0) & (specials < r1)] - r0
            x[sp] *= np.float32(0.05)
            x *= gain
            yield x
        del emb_copy["E"]

    def dense(name: str, rows: int, cols: int, std: float):
        # rows may span several experts (a 3-D tensor is drawn as its n_expert * rows 2-D rows).
        def gen():
            rng = _rng(seed, name)
            step = max(1, _CHUNK_ELEMS // cols)
            for r0 in range(0, rows, step):
                yield _uniform(rng, (min(step, rows - r0), cols), std)
        return gen

    def around(name: str, n: int, center: float, spread: float):
        def gen():
            x = _uniform(_rng(seed, name), (n,), spread)
            x += np.float32(center)
            yield x
        return gen

    def matrix(name: str, shape: Tuple[int, ...], wtype: str, std: float) -> _Spec:
        """A weight (numpy shape: (rows, cols) or (n_expert, rows, cols)) with uniform entries."""
        rows = int(np.prod(shape[:-1]))
        return _Spec(name + ".weight", shape, wtype, dense(name, rows, shape[-1], std))

    specs: List[_Spec] = [_Spec("token_embd.weight", (n_vocab, n_embd), embed_type, gen_embd)]
    if rope_freqs:
        if arch != "llama":
            raise ValueError("[synthetic] rope_freqs is read for llama only (as llama.cpp does)")
        factors = llama3_rope_factors(head_dim, rope_theta)
        specs.append(_Spec("rope_freqs.weight", factors.shape, "F32", lambda: iter([factors])))
    if rope_long_short:
        long, short = phi3_rope_factors(n_rot)
        specs.append(_Spec("rope_factors_long.weight", long.shape, "F32", lambda: iter([long])))
        specs.append(_Spec("rope_factors_short.weight", short.shape, "F32", lambda: iter([short])))
    for i in range(n_layer):
        p = f"blk.{i}."
        specs.append(_Spec(p + "attn_norm.weight", (n_embd,), "F32", around(p + "attn_norm", n_embd, 1.0, 0.05)))
        if arch == "phi3":  # q, k, v rows in one tensor
            qkv = q_dim + 2 * kv_dim
            specs.append(_Spec(p + "attn_qkv.weight", (qkv, n_embd), weight_type,
                               dense(p + "attn_qkv", qkv, n_embd, 1.0 / np.sqrt(n_embd))))
        else:
            specs.append(_Spec(p + "attn_q.weight", (q_dim, n_embd), weight_type,
                               dense(p + "attn_q", q_dim, n_embd, 1.0 / np.sqrt(n_embd))))
            specs.append(_Spec(p + "attn_k.weight", (kv_dim, n_embd), weight_type,
                               dense(p + "attn_k", kv_dim, n_embd, 1.0 / np.sqrt(n_embd))))
            specs.append(_Spec(p + "attn_v.weight", (kv_dim, n_embd), weight_type,
                               dense(p + "attn_v", kv_dim, n_embd, 1.0 / np.sqrt(n_embd))))
        if arch in ("qwen2", "qwen2moe"):
            specs.append(_Spec(p + "attn_q.bias", (q_dim,), "F32", around(p + "attn_q.bias", q_dim, 0.0, 0.2)))
            specs.append(_Spec(p + "attn_k.bias", (kv_dim,), "F32", around(p + "attn_k.bias", kv_dim, 0.0, 0.2)))
            specs.append(_Spec(p + "attn_v.bias", (kv_dim,), "F32", around(p + "attn_v.bias", kv_dim, 0.0, 0.2)))
        if arch in ("qwen3", "qwen3moe", "gemma3"):
            specs.append(_Spec(p + "attn_q_norm.weight", (head_dim,), "F32",
                               around(p + "attn_q_norm", head_dim, 1.0, 0.05)))
            specs.append(_Spec(p + "attn_k_norm.weight", (head_dim,), "F32",
                               around(p + "attn_k_norm", head_dim, 1.0, 0.05)))
        specs.append(_Spec(p + "attn_output.weight", (n_embd, q_dim), weight_type,
                           dense(p + "attn_output", n_embd, q_dim, layer_scale / np.sqrt(q_dim))))
        if arch == "gemma3":
            # Gemma RMS-normalises each block's output before the residual add: these weights set its
            # size, so the layers together add about the (sqrt(n_embd)-scaled) embedding's size.
            specs.append(_Spec(p + "post_attention_norm.weight", (n_embd,), "F32",
                               around(p + "post_attention_norm", n_embd, post_gain, 0.05 * post_gain)))
        specs.append(_Spec(p + "ffn_norm.weight", (n_embd,), "F32", around(p + "ffn_norm", n_embd, 1.0, 0.05)))
        if arch == "phi3":  # gate rows, then up rows, in ffn_up
            specs.append(_Spec(p + "ffn_up.weight", (2 * n_ff, n_embd), weight_type,
                               dense(p + "ffn_up", 2 * n_ff, n_embd, 1.0 / np.sqrt(n_embd))))
            specs.append(_Spec(p + "ffn_down.weight", (n_embd, n_ff), weight_type,
                               dense(p + "ffn_down", n_embd, n_ff, ffn_down_gain * layer_scale / np.sqrt(n_ff))))
            continue
        if arch == "gemma3":
            specs.append(_Spec(p + "post_ffw_norm.weight", (n_embd,), "F32",
                               around(p + "post_ffw_norm", n_embd, post_gain, 0.05 * post_gain)))
        if not n_expert:
            specs.append(_Spec(p + "ffn_gate.weight", (n_ff, n_embd), weight_type,
                               dense(p + "ffn_gate", n_ff, n_embd, 1.0 / np.sqrt(n_embd))))
            specs.append(_Spec(p + "ffn_up.weight", (n_ff, n_embd), weight_type,
                               dense(p + "ffn_up", n_ff, n_embd, 1.0 / np.sqrt(n_embd))))
            specs.append(_Spec(p + "ffn_down.weight", (n_embd, n_ff), weight_type,
                               dense(p + "ffn_down", n_embd, n_ff, ffn_down_gain * layer_scale / np.sqrt(n_ff))))
            continue
        # Router (F32, as llama.cpp's converters keep it): its input is the RMS-normed hidden state
        # (entries ~ unit size), so each expert's logit has std _ROUTER_LOGIT_STD.
        specs.append(matrix(p + "ffn_gate_inp", (n_expert, n_embd), "F32",
                            _ROUTER_LOGIT_STD / np.sqrt(n_embd)))
        # Experts: like the dense FFN, each expert's output has the dense FFN's size; the router's
        # mixing weights sum to <= 1, so the MoE block adds at most that much.
        f, std_in = n_ff_exp, 1.0 / np.sqrt(n_embd)
        specs.append(matrix(p + "ffn_gate_exps", (n_expert, f, n_embd), weight_type, std_in))
        specs.append(matrix(p + "ffn_up_exps", (n_expert, f, n_embd), weight_type, std_in))
        specs.append(matrix(p + "ffn_down_exps", (n_expert, n_embd, f), weight_type,
                            ffn_down_gain * layer_scale / np.sqrt(f)))
        if n_ff_shexp:
            # Shared expert, scaled by sigmoid(ffn_gate_inp_shexp . x) with that logit ~ N(0, 1).
            sf = n_ff_shexp
            specs.append(_Spec(p + "ffn_gate_inp_shexp.weight", (n_embd,), "F32",
                               around(p + "ffn_gate_inp_shexp", n_embd, 0.0, 1.0 / np.sqrt(n_embd))))
            specs.append(matrix(p + "ffn_gate_shexp", (sf, n_embd), weight_type, std_in))
            specs.append(matrix(p + "ffn_up_shexp", (sf, n_embd), weight_type, std_in))
            specs.append(matrix(p + "ffn_down_shexp", (n_embd, sf), weight_type,
                                ffn_down_gain * layer_scale / np.sqrt(sf)))
    specs.append(_Spec("output_norm.weight", (n_embd,), "F32", around("output_norm", n_embd, 1.0, 0.05)))
    if not tie_embeddings:
        specs.append(_Spec("output.weight", (n_vocab, n_embd), output_type, gen_output))
    for s in specs:
        _check_type(s.name, s.shape, s.wtype)
    return _Plan(specs=specs, vocab=vocab, n_head_kv=n_head_kv, head_dim=head_dim, n_ff_exp=n_ff_exp,
                 n_ff_shexp=n_ff_shexp, n_ctx_orig=n_ctx_orig, n_rot=n_rot)


def _check_moe(arch, n_embd, n_head, head_dim, tie_embeddings, n_expert, n_expert_used, n_ff_exp,
               n_ff_shexp) -> None:
    """The MoE parameters must describe a model that llama.cpp builds
    (src/models/{llama,qwen2moe,qwen3moe}.cpp)."""
    if n_expert < 0 or n_expert > _MAX_EXPERTS:
        raise ValueError(f"[synthetic] n_expert={n_expert} is out of range 0..{_MAX_EXPERTS}")
    if n_expert == 0:
        if arch in _MOE_ARCHS:
            raise ValueError(f"[synthetic] arch {arch!r} needs n_expert > 0")
        if n_expert_used or n_ff_exp is not None or n_ff_shexp is not None:
            raise ValueError("[synthetic] n_expert_used, n_ff_exp and n_ff_shexp need n_expert > 0")
        return
    if arch not in ("llama",) + _MOE_ARCHS:
        raise ValueError(f"[synthetic] arch {arch!r} has no experts; use llama, qwen2moe or qwen3moe")
    if not 1 <= n_expert_used <= n_expert:
        raise ValueError(f"[synthetic] n_expert_used={n_expert_used} must be in 1..n_expert={n_expert}")
    if arch == "llama" and (n_ff_exp is not None or n_ff_shexp is not None):
        raise ValueError("[synthetic] Mixtral-style llama experts are n_ff wide: no n_ff_exp or n_ff_shexp")
    if arch == "qwen3moe" and n_ff_shexp is not None:
        raise ValueError("[synthetic] qwen3moe has no shared expert (n_ff_shexp)")
    for name, v in (("n_ff_exp", n_ff_exp), ("n_ff_shexp", n_ff_shexp)):
        if v is not None and v <= 0:
            raise ValueError(f"[synthetic] {name}={v} must be positive")
    if arch == "qwen2moe":
        # llama.cpp builds qwen2moe's Q and attn_output as n_embd x n_embd and requires an output head.
        if n_embd % n_head or head_dim != n_embd // n_head:
            raise ValueError("[synthetic] qwen2moe needs head_dim == n_embd / n_head")
        if tie_embeddings:
            raise ValueError("[synthetic] qwen2moe has no tied embeddings (llama.cpp requires output.weight)")


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

def synthetic_cache_dir(cache_dir=None) -> Path:
    """``cache_dir``, else ``$EDGE_RT_CACHE/synthetic``, else ``~/.cache/edge_rt/synthetic``."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("EDGE_RT_CACHE")
    return Path(root) / "synthetic" if root else Path.home() / ".cache" / "edge_rt" / "synthetic"


def _defaults() -> Dict[str, Any]:
    import inspect

    sig = inspect.signature(write_synthetic_gguf)
    return {k: p.default for k, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}


def _canonical_params(params: Dict[str, Any]) -> Dict[str, Any]:
    full = _defaults()
    unknown = set(params) - set(full)
    if unknown:
        raise TypeError(f"[synthetic] unknown parameters: {sorted(unknown)}")
    full.update(params)
    return full


def _cache_key(params: Dict[str, Any]) -> str:
    """Hash of the canonical parameters and GENERATOR_VERSION; MoE and phi3 parameters only when not
    default."""
    defaults = _defaults()
    keyed = {k: v for k, v in params.items()
             if not (k in _MOE_PARAMS + _PHI3_PARAMS + _GEMMA3_PARAMS + _METADATA_PARAMS and v == defaults[k])}
    return hashlib.sha256(json.dumps({"v": GENERATOR_VERSION, **keyed}, sort_keys=True).encode()).hexdigest()


def synthetic_tensor_bytes(name: Optional[str] = None, **params) -> Dict[str, int]:
    """Bytes of each tensor's data, by tensor name in file order, of the model ``write_synthetic_gguf``
    would write for preset ``name`` (or for the defaults) with ``params`` applied. Nothing is
    generated; the file adds its header, vocabulary and alignment padding (< 32 bytes a tensor)."""
    if name is not None and name not in PRESETS:
        raise KeyError(f"[synthetic] unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    full = _canonical_params({**(PRESETS[name] if name else {}), **params})
    for k in _METADATA_PARAMS:
        del full[k]
    out = {}
    for s in _plan(**full).specs:
        block, tsize = _type_info(s.wtype)
        out[s.name] = int(np.prod(s.shape)) // block * tsize
    return out


def ensure_synthetic_model(name: str = "tiny", cache_dir=None, **overrides) -> Path:
    """Path of the synthetic model ``name`` (a key of ``PRESETS``) with ``overrides`` applied
    (e.g. ``weight_type="Q4_0"``), generating it into the cache on first use.

    Files are keyed by every generation parameter and ``GENERATOR_VERSION``, and written atomically,
    so concurrent callers at worst generate the same file twice.
    """
    if name not in PRESETS:
        raise KeyError(f"[synthetic] unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    params = _canonical_params({**PRESETS[name], **overrides})
    fname = f"{name}-{params['arch']}-{params['weight_type']}-{_cache_key(params)[:12]}.gguf"
    d = synthetic_cache_dir(cache_dir)
    path = d / fname
    if path.is_file():
        return path
    d.mkdir(parents=True, exist_ok=True)
    return write_synthetic_gguf(path, **params)


def _main(argv=None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Generate a cached synthetic GGUF model and print its path.")
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("--weight-type", default=None, choices=WEIGHT_TYPES)
    ap.add_argument("--cache-dir", default=None)
    a = ap.parse_args(argv)
    t = time.perf_counter()
    kw = {"weight_type": a.weight_type} if a.weight_type else {}
    p = ensure_synthetic_model(a.preset, a.cache_dir, **kw)
    print(f"{p}  ({p.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":  # python -m edge_rt.synthetic tinyllama-1.1b --weight-type Q4_0
    raise SystemExit(_main())
