"""Tests of the numpy sampler alone (edge_rt.sampling): greedy, seeds, top-k, top-p, min-p, repetition
penalty, the frequencies it draws, and its argument checks."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest

from edge_rt.errors import InvalidArgumentError
from edge_rt.sampling import Sampler, SamplingParams


def _logits_from_probs(p: List[float]) -> np.ndarray:
    return np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


def _draws(params: SamplingParams, logits: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    s = Sampler(params, seed=seed)
    return np.array([s.sample(logits) for _ in range(n)])


def test_greedy_is_argmax() -> None:
    rng = np.random.default_rng(1)
    for temp in (0.0, -1.0):
        s = Sampler(SamplingParams(temperature=temp, top_k=0, top_p=1.0), seed=None)
        for _ in range(20):
            x = rng.normal(size=1000).astype(np.float32)
            assert s.sample(x) == int(np.argmax(x))


def test_same_seed_same_tokens_different_seed_differs() -> None:
    x = np.random.default_rng(0).normal(size=500).astype(np.float32)
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0)
    a = _draws(p, x, 200, seed=7)
    b = _draws(p, x, 200, seed=7)
    c = _draws(p, x, 200, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_input_logits_not_modified() -> None:
    x = np.random.default_rng(0).normal(size=100).astype(np.float32)
    y = x.copy()
    Sampler(SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repeat_penalty=1.3), seed=0).sample(
        x, history=[1, 2, 3, int(np.argmax(x))])
    assert np.array_equal(x, y)


def test_top_k_restricts_to_k_largest() -> None:
    x = np.random.default_rng(2).normal(size=300).astype(np.float32)
    top5 = set(np.argsort(-x)[:5].tolist())
    d = _draws(SamplingParams(temperature=5.0, top_k=5, top_p=1.0), x, 2000)
    assert set(d.tolist()) == top5  # hot temperature: every one of the 5 shows up, nothing else
    assert set(_draws(SamplingParams(temperature=100.0, top_k=1, top_p=1.0), x, 50).tolist()) == {int(np.argmax(x))}


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    x = _logits_from_probs([0.05, 0.5, 0.15, 0.3])
    d = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.6), x, 2000)
    assert set(d.tolist()) == {1, 3}
    d = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.9), x, 3000)
    assert set(d.tolist()) == {1, 3, 2}
    d = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.01), x, 50)
    assert set(d.tolist()) == {1}


def test_min_p() -> None:
    x = _logits_from_probs([0.05, 0.5, 0.15, 0.3])
    # threshold 0.2 * 0.5 = 0.1 drops only token 0
    d = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2), x, 3000)
    assert set(d.tolist()) == {1, 2, 3}


def test_frequencies_follow_softmax() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    n = 20000
    d = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0), _logits_from_probs(p.tolist()), n, seed=3)
    freq = np.bincount(d, minlength=4) / n
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3)
    # temperature 0.5 squares the probabilities (renormalized)
    q = p ** 2 / (p ** 2).sum()
    d = _draws(SamplingParams(temperature=0.5, top_k=0, top_p=1.0), _logits_from_probs(p.tolist()), n, seed=4)
    freq = np.bincount(d, minlength=4) / n
    assert np.all(np.abs(freq - q) < 4 * np.sqrt(q * (1 - q) / n) + 1e-3)


def test_candidate_selection_paths_agree() -> None:
    # top-k (argpartition), top-p without top-k (growing partial selection) and min-p select the
    # same candidates here (all but a zero-mass token) and order them the same way, so the same seed
    # gives the same draws.
    x = np.random.default_rng(5).normal(size=64).astype(np.float32)
    x[np.argmin(x)] = -1e30
    a = _draws(SamplingParams(temperature=1.0, top_k=63, top_p=1.0), x, 300, seed=9)
    b = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.9999999), x, 300, seed=9)
    c = _draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=1e-12), x, 300, seed=9)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_top_p_large_vocab_matches_reference() -> None:
    # The nucleus found by partial selection equals the one found by a full sort.
    x = (np.random.default_rng(6).normal(size=20000) * 2).astype(np.float32)
    p = np.exp(x.astype(np.float64) - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    n_keep = int(np.searchsorted(np.cumsum(p[order]), 0.5)) + 1
    nucleus = set(order[:n_keep].tolist())
    d = _draws(SamplingParams(temperature=50.0, top_k=0, top_p=0.5), x, 1500)
    assert set(d.tolist()) <= nucleus
    assert len(set(d.tolist())) > 0.5 * len(nucleus)  # hot: most of the nucleus shows up


def test_neg_inf_never_sampled() -> None:
    x = np.full(10, -np.inf, dtype=np.float32)
    x[[2, 7]] = 0.0
    d = _draws(SamplingParams(temperature=2.0, top_k=0, top_p=1.0), x, 500)
    assert set(d.tolist()) == {2, 7}


def test_repetition_penalty() -> None:
    x = np.array([2.0, 1.9, -1.0, -1.05], dtype=np.float32)
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.1)
    assert Sampler(greedy).sample(x, history=[]) == 0
    assert Sampler(greedy).sample(x, history=[0]) == 1  # 2.0 / 1.1 < 1.9
    y = np.array([-1.0, -1.05], dtype=np.float32)
    assert Sampler(greedy).sample(y, history=[0]) == 1  # -1.0 * 1.1 < -1.05
    # only the last repeat_last_n tokens count
    p = SamplingParams(temperature=0.0, repeat_penalty=1.1, repeat_last_n=1)
    assert Sampler(p).sample(x, history=[0, 3]) == 0
    # -1: the whole history, as llama.cpp's penalty_last_n (it was rejected)
    p = SamplingParams(temperature=0.0, repeat_penalty=1.1, repeat_last_n=-1)
    assert Sampler(p).sample(x, history=[0] + [3] * 500) == 1
    # penalty off (1.0) ignores history
    assert Sampler(SamplingParams(temperature=0.0)).sample(x, history=[0, 0, 0]) == 0


def test_accepts_row_vector() -> None:
    x = np.random.default_rng(0).normal(size=(1, 50)).astype(np.float32)
    assert Sampler(SamplingParams(temperature=0.0)).sample(x) == int(np.argmax(x))


@pytest.mark.parametrize("kwargs", [
    dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_k=-1), dict(top_k=2.5),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.1), dict(min_p=-0.1), dict(min_p=1.1),
    dict(repeat_penalty=0.0), dict(repeat_penalty=-1.0), dict(repeat_last_n=-2), dict(temperature="hot"),
])
def test_bad_sampling_params(kwargs: Dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[sampling\]"):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_bad_sampler_inputs() -> None:
    with pytest.raises(InvalidArgumentError):
        Sampler(seed=-1)
    s = Sampler(SamplingParams(temperature=1.0), seed=0)
    with pytest.raises(InvalidArgumentError, match="shape"):
        s.sample(np.zeros((2, 5), np.float32))
    with pytest.raises(InvalidArgumentError, match="shape"):
        s.sample(np.zeros(0, np.float32))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        s.sample(np.array([0.0, np.nan], np.float32))
    with pytest.raises(InvalidArgumentError, match=r"\+inf"):
        s.sample(np.array([0.0, np.inf], np.float32))
    for t in (0.0, 1.0):
        with pytest.raises(InvalidArgumentError, match="-inf"):
            Sampler(SamplingParams(temperature=t)).sample(np.full(4, -np.inf, np.float32))
