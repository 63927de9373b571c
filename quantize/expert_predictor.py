"""Fit a next-layer expert predictor for a Mixture-of-Experts model (``edge-rt fit-predictor``).

Next-layer prefetch names layer i's experts while layer i-1's FFN still runs, from the residual stream
entering layer i-1's FFN (``x``). Layer i's own router applied to ``x`` recalls about 0.63 of the
experts on the trained MoE: ``x`` still lacks layer i-1's FFN output. A small MLP fitted to correct the
router's scores on ``x`` closes much of that gap (0.83 recall; benchmarks/moe.py, benchmarks/RESULTS.md).

What is fitted, per target layer i >= 1 (native/include/edge_rt/expert_predictor.h is the file contract),
a correction of layer i's router on the same input u = rms_norm(x, ffn_norm_i):

    scores = router_i . u + W_out . silu(W_hidden . u + b_hidden) + b_out

trained with AdamW on soft cross-entropy against layer i's router probabilities. W_out starts at zero,
so training starts from the router's own prediction, and that start competes with every checkpoint:
on the validation tokens the fitted predictor is never worse than the router (a layer where nothing
better was found keeps W_out = 0, and costs only its compute). The data come from the engine itself
(a ``RoutingTrace`` observer with ``inputs=True``, installed by ``Model.observe``) on calibration text,
so fitting works under a memory budget for models larger than RAM; the traced states take
``tokens * n_layer * n_embd * 4`` bytes and the token count is lowered, with a note, when they would
not fit. The last ``VALIDATION_FRACTION`` of
the tokens is held out: training keeps the weights with the best validation recall, and the report gives
the router's and the fitted predictor's recall there (recall = experts named correctly / experts used,
naming ``n_expert_used`` experts per token, as the engine's telemetry counts it). Those tokens also pick
the checkpoint, so the fitted figure leans optimistic; benchmarks/moe.py scores on disjoint text.

A prediction only decides what is read ahead, so a poor predictor costs time, never output.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import InvalidArgumentError, UnsupportedArchitectureError
from ..gguf_file import save_writer
from ..observer import EvalObserver
from .calibrate import _available_memory, _run_windows, text_digest, token_windows

ARCH = "expert_predictor"  # general.architecture, so the keys follow the GGUF "<arch>.<key>" convention
FORMAT_VERSION = 1  # scores = router logits + MLP (native/include/edge_rt/expert_predictor.h)
DEFAULT_HIDDEN = 64
DEFAULT_TOKENS = 16384
DEFAULT_EPOCHS = 300
VALIDATION_FRACTION = 0.1
BATCH = 256
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
EVAL_EVERY = 10  # epochs between validation checks (the best checkpoint is kept)

Progress = Callable[[str, int, int], None]


@dataclass
class LayerFit:
    layer: int                  # target layer i (predicted from layer i-1's FFN input)
    router_recall: float        # layer i's router on the same input, validation tokens
    fitted_recall: float        # the fitted MLP, validation tokens
    best_epoch: int             # 0 = the router alone was best


@dataclass
class PredictorFit:
    path: Path
    hidden: int
    n_tokens: int
    n_train: int
    n_validation: int
    layers: List[LayerFit]
    seconds: float
    notes: List[str] = field(default_factory=list)

    @property
    def router_recall(self) -> float:
        return float(np.mean([x.router_recall for x in self.layers]))

    @property
    def fitted_recall(self) -> float:
        return float(np.mean([x.fitted_recall for x in self.layers]))


class RoutingTrace(EvalObserver):
    """MoE routing as an evaluation observer: every evaluated token's router probabilities in every
    layer, and with ``inputs`` the residual stream entering each layer's FFN (after attention, before
    its norm) -- what expert predictors are fitted on. Tokens in evaluation order; an evaluation that
    fails adds nothing. ``probs()``: float32 ``(n_tokens, n_layer, n_expert)``; ``inputs()``: float32
    ``(n_tokens, n_layer, n_embd)`` (``n_embd`` floats per token and layer: bound the tokens)."""

    def __init__(self, n_layer: int, n_expert: int, n_embd: int, inputs: bool = False) -> None:
        self.n_layer, self.n_expert, self.n_embd = int(n_layer), int(n_expert), int(n_embd)
        self.kinds = frozenset({"router_probs", "ffn_input"} if inputs else {"router_probs"})
        self._done: Dict[str, List[np.ndarray]] = {"router_probs": [], "ffn_input": []}
        self._pass: Dict[str, List[np.ndarray]] = {"router_probs": [], "ffn_input": []}  # this eval, per layer

    def begin(self, n_past: int, n_tokens: int) -> None:
        self._pass = {"router_probs": [], "ffn_input": []}

    def observe(self, kind: str, layer: int, weight: Optional[str], expert: int, values: np.ndarray) -> None:
        self._pass[kind].append(values)  # micro-batches arrive layer 0 .. n_layer-1, in token order

    def end(self, completed: bool) -> None:
        if completed:
            for kind, rows in self._pass.items():
                # (micro-batch, layer) blocks -> (tokens, n_layer, cols)
                for first in range(0, len(rows), self.n_layer):
                    self._done[kind].append(np.stack(rows[first:first + self.n_layer], axis=1))
        self._pass = {"router_probs": [], "ffn_input": []}

    def probs(self) -> np.ndarray:
        return self._concat("router_probs", self.n_expert)

    def inputs(self) -> np.ndarray:
        return self._concat("ffn_input", self.n_embd)

    def _concat(self, kind: str, cols: int) -> np.ndarray:
        blocks = self._done[kind]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.n_layer, cols), np.float32)


def recall(scores: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Mean over tokens of |top-k(scores) & top-k(probs)| / k (ties: lower id, as the engine)."""
    if len(scores) == 0:
        return float("nan")
    truth = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    pred = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = (truth[:, :, None] == pred[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits) / k)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    scale = 1.0 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + eps)
    return (x64 * scale * weight).astype(np.float32)


