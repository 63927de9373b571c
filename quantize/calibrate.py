"""Calibration: run the full-precision model on text and record what each weight matrix sees.

``ActivationStatsObserver``, installed on the engine with ``Model.observe`` (edge_rt/observer.py),
accumulates, per weight tensor, the per-input-column sum of squared activations fed to its matmul and the number of
rows (tokens) seen; for a 3-D expert tensor (``blk.N.ffn_{gate,up,down}_exps.weight``) both are per
expert, so the counts are the expert's usage. From them:

* ``importance(name)``: mean squared activation per input column, ``(n_cols,)`` or
  ``(n_expert, n_cols)`` -- the weights of an importance-weighted quantization error (llama.cpp's
  imatrix is the same statistic);
* ``expert_usage(name)``: tokens routed to each expert;
* ``hessian(name[, expert])``: with ``gram=True``, the mean of ``x x^T`` over the tokens (the input
  second-moment matrix, ``(n_cols, n_cols)``) that GPTQ rounding needs (quantize/gptq.py). The engine
  records only the diagonal, so the full matrices come from the NumPy forward pass
  (reference_forward.py) over the same windows; matrices that share an input (q/k/v, gate/up) share
  one, and an expert's is blended with its layer's over all experts (``EXPERT_PRIOR_TOKENS``) so
  that rarely used experts are not fitted to a handful of tokens.

Stats are saved as ``.npz`` (``sum_sq/<tensor>``, ``count/<tensor>``, ``gram/<input>``,
``gram_count/<input>``, plus a JSON ``meta`` record that names the model and a hash of the text and
maps tensors to their input's matrix) so a later quantization reuses them without running the model.

The default calibration text (``quantize/data/calibration.txt``) is held-out code of the embedded
models' corpus (see tools/make_quant_texts.py), disjoint from the quantization benchmark's text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic_io import atomic_write
from ..errors import InvalidArgumentError, ModelFormatError
from ..observer import EvalObserver

DEFAULT_CALIBRATION_TEXT = Path(__file__).resolve().parent / "data" / "calibration.txt"
#: Tokens of calibration text used by default (16 windows of 256).
DEFAULT_CALIB_TOKENS = 4096
#: Weight of the layer-wide input matrix in an expert's, in tokens: H_e = (G_e + P*G/n) / (n_e + P).
EXPERT_PRIOR_TOKENS = 64


def read_text(path: Optional[Path]) -> str:
    """The calibration text (default: the packaged held-out sample). Empty text is an error."""
    p = Path(path) if path is not None else DEFAULT_CALIBRATION_TEXT
    try:
        text = p.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise InvalidArgumentError(f"[calibrate] calibration text not found: {p}") from None
    if not text.strip():
        raise InvalidArgumentError(f"[calibrate] calibration text {p} is empty: give a file with some text "
                                   "the model should handle (e.g. a few KB of code or prose)")
    return text


def token_windows(ids: Sequence[int], n_ctx: int, max_tokens: Optional[int] = None) -> List[List[int]]:
    """Consecutive non-overlapping windows of ``n_ctx`` tokens (the last may be shorter, >= 2 tokens),
    at most ``max_tokens`` tokens in all."""
    ids = list(ids)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    out = [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx)]
    return [w for w in out if len(w) >= 2]


@dataclass
class CalibStats:
    """Per-tensor activation statistics: name -> (sum_sq float64, count int64); optionally the input
    matrices: input key -> (sum of x x^T float64 (n, n) or (n_expert, n, n), count), and tensor name ->
    input key in ``gram_alias``."""

    sums: Dict[str, Tuple[np.ndarray, np.ndarray]]
    meta: Dict[str, Any] = field(default_factory=dict)
    gram: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    gram_alias: Dict[str, str] = field(default_factory=dict)

    def gptq_factor(self, name: str, expert: Optional[int] = None) -> Optional[np.ndarray]:
        """``gptq.inverse_cholesky(hessian(name, expert))``, cached for the tensor last asked about
        (the sensitivity search encodes one tensor at every candidate type in a row)."""
        cache = self.__dict__.setdefault("_factor_cache", {})
        key = (self.gram_alias.get(name, name), expert)
        if key not in cache:
            if cache and next(iter(cache))[0] != key[0]:
                cache.clear()
            h = self.hessian(name, expert)
            from .gptq import inverse_cholesky

            cache[key] = None if h is None else inverse_cholesky(h)
        return cache[key]

    def has_hessian(self, name: str) -> bool:
        return self.gram_alias.get(name, name) in self.gram

    def hessian(self, name: str, expert: Optional[int] = None) -> Optional[np.ndarray]:
        """Mean x x^T of the input of ``name`` (of ``expert`` for a 3-D expert tensor), float64, or None
        when not recorded or never activated."""
        key = self.gram_alias.get(name, name)
        if key not in self.gram:
            return None
        g, c = self.gram[key]
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if g.ndim == 2:
            if c[0] <= 0:
                return None
            h, n = g / c[0], float(c[0])
        else:
            total = float(c.sum())
            if total <= 0:
                return None
            e = 0 if expert is None else int(expert)
            h = (g[e] + EXPERT_PRIOR_TOKENS * (g.sum(axis=0) / total)) / (c[e] + EXPERT_PRIOR_TOKENS)
            n = float(c[e]) + EXPERT_PRIOR_TOKENS
        # Shrink toward the diagonal by n_cols / (n_cols + n): with fewer tokens than columns the
        # off-diagonal part is mostly noise (rank-deficient), and GPTQ would push rounding error into
        # the directions calibration never saw; the diagonal alone is importance-weighted rounding.
        alpha = h.shape[0] / (h.shape[0] + n)
        out = (1.0 - alpha) * h
        out[np.diag_indices_from(out)] = np.diag(h)
        return out

    def importance(self, name: str) -> Optional[np.ndarray]:
        """Mean squared input activation per column (float32), or None when not recorded. Columns of
        an expert that never saw a token get the layer's average over experts (no 0/0)."""
        if name not in self.sums:
            return None
        s, c = self.sums[name]
        s = np.asarray(s, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if s.ndim == 1:
            if c.reshape(-1)[0] <= 0:
                return None
            return (s / c.reshape(-1)[0]).astype(np.float32)
        used = c > 0
        out = np.zeros_like(s)
        out[used] = s[used] / c[used, None]
        if not used.all():
            fill = s[used].sum(axis=0) / max(c[used].sum(), 1.0) if used.any() else np.ones(s.shape[1])
            out[~used] = fill
        return out.astype(np.float32)

    def expert_usage(self, name: str) -> Optional[np.ndarray]:
        if name not in self.sums:
            return None
        s, c = self.sums[name]
        return np.asarray(c, dtype=np.int64) if np.ndim(s) == 2 else None

    def save(self, path: Path) -> Path:
        path = Path(path)
        arrays: Dict[str, np.ndarray] = {}
        for name, (s, c) in self.sums.items():
            arrays[f"sum_sq/{name}"] = np.asarray(s, dtype=np.float64)
            arrays[f"count/{name}"] = np.asarray(c, dtype=np.int64)
        for key, (g, c) in self.gram.items():
            arrays[f"gram/{key}"] = np.asarray(g, dtype=np.float64)
            arrays[f"gram_count/{key}"] = np.asarray(c, dtype=np.int64)
        arrays["meta"] = np.array(json.dumps(dict(self.meta, gram_alias=self.gram_alias)))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no .npz suffix
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> "CalibStats":
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InvalidArgumentError(f"[calibrate] calibration stats not found: {path}") from None
        except Exception as e:
            raise ModelFormatError(f"[calibrate] {path} is not a calibration .npz: {e}") from e

        def pairs(values: str, counts: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
            out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
            for k in z.files:
                if k.startswith(values):
                    name = k[len(values):]
                    if counts + name not in z.files:
                        raise ModelFormatError(f"[calibrate] {path}: '{counts}{name}' is missing")
                    out[name] = (z[k], z[counts + name])
            return out

        sums, gram = pairs("sum_sq/", "count/"), pairs("gram/", "gram_count/")
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        alias = meta.pop("gram_alias", {}) or {}
        return cls(sums, meta, gram, {str(a): str(b) for a, b in alias.items()})

    def check_model(self, shapes: Dict[str, Tuple[int, ...]]) -> None:
        """Raise when the stats do not fit the model's tensors (wrong model)."""
        for name, (s, _) in self.sums.items():
            if name in shapes:
                shp = shapes[name]
                want = (shp[0], shp[-1]) if len(shp) == 3 else (shp[-1],)
                if tuple(np.shape(s)) != want:
                    raise ModelFormatError(
                        f"[calibrate] stats for tensor '{name}' have shape {tuple(np.shape(s))}, the model needs "
                        f"{want}: were they recorded on another model?")
        for name, key in self.gram_alias.items():
            if name in shapes and key in self.gram:
                n = shapes[name][-1]
                if np.shape(self.gram[key][0])[-2:] != (n, n):
                    raise ModelFormatError(
                        f"[calibrate] input matrix of tensor '{name}' has shape {np.shape(self.gram[key][0])}, "
                        f"the model needs ({n}, {n}): were they recorded on another model?")


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:16]


class ActivationStatsObserver(EvalObserver):
    """Calibration statistics as an evaluation observer: per weight tensor, the per-input-column sum
    of squared matmul inputs (float64) and the rows seen::

        weight name -> (sum_sq (ne0,), count (1,))                    2-D weights
        weight name -> (sum_sq (n_expert, ne0), count (n_expert,))    3-D expert tensors (``*_exps.*``)

    Only evaluations that complete count: rows observed during one that fails (I/O error, Ctrl-C) are
    dropped at ``end(False)``, so retrying it does not count them twice."""

    kinds = frozenset({"matmul_input"})

    def __init__(self, n_expert: int = 0) -> None:
        self.n_expert = int(n_expert)
        self._sums: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self._pending: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def begin(self, n_past: int, n_tokens: int) -> None:
        self._pending = {}

    def observe(self, kind: str, layer: int, weight: Optional[str], expert: int, values: np.ndarray) -> None:
        per_expert = "_exps." in str(weight)
        rows = 1 if not per_expert else self.n_expert
        if per_expert and not 0 <= expert < rows:
            raise InvalidArgumentError(f"[calibrate] expert {expert} of '{weight}' outside [0, {rows}): "
                                       "construct the observer with the model's n_expert")
        entry = self._pending.get(weight)
        if entry is None:
            entry = self._pending[weight] = (np.zeros((rows, values.shape[1])), np.zeros(rows, np.int64))
        s, c = entry
        s[expert] += np.square(values, dtype=np.float64).sum(axis=0)
        c[expert] += values.shape[0]

    def end(self, completed: bool) -> None:
        if completed:
            for name, (s, c) in self._pending.items():
                if name not in self._sums:
                    self._sums[name] = (s, c)
                    continue
                total_s, total_c = self._sums[name]
                total_s += s
                total_c += c
        self._pending = {}

    def stats(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """What completed evaluations recorded (copies), in the layout above."""
        return {name: ((s.copy() if "_exps." in name else s[0].copy()), c.copy())
                for name, (s, c) in self._sums.items()}


def collect(model: Any, windows: List[List[int]],
            progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Run ``model.logits`` on each window with an :class:`ActivationStatsObserver` installed
    (``model.observe``); returns its stats. ``model`` is an ``edge_rt.Model`` or a
    ``reference_forward.NumpyModel``."""
    if not windows:
        raise InvalidArgumentError("[calibrate] the calibration text gives no tokens to run")
    with model.observe(ActivationStatsObserver(model.info().get("n_expert", 0))) as observer:
        _run_windows(model, windows, progress)
    return observer.stats()


def gram_bytes(src: Any) -> int:
    """Upper estimate of the memory GPTQ needs for input matrices (float64, one per distinct input: q/k/v
    and gate/up counted once), plus the inverse factors ``gptq_factor`` caches for one tensor (one per
    expert), to decide whether GPTQ calibration fits."""
    from .rules import is_quantizable

    seen = set()
    total = largest = 0
    for t in src.tensors:
        if not is_quantizable(t.name, t.shape) or t.name == "token_embd.weight":
            continue
        key = t.name.replace("attn_k.", "attn_q.").replace("attn_v.", "attn_q.").replace("_up", "_gate")
        if key in seen:
            continue
        seen.add(key)
        n = t.shape[-1]
        size = 8 * n * n * (t.shape[0] if len(t.shape) == 3 else 1)
        total += size
        largest = max(largest, size)
    return total + largest


def _run_windows(model: Any, windows: List[List[int]], progress: Optional[Callable[[int, int], None]]) -> None:
    for i, w in enumerate(windows):
        model.logits(w)
        if progress is not None:
            progress(i + 1, len(windows))


def collect_gram(model: Any, windows: List[List[int]],
                 progress: Optional[Callable[[int, int], None]] = None
                 ) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], Dict[str, str]]:
    """Run a NumpyModel on each window recording the input matrices; returns (gram, alias)."""
    model.record_gram(True)
    try:
        _run_windows(model, windows, progress)
        return model.gram()
    finally:
        model.record_gram(False)


def calibrate(gguf_path: Path, text: str, *, src: Any = None, threads: Optional[int] = None,
              max_tokens: int = DEFAULT_CALIB_TOKENS, gram: bool = False,
              progress: Optional[Callable[[int, int], None]] = None) -> CalibStats:
    """Record stats by running ``gguf_path`` on ``text`` (tokenized with its vocabulary).

    Runs on edge_rt, dense and MoE alike: the engine runs every architecture the toolchain reads
    (llama, qwen2, qwen3, qwen2moe, qwen3moe), so an engine that cannot load the master is an error to
    report, not a reason to calibrate on something else. ``meta['runner']`` ('edge_rt') says what
    produced the stats and is saved with them.

    ``gram=True`` also records the input matrices for GPTQ with the NumPy forward pass over the same
    windows (a second pass; the NumPy model holds the weights as float32). When that and the matrices
    would not fit in the available memory, they are skipped and ``meta['gram_skipped']`` says why."""
    from ..loading import load
    from .gguf_io import read_gguf
    from .reference_forward import NumpyModel

    runner = "edge_rt"
    model: Any = load(gguf_path, threads=threads)
    passes = 2 if gram else 1
    step = (lambda d, n: progress(d, n * passes)) if progress else None
    with model as m:
        ids = m.tokenize(text, add_special=False)
        if not ids:
            raise InvalidArgumentError("[calibrate] the calibration text tokenizes to nothing")
        windows = token_windows(ids, m.n_ctx, max_tokens)
        sums = collect(m, windows, step)
    n = sum(len(w) for w in windows)
    meta: Dict[str, Any] = {"model": str(gguf_path), "text_sha256_16": text_digest(text), "n_tokens": n,
                            "n_windows": len(windows), "runner": runner}
    stats = CalibStats(sums, meta)
    if gram:
        src = src if src is not None else read_gguf(gguf_path)
        need = gram_bytes(src) + 4 * src.n_params
        avail = _available_memory()
        if avail is not None and need > 0.8 * avail:
            meta["gram_skipped"] = (f"the input matrices and float32 weights need {need / 2**30:.1f} GiB, "
                                    f"{avail / 2**30:.1f} GiB are available")
        else:
            with NumpyModel(src) as nm:
                after = (lambda d, k: progress(len(windows) + d, 2 * len(windows))) if progress else None
                stats.gram, stats.gram_alias = collect_gram(nm, windows, after)
            meta["gram_runner"] = "numpy"
    return stats


def _available_memory() -> Optional[int]:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform: do not block calibration on it
        return None
