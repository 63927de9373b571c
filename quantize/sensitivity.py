"""Per-tensor sensitivity: how much the output distribution moves when ONE tensor is quantized.

The quantity the search needs is ``dKL(t, T)``: the mean KL divergence of the model's next-token
distribution against the full-precision reference when tensor ``t`` alone is stored as type ``T``
(everything else at full precision). Measuring it means running the model once per (tensor, type)
pair. Four methods, trading cost for accuracy:

* ``measure`` -- run every pair (tensors x candidate types model runs);
* ``calibrated`` (default) -- run each tensor once, at the coarsest candidate ``T0``, and scale to the
  other types by an importance-weighted weight error::

      dKL(t, T) ~= dKL(t, T0) * E(t, T) / E(t, T0),
      E(t, T) = sum_rows D H D^T,  D = deq(q_T(W)) - W   (per expert, weighted by its usage)

  ``H`` is the calibration's input second-moment matrix (its diagonal, the mean squared input per
  column, when only that was recorded), so ``E`` is the expected squared error of the matmul's
  output per token; for small perturbations the KL is quadratic in that error, hence linear in
  ``E``. The full matrix matters with GPTQ rounding, which lowers ``D H D^T`` while the diagonal
  part alone can grow. One model run per tensor instead of one per pair;
* ``fitted`` -- ``calibrated``, then the ``FIT_TENSORS`` tensors with the largest measured dKL(t, T0)
  are measured at every other candidate type too, and each type's prediction for the other tensors
  is multiplied by that type's sum measured / sum predicted over them (the fitted tensors keep their
  measured values). The weight-error ratio underestimates the types with the smallest weight error
  (Q5_K, Q6_K, Q8_0 on the trained models: part of the measured dKL does not shrink with the weight
  error; activation rounding in the engine's dot products is a likely cause, not isolated); a
  per-type factor from a few tensors removes that bias on average (benchmarks/RESULTS.md). Costs
  ``FIT_TENSORS x (candidates - 1)`` more model runs;
* ``proxy`` -- ``E(t, T)`` alone, no model run (cannot compare a head with an attention matrix, so it
  serves as the baseline the calibrated method is validated against).

The benchmark (benchmarks/quant_quality.py) compares the calibrated and fitted predictions with the
measurement of every (tensor, type) pair on both trained models and reports the mixes each method
picks (benchmarks/RESULTS.md).

Model runs go through a :class:`~edge_rt.quantize.evaluate.LogitsRunner` on a GGUF written with the
one tensor swapped; the reference log-probs are computed once.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import EdgeRTError, InvalidArgumentError
from .block_types import QUANTIZED_TYPES
from .calibrate import CalibStats
from .codec import decode, encode, supports_gptq, tensor_bytes
from .gguf_io import SourceModel, SourceTensor, write_gguf
from .rules import FILE_TYPE, fits, float_type, is_quantizable

METHODS = ("calibrated", "fitted", "measure", "proxy")
#: Tensors the ``fitted`` method measures at every candidate type to fit the per-type factors.
FIT_TENSORS = 4
#: Candidate types for the search: the quantized types the engine computes (Q3_K, 3.4375 bits per
#: weight, lets insensitive tensors go below 4.5).
DEFAULT_CANDIDATES = QUANTIZED_TYPES


@dataclass
class Sensitivity:
    """Per tensor: bytes and predicted dKL for each candidate type (and what was measured)."""

    method: str
    candidates: Tuple[str, ...]
    bytes: Dict[str, Dict[str, int]] = field(default_factory=dict)         # tensor -> type -> bytes
    dkl: Dict[str, Dict[str, float]] = field(default_factory=dict)         # tensor -> type -> predicted dKL
    measured: Dict[str, Dict[str, float]] = field(default_factory=dict)    # tensor -> type -> measured dKL
    werr: Dict[str, Dict[str, float]] = field(default_factory=dict)        # tensor -> type -> E(t, T)
    n_params: Dict[str, int] = field(default_factory=dict)
    base_type: Dict[str, str] = field(default_factory=dict)                # full-precision type of each tensor
    type_factor: Dict[str, float] = field(default_factory=dict)            # ``fitted``: type -> factor applied

    def to_json(self) -> dict:
        return {"method": self.method, "candidates": list(self.candidates), "bytes": self.bytes, "dkl": self.dkl,
                "measured": self.measured, "weighted_error": self.werr, "n_params": self.n_params,
                "base_type": self.base_type, "type_factor": self.type_factor}

    @classmethod
    def from_json(cls, d: dict) -> "Sensitivity":
        return cls(d["method"], tuple(d["candidates"]), d["bytes"], d["dkl"], d.get("measured", {}),
                   d.get("weighted_error", {}), d.get("n_params", {}), d.get("base_type", {}),
                   d.get("type_factor", {}))


def importance_of(stats: Optional[CalibStats], t: SourceTensor) -> Optional[np.ndarray]:
    return stats.importance(t.name) if stats is not None else None


def encode_tensor(t: SourceTensor, type_name: str, stats: Optional[CalibStats],
                  data: Optional[np.ndarray] = None) -> np.ndarray:
    """Encode a whole tensor (3-D expert tensors one expert at a time, each with its own importance).
    Quantizer errors (e.g. a value that overflows F16) become InvalidArgumentError naming the tensor."""
    try:
        return _encode_tensor(t, type_name, stats, data)
    except EdgeRTError:
        raise
    except (ValueError, OverflowError) as e:
        raise InvalidArgumentError(f"[quantize] tensor '{t.name}' as {type_name}: {' '.join(str(e).split())}") from e


def _encode_tensor(t: SourceTensor, type_name: str, stats: Optional[CalibStats],
                   data: Optional[np.ndarray] = None) -> np.ndarray:
    x = t.load() if data is None else data
    imp = importance_of(stats, t)
    if x.ndim == 1:
        return encode(x.reshape(1, -1), type_name).reshape(-1) if type_name in ("F32", "F16") else \
            encode(x.reshape(1, -1), type_name)
    gptq = stats is not None and stats.has_hessian(t.name) and supports_gptq(type_name)
    if x.ndim == 3:
        parts = [encode(x[e], type_name, None if imp is None else (imp[e] if imp.ndim == 2 else imp),
                        stats.gptq_factor(t.name, e) if gptq else None)
                 for e in range(x.shape[0])]
        return np.stack(parts)
    return encode(x, type_name, imp, stats.gptq_factor(t.name) if gptq else None)


def weighted_error(t: SourceTensor, x: np.ndarray, type_name: str, stats: Optional[CalibStats],
                   raw: Optional[np.ndarray] = None) -> float:
    """E(t, T): the expected squared error of the matmul's output per token, summed over output rows
    (experts weighted by usage): ``sum D H D^T`` with ``H`` the input matrix when calibration recorded
    it, else its diagonal (the importance), else the plain squared weight error."""
    if raw is None:
        raw = encode_tensor(t, type_name, stats, x)
    imp = importance_of(stats, t)
    full = stats is not None and stats.has_hessian(t.name)

    def err(d: np.ndarray, expert: Optional[int]) -> float:
        d = d.astype(np.float64)
        h = stats.hessian(t.name, expert) if full else None
        if h is not None:
            return float(np.einsum("ij,ij->", d @ h, d))
        im = np.ones(x.shape[-1]) if imp is None else (imp if imp.ndim == 1 else imp[expert])
        return float((d ** 2 @ im).sum())

    if x.ndim == 3:
        usage = stats.expert_usage(t.name) if stats is not None else None
        w_e = (usage / max(usage.sum(), 1)) * x.shape[0] if usage is not None else np.ones(x.shape[0])
        return sum(float(w_e[e]) * err(decode(raw[e], type_name, x.shape[-1]) - x[e], e)
                   for e in range(x.shape[0]))
    return err(decode(raw, type_name, x.shape[-1]) - x, None)


def searchable(src: SourceModel) -> List[SourceTensor]:
    """Tensors whose type the search chooses (the quantizable matrices)."""
    return [t for t in src.tensors if is_quantizable(t.name, t.shape)]


def base_types(src: SourceModel) -> Dict[str, str]:
    """Full-precision type of every tensor (what the reference and the fixed tensors use)."""
    out = {}
    for t in src.tensors:
        if len(t.shape) < 2 or not is_quantizable(t.name, t.shape):
            out[t.name] = "F32"
        else:
            out[t.name] = float_type(t.src_type)
    return out


class SwapEvaluator:
    """dKL of the model with a few tensors replaced by given encodings, against the reference."""

    def __init__(self, src: SourceModel, windows: List[List[int]], *, backend: str = "edge_rt",
                 threads: Optional[int] = None, n_ctx: Optional[int] = None, stats: Optional[CalibStats] = None,
                 workdir: Optional[Path] = None) -> None:
        from .evaluate import LogitsRunner, Reference

        self.src, self.windows, self.backend, self.threads, self.n_ctx = src, windows, backend, threads, n_ctx
        self.stats = stats
        self._tmp = tempfile.TemporaryDirectory(prefix="edge_rt_sens_", dir=workdir)
        self.dir = Path(self._tmp.name)
        self.base = base_types(src)
        self._base_cache: Dict[str, np.ndarray] = {}
        ref_path = self._write({}, "reference.gguf")
        with LogitsRunner(ref_path, backend, n_ctx, threads) as r:
            self.reference = Reference.compute(r, windows)
        ref_path.unlink()
        self.n_runs = 0

    def _write(self, swaps: Dict[str, Tuple[str, np.ndarray]], name: str) -> Path:
        types = dict(self.base)
        for n, (ty, _) in swaps.items():
            types[n] = ty

        def enc(t: SourceTensor, ty: str) -> np.ndarray:
            if t.name in swaps:
                return swaps[t.name][1]
            if t.name not in self._base_cache:
                self._base_cache[t.name] = encode_tensor(t, ty, None)
            return self._base_cache[t.name]

        path = self.dir / name
        write_gguf(self.src, path, types, enc, file_type=FILE_TYPE["F16"])
        return path

    def dkl(self, swaps: Dict[str, Tuple[str, np.ndarray]]) -> float:
        from .evaluate import LogitsRunner, compare

        path = self._write(swaps, "swap.gguf")
        try:
            with LogitsRunner(path, self.backend, self.n_ctx, self.threads) as r:
                m = compare(r, self.reference)
        finally:
            path.unlink(missing_ok=True)
        self.n_runs += 1
        return m["kl_mean"]

    def close(self) -> None:
        self._tmp.cleanup()


def measure_sensitivity(src: SourceModel, *, method: str = "calibrated", candidates=DEFAULT_CANDIDATES,
                        stats: Optional[CalibStats] = None, evaluator: Optional[SwapEvaluator] = None,
                        progress: Optional[Callable[[int, int, str], None]] = None) -> Sensitivity:
    """Sensitivity of every searchable tensor to every candidate type that fits its rows."""
    if method not in METHODS:
        raise InvalidArgumentError(f"[quantize] unknown sensitivity method {method!r}; "
                                   f"expected one of {', '.join(METHODS)}")
    if method != "proxy" and evaluator is None:
        raise InvalidArgumentError("[quantize] sensitivity method '%s' needs a model runner" % method)
    cands = tuple(candidates)
    s = Sensitivity(method, cands)
    s.base_type = base_types(src)
    tensors = searchable(src)
    for i, t in enumerate(tensors):
        x = t.load()
        s.n_params[t.name] = t.n_elements
        s.bytes[t.name], s.werr[t.name], s.dkl[t.name], s.measured[t.name] = {}, {}, {}, {}
        ok = [c for c in cands if fits(c, t.shape[-1])]
        if not ok:
            continue
        raws = {}
        for c in ok:
            raws[c] = encode_tensor(t, c, stats, x)
            s.bytes[t.name][c] = tensor_bytes(c, t.shape)
            s.werr[t.name][c] = weighted_error(t, x, c, stats, raws[c])
        if method == "measure":
            for c in ok:
                s.measured[t.name][c] = evaluator.dkl({t.name: (c, raws[c])})
                s.dkl[t.name][c] = s.measured[t.name][c]
        elif method in ("calibrated", "fitted"):
            c0 = min(ok, key=lambda c: s.bytes[t.name][c])
            k0 = evaluator.dkl({t.name: (c0, raws[c0])})
            s.measured[t.name][c0] = k0
            e0 = s.werr[t.name][c0]
            for c in ok:
                s.dkl[t.name][c] = k0 * (s.werr[t.name][c] / e0) if e0 > 0 else 0.0
        else:
            s.dkl[t.name] = dict(s.werr[t.name])
        if progress is not None:
            progress(i + 1, len(tensors), t.name)
    if method == "fitted":
        fit_type_factors(s, {t.name: t for t in tensors}, stats, evaluator)
    return s


def fit_type_factors(s: Sensitivity, tensors: Dict[str, SourceTensor], stats: Optional[CalibStats],
                     evaluator: "SwapEvaluator", n_fit: int = FIT_TENSORS) -> None:
    """Measure the ``n_fit`` tensors with the largest measured dKL at every candidate type; scale each
    type's prediction for the other tensors by sum measured / sum predicted over them (in place)."""
    fit = sorted((n for n in s.measured if s.measured[n]), key=lambda n: -max(s.measured[n].values()))[:n_fit]
    pred: Dict[str, float] = {}
    meas: Dict[str, float] = {}
    for n in fit:
        t = tensors[n]
        x = t.load()
        for c in s.dkl[n]:
            if c not in s.measured[n]:
                s.measured[n][c] = evaluator.dkl({n: (c, encode_tensor(t, c, stats, x))})
            pred[c] = pred.get(c, 0.0) + s.dkl[n][c]
            meas[c] = meas.get(c, 0.0) + s.measured[n][c]
    s.type_factor = {c: (meas[c] / pred[c] if pred[c] > 0 else 1.0) for c in pred}
    for n in s.dkl:
        for c in s.dkl[n]:
            s.dkl[n][c] = s.measured[n][c] if n in fit else s.dkl[n][c] * s.type_factor.get(c, 1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def rank(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        xs = x[order]
        i = 0
        while i < len(x):
            j = i
            while j + 1 < len(x) and xs[j + 1] == xs[i]:
                j += 1
            r[order[i:j + 1]] = (i + j) / 2.0
            i = j + 1
        return r
    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])
