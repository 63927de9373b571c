"""Token sampling from a logits vector, in numpy.

The filters follow llama.cpp's default sampler chain so that settings mean the same thing in both
runtimes: repetition penalty, then top-k, top-p (nucleus) and min-p on the untempered distribution,
then temperature, then one draw. ``temperature <= 0`` means greedy decoding (argmax after the
repetition penalty). Every step is vectorized; the only O(n_vocab log n_vocab) step (a full sort) is
avoided whenever top-k is on, because ``np.argpartition`` selects the k candidates in O(n_vocab).

Draws come from a ``numpy.random.Generator`` owned by the sampler: the same seed, logits and history
give the same tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["SamplingParams", "Sampler"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. Defaults match llama.cpp's command-line defaults (penalty off).

    Attributes:
        temperature: Softmax temperature; ``<= 0`` selects greedy decoding.
        top_k: Keep only the k most likely tokens; ``0`` (or ``>= n_vocab``) turns it off.
        top_p: Keep the smallest set of most likely tokens whose probability mass reaches ``top_p``;
            ``1.0`` turns it off. Must be in ``(0, 1]``.
        min_p: Drop tokens whose probability is below ``min_p`` times the most likely token's;
            ``0.0`` turns it off. Must be in ``[0, 1]``.
        repeat_penalty: Divide positive (multiply negative) logits of tokens seen in the last
            ``repeat_last_n`` tokens of the history by this factor; ``1.0`` turns it off.
        repeat_last_n: How many of the most recent history tokens the penalty looks at (``0``: none,
            ``-1``: the whole history, as llama.cpp's ``penalty_last_n``).
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~edge_rt.errors.InvalidArgumentError` naming the first bad setting."""
        t = self.temperature
        if not _is_real(t) or math.isnan(t) or math.isinf(t):
            raise InvalidArgumentError(f"[sampling] temperature must be a finite number, got {t!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidArgumentError(f"[sampling] top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _is_real(self.top_p) or not (0.0 < self.top_p <= 1.0):
            raise InvalidArgumentError(f"[sampling] top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not _is_real(self.min_p) or not (0.0 <= self.min_p <= 1.0):
            raise InvalidArgumentError(f"[sampling] min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        rp = self.repeat_penalty
        if not _is_real(rp) or math.isnan(rp) or math.isinf(rp) or rp <= 0.0:
            raise InvalidArgumentError(
                f"[sampling] repeat_penalty must be a finite number > 0 (1 = off), got {rp!r}")
        if not _is_int(self.repeat_last_n) or self.repeat_last_n < -1:
            raise InvalidArgumentError(f"[sampling] repeat_last_n must be an integer >= -1 (-1 = the whole history), "
                                       f"got {self.repeat_last_n!r}")

    @property
    def greedy(self) -> bool:
        """True when these settings select the argmax (``temperature <= 0``)."""
        return self.temperature <= 0.0


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class Sampler:
    """Draws one token id from a logits vector per call. Not thread-safe (it owns an RNG).

    Args:
        params: Sampling settings (validated on construction).
        seed: Seed of the numpy ``Generator``; ``None`` seeds from OS entropy (non-deterministic).
    """

    def __init__(self, params: Optional[SamplingParams] = None, seed: Optional[int] = None) -> None:
        self.params = params if params is not None else SamplingParams()
        self.params.validate()
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise InvalidArgumentError(f"[sampling] seed must be an integer >= 0 or None, got {seed!r}")
        self._rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Return the next token id.

        Args:
            logits: 1-D float array of shape ``(n_vocab,)`` (a ``(1, n_vocab)`` array is accepted).
                Not modified.
            history: Token ids seen so far (prompt and generated), used by the repetition penalty only.

        Raises:
            InvalidArgumentError: if ``logits`` is not a non-empty vector, contains NaN, or every
                entry is ``-inf``.
        """
        x = np.asarray(logits)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1 or x.shape[0] == 0:
            raise InvalidArgumentError(f"[sampling] logits must have shape (n_vocab,), got {np.shape(logits)}")
        p = self.params
        n_vocab = x.shape[0]

        if p.repeat_penalty != 1.0 and p.repeat_last_n != 0 and len(history) > 0:
            x = _apply_repeat_penalty(x, history, p.repeat_penalty, p.repeat_last_n)

        if np.isnan(x).any():
            raise InvalidArgumentError("[sampling] logits contain NaN")
        if x.max() == np.inf:
            raise InvalidArgumentError("[sampling] logits contain +inf")

        if p.greedy:
            best = int(np.argmax(x))
            if x[best] == -np.inf:
                raise InvalidArgumentError("[sampling] every logit is -inf; nothing can be sampled")
            return best

        top = float(x.max())
        if top == -np.inf:
            raise InvalidArgumentError("[sampling] every logit is -inf; nothing can be sampled")
        filtering = p.top_p < 1.0 or p.min_p > 0.0

        if 0 < p.top_k < n_vocab:
            # Partial selection, O(n_vocab); only the k survivors are sorted.
            cand = np.argpartition(x, n_vocab - p.top_k)[n_vocab - p.top_k:]
            cand = cand[np.argsort(-x[cand], kind="stable")]
            cl = x[cand].astype(np.float64)
            if filtering:
                probs = np.exp(cl - cl[0])
                cand = cand[:_nucleus_len(probs, probs.sum(), p.top_p, p.min_p)]
                cl = cl[:len(cand)]
        elif filtering:
            # No top-k: find the nucleus without sorting the whole vocabulary.
            w = np.exp(x.astype(np.float64) - top)  # unnormalized probabilities, max 1
            total = float(w.sum())
            if p.min_p > 0.0:
                cand = np.flatnonzero(w >= p.min_p)  # min_p * max(w); a superset of the result
            else:
                cand = _top_mass(w, total, p.top_p)
            cand = cand[np.argsort(-w[cand], kind="stable")]
            cand = cand[:_nucleus_len(w[cand], total, p.top_p, p.min_p)]
            cl = x[cand].astype(np.float64)
        else:
            # Plain temperature sampling over the whole vocabulary: order does not matter.
            cand = None
            cl = x.astype(np.float64)

        if cand is not None and len(cand) == 1:
            return int(cand[0])
        wt = np.exp((cl - top) / p.temperature)
        cdf = np.cumsum(wt)
        u = self._rng.random() * cdf[-1]
        i = min(int(np.searchsorted(cdf, u, side="right")), len(cl) - 1)
        return int(cand[i]) if cand is not None else i


def _nucleus_len(probs_sorted: np.ndarray, total: float, top_p: float, min_p: float) -> int:
    """How many of the candidates (sorted by probability, descending; ``total`` is the mass of the
    whole candidate set) survive top-p then min-p. Always at least 1."""
    keep = len(probs_sorted)
    if top_p < 1.0:
        cum = np.cumsum(probs_sorted) / total
        keep = min(keep, int(np.searchsorted(cum, top_p, side="left")) + 1)
    if min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs_sorted >= min_p * probs_sorted[0])))
    return max(1, keep)


def _top_mass(w: np.ndarray, total: float, top_p: float) -> np.ndarray:
    """Indices of the m largest entries of ``w`` for the smallest m tried (64, 256, ... n) whose mass
    reaches ``top_p * total``: a superset of the top-p nucleus, found without a full sort."""
    n = len(w)
    m = 64
    while m < n:
        idx = np.argpartition(w, n - m)[n - m:]
        if float(w[idx].sum()) >= top_p * total:
            return idx
        m *= 4
    return np.arange(n)


def _apply_repeat_penalty(x: np.ndarray, history: Sequence[int], penalty: float, last_n: int) -> np.ndarray:
    """Return a copy of ``x`` with llama.cpp's repetition penalty applied to recent tokens."""
    recent = np.asarray(history[-last_n:] if 0 < last_n < len(history) else history, dtype=np.int64)
    recent = np.unique(recent)
    recent = recent[(recent >= 0) & (recent < x.shape[0])]
    y = np.array(x, dtype=np.float32 if x.dtype != np.float64 else np.float64, copy=True)
    v = y[recent]
    y[recent] = np.where(v > 0, v / penalty, v * penalty)
    return y
