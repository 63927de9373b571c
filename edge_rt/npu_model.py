"""A :class:`~edge_rt.model.Model` whose prompts are prefilled on an NPU (``load(path, npu=...)``).

Generation works as in :class:`Model`, except that the uncached part of a prompt, all but its last
token, goes through the NPU stage (edge_rt/npu_stage.py), which writes its K/V into the engine's cache;
the last token then runs as one CPU decode step, so the first generated token's logits come from the
GGUF's weights on the CPU, only attending to the NPU's K/V. Decode stays on the CPU.

The NPU graph keeps its own quantized cache, which only ever holds prompt positions it computed
itself; a later prompt (a chat turn) reuses the longest prefix both caches share and runs the rest
(including the previous reply, which the CPU decoded) through the NPU again. :meth:`Model.logits`
stays on the CPU.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .model import Model
from .npu_stage import NpuStage, common_prefix


class NpuModel(Model):
    def __init__(self, engine: Any, tokenizer: Any, stage: NpuStage, **kwargs: Any) -> None:
        super().__init__(engine, tokenizer, **kwargs)
        self._stage = stage
        self._npu_tokens: List[int] = []  # the sequence whose positions the NPU graph's cache holds

    @property
    def npu_stage(self) -> NpuStage:
        """The NPU prefill stage (its backend, export folder and :class:`~edge_rt.npu_stage.ChunkTimes`)."""
        return self._stage

    def _eval_chunks(self, tokens: List[int]) -> np.ndarray:
        seq = self._cache + list(tokens)
        start = min(len(self._cache), common_prefix(self._npu_tokens, seq))
        end = len(seq) - 1
        if end <= start:  # nothing before the last token to prefill
            return super()._eval_chunks(tokens)
        eng = self._require_engine("generate")
        self._truncate(start)
        self._npu_tokens = seq[:start]
        try:
            self._stage.prefill(eng, seq, start, end)
        except BaseException:
            self._cache = seq[:start]  # the engine still holds [0, start): commit_kv never ran
            raise
        self._cache = seq[:end]
        self._npu_tokens = seq[:end]
        return self._eval([seq[-1]], all_logits=False)[0]

    def bench(self, n_prompt: int = 128, n_gen: int = 64, seed: int = 0) -> Dict[str, Any]:
        """As :meth:`Model.bench`, with the prefill on the NPU stage (all ``n_prompt`` tokens) and
        ``npu``: the stage's :class:`~edge_rt.npu_stage.ChunkTimes` of this run."""
        before = self._stage.times.as_dict()
        res: Dict[str, Any] = super().bench(n_prompt, n_gen, seed)
        after = self._stage.times.as_dict()
        run = {k: after[k] - before[k] for k in ("chunks", "tokens", "backend_s", "host_s")}
        run["host_ms_per_chunk"] = 1e3 * run["host_s"] / max(run["chunks"], 1)
        run["backend_ms_per_chunk"] = 1e3 * run["backend_s"] / max(run["chunks"], 1)
        res["npu"] = run
        return res

    def _bench_prefill(self, eng: Any, prompt: np.ndarray) -> None:
        self._npu_tokens = []
        self._stage.prefill(eng, prompt.tolist(), 0, len(prompt))

    def info(self) -> Dict[str, Any]:
        """:meth:`Model.info` plus ``npu``: the prefill backend (``backend``, ``device``, ``stand_in``
        and its ``note`` when the backend only stands in for an NPU), the export (``export``,
        ``scheme``, ``chunk``, ``n_cache``), where the last prompt token runs and what drives the stage."""
        d = super().info()
        d["npu"] = self._stage.describe()
        return d

    def memory_report(self) -> Dict[str, Any]:
        """:meth:`Model.memory_report` (its ``npu`` class counts the stage against the budget) plus
        ``npu``: that estimate by part (``weights``, ``embeddings``, ``kv``, ``activations``,
        ``dequantized``: see :func:`~edge_rt.npu_stage.estimate_bytes`)."""
        d = super().memory_report()
        d["npu"] = dict(self._stage.bytes)
        return d
