"""A NumPy forward pass of the llama-family graph: the engine's independent check, and GPTQ's input matrices.

It is the reference the engine's calibration statistics and routing are checked against
(tests/test_quantize_pipeline.py). It exposes the calibration side of the ``edge_rt.Model`` contract
(``tokenize``, ``logits``, ``n_ctx``, ``info``, ``observe``, ``close``): an observer installed with
``observe`` (edge_rt/observer.py) sees its ``matmul_input`` and ``router_probs`` values as it would
the engine's, one pass per ``logits`` call.

It also records what the engine does not: the full input matrices ``sum x x^T`` for GPTQ
(``record_gram`` / ``gram``), one per distinct input (the matrices fed the same activations, q/k/v
or gate/up, share the first one's: ``alias`` maps every weight to it), per expert for expert tensors.

Numerics follow llama.cpp's ``llama``/``qwen2``/``qwen3`` (+ ``qwen2moe``/``qwen3moe``) graphs in
float32: RMSNorm, RoPE (adjacent pairs for llama, NEOX halves for Qwen), GQA causal attention, SwiGLU;
MoE: softmax router -> top-k -> weights renormalised (llama/Mixtral and qwen3moe; not qwen2moe), and
qwen2moe's sigmoid-gated shared expert. Weights are dequantized to float32 once at load (fine for the
small-to-medium masters calibration runs on; it is not an inference engine).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UnsupportedArchitectureError
from .gguf_io import SourceModel


class NumpyModel:
    def __init__(self, src: SourceModel, n_ctx: Optional[int] = None) -> None:
        md = src.metadata()
        a = src.arch
        if a not in ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe"):
            raise UnsupportedArchitectureError(f"[calibrate] no NumPy forward pass for architecture '{a}'")
        self.arch = a
        g = lambda k, d=None: md.get(f"{a}.{k}", d)  # noqa: E731
        self.n_embd = int(g("embedding_length"))
        self.n_layer = int(g("block_count"))
        self.n_head = int(g("attention.head_count"))
        self.n_head_kv = int(g("attention.head_count_kv", self.n_head))
        self.head_dim = int(g("attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.eps = float(g("attention.layer_norm_rms_epsilon", 1e-5))
        self.theta = float(g("rope.freq_base", 10000.0))
        scale_type = g("rope.scaling.type")
        self.rope_scale = 1.0 / float(g("rope.scaling.factor", 1.0)) if scale_type == "linear" else 1.0
        self.n_expert = int(g("expert_count", 0) or 0)
        self.n_expert_used = int(g("expert_used_count", 0) or 0)
        self.norm_topk = a in ("llama", "qwen3moe")
        self.neox = a != "llama"
        ctx_train = int(g("context_length", 2048))
        self.n_ctx = int(n_ctx or min(ctx_train, 2048))
        self.w: Dict[str, np.ndarray] = {t.name: t.load() for t in src.tensors}
        self.n_vocab = self.w["token_embd.weight"].shape[0]
        from ..tokenizer import Tokenizer

        self._tok = Tokenizer.from_metadata(md)
        self._observer: Any = None
        self._gram_on = False
        self._gram: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self._gram_alias: Dict[str, str] = {}
        self._gram_last: Optional[Tuple[np.ndarray, str]] = None

    # ---- Model contract (calibration side) -----------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        return self._tok.tokenize(text, add_special=add_special)

    def info(self) -> Dict[str, Any]:
        return {"arch": self.arch, "n_layer": self.n_layer, "n_embd": self.n_embd, "n_expert": self.n_expert,
                "n_expert_used": self.n_expert_used}

    @contextmanager
    def observe(self, observer: Any) -> Iterator[Any]:
        """As ``edge_rt.Model.observe``: ``observer`` sees the values of its ``kinds`` that this
        forward pass has (``matmul_input``, ``router_probs``) inside the ``with`` block."""
        self._observer = observer
        try:
            yield observer
        finally:
            self._observer = None

    def record_gram(self, enabled: bool) -> None:
        if enabled:
            self._gram, self._gram_alias = {}, {}
        self._gram_on = bool(enabled)
        self._gram_last = None

    def gram(self) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], Dict[str, str]]:
        """(input key -> (sum x x^T float64 (n, n) or (n_expert, n, n), count int64), weight -> key)."""
        return {k: (g.copy(), c.copy()) for k, (g, c) in self._gram.items()}, dict(self._gram_alias)

    def close(self) -> None:
        self.w = {}

    def __enter__(self) -> "NumpyModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- forward ------------------------------------------------------------------------------------
    def _record(self, name: str, x: np.ndarray, expert: Optional[int] = None) -> None:
        if self._gram_on:
            self._record_gram(name, x, expert)
        obs = self._observer
        if obs is not None and "matmul_input" in obs.kinds:
            layer = int(name.split(".")[1]) if name.startswith("blk.") else self.n_layer
            obs.observe("matmul_input", layer, name, 0 if expert is None else expert, x.astype(np.float32))

    def _record_gram(self, name: str, x: np.ndarray, expert: Optional[int]) -> None:
        last = self._gram_last
        if last is not None and last[0] is x:          # same activations as the previous matmul
            self._gram_alias.setdefault(name, last[1])
            return
        key = self._gram_alias.setdefault(name, name)
        self._gram_last = (x, key)
        x64 = x.astype(np.float64)
        g = x64.T @ x64
        n = x.shape[1]
        if expert is None:
            acc, c = self._gram.setdefault(key, (np.zeros((n, n)), np.zeros(1, np.int64)))
            acc += g
            c += x.shape[0]
        else:
            acc, c = self._gram.setdefault(key, (np.zeros((self.n_expert, n, n)), np.zeros(self.n_expert, np.int64)))
            acc[expert] += g
            c[expert] += x.shape[0]

    def _mm(self, name: str, x: np.ndarray) -> np.ndarray:
        self._record(name, x)
        y = x @ self.w[name].T
        b = self.w.get(name[:-len("weight")] + "bias")
        return y + b if b is not None else y

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # x: (T, H, D)
        half = self.n_rot // 2
        inv = self.theta ** (-np.arange(half, dtype=np.float64) * 2 / self.n_rot)
        ang = (pos[:, None].astype(np.float64) * self.rope_scale) * inv[None, :]
        cos, sin = np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :]
        out = x.copy()
        if self.neox:
            a, b = x[..., :half], x[..., half:self.n_rot]
            out[..., :half] = a * cos - b * sin
            out[..., half:self.n_rot] = a * sin + b * cos
        else:
            a, b = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2] = a * cos - b * sin
            out[..., 1:self.n_rot:2] = a * sin + b * cos
        return out

    def _ffn(self, p: str, h: np.ndarray) -> np.ndarray:
        silu = lambda z: z / (1.0 + np.exp(-z))  # noqa: E731
        if p + "ffn_gate_inp.weight" not in self.w:
            gated = silu(self._mm(p + "ffn_gate.weight", h)) * self._mm(p + "ffn_up.weight", h)
            return self._mm(p + "ffn_down.weight", gated)
        logits = self._mm(p + "ffn_gate_inp.weight", h)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        if self._observer is not None and "router_probs" in self._observer.kinds:
            self._observer.observe("router_probs", int(p.split(".")[1]), None, 0, probs.astype(np.float32))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :self.n_expert_used]
        wts = np.take_along_axis(probs, top, axis=1)
        if self.norm_topk:
            wts = wts / wts.sum(axis=1, keepdims=True)
        out = np.zeros_like(h)
        G, U, D = (self.w[p + f"ffn_{k}_exps.weight"] for k in ("gate", "up", "down"))
        for e in range(self.n_expert):
            rows, slot = np.nonzero(top == e)
            if rows.size == 0:
                continue
            xe = h[rows]
            self._record(p + "ffn_gate_exps.weight", xe, e)
            self._record(p + "ffn_up_exps.weight", xe, e)
            a = silu(xe @ G[e].T) * (xe @ U[e].T)
            self._record(p + "ffn_down_exps.weight", a, e)
            out[rows] += (a @ D[e].T) * wts[rows, slot][:, None]
        if p + "ffn_gate_shexp.weight" in self.w:
            sh = self._mm(p + "ffn_down_shexp.weight",
                          silu(self._mm(p + "ffn_gate_shexp.weight", h)) * self._mm(p + "ffn_up_shexp.weight", h))
            gi = self.w.get(p + "ffn_gate_inp_shexp.weight")
            if gi is not None:
                sh = sh * (1.0 / (1.0 + np.exp(-(h @ gi.reshape(-1, 1)))))
            out += sh
        return out

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """(T, n_vocab) float32 logits of ``ids`` from an empty context (one pass, no cache)."""
        ids = np.asarray(ids, dtype=np.int64)
        obs = self._observer
        if obs is not None:
            obs.begin(0, len(ids))
        try:
            out = self._forward(ids)
        except BaseException:
            if obs is not None:
                obs.end(False)
            raise
        if obs is not None:
            obs.end(True)
        return out

    def prompt_kv(self, ids: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Every layer's K (after RoPE, in the architecture's pair order) and V of ``ids`` from an empty
        context, each (T, n_head_kv * head_dim) float32: the float cache a prefill would hand to decode."""
        kv: List[Tuple[np.ndarray, np.ndarray]] = []
        self._forward(np.asarray(ids, dtype=np.int64), kv)
        return kv

    def _forward(self, ids: np.ndarray, kv_out: Optional[List[Tuple[np.ndarray, np.ndarray]]] = None) -> np.ndarray:
        T = len(ids)
        H, KV, D = self.n_head, self.n_head_kv, self.head_dim
        x = self.w["token_embd.weight"][ids].astype(np.float32)
        pos = np.arange(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = self._norm(x, self.w[p + "attn_norm.weight"])
            q = self._mm(p + "attn_q.weight", h).reshape(T, H, D)
            k = self._mm(p + "attn_k.weight", h).reshape(T, KV, D)
            v = self._mm(p + "attn_v.weight", h).reshape(T, KV, D)
            if p + "attn_q_norm.weight" in self.w:
                q = self._norm(q, self.w[p + "attn_q_norm.weight"])
                k = self._norm(k, self.w[p + "attn_k_norm.weight"])
            q, k = self._rope(q, pos), self._rope(k, pos)
            if kv_out is not None:
                kv_out.append((k.reshape(T, KV * D).astype(np.float32), v.reshape(T, KV * D).astype(np.float32)))
            rep = H // KV
            k = np.repeat(k, rep, axis=1)
            v = np.repeat(v, rep, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / np.float32(np.sqrt(D)) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(T, H * D)
            x = x + self._mm(p + "attn_output.weight", o)
            if self._observer is not None and "ffn_input" in self._observer.kinds:
                self._observer.observe("ffn_input", il, None, 0, x.astype(np.float32))
            h = self._norm(x, self.w[p + "ffn_norm.weight"])
            x = x + self._ffn(p, h)
        h = self._norm(x, self.w["output_norm.weight"])
        name = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        if name == "output.weight":
            return self._mm(name, h).astype(np.float32)
        return (h @ self.w[name].T).astype(np.float32)
