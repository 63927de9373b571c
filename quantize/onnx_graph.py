"""ONNX graphs of a dense llama/qwen2/qwen3 decoder for NPUs: float (calibration) and QDQ (export).

One builder writes both versions of the same graph, so the tensors calibration measures are exactly the
ones the QDQ graph quantizes. Every quantization point is named (``l3.attn_scores``); in the float graph
each such tensor is also a graph output, so one ONNX Runtime run yields every range.

Graph contract (T = tokens per call: the prefill chunk, or 1 for decode; C = cache slots; S = C + T):

* inputs  ``x`` float (T, n_embd): token embeddings (the gather runs on the host CPU);
  ``cos``, ``sin`` float (T, head_dim): RoPE tables of the T positions (NEOX halves layout, see below);
  ``mask`` float (T, S): additive, 0 where a query may attend, ``MASK_VALUE`` elsewhere (past slots
  [0, n_past) plus the causal triangle of the chunk, which occupies slots C..C+T-1);
  ``past_k.{i}``, ``past_v.{i}`` (n_head_kv, C, head_dim) per layer: the quantized cache (uint8/uint16 in
  the QDQ graph, float in the float graph), K after RoPE.
* outputs ``logits`` float (T, n_vocab); ``new_k.{i}``, ``new_v.{i}`` (n_head_kv, T, head_dim) in the
  cache's encoding: the host writes them into slots [n_past, n_past + T) of its cache.

Rewrites that keep the graph NPU-friendly (all exact in real arithmetic):

* llama's adjacent-pair RoPE becomes NEOX halves by permuting each head's Q and K rows alike (QK^T is
  unchanged); rotate_half is folded into a second Q and K projection (``W_rot = R W``), so RoPE is
  ``q * cos + q_rot * sin`` with MatMul, Mul and Add only;
* 1/sqrt(head_dim) is folded into W_q;
* GQA: queries are grouped (n_head_kv, n_rep, T, head_dim) and multiplied against (n_head_kv, 1, ., .).

Quantization layout (MobileQuant's): weights int8 or int4, symmetric, per output channel (int4 also
block-wise under a per-channel scale, QNN's LPBQ: onnx_blocks.py); activations
static per tensor at the scheme's bits (8 or 16), but 16-bit on the residual stream (o_proj and
down_proj outputs and the sums), norm inputs and weights, QK^T and the masked scores, the softmax output,
the lm_head input and output; and, because QNN takes per-channel MatMul weights only at equal input and
output widths, the o_proj and down_proj inputs (and Q/K/V's input on models with Q/K norms). An export
may promote more groups to 16 bits (``islands``: ``ISLAND_GROUPS`` per layer, ``KV_ISLAND``; chosen by
onnx_islands.py). RMSNorm is ONNX Runtime's ``SimplifiedLayerNormalization`` (default domain; QNN maps
it to RmsNorm, 16-bit input only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import numpy as np

#: Additive mask value for slots a query may not see (16-bit scores keep the visible range resolved).
MASK_VALUE = -64.0
#: ONNX opset of the exported graphs.
OPSET = 21


@dataclass(frozen=True)
class Scheme:
    name: str
    w_bits: int     # 8 or 4: the decoder's projection weights (lm_head stays int8)
    a_bits: int     # 8 or 16: activations that are not on a 16-bit island; also the KV cache


SCHEMES: Dict[str, Scheme] = {s.name: s for s in (
    Scheme("w8a8", 8, 8), Scheme("w4a8", 4, 8), Scheme("w8a16", 8, 16), Scheme("w4a16", 4, 16))}


#: Per-layer groups of activations an export may promote to 16 bits as one unit (``l<i>.<group>``). Each
#: keeps QNN's rule that a per-channel MatMul weight's input and output have the same width:
#: ``attn_in``: the attention norm's output and the Q/K/V projections' outputs (their common input);
#: ``rope``: the RoPE products and the rotated Q; ``ffn_in``: the FFN norm's output and gate/up outputs;
#: ``ffn_act``: the sigmoid and SiLU outputs.
ISLAND_GROUPS = ("attn_in", "rope", "ffn_in", "ffn_act")
#: The KV cache of every layer at 16 bits (one cache dtype for the whole graph: the host's cache layout).
KV_ISLAND = "kv"


def valid_island(name: str, n_layer: int) -> bool:
    if name == KV_ISLAND:
        return True
    layer, _, group = name.partition(".")
    return group in ISLAND_GROUPS and layer[:1] == "l" and layer[1:].isdigit() and int(layer[1:]) < n_layer


@dataclass
class Dims:
    """What the graph needs to know about the model (from GGUF metadata)."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    n_vocab: int
    eps: float
    theta: float
    rope_scale: float
    neox: bool


