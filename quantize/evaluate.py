"""Quality of a quantized model against its reference: perplexity, KL divergence, top-1 agreement.

The text is tokenized with the reference's vocabulary and cut into consecutive windows of ``n_ctx``
tokens; each window is evaluated from an empty context by both models, and every position but the
last of a window predicts the next token. Per position:

* NLL of the true next token under the model (perplexity = exp(mean NLL));
* KL(P_ref || P_model) of the two next-token distributions (nats; what llama.cpp's
  ``llama-perplexity --kl-divergence`` reports);
* whether the two argmaxes agree (top-1 agreement).

Logits come from edge_rt (default, dense and MoE) or from llama.cpp through llama-cpp-python
(``backend="llama_cpp"``: the peer, to evaluate a file with llama.cpp's numerics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import InvalidArgumentError, ModelFormatError
from .calibrate import token_windows

BACKENDS = ("edge_rt", "llama_cpp")


class LogitsRunner:
    """Logits of every position of a token window, from edge_rt or llama.cpp."""

    def __init__(self, path: Path, backend: str = "edge_rt", n_ctx: Optional[int] = None,
                 threads: Optional[int] = None) -> None:
        if backend not in BACKENDS:
            raise InvalidArgumentError(f"[eval] unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.path = Path(path)
        self.backend = backend
        if backend == "edge_rt":
            from ..loading import load

            self._m = load(self.path, threads=threads, n_ctx=n_ctx)
            self.n_ctx = self._m.n_ctx
            self.n_vocab = self._m.n_vocab
        else:
            try:
                import llama_cpp  # noqa: F401
            except ImportError as e:
                raise ImportError("[eval] backend 'llama_cpp' needs llama-cpp-python "
                                  "(pip install llama-cpp-python)") from e
            from ..tokenizer import Tokenizer

            if n_ctx is None:
                n_ctx = _train_ctx(self.path)
            self.n_ctx = int(n_ctx)
            t = threads or 1
            from ..llama_cpp_peer import open_llama

            self._m = open_llama(self.path, n_ctx=self.n_ctx, n_batch=self.n_ctx, n_ubatch=self.n_ctx,
                                 n_threads=t, n_threads_batch=t, logits_all=True, flash_attn=False,
                                 verbose=False, seed=0)
            self.n_vocab = int(self._m.n_vocab())
            self._tok = Tokenizer.from_gguf(self.path)

    def tokenize(self, text: str) -> List[int]:
        if self.backend == "edge_rt":
            return self._m.tokenize(text, add_special=False)
        return self._tok.tokenize(text, add_special=False)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        if self.backend == "edge_rt":
            return self._m.logits(ids)
        self._m.reset()
        self._m.eval(list(ids))
        return np.array(self._m.scores[:len(ids)], dtype=np.float32)

    def close(self) -> None:
        m, self._m = self._m, None
        if m is not None:
            m.close()

    def __enter__(self) -> "LogitsRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _train_ctx(path: Path) -> int:
    from ..gguf_file import read_metadata

    md = read_metadata(path)
    arch = md.get("general.architecture")
    v = md.get(f"{arch}.context_length")
    return int(min(int(v), 2048)) if isinstance(v, (int, np.integer)) and v > 0 else 2048


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@dataclass
class Reference:
    """The reference's log-probabilities on the evaluation windows (computed once, reused)."""

    windows: List[List[int]]
    logp: List[np.ndarray]   # per window: float32 (len-1, n_vocab), positions 0..len-2

    @classmethod
    def compute(cls, runner: LogitsRunner, windows: List[List[int]]) -> "Reference":
        return cls(windows, [log_softmax(runner.logits(w)[:-1]).astype(np.float32) for w in windows])

    @property
    def n_predicted(self) -> int:
        return sum(len(w) - 1 for w in self.windows)


def compare(runner: LogitsRunner, ref: Reference,
            progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """Metrics of ``runner``'s model against the reference log-probs."""
    nll, kl, agree, ref_nll = [], [], [], []
    for i, (w, lp_ref) in enumerate(zip(ref.windows, ref.logp)):
        logits = runner.logits(w)[:-1]
        if logits.shape[1] != lp_ref.shape[1]:
            raise ModelFormatError(f"[eval] the model has {logits.shape[1]} logits per token, the reference "
                                   f"{lp_ref.shape[1]}: not the same vocabulary")
        # rounded like the reference's (float32), so identical logits give exactly KL 0
        lp = log_softmax(logits).astype(np.float32).astype(np.float64)
        tgt = np.asarray(w[1:])
        rows = np.arange(len(tgt))
        nll.append(-lp[rows, tgt])
        ref_nll.append(-lp_ref[rows, tgt].astype(np.float64))
        p_ref = np.exp(lp_ref.astype(np.float64))
        kl.append(np.maximum((p_ref * (lp_ref - lp)).sum(axis=1), 0.0))
        agree.append(lp.argmax(axis=1) == lp_ref.argmax(axis=1))
        if progress is not None:
            progress(i + 1, len(ref.windows))
    nll_a, kl_a, ag_a, rnll_a = (np.concatenate(a) for a in (nll, kl, agree, ref_nll))
    return {
        "n_tokens": int(nll_a.size),
        "ppl": float(np.exp(nll_a.mean())),
        "ref_ppl": float(np.exp(rnll_a.mean())),
        "kl_mean": float(kl_a.mean()),
        "kl_median": float(np.median(kl_a)),
        "kl_p99": float(np.percentile(kl_a, 99)),
        "kl_max": float(kl_a.max()),
        "top1": float(ag_a.mean()),
    }


def evaluate(model: Path, reference: Path, text: str, *, n_ctx: Optional[int] = None,
             max_tokens: Optional[int] = None, threads: Optional[int] = None, backend: str = "edge_rt",
             progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """``edge-rt eval``: metrics of ``model`` against ``reference`` on ``text``."""
    if not text.strip():
        raise InvalidArgumentError("[eval] the evaluation text is empty")
    with LogitsRunner(reference, backend, n_ctx, threads) as r_ref:
        ids = r_ref.tokenize(text)
        windows = token_windows(ids, r_ref.n_ctx, max_tokens)
        if not windows:
            raise InvalidArgumentError("[eval] the evaluation text has fewer than 2 tokens")
        total = 2 * len(windows)
        ref = Reference.compute(r_ref, windows)
        if progress is not None:
            progress(len(windows), total)
    with LogitsRunner(model, backend, r_ref.n_ctx, threads) as r_m:
        if r_m.n_vocab != r_ref.n_vocab:
            raise ModelFormatError(f"[eval] {model} has {r_m.n_vocab} tokens, the reference {r_ref.n_vocab}: "
                                   "compare models with the same vocabulary")
        out = compare(r_m, ref, None if progress is None else (lambda d, t: progress(len(windows) + d, total)))
    out["n_windows"] = len(windows)
    out["n_ctx"] = r_ref.n_ctx
    out["backend"] = backend
    return out