def _silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


class _Mlp:
    """x (n, E) -> base + silu(x W1^T + b1) W2^T + b2, trained with AdamW on soft cross-entropy. ``base``
    is the router's logits on the same rows (or 0); W2 starts at zero, so training starts from the router."""

    def __init__(self, n_in: int, hidden: int, n_out: int, rng: np.random.Generator) -> None:
        self.p = {"w1": (rng.standard_normal((hidden, n_in)) / np.sqrt(n_in)).astype(np.float32),
                  "b1": np.zeros(hidden, np.float32),
                  "w2": np.zeros((n_out, hidden), np.float32),
                  "b2": np.zeros(n_out, np.float32)}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    def __call__(self, x: np.ndarray, base: Any = 0.0) -> np.ndarray:
        return base + _silu(x @ self.p["w1"].T + self.p["b1"]) @ self.p["w2"].T + self.p["b2"]

    def loss_and_grads(self, x: np.ndarray, target: np.ndarray, base: Any = 0.0) -> tuple:
        """Mean soft cross-entropy -sum(target * log_softmax(out)) over rows, and its gradients."""
        p = self.p
        pre = x @ p["w1"].T + p["b1"]
        sig = 1.0 / (1.0 + np.exp(-pre))
        h = pre * sig
        out = base + h @ p["w2"].T + p["b2"]
        z = out - out.max(axis=1, keepdims=True)
        log_sm = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-(target * log_sm).sum() / len(x))
        d_out = (np.exp(log_sm) - target) / len(x)                 # d(mean CE)/d(out); target rows sum to 1
        d_h = d_out @ p["w2"]
        d_pre = d_h * (sig * (1.0 + pre * (1.0 - sig)))            # silu'(v) = s(v) (1 + v (1 - s(v)))
        return loss, {"w2": d_out.T @ h, "b2": d_out.sum(0), "w1": d_pre.T @ x, "b1": d_pre.sum(0)}

    def step(self, x: np.ndarray, target: np.ndarray, base: Any = 0.0) -> None:
        p = self.p
        _, grads = self.loss_and_grads(x, target, base)
        self.t += 1
        b1, b2 = 0.9, 0.999
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            # AdamW: weight decay decoupled from the gradient's scaling, on the matrices only (inside the
            # Adam step it would move W1 by a full learning rate while W2 = 0 gives it no loss gradient).
            decay = WEIGHT_DECAY * p[k] if k in ("w1", "w2") else 0.0
            p[k] -= (LEARNING_RATE * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay)).astype(np.float32)