@dataclass
class Encoding:
    """A static affine encoding: real = scale * (q - zero_point)."""

    bits: int
    scale: float
    zero_point: int

    @property
    def dtype(self) -> Any:
        return np.uint16 if self.bits == 16 else np.uint8

    def to_json(self) -> Dict[str, Any]:
        return {"dtype": "uint16" if self.bits == 16 else "uint8", "scale": self.scale, "zero_point": self.zero_point}


def encoding_from_range(lo: float, hi: float, bits: int) -> Encoding:
    """Asymmetric unsigned encoding covering [min(lo, 0), max(hi, 0)] (zero exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = (1 << bits) - 1
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / qmax
    zp = int(np.clip(np.round(-lo / scale), 0, qmax))
    return Encoding(bits, float(np.float32(scale)), zp)


def quantize_weight(w: np.ndarray, bits: int, clip: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row quantization of ``w`` (N, K): (int8 codes (N, K) in [-qmax, qmax], scales (N,)).

    ``clip`` (N,) in (0, 1] shrinks each row's range (the clipping search's result)."""
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=1)
    if clip is not None:
        amax = amax * clip
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -qmax, qmax).astype(np.int8)
    return q, scale


def _rope_layout(w: np.ndarray, n_heads: int, head_dim: int, neox: bool) -> np.ndarray:
    """Rows of a Q/K weight (n_heads*head_dim, K) (or a bias / norm weight with leading dim) in NEOX order."""
    if neox:
        return w
    shp = w.shape
    w = w.reshape((n_heads, head_dim) + shp[1:])
    perm = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return w[:, perm].reshape(shp)


def _rotate_half_rows(w: np.ndarray, n_heads: int, head_dim: int, n_rot: int) -> np.ndarray:
    """R w: per head, rows [0, n_rot/2) become -rows [n_rot/2, n_rot), rows [n_rot/2, n_rot) become rows
    [0, n_rot/2), the rest zero (their sin is 0)."""
    shp = w.shape
    w = w.reshape((n_heads, head_dim) + shp[1:])
    h = n_rot // 2
    out = np.zeros_like(w)
    out[:, :h] = -w[:, h:n_rot]
    out[:, h:n_rot] = w[:, :h]
    return out.reshape(shp)


