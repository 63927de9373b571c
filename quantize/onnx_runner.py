"""Run an exported graph (float or QDQ) over token windows, with the host side of its contract.

The host gathers the token embeddings (the graph starts at ``x``), computes the RoPE tables and the
additive mask, and keeps the KV cache: after each call it writes the graph's ``new_k.i`` / ``new_v.i``
(the chunk's entries, already in the cache's encoding) into slots [n_past, n_past + T). A window of n
tokens runs as n / T calls of the T-token graph from an empty cache (n a multiple of T, at most C).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .onnx_graph import Dims, attention_mask, rope_tables


class GraphRunner:
    """``session``: an onnxruntime InferenceSession of a graph built for (n_tokens, n_cache).
    ``cache_dtype``: np.float32 for the float graph, the cache encoding's code type for QDQ;
    ``cache_zero``: per-layer (k, v) code of the value 0 (the content of empty slots)."""

    def __init__(self, session: Any, d: Dims, embeddings: np.ndarray, n_tokens: int, n_cache: int,
                 cache_dtype: Any = np.float32, cache_zero: Optional[List[tuple]] = None) -> None:
        self.s, self.d, self.emb = session, d, embeddings
        self.T, self.C = n_tokens, n_cache
        self.cache_dtype = cache_dtype
        self.cache_zero = cache_zero or [(0, 0)] * d.n_layer
        self.output_names = [o.name for o in session.get_outputs()]

    def _empty_cache(self) -> Dict[str, np.ndarray]:
        d = self.d
        shape = (d.n_head_kv, self.C, d.head_dim)
        cache = {}
        for il, (zk, zv) in enumerate(self.cache_zero):
            cache[f"past_k.{il}"] = np.full(shape, zk, self.cache_dtype)
            cache[f"past_v.{il}"] = np.full(shape, zv, self.cache_dtype)
        return cache

    def window(self, ids: Sequence[int], on_outputs: Optional[Callable[[Dict[str, np.ndarray]], None]] = None,
               logits: bool = True) -> Optional[np.ndarray]:
        """Logits (n, n_vocab) float32 of a window of n tokens (n a multiple of T, n <= C) from an empty
        cache; ``on_outputs`` sees every call's outputs by name (calibration)."""
        ids = np.asarray(ids, np.int64)
        n, T = len(ids), self.T
        if n % T or n > self.C:
            raise ValueError(f"window of {n} tokens: must be a multiple of {T} and at most {self.C}")
        cache = self._empty_cache()
        out = []
        for start in range(0, n, T):
            cos, sin = rope_tables(self.d, np.arange(start, start + T))
            feed = {"x": self.emb[ids[start:start + T]].astype(np.float32), "cos": cos, "sin": sin,
                    "mask": attention_mask(T, self.C, start), **cache}
            res = dict(zip(self.output_names, self.s.run(None, feed)))
            if on_outputs is not None:
                on_outputs(res)
            if logits:
                out.append(res["logits"])
            for il in range(self.d.n_layer):
                cache[f"past_k.{il}"][:, start:start + T] = res[f"new_k.{il}"]
                cache[f"past_v.{il}"][:, start:start + T] = res[f"new_v.{il}"]
        return np.concatenate(out).astype(np.float32) if logits else None


def float_session(model: Any, threads: Optional[int] = None, optimize: bool = True) -> Any:
    """ONNX Runtime CPU session (the calibration engine and the CPU-EP backends of ``eval``).
    ``optimize=False``: no graph rewrites, so each QDQ op runs as DequantizeLinear -> float op ->
    QuantizeLinear, the QDQ format's defining semantics (ORT's default fuses them into integer kernels,
    whose u8 x s8 products can saturate on AVX2 without VNNI)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