def fit_layer(x: np.ndarray, probs: np.ndarray, k: int, *, hidden: int, epochs: int, n_val: int, seed: int,
              router: Optional[np.ndarray] = None, tick: Optional[Callable[[], None]] = None) -> tuple:
    """Fit one target layer. x: (n, E) normed inputs, probs: (n, NE) router probabilities, router:
    (NE, E) the layer's router, whose logits the MLP corrects (None: the MLP alone); the last n_val rows
    validate. Training starts from the router alone and keeps the checkpoint with the best validation
    recall, that start included, so on those rows the result is never worse than the router.
    Returns (params, validation recall, best epoch; 0 = the router alone)."""
    n_train = len(x) - n_val
    rng = np.random.default_rng(seed)
    net = _Mlp(x.shape[1], hidden, probs.shape[1], rng)
    base = x @ router.T if router is not None else np.zeros(probs.shape, np.float32)
    xt, pt, bt, xv, pv, bv = x[:n_train], probs[:n_train], base[:n_train], x[n_train:], probs[n_train:], base[n_train:]

    def score() -> float:
        return recall(net(xv, bv), pv, k) if n_val else float("-inf")

    best = (score(), {k2: v.copy() for k2, v in net.p.items()}, 0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n_train)
        for b in range(0, n_train, BATCH):
            idx = order[b:b + BATCH]
            net.step(xt[idx], pt[idx], bt[idx])
        if epoch % EVAL_EVERY == 0 or epoch == epochs:
            r = score() if n_val else float(epoch)  # no validation rows: keep the last weights
            if r > best[0]:
                best = (r, {k2: v.copy() for k2, v in net.p.items()}, epoch)
        if tick is not None:
            tick()
    return best[1], best[0], best[2]


def _norms_and_routers(model_path: Path, n_layer: int) -> tuple:
    """Every layer's FFN norm weight (float64) and router (n_expert, n_embd; float32), read from the
    GGUF and dequantized when stored quantized."""
    import gguf

    reader = gguf.GGUFReader(str(model_path))
    by_name = {t.name: t for t in reader.tensors}

    def values(name: str) -> np.ndarray:
        t = by_name[name]
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(
            [int(d) for d in reversed(t.shape)])

    norms = [values(f"blk.{il}.ffn_norm.weight") for il in range(n_layer)]
    routers = [values(f"blk.{il}.ffn_gate_inp.weight").astype(np.float32) for il in range(n_layer)]
    return norms, routers