def rope_tables(d: Dims, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """cos, sin (T, head_dim) float32 for the graph's NEOX-halves layout (1 / 0 past n_rot)."""
    half = d.n_rot // 2
    inv = d.theta ** (-np.arange(half, dtype=np.float64) * 2 / d.n_rot)
    ang = (positions[:, None].astype(np.float64) * d.rope_scale) * inv[None, :]
    T = len(positions)
    cos = np.ones((T, d.head_dim), np.float32)
    sin = np.zeros((T, d.head_dim), np.float32)
    cos[:, :half] = cos[:, half:d.n_rot] = np.cos(ang)
    sin[:, :half] = sin[:, half:d.n_rot] = np.sin(ang)
    return cos, sin


def attention_mask(n_tokens: int, n_cache: int, n_past: int, n_valid: Optional[int] = None) -> np.ndarray:
    """(T, C + T) additive mask: past slots [0, n_past) visible, the chunk causal; query rows past
    ``n_valid`` (padding of a short last chunk) see only themselves."""
    T = n_tokens
    m = np.full((T, n_cache + T), MASK_VALUE, np.float32)
    m[:, :n_past] = 0.0
    m[:, n_cache:] = np.triu(np.full((T, T), MASK_VALUE, np.float32), 1)
    return m


@dataclass
class GraphSpec:
    """What one build produced: the model, every activation quantization point (name -> bits) in
    graph order, and every weight's encoding for the manifest."""

    model: Any
    points: Dict[str, int] = field(default_factory=dict)
    weights: Dict[str, Dict[str, Any]] = field(default_factory=dict)


class GraphBuilder:
    """Builds one graph. ``encodings`` and ``ranges`` None: the float graph (every point an extra output);
    else the QDQ graph. Its activation encodings (name -> Encoding) come from ``encodings``; with
    ``ranges`` (name -> (min, max)) a point missing there gets ``encoding_from_range`` at the width the
    graph gives it, added to ``encodings`` (so a dict shared by two builds gives both the same)."""

    def __init__(self, d: Dims, weights: Dict[str, np.ndarray], scheme: Scheme, n_tokens: int, n_cache: int,
                 encodings: Optional[Dict[str, Encoding]] = None,
                 ranges: Optional[Dict[str, Tuple[float, float]]] = None,
                 clips: Optional[Dict[Tuple[str, int], np.ndarray]] = None,
                 grams: Optional[Dict[str, np.ndarray]] = None,
                 rounded: Optional[Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]]] = None,
                 islands: FrozenSet[str] = frozenset(),
                 weight_bits: Optional[Dict[str, int]] = None,
                 errors: Optional[Dict[Tuple[str, int], float]] = None, w4_block: int = 0) -> None:
        self.d, self.w, self.scheme = d, weights, scheme
        self.w4_block = w4_block       # int4 weights block-wise (onnx_blocks.py) where it divides K; 0: per row
        self.weight_bits = weight_bits or {}     # GGUF projection weight -> 4 or 8 (else the scheme's)
        self.islands = frozenset(islands)
        unknown = sorted(i for i in self.islands if not valid_island(i, d.n_layer))
        if unknown:
            raise ValueError(f"unknown 16-bit islands {unknown}; expected {', '.join(ISLAND_GROUPS)} as l<i>.<group>, "
                             f"or {KV_ISLAND!r}")
        self.T, self.C = n_tokens, n_cache
        self.enc = encodings if encodings is not None else ({} if ranges is not None else None)
        self.ranges = ranges
        # (weight, bits) -> per-row clip factor / (codes, scales[, block scales]) from GPTQ, filled on demand
        # and shared between builds (the prefill and decode graphs, the searches' trial graphs); block-wise
        # int4 weights hold their expanded int8 codes (onnx_blocks.expanded) and their block scales
        self.clips = clips if clips is not None else {}
        self.rounded = rounded if rounded is not None else {}
        self.grams = grams or {}                               # tensor feeding a projection -> sum x x^T
        self.errors = errors        # if given: (weight, bits) -> tr(dW G dW^T) after rounding, filled here
        self.nodes: List[Any] = []
        self.inits: List[Any] = []
        self.spec = GraphSpec(None)
        self._n = 0

    # ---- small helpers ------------------------------------------------------------------------------
    def _encoding(self, point: str, bits: int) -> Encoding:
        if point not in self.enc and self.ranges is not None:
            self.enc[point] = encoding_from_range(*self.ranges[point], bits)
        return self.enc[point]

    def _bits(self, island: str) -> int:
        """Width of the activations of one island group: 16 where promoted, else the scheme's."""
        return 16 if island in self.islands else self.scheme.a_bits

    @property
    def kv_bits(self) -> int:
        return 16 if KV_ISLAND in self.islands else self.scheme.a_bits

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def _node(self, op: str, inputs: List[str], out: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain or None, **attrs))
        return out

    def _const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def _shape(self, name: str, shape: Tuple[int, ...]) -> str:
        return self._const(self._name(name + ".shape"), np.asarray(shape, np.int64))

    def reshape(self, x: str, shape: Tuple[int, ...], out: str) -> str:
        return self._node("Reshape", [x, self._shape(out, shape)], out)

    def act(self, x: str, point: str, bits: int) -> str:
        """A quantization point on tensor ``x``: returns the name consumers use."""
        if point in self.spec.points:
            raise ValueError(f"duplicate quantization point {point}")
        self.spec.points[point] = bits
        if self.enc is None:
            return self._node("Identity", [x], point)
        e = self._encoding(point, bits)
        s = self._const(point + ".scale", np.float32(e.scale))
        z = self._const(point + ".zero_point", np.asarray(e.zero_point, e.dtype))
        q = self._node("QuantizeLinear", [x, s, z], point + ".q")
        return self._node("DequantizeLinear", [q, s, z], point)

    def const_act(self, name: str, arr: np.ndarray, bits: int = 16) -> str:
        """A float constant (norm weight, bias) quantized with its own min/max encoding."""
        arr = arr.astype(np.float32)
        if self.enc is None:
            return self._const(name, arr)
        e = encoding_from_range(arr.min(), arr.max(), bits)
        q = np.clip(np.round(arr / e.scale) + e.zero_point, 0, (1 << bits) - 1).astype(e.dtype)
        self.spec.weights[name] = {**e.to_json(), "shape": list(arr.shape)}
        s = self._const(name + ".scale", np.float32(e.scale))
        z = self._const(name + ".zero_point", np.asarray(e.zero_point, e.dtype))
        return self._node("DequantizeLinear", [self._const(name + ".q", q), s, z], name)

    def _block(self, w: np.ndarray, bits: int) -> int:
        from .onnx_blocks import block_of

        return block_of(w.shape[1], self.w4_block) if bits == 4 else 0

    def weight(self, name: str, w: np.ndarray, bits: int) -> str:
        """A (N, K) projection weight as the MatMul operand (K, N): float, int8/int4 per-channel DQ, or
        block-wise int4 (two DQ: onnx_blocks.py)."""
        if self.enc is None:
            return self._const(name, np.ascontiguousarray(w.T.astype(np.float32)))
        from onnx import TensorProto, helper

        key = (name, bits)
        clip = self.clips.get(key)
        block = self._block(w, bits)
        if key not in self.rounded and block:
            from .onnx_blocks import round_blocks

            self.rounded[key] = round_blocks(w, block)
        q, scale = self.rounded[key][:2] if key in self.rounded else quantize_weight(w, bits, clip)
        self.spec.weights[name] = {"dtype": f"int{bits}", "axis": "per output channel", "shape": list(w.shape),
                                   "scale_min": float(scale.min()), "scale_max": float(scale.max())}
        if clip is not None:
            self.spec.weights[name]["mean_clip"] = float(clip.mean())
        if block:
            from .onnx_blocks import split

            blocks = self.rounded[key][2]
            self.spec.weights[name].update(block=block, block_scale_bits=4)
            q = split(q, blocks, block)
        qt = np.ascontiguousarray(q.T)                      # (K, N), axis 1 = output channel
        if bits == 4:
            flat = (qt.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
            if flat.size % 2:
                flat = np.append(flat, np.uint8(0))
            packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
            self.inits.append(helper.make_tensor(name + ".q", TensorProto.INT4, qt.shape, packed.tobytes(), raw=True))
            zp_shape = (qt.shape[0] // block, qt.shape[1]) if block else scale.shape
            zp = helper.make_tensor(name + ".zero_point", TensorProto.INT4, zp_shape,
                                    bytes((int(np.prod(zp_shape)) + 1) // 2), raw=True)
            self.inits.append(zp)
        else:
            self._const(name + ".q", qt)
            self._const(name + ".zero_point", np.zeros(scale.shape, np.int8))
        self._const(name + ".scale", scale)
        if block:       # float block scales (K / block, N) = S[n] * s[k / block, n], then the blocked DQ
            self._const(name + ".block_scale", np.ascontiguousarray(blocks.T))
            self._const(name + ".block_scale_zero_point", np.zeros(scale.shape, np.uint8))
            steps = self._node("DequantizeLinear", [name + ".block_scale", name + ".scale",
                                                    name + ".block_scale_zero_point"], name + ".steps", axis=1)
            return self._node("DequantizeLinear", [name + ".q", steps, name + ".zero_point"], name, axis=0,
                              block_size=block)
        return self._node("DequantizeLinear", [name + ".q", name + ".scale", name + ".zero_point"], name, axis=1)

    def linear(self, x: str, wname: str, w: np.ndarray, bias: Optional[np.ndarray], point: str, bits: int,
               w_bits: Optional[int] = None) -> str:
        wb = w_bits or self.weight_bits.get(wname.replace("_rot.weight", ".weight"), self.scheme.w_bits)
        key = (wname, wb)
        if self.enc is not None and x in self.grams and key not in self.rounded:
            block = self._block(w, wb)
            if block:
                from .onnx_blocks import round_blocks

                self.rounded[key] = round_blocks(w, block, self.grams[x])
            else:
                from .onnx_ranges import clip_search, gptq_rows

                self.clips[key] = clip_search(w, wb, self.grams[x])
                self.rounded[key] = gptq_rows(w, wb, self.grams[x], self.clips[key])
            if self.errors is not None:
                q, scale = self.rounded[key][:2]
                dw = w.astype(np.float64) - q * scale.astype(np.float64)[:, None]
                self.errors[key] = float(np.sum((dw @ self.grams[x]) * dw))
        y = self._node("MatMul", [x, self.weight(wname, w, wb)], point + ".mm")
        if bias is not None:
            y = self.act(y, point + ".nobias", bits)
            y = self._node("Add", [y, self.const_act(wname + ".bias", bias)], point + ".add")
        return self.act(y, point, bits)

    def rmsnorm(self, x: str, wt: np.ndarray, wname: str, point: str, bits: int) -> str:
        y = self._node("SimplifiedLayerNormalization", [x, self.const_act(wname, wt)], point + ".norm",
                       axis=-1, epsilon=self.d.eps, stash_type=1)
        return self.act(y, point, bits)

    # ---- the decoder ----------------------------------------------------------------------------------
    def build(self, name: str, calibration_outputs: bool = True) -> GraphSpec:
        """The graph; in the float version every quantization point is also an output unless
        ``calibration_outputs`` is False (a plain float model, e.g. for other quantizers)."""
        from onnx import TensorProto, helper

        d, T, C = self.d, self.T, self.C
        S = C + T
        kv_bits = self.kv_bits
        H, KV, D = d.n_head, d.n_head_kv, d.head_dim
        rep = H // KV
        kv_type = (TensorProto.FLOAT if self.enc is None
                   else TensorProto.UINT16 if kv_bits == 16 else TensorProto.UINT8)
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, d.n_embd]),
                  helper.make_tensor_value_info("cos", TensorProto.FLOAT, [T, D]),
                  helper.make_tensor_value_info("sin", TensorProto.FLOAT, [T, D]),
                  helper.make_tensor_value_info("mask", TensorProto.FLOAT, [T, S])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [T, d.n_vocab])]
        x = self.act("x", "in.x", 16)
        cos = self.reshape(self.act("cos", "in.cos", 16), (T, 1, D), "cos.b")  # (T, 1, D) against (T, heads, D)
        sin = self.reshape(self.act("sin", "in.sin", 16), (T, 1, D), "sin.b")
        mask = self.act("mask", "in.mask", 16)
        w = self.w
        for il in range(d.n_layer):
            p, L = f"blk.{il}.", f"l{il}."
            # QNN takes a per-channel MatMul weight only when its input and output have the same width: a
            # 16-bit projection output (Q/K before their norms, o_proj, down_proj) needs a 16-bit input
            has_qk_norm = p + "attn_q_norm.weight" in w
            qkv_bits = 16 if has_qk_norm else self._bits(L + "attn_in")
            rope_bits = self._bits(L + "rope")
            h = self.rmsnorm(x, w[p + "attn_norm.weight"], p + "attn_norm.weight", L + "attn_norm", qkv_bits)
            heads = {}
            for kind, nh in (("q", H), ("k", KV), ("v", KV)):
                wt = w[p + f"attn_{kind}.weight"]
                b = w.get(p + f"attn_{kind}.bias")
                if kind == "v":
                    heads[kind] = self.linear(h, p + "attn_v.weight", wt, b, L + "v", qkv_bits)
                    continue
                wt, b = _rope_layout(wt, nh, D, d.neox), None if b is None else _rope_layout(b, nh, D, d.neox)
                qk_norm = w.get(p + f"attn_{kind}_norm.weight")
                if kind == "q" and qk_norm is None:
                    wt, b = wt / np.sqrt(D), None if b is None else b / np.sqrt(D)
                pair = []
                for rot in (False, True):
                    wr = _rotate_half_rows(wt, nh, D, d.n_rot) if rot else wt
                    br = None if b is None else (_rotate_half_rows(b, nh, D, d.n_rot) if rot else b)
                    tag = kind + ("_rot" if rot else "")
                    y = self.linear(h, p + f"attn_{tag}.weight", wr, br, L + tag, qkv_bits)
                    y = self.reshape(y, (T, nh, D), L + tag + ".heads")
                    if qk_norm is not None:       # rms is invariant under R when n_rot == head_dim
                        g = _rope_layout(qk_norm, 1, D, d.neox) / (np.sqrt(D) if kind == "q" else 1.0)
                        if rot:
                            g = np.roll(g, D // 2)
                        y = self.rmsnorm(y, g, p + f"attn_{tag}_norm.weight", L + tag + "_normed", rope_bits)
                    pair.append(y)
                yc = self._node("Mul", [pair[0], cos], L + kind + ".c")
                ys = self._node("Mul", [pair[1], sin], L + kind + ".s")
                yc = self.act(yc, L + kind + "_cos", rope_bits)
                ys = self.act(ys, L + kind + "_sin", rope_bits)
                heads[kind] = self._node("Add", [yc, ys], L + kind + ".rope")
            # q (T, H, D) -> (KV, rep, T, D); k, v (T, KV, D) -> (KV, T, D), quantized in the cache encoding
            q = self.act(heads["q"], L + "q_rope", rope_bits)
            q = self._node("Transpose", [self.reshape(q, (T, KV, rep, D), L + "q.g")], L + "q.t", perm=[1, 2, 0, 3])
            k = self._node("Transpose", [heads["k"]], L + "k.t", perm=[1, 0, 2])
            v = self._node("Transpose", [self.reshape(heads["v"], (T, KV, D), L + "v.heads")], L + "v.t",
                           perm=[1, 0, 2])
            k_new = self._cache_out(k, il, "k", kv_type, T, outputs)
            v_new = self._cache_out(v, il, "v", kv_type, T, outputs)
            k_past = self._cache_in(il, "k", kv_type, C, inputs)
            v_past = self._cache_in(il, "v", kv_type, C, inputs)
            k_all = self._node("Concat", [k_past, k_new], L + "k.all", axis=1)           # (KV, S, D)
            v_all = self._node("Concat", [v_past, v_new], L + "v.all", axis=1)
            kt = self.reshape(self._node("Transpose", [k_all], L + "k.tt", perm=[0, 2, 1]), (KV, 1, D, S), L + "k.b")
            vb = self.reshape(v_all, (KV, 1, S, D), L + "v.b")
            sc = self.act(self._node("MatMul", [q, kt], L + "qk.mm"), L + "qk", 16)        # (KV, rep, T, S)
            sc = self.act(self._node("Add", [sc, mask], L + "scores.m"), L + "scores", 16)
            pr = self.act(self._node("Softmax", [sc], L + "probs.s", axis=-1), L + "probs", 16)
            o = self.act(self._node("MatMul", [pr, vb], L + "pv.mm"), L + "pv", 16)        # (KV, rep, T, D)
            o = self.reshape(self._node("Transpose", [o], L + "o.t", perm=[2, 0, 1, 3]), (T, H * D), L + "o")
            o = self.linear(o, p + "attn_output.weight", w[p + "attn_output.weight"], w.get(p + "attn_output.bias"),
                            L + "attn_out", 16)
            x = self.act(self._node("Add", [x, o], L + "resid1.add"), L + "resid1", 16)
            ffn_bits, act_bits = self._bits(L + "ffn_in"), self._bits(L + "ffn_act")
            h = self.rmsnorm(x, w[p + "ffn_norm.weight"], p + "ffn_norm.weight", L + "ffn_norm", ffn_bits)
            g = self.linear(h, p + "ffn_gate.weight", w[p + "ffn_gate.weight"], None, L + "gate", ffn_bits)
            u = self.linear(h, p + "ffn_up.weight", w[p + "ffn_up.weight"], None, L + "up", ffn_bits)
            sg = self.act(self._node("Sigmoid", [g], L + "sig.s"), L + "sig", act_bits)
            sl = self.act(self._node("Mul", [g, sg], L + "silu.m"), L + "silu", act_bits)
            gu = self.act(self._node("Mul", [sl, u], L + "gu.m"), L + "gu", 16)
            dn = self.linear(gu, p + "ffn_down.weight", w[p + "ffn_down.weight"], None, L + "ffn_out", 16)
            x = self.act(self._node("Add", [x, dn], L + "resid2.add"), L + "resid2", 16)
        h = self.rmsnorm(x, w["output_norm.weight"], "output_norm.weight", "out_norm", 16)
        head = "output.weight" if "output.weight" in w else "token_embd.weight"
        y = self.linear(h, head, w[head], None, "logits_q", 16, w_bits=8)
        self._node("Identity", [y], "logits")
        if self.enc is None and calibration_outputs:       # every quantization point is an output
            outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in self.spec.points
                        if not n.startswith("in.") and ".cache_" not in n]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    ],
                              producer_name="edge_rt")
        m.ir_version = 10
        self.spec.model = m
        return self.spec

    def _cache_out(self, t: str, il: int, kind: str, kv_type: int, T: int, outputs: List[Any]) -> str:
        """New cache entries (KV, T, D): quantized at the cache's encoding; the graph output carries the codes."""
        from onnx import helper

        d = self.d
        point = f"l{il}.cache_{kind}"
        outputs.append(helper.make_tensor_value_info(f"new_{kind}.{il}", kv_type, [d.n_head_kv, T, d.head_dim]))
        self.spec.points[point] = self.kv_bits
        if self.enc is None:
            self._node("Identity", [t], f"new_{kind}.{il}")
            return t
        e = self._encoding(point, self.kv_bits)
        s = self._const(point + ".scale", np.float32(e.scale))
        z = self._const(point + ".zero_point", np.asarray(e.zero_point, e.dtype))
        self._node("QuantizeLinear", [t, s, z], f"new_{kind}.{il}")
        return self._node("DequantizeLinear", [f"new_{kind}.{il}", s, z], point + ".new")

    def _cache_in(self, il: int, kind: str, kv_type: int, C: int, inputs: List[Any]) -> str:
        from onnx import helper

        d = self.d
        name = f"past_{kind}.{il}"
        inputs.append(helper.make_tensor_value_info(name, kv_type, [d.n_head_kv, C, d.head_dim]))
        if self.enc is None:
            return name
        point = f"l{il}.cache_{kind}"
        return self._node("DequantizeLinear", [name, point + ".scale", point + ".zero_point"], point + ".past")
