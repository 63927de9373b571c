"""The NPU prefill stage of ``edge_rt.load(path, npu=..., npu_model=EXPORT_DIR)``.

The prompt runs chunk by chunk through the export's prefill graph (``edge-rt export``: T tokens per call,
C cache slots) on an NPU backend (devices/npu.py); after each chunk every layer's new K/V rows are
dequantized from the graph's static cache encoding (``real = scale * (code - zero_point)``), put in the
CPU engine's layout (positions as rows, heads contiguous; llama's K rows back from the graph's NEOX
halves to adjacent pairs) and written into the engine's KV cache (``Engine.write_kv``, then
``commit_kv``); decode continues on the CPU from the GGUF. The graph keeps its own quantized copy of the
cache (its ``past_k``/``past_v`` inputs), so later chunks see what the NPU wrote.

The chunk loop runs in Python: ONNX Runtime's Python API runs the graph, numpy does the host side
(embedding gather, RoPE tables, mask, dequantization) and the core only takes the rows. The C++ core
does not drive ORT: the installed wheels ship no ORT C headers to build against. :class:`ChunkTimes`
measures what that costs per chunk (the host share beside the backend's).

Host contract of the graph (quantize/onnx_graph.py, onnx_runner.py): chunk ``[s, s + T)`` gets RoPE
positions ``s .. s + T - 1`` and the mask of :func:`attention_mask` (past slots ``[0, s)``, the chunk
causal); a short last chunk is padded with its last token, and the padding rows, which no real row can
see (they come after it), are dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import InvalidArgumentError, ModelIOError, UnsupportedArchitectureError


@dataclass
class ChunkTimes:
    """Seconds spent in prefill chunks since the stage was made: ``backend`` (the graph's run) and
    ``host`` (feeds, dequantization, layout, Engine.write_kv): the cost of driving it from Python."""

    chunks: int = 0
    tokens: int = 0
    backend_s: float = 0.0
    host_s: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        n = max(self.chunks, 1)
        return {"chunks": self.chunks, "tokens": self.tokens, "backend_s": self.backend_s, "host_s": self.host_s,
                "backend_ms_per_chunk": 1e3 * self.backend_s / n, "host_ms_per_chunk": 1e3 * self.host_s / n}


def open_export(npu_model: Any) -> Any:
    """The ExportFolder at ``npu_model``; a missing or unreadable one is an error naming it."""
    from .quantize.onnx_export_folder import ExportFolder

    if npu_model is None:
        raise InvalidArgumentError("[npu] npu= needs npu_model=: the folder `edge-rt export MODEL OUT_DIR` wrote")
    path = Path(npu_model).expanduser()
    if not path.is_dir():
        raise ModelIOError(f"[npu] export folder {path} does not exist (make it with `edge-rt export MODEL {path}`)")
    folder = ExportFolder(path)
    if not folder.graph_path("prefill").is_file():
        raise ModelIOError(f"[npu] {folder.graph_path('prefill')} is missing: {path} is an incomplete export")
    return folder


def check_export(folder: Any, header: Any, metadata: Dict[str, Any], n_ctx: int, scheme: Optional[str]) -> None:
    """The export must be of this GGUF's model, at ``scheme`` (when given) and for ``n_ctx`` cache
    slots: a mismatch is an error naming it. The model check compares the architecture and shapes
    (export's ``dims``) and a sample of token-embedding rows (a model of the same shape with other
    weights fails it; a quantized GGUF of the exported master passes)."""
    from .quantize.onnx_export import model_dims

    where = f"[npu] export {folder.path} does not match {header.path}"
    got = folder.manifest["scheme"]["name"]
    if scheme is not None and scheme != got:
        raise InvalidArgumentError(f"{where}: its scheme is {got}, {scheme} was asked for (npu_scheme)")
    if folder.n_cache != n_ctx:
        raise InvalidArgumentError(f"{where}: its graphs hold {folder.n_cache} cache slots but n_ctx is {n_ctx}; "
                                   f"load with n_ctx={folder.n_cache} or export again with --ctx {n_ctx}")
    tensors = {t["name"]: t for t in header.tensors}
    src = SimpleNamespace(path=header.path, arch=metadata.get("general.architecture"), metadata=lambda: metadata,
                          tensors=[SimpleNamespace(name=n) for n in tensors],
                          tensor=lambda n: SimpleNamespace(shape=tuple(reversed(tensors[n]["shape"]))))
    try:
        dims = model_dims(src).__dict__
    except UnsupportedArchitectureError as e:
        raise UnsupportedArchitectureError(f"[npu] {header.path}: no NPU prefill for this model ({e})") from None
    for key in ("arch", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_rot", "n_vocab"):
        if dims[key] != folder.dims.__dict__[key]:
            raise InvalidArgumentError(f"{where}: {key} is {folder.dims.__dict__[key]} in the export, "
                                       f"{dims[key]} in the model (another model)")
    if not folder.dims.neox and folder.dims.n_rot != folder.dims.head_dim:
        raise UnsupportedArchitectureError(f"[npu] {folder.path}: llama-style RoPE on part of the head "
                                           f"(n_rot {folder.dims.n_rot} < head_dim {folder.dims.head_dim})")
    _check_embeddings(folder, header, tensors["token_embd.weight"], where)


def _check_embeddings(folder: Any, header: Any, info: Dict[str, Any], where: str, n_rows: int = 16) -> None:
    """Cosine similarity of sampled token-embedding rows (GGUF vs embeddings.npy) must be high."""
    from . import _core

    n_embd, n_vocab = int(info["shape"][0]), int(info["shape"][1])
    row_bytes = int(info["n_bytes"]) // n_vocab
    rows = np.linspace(0, n_vocab - 1, n_rows).astype(np.int64)
    rotation = folder.rotation
    with open(header.path, "rb") as f:
        for r in rows:
            f.seek(int(info["offset"]) + int(r) * row_bytes)
            ours = np.asarray(_core.dequantize_row(info["type"], f.read(row_bytes), n_embd), np.float64)
            theirs = np.asarray(folder.embeddings[r], np.float64)
            if rotation is not None:          # the export's rows are E Q (residual_rotation.py)
                theirs = theirs @ rotation.T.astype(np.float64)
            denom = np.linalg.norm(ours) * np.linalg.norm(theirs)
            cos = float(ours @ theirs / denom) if denom > 0 else float(np.array_equal(ours, theirs))
            if cos < 0.9:
                raise InvalidArgumentError(f"{where}: token embedding row {r} differs (cosine {cos:.3f}): the export "
                                           "is of another model with the same shapes")


def estimate_bytes(folder: Any) -> Dict[str, int]:
    """What the stage holds, by part (an estimate of the ORT session plus the host's buffers):
    ``weights`` (the prefill graph file, nearly all initializers), ``embeddings`` (the host's gather
    table), ``kv`` (the graph's quantized cache, kept by the host, plus one chunk's new rows),
    ``activations`` (four live float tensors of the widest activation row, for T tokens; the
    attention scores over C + T slots are the widest at long contexts) and ``dequantized`` (the
    largest weight as float32: ONNX Runtime's CPU EP runs each QDQ weight through DequantizeLinear
    before its MatMul; an NPU keeps weights as integers, so there it over-counts)."""
    d, T, C = folder.dims, folder.n_tokens("prefill"), folder.n_cache
    code = 2 if folder.manifest["scheme"]["kv_cache"] == "uint16" else 1
    n_ff = int(folder.manifest["weights"].get("blk.0.ffn_gate.weight", {}).get("shape", [d.n_embd])[0])
    widest = max(d.n_head * (C + T), n_ff, d.n_vocab, 3 * d.n_embd)
    largest = max((int(np.prod(w["shape"])) for w in folder.manifest["weights"].values()), default=0)
    return {"weights": folder.graph_path("prefill").stat().st_size,
            "embeddings": (folder.path / "embeddings.npy").stat().st_size,
            "kv": d.n_layer * 2 * d.n_head_kv * (C + T) * d.head_dim * code,
            "activations": 4 * T * widest * 4, "dequantized": 4 * largest}


class NpuStage:
    """Prefill through ``backend`` (a devices.npu.PrefillBackend) of the export ``folder``."""

    def __init__(self, folder: Any, backend: Any) -> None:
        self.folder, self.backend = folder, backend
        d = folder.dims
        self.d, self.T, self.C = d, folder.n_tokens("prefill"), folder.n_cache
        acts = folder.manifest["activations"]
        self.code_dtype = np.uint16 if acts["l0.cache_k"]["dtype"] == "uint16" else np.uint8
        self.enc = [[(np.float32(acts[f"l{i}.cache_{k}"]["scale"]), acts[f"l{i}.cache_{k}"]["zero_point"])
                     for k in "kv"] for i in range(d.n_layer)]
        shape = (d.n_head_kv, self.C, d.head_dim)
        self.cache = {f"past_{k}.{i}": np.full(shape, self.enc[i][j][1], self.code_dtype)
                      for i in range(d.n_layer) for j, k in enumerate("kv")}
        # llama: the graph's K rows are in NEOX halves (onnx_graph._rope_layout); the engine's in pairs
        self.k_order = None if d.neox else np.argsort(np.concatenate([np.arange(0, d.head_dim, 2),
                                                                      np.arange(1, d.head_dim, 2)]))
        self.times = ChunkTimes()
        self.bytes = estimate_bytes(folder)

    def describe(self) -> Dict[str, Any]:
        b = self.backend
        return {"backend": b.name, "device": b.device, "stand_in": b.stand_in,
                "note": "cpu-ep stands in for an NPU: ONNX Runtime's CPU EP runs the NPU graph on the CPU"
                if b.stand_in else None,
                "export": str(self.folder.path), "scheme": self.folder.manifest["scheme"]["name"],
                "chunk": self.T, "n_cache": self.C,
                "last_token": "cpu (the last prompt token runs as one CPU decode step: its logits come from "
                              "the GGUF's weights)",
                "driver": "python (ONNX Runtime's Python API per chunk, then Engine.write_kv per layer)"}

    def _rows(self, codes: np.ndarray, il: int, kind: int, n: int) -> np.ndarray:
        """(KV, T, D) codes of one layer's new K or V -> (n, KV * D) float32 in the engine's layout."""
        scale, zero = self.enc[il][kind]
        x = (codes[:, :n].astype(np.float32) - np.float32(zero)) * scale
        x = x.transpose(1, 0, 2)
        if kind == 0 and self.k_order is not None:
            x = x[:, :, self.k_order]
        return np.ascontiguousarray(x.reshape(n, -1))

    def prefill(self, engine: Any, ids: Sequence[int], start: int, end: int) -> Optional[np.ndarray]:
        """Runs ``ids[start:end]`` at positions ``start .. end - 1`` (the engine holds ``[0, start)``
        of the same sequence; ``end <= C``) and commits them to the engine. Returns the last row's
        logits from the graph (float32, n_vocab)."""
        from .quantize.onnx_graph import attention_mask, rope_tables

        if not 0 <= start < end <= self.C:
            raise InvalidArgumentError(f"[npu] prefill [{start}, {end}) outside the export's {self.C} cache slots")
        T, d = self.T, self.d
        emb = self.folder.embeddings
        logits = None
        for s in range(start, end, T):
            t0 = time.perf_counter()
            n = min(T, end - s)
            chunk = np.asarray(list(ids[s:s + n]) + [ids[s + n - 1]] * (T - n), np.int64)
            cos, sin = rope_tables(d, np.arange(s, s + T))
            feed = {"x": emb[chunk].astype(np.float32), "cos": cos, "sin": sin,
                    "mask": attention_mask(T, self.C, s), **self.cache}
            t1 = time.perf_counter()
            out = self.backend.run(feed)
            t2 = time.perf_counter()
            for il in range(d.n_layer):
                nk, nv = out[f"new_k.{il}"], out[f"new_v.{il}"]
                self.cache[f"past_k.{il}"][:, s:s + n] = nk[:, :n]
                self.cache[f"past_v.{il}"][:, s:s + n] = nv[:, :n]
                engine.write_kv(il, s, self._rows(nk, il, 0, n), self._rows(nv, il, 1, n))
            logits = out["logits"][n - 1]
            self.times.chunks += 1
            self.times.tokens += n
            self.times.backend_s += t2 - t1
            self.times.host_s += (t1 - t0) + (time.perf_counter() - t2)
        engine.commit_kv(end)
        return logits


def common_prefix(a: List[int], b: List[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