def fit_expert_predictor(model_path: Path, text: str, out: Path, *, hidden: int = DEFAULT_HIDDEN,
                         max_tokens: int = DEFAULT_TOKENS, epochs: int = DEFAULT_EPOCHS,
                         threads: Optional[int] = None, mem_budget: Optional[Any] = None, seed: int = 0,
                         progress: Optional[Progress] = None) -> PredictorFit:
    """Trace ``model_path`` on ``text`` with the engine, fit one MLP per layer >= 1, write ``out``."""
    from ..loading import load

    if not isinstance(hidden, int) or hidden < 1 or hidden > 65536:
        raise InvalidArgumentError(f"[fit-predictor] hidden size must be in [1, 65536], got {hidden!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"[fit-predictor] epochs must be >= 1, got {epochs!r}")
    if not isinstance(max_tokens, int) or max_tokens < 16:
        raise InvalidArgumentError(f"[fit-predictor] tokens must be >= 16, got {max_tokens!r}")
    model_path, out = Path(model_path), Path(out)
    if out.is_dir():
        raise InvalidArgumentError(f"[fit-predictor] the output {out} is a directory; give a file path")
    if out.exists() and model_path.exists() and os.path.samefile(out, model_path):  # links included
        raise InvalidArgumentError(f"[fit-predictor] the output {out} is the model itself; give another path "
                                   "(default MODEL.predictor.gguf)")
    t0 = time.perf_counter()
    notes: List[str] = []
    with load(model_path, threads=threads, mem_budget=mem_budget, expert_predictor=None) as m:
        info = m.info()
        n_layer, n_embd, n_expert, k = info["n_layer"], info["n_embd"], info["n_expert"], info["n_expert_used"]
        if not n_expert:
            raise UnsupportedArchitectureError(f"[fit-predictor] {model_path} is a dense model: there are no experts "
                                               "to predict")
        if n_layer < 2:
            raise InvalidArgumentError(f"[fit-predictor] {model_path} has one layer: next-layer prediction needs two")
        # The trace's blocks and their concatenation: up to 3x the states while tracing.
        per_token = 3 * n_layer * (n_embd + n_expert) * 4
        avail = _available_memory()
        if avail is not None and max_tokens * per_token > 0.6 * avail:
            fit_tokens = max(16, int(0.6 * avail / per_token))
            notes.append(f"traced {fit_tokens} tokens instead of {max_tokens}: tracing the states of {max_tokens} "
                         f"(up to {max_tokens * per_token / 2**30:.1f} GiB) would not fit in the available memory")
            max_tokens = fit_tokens
        ids = m.tokenize(text, add_special=False)
        windows = token_windows(ids, m.n_ctx, max_tokens)
        if not windows:
            raise InvalidArgumentError("[fit-predictor] the text gives no tokens to run")
        with m.observe(RoutingTrace(n_layer, n_expert, n_embd, inputs=True)) as trace:
            _run_windows(m, windows, (lambda d, n: progress("trace", d, n)) if progress else None)
        probs, inputs = trace.probs(), trace.inputs()
        del trace
        eps = float(info["rms_eps"])
    n = len(probs)
    n_val = int(round(n * VALIDATION_FRACTION)) if n >= 64 else 0
    if n_val == 0:
        notes.append(f"only {n} tokens: no validation split (recall reported on the training tokens)")
    norms, routers = _norms_and_routers(model_path, n_layer)
    fits: List[LayerFit] = []
    tensors: Dict[str, np.ndarray] = {}
    done = [0]
    total = (n_layer - 1) * epochs

    def tick() -> None:
        done[0] += 1
        if progress:
            progress("fit", done[0], total)

    for il in range(1, n_layer):
        x = rms_norm(inputs[:, il - 1, :], norms[il], eps)
        target = probs[:, il, :].astype(np.float32)
        target /= np.maximum(target.sum(axis=1, keepdims=True), 1e-30)
        params, fitted_r, best_epoch = fit_layer(x, target, k, hidden=hidden, epochs=epochs, n_val=n_val,
                                                 seed=seed + il, router=routers[il], tick=tick)
        xv, pv = (x[-n_val:], target[-n_val:]) if n_val else (x, target)
        base = xv @ routers[il].T
        if not n_val:
            fitted_r = recall(base + _silu(xv @ params["w1"].T + params["b1"]) @ params["w2"].T + params["b2"], pv, k)
        fits.append(LayerFit(il, recall(base, pv, k), fitted_r, best_epoch))
        p = f"blk.{il}."
        tensors[p + "expert_pred_hidden.weight"] = params["w1"]
        tensors[p + "expert_pred_hidden.bias"] = params["b1"]
        tensors[p + "expert_pred_out.weight"] = params["w2"]
        tensors[p + "expert_pred_out.bias"] = params["b2"]
    result = PredictorFit(Path(out), hidden, n, n - n_val, n_val, fits, 0.0, notes)
    _write(Path(out), tensors, info, model_path, text, result)
    result.seconds = time.perf_counter() - t0
    return result


def _write(out: Path, tensors: Dict[str, np.ndarray], info: Dict[str, Any], model_path: Path, text: str,
           fit: PredictorFit) -> None:
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(None, ARCH)  # the file is named when written, by save_writer
    w.add_uint32("expert_predictor.version", FORMAT_VERSION)
    w.add_uint32("expert_predictor.n_embd", int(info["n_embd"]))
    w.add_uint32("expert_predictor.n_expert", int(info["n_expert"]))
    w.add_uint32("expert_predictor.block_count", int(info["n_layer"]))
    w.add_uint32("expert_predictor.hidden_size", int(fit.hidden))
    w.add_string("expert_predictor.model", model_path.name)
    w.add_string("expert_predictor.text_sha256_16", text_digest(text))
    w.add_uint32("expert_predictor.n_tokens", int(fit.n_tokens))
    w.add_array("expert_predictor.validation_recall", [float(x.fitted_recall) for x in fit.layers])
    w.add_array("expert_predictor.router_validation_recall", [float(x.router_recall) for x in fit.layers])
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    save_writer(w, out)
