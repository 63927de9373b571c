"""Tests of the embedded Python API: the Model logic, and edge_rt.load on real models (the sampler's
own tests are in test_sampling.py).

Two groups:
  * Model's bookkeeping (prefix reuse, stop strings, context limit, finish reasons) on a deterministic
    numpy stand-in for ``_core.Engine`` (same contract), with the real tokenizer of a synthetic GGUF;
  * the same properties end to end through ``edge_rt.load`` and the C++ engine.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import edge_rt
from edge_rt.errors import EdgeRTError, InvalidArgumentError, ModelFormatError, ModelIOError
from edge_rt.model import GenerationResult, Model

# ==================================================================================================
# Model logic on a numpy engine
# ==================================================================================================


class FakeEngine:
    """The ``_core.Engine`` contract in numpy. The logits at each position are a pseudo-random
    function of the whole prefix, so any KV-cache bookkeeping error changes them."""

    def __init__(self, n_vocab: int, n_ctx: int, banned: Optional[List[int]] = None,
                 forced: Optional[Dict[int, int]] = None) -> None:
        self.n_vocab = n_vocab
        self.n_ctx = n_ctx
        self.threads = 1
        self.seq: List[int] = []
        self.batches: List[int] = []  # size of every eval call
        self.banned = list(banned or [])  # ids whose logit is -1e9 (e.g. EOG) unless forced
        self.forced = dict(forced or {})  # position of the predicted token -> token forced as argmax

    @property
    def n_past(self) -> int:
        return len(self.seq)

    def _row(self, prefix: List[int]) -> np.ndarray:
        seed = zlib.crc32(np.asarray(prefix, np.int32).tobytes())
        row = np.random.default_rng(seed).normal(size=self.n_vocab).astype(np.float32)
        row[self.banned] = -1e9
        tok = self.forced.get(len(prefix))
        if tok is not None:
            row[tok] = 100.0
        return row

    def eval(self, tokens: np.ndarray, all_logits: bool) -> np.ndarray:
        assert isinstance(tokens, np.ndarray) and tokens.dtype == np.int32 and tokens.ndim == 1
        n = len(tokens)
        if len(self.seq) + n > self.n_ctx:
            raise InvalidArgumentError("[eval] context full")
        if n and (tokens.min() < 0 or tokens.max() >= self.n_vocab):
            raise InvalidArgumentError("[eval] token out of range")
        self.batches.append(n)
        rows = []
        for t in tokens.tolist():
            self.seq.append(t)
            rows.append(self._row(self.seq))
        out = np.stack(rows)
        return out if all_logits else out[-1:]

    def reset(self) -> None:
        self.seq = []

    def truncate(self, n_past: int) -> None:
        assert 0 <= n_past <= len(self.seq)
        del self.seq[n_past:]

    def info(self) -> Dict[str, object]:
        return {"arch": "fake", "n_vocab": self.n_vocab, "threads": 1}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from edge_rt.synthetic import write_synthetic_gguf
    from edge_rt.tokenizer import Tokenizer

    path = write_synthetic_gguf(tmp_path_factory.mktemp("tok") / "t.gguf", n_vocab=300, n_embd=64,
                                n_ff=128, n_layer=1, n_head=2, weight_type="F16")
    return Tokenizer.from_gguf(path)


def _fake_model(tokenizer, n_ctx: int = 64, **kw) -> Model:
    kw.setdefault("banned", sorted(tokenizer.eog_ids))
    return Model(FakeEngine(tokenizer.n_vocab, n_ctx, **kw), tokenizer)


GREEDY = dict(temperature=0.0)


def _expected_greedy(tokenizer, prompt: List[int], n: int, n_ctx: int = 64) -> List[int]:
    eng = FakeEngine(tokenizer.n_vocab, n_ctx, banned=sorted(tokenizer.eog_ids))
    seq, out = list(prompt), []
    for _ in range(n):
        t = int(np.argmax(eng._row(seq)))
        out.append(t)
        seq.append(t)
    return out


def test_fake_greedy_matches_argmax(tokenizer) -> None:
    m = _fake_model(tokenizer)
    prompt = tokenizer.tokenize("the cat")
    got = list(m.generate_tokens(prompt, 10, **GREEDY))
    assert got == _expected_greedy(tokenizer, prompt, 10)
    r = m.last_result
    assert isinstance(r, GenerationResult)
    assert r.finish_reason == "length" and r.n_generated == 10 and r.n_prompt == len(prompt)
    assert r.n_decode == 9  # the 10th token is returned but not evaluated
    assert m._engine.seq == prompt + got[:9]


def test_fake_prefix_reuse(tokenizer) -> None:
    m = _fake_model(tokenizer)
    eng = m._engine
    a = tokenizer.tokenize("a long shared prefix")
    g1 = list(m.generate_tokens(a, 4, **GREEDY))
    # The next prompt extends everything seen so far: only the new tokens are evaluated.
    b = a + g1 + tokenizer.tokenize(" and more", add_special=False)
    eng.batches.clear()
    g2 = list(m.generate_tokens(b, 5, **GREEDY))
    assert m.last_result.n_cached == len(a) + 3
    assert eng.batches[0] == len(b) - (len(a) + 3)
    assert g2 == _expected_greedy(tokenizer, b, 5)
    # A prompt that diverges inside the cache truncates to the common prefix.
    c = a[:3] + [a[3] + 1] + a[4:]
    g3 = list(m.generate_tokens(c, 3, **GREEDY))
    assert m.last_result.n_cached == 3
    assert g3 == _expected_greedy(tokenizer, c, 3)
    # The same prompt twice: the last prompt token is re-evaluated to get its logits.
    list(m.generate_tokens(c, 1, **GREEDY))
    eng.batches.clear()
    g4 = list(m.generate_tokens(c, 3, **GREEDY))
    assert eng.batches[0] == 1 and m.last_result.n_cached == len(c) - 1
    assert g4 == g3


def test_fake_logits_then_generation_reuses(tokenizer) -> None:
    m = _fake_model(tokenizer)
    ids = tokenizer.tokenize("hello there")
    lg = m.logits(ids)
    assert lg.shape == (len(ids), tokenizer.n_vocab) and lg.dtype == np.float32
    first = next(iter(m.generate_tokens(ids + [5], 1, **GREEDY)))
    assert m.last_result.n_cached == len(ids)
    assert first == _expected_greedy(tokenizer, ids + [5], 1)[0]


def test_fake_eog_stops_and_is_not_yielded(tokenizer) -> None:
    prompt = tokenizer.tokenize("x")
    eos = tokenizer.eos_id
    m = _fake_model(tokenizer, forced={len(prompt) + 3: eos})
    got = list(m.generate_tokens(prompt, 50, **GREEDY))
    assert len(got) == 3 and eos not in got
    assert m.last_result.finish_reason == "eog"


def test_fake_context_limit(tokenizer) -> None:
    m = _fake_model(tokenizer, n_ctx=16)
    prompt = list(range(10, 20))
    got = list(m.generate_tokens(prompt, None, **GREEDY))
    assert len(got) == 16 - 10 + 1  # the last token fills no KV slot
    assert m.last_result.finish_reason == "context"
    assert len(list(m.generate_tokens(list(range(10, 26)), None, **GREEDY))) == 1  # prompt == n_ctx
    with pytest.raises(InvalidArgumentError, match="n_ctx"):
        m.generate_tokens(list(range(10, 27)), 5)  # raised at call time, not on next()
    with pytest.raises(InvalidArgumentError, match="n_ctx"):
        m.logits(list(range(10, 27)))


def test_fake_bad_arguments(tokenizer) -> None:
    m = _fake_model(tokenizer)
    with pytest.raises(InvalidArgumentError):
        m.generate_tokens([], 5)
    with pytest.raises(InvalidArgumentError, match="outside"):
        m.generate_tokens([1, tokenizer.n_vocab], 5)
    with pytest.raises(InvalidArgumentError):
        m.generate_tokens([1, -1], 5)
    with pytest.raises(InvalidArgumentError):
        m.generate_tokens([1, 2], -1)
    with pytest.raises(InvalidArgumentError):
        m.generate_tokens([1, 2], 5, top_p=0.0)
    with pytest.raises(InvalidArgumentError):
        m.generate("hi", stop="")
    with pytest.raises(InvalidArgumentError):
        m.logits([[1, 2]])
    # these raised numpy's ValueError / TypeError before
    with pytest.raises(InvalidArgumentError, match="1-D sequence"):
        m.logits([[1, 2], [3]])
    with pytest.raises(InvalidArgumentError, match="stop must be a str"):
        m.generate("hi", stop=5)
    with pytest.raises(InvalidArgumentError, match="integer token ids"):
        m.detokenize(["a"])
    with pytest.raises(InvalidArgumentError, match="prompt is empty"):
        m.generate("")
    assert list(m.generate_tokens([1, 2], 0)) == []
    assert m.last_result.finish_reason == "length"


def test_fake_interleaved_generations_are_detected(tokenizer) -> None:
    m = _fake_model(tokenizer)
    g1 = m.generate_tokens([1, 2, 3], 10, **GREEDY)
    next(g1)
    g2 = m.generate_tokens([7, 8, 9], 10, **GREEDY)
    next(g2)
    with pytest.raises(EdgeRTError, match="one generation at a time"):
        next(g1)
    next(g2)  # the newer one is fine


def test_fake_close(tokenizer) -> None:
    with _fake_model(tokenizer) as m:
        assert not m.closed
    assert m.closed
    for call in (lambda: m.logits([1]), lambda: m.generate("x"), lambda: m.bench(4, 2), m.info, m.reset):
        with pytest.raises(EdgeRTError, match="closed"):
            call()
    assert m.tokenize("abc")  # the tokenizer still works


def test_fake_stream_equals_generate_and_seed_determinism(tokenizer) -> None:
    m = _fake_model(tokenizer)
    kw = dict(max_tokens=30, temperature=1.0, top_k=40, top_p=0.95, seed=11)
    text = m.generate("the quick brown fox", **kw)
    assert "".join(m.stream("the quick brown fox", **kw)) == text
    assert m.generate("the quick brown fox", **kw) == text
    assert m.last_result.text == text
    assert m.generate("the quick brown fox", **{**kw, "seed": 12}) != text


def _scripted_model(tokenizer, script_text: str):
    """A model whose greedy continuation of prompt [0] is exactly the tokens of script_text."""
    ids = tokenizer.tokenize(script_text, add_special=False)
    forced = {1 + i: t for i, t in enumerate(ids)}
    return _fake_model(tokenizer, forced=forced), ids


def test_fake_stop_strings_across_piece_boundaries(tokenizer) -> None:
    script = "the quick brown fox jumps over the lazy dog"
    m, ids = _scripted_model(tokenizer, script)
    pieces = [tokenizer.token_to_piece(t) for t in ids]
    assert "".join(pieces) == script and max(map(len, pieces)) <= 3  # many boundaries to cross
    n = len(ids)

    def run(stop):
        gen = m._stream_text(*m._start([0], n, temperature=0.0, top_k=0, top_p=1.0, seed=None, min_p=0.0,
                                        repeat_penalty=1.0, repeat_last_n=64), stops=stop)
        return list(gen)

    assert "".join(run([])) == script
    assert m.last_result.finish_reason == "length"
    for i in range(0, len(script) - 1, 3):
        for L in (1, 2, 4, 7):
            stop = script[i:i + L]
            out = run([stop])
            text = "".join(out)
            assert text == script[:script.find(stop)], (stop, out)
            assert m.last_result.finish_reason == "stop"
            assert m.last_result.text == text
    # the earliest of several stop strings wins; absent stop strings change nothing
    assert "".join(run(["lazy", "brown", "xyz"])) == "the quick "
    assert "".join(run(["xyz", "qq"])) == script
    # a stop string that starts like the text but diverges releases the held-back text
    assert "".join(run(["the quick brown cat"])) == script


def test_fake_stream_is_incremental(tokenizer) -> None:
    script = "the quick brown fox"
    m, ids = _scripted_model(tokenizer, script)
    gen = m._stream_text(*m._start([0], len(ids), temperature=0.0, top_k=0, top_p=1.0, seed=None, min_p=0.0,
                                    repeat_penalty=1.0, repeat_last_n=64), stops=["zz"])
    first = next(gen)
    assert script.startswith(first) and len(first) < len(script)
    gen.close()  # abandoning the stream records the result
    assert m.last_result.finish_reason == "aborted"
    assert m.last_result.text == first


# ==================================================================================================
# edge_rt.load and the C++ engine
# ==================================================================================================

N_CTX = 96


@pytest.fixture(scope="module")
def model_path(synthetic_model) -> Path:
    return synthetic_model(n_ctx_train=256)


@pytest.fixture(scope="module")
def model(model_path):
    m = edge_rt.load(model_path, threads=1, n_ctx=N_CTX)
    yield m
    m.close()


def test_package_surface() -> None:
    assert isinstance(edge_rt.__version__, str) and edge_rt.__version__
    assert edge_rt.load is edge_rt.loading.load
    assert edge_rt.Model is Model
    assert issubclass(edge_rt.ModelIOError, edge_rt.EdgeRTError)
    for name in edge_rt.__all__:
        assert hasattr(edge_rt, name), name


def test_load_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.gguf"
    with pytest.raises(ModelIOError, match="nope.gguf"):
        edge_rt.load(p)
    with pytest.raises(ModelIOError, match="directory"):
        edge_rt.load(tmp_path)


def test_load_bad_arguments(model_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="threads"):
        edge_rt.load(model_path, threads=0)
    with pytest.raises(InvalidArgumentError, match="n_ctx"):
        edge_rt.load(model_path, n_ctx=0)
    # out of the engine's range: an error and no training-context warning before it (there was one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidArgumentError, match=r"n_ctx must be in \[1, 4194304\]"):
            edge_rt.load(model_path, n_ctx=10**9)
        with pytest.raises(InvalidArgumentError, match=r"threads must be in \[1, 1024\]"):
            edge_rt.load(model_path, threads=5000)
    # expert options on a dense model were silently ignored
    for kw in ({"expert_cache": "1MB"}, {"expert_prediction_width": 2}):
        with pytest.raises(InvalidArgumentError, match="for Mixture-of-Experts models; .* is dense"):
            edge_rt.load(model_path, mem_budget="1GB", **kw)
    # a budget of 0 used to mean "none" silently; sizes past 64 bits raised a raw TypeError
    for budget, msg in ((0, "must be > 0"), ("0GB", "must be > 0"), ("-1", ">= 0"), (-5, ">= 0"),
                        ("abc", "cannot parse"), (10**30, "too large"), ("100000000TB", "too large"), (True, "int or")):
        with pytest.raises(InvalidArgumentError, match=msg):
            edge_rt.load(model_path, mem_budget=budget)
    with pytest.raises(InvalidArgumentError, match="window needs mem_budget"):
        edge_rt.load(model_path, window=3)


def test_parse_size() -> None:
    from edge_rt.loading import parse_size

    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("800MiB") == 800 << 20
    assert parse_size(" 4096 ") == parse_size(4096) == parse_size(np.int64(4096)) == 4096
    assert parse_size(str(2**63 - 1)) == 2**63 - 1 and parse_size("1.1MiB") == 11 * 2**20 // 10
    assert parse_size(".5 GB") == 500_000_000 and parse_size("-0") == 0
    for bad, msg in (("1" + "0" * 400 + ".5", "too large"), ("-0.5", ">= 0")):  # float() overflowed to inf
        with pytest.raises(InvalidArgumentError, match=msg):
            parse_size(bad)
    with pytest.raises(InvalidArgumentError, match=r"^\[quantize\] --target-size: cannot parse"):
        parse_size("lots", "[quantize] --target-size")


def test_load_not_a_gguf(tmp_path: Path) -> None:
    p = tmp_path / "notes.gguf"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelFormatError):
        edge_rt.load(p)


def test_load_defaults(model_path: Path) -> None:
    with edge_rt.load(model_path) as m:
        assert m.n_ctx == 256  # min(2048, n_ctx_train)
        assert m.threads == edge_rt.loading.default_threads() >= 1
    with edge_rt.load(model_path, threads=2) as m:
        assert m.threads == m.info()["threads"] == 2
        assert m.generate("the", max_tokens=3, temperature=0.0)
    with pytest.warns(UserWarning, match="training context"):
        edge_rt.load(model_path, threads=1, n_ctx=512).close()


def test_info(model, model_path: Path) -> None:
    d = model.info()
    assert d["arch"] == "llama" and d["n_vocab"] == model.n_vocab == 512
    assert d["n_ctx"] == model.n_ctx == N_CTX and d["threads"] == model.threads == 1
    assert d["path"] == str(model_path) and d["tokenizer_model"] == "gpt2" and d["tokenizer_n_vocab"] == 512
    assert d["n_params"] > 0 and d["file_size"] == model_path.stat().st_size
    assert "Q8_0" in d["tensor_types"]


def test_tokenize_roundtrip(model) -> None:
    for text in ["the quick brown fox", "Hello, World! 123", "  spaces  and\nnewlines\t", "héllo wörld ✓"]:
        ids = model.tokenize(text)
        assert all(0 <= i < model.n_vocab for i in ids)
        assert model.detokenize(ids) == text


def test_logits_shape_and_errors(model) -> None:
    ids = model.tokenize("the quick brown fox")
    lg = model.logits(ids)
    assert lg.shape == (len(ids), model.n_vocab) and lg.dtype == np.float32
    assert np.isfinite(lg).all()
    with pytest.raises(InvalidArgumentError, match="n_ctx"):
        model.logits(list(range(N_CTX + 1)))
    with pytest.raises(InvalidArgumentError, match="outside"):
        model.logits([1, model.n_vocab])
    assert model.logits(list(range(N_CTX))).shape == (N_CTX, model.n_vocab)  # exactly full is fine


def test_greedy_equals_argmax_of_logits(model) -> None:
    prompt = model.tokenize("once upon a time")
    got = list(model.generate_tokens(prompt, 8, temperature=0.0))
    assert len(got) == 8
    seq = list(prompt)
    for t in got:
        assert t == int(np.argmax(model.logits(seq)[-1]))
        seq.append(t)


def test_prefix_cache_reuse_matches_fresh_run(model) -> None:
    a = model.tokenize("the quick brown fox jumps")
    b = model.tokenize(" over the lazy dog", add_special=False)
    fresh = model.logits(a + b)
    scale = float(np.abs(fresh).max())

    model.logits(a)  # KV cache now holds exactly a
    cont = model._eval(b, all_logits=True)  # continue from the cache
    np.testing.assert_allclose(cont, fresh[len(a):], rtol=0, atol=1e-4 * scale)

    model.logits(a + [7, 8, 9])  # cache diverges after a: truncate back, then continue
    model._truncate(len(a))
    cont = model._eval(b, all_logits=True)
    np.testing.assert_allclose(cont, fresh[len(a):], rtol=0, atol=1e-4 * scale)

    # Through generation: a second call whose prompt extends the first reuses the cache and
    # produces what a fresh model produces.
    g1 = list(model.generate_tokens(a, 4, temperature=0.0))
    p2 = a + g1 + b
    g2 = list(model.generate_tokens(p2, 6, temperature=0.0))
    assert model.last_result.n_cached == len(a) + 3
    model.reset()
    assert list(model.generate_tokens(p2, 6, temperature=0.0)) == g2
    assert model.last_result.n_cached == 0


def test_seeded_sampling_is_deterministic(model) -> None:
    # The synthetic model's distributions are peaked (see edge_rt.synthetic): sample hot so that
    # different seeds visibly differ.
    kw = dict(max_tokens=24, temperature=4.0, top_k=0, top_p=1.0, seed=1234)
    a = model.generate("the quick", **kw)
    b = model.generate("the quick", **kw)
    assert a == b and a
    outs = {model.generate("the quick", **{**kw, "seed": s}) for s in range(4)}
    assert len(outs) > 1


def test_stream_concatenation_equals_generate(model) -> None:
    for kw in (dict(temperature=0.0), dict(temperature=4.0, top_p=1.0, seed=5)):
        text = model.generate("a story about", max_tokens=20, **kw)
        pieces = list(model.stream("a story about", max_tokens=20, **kw))
        assert "".join(pieces) == text and len(pieces) > 1


def test_stop_strings(model) -> None:
    full = model.generate("the quick", max_tokens=24, temperature=0.0)
    assert model.last_result.finish_reason == "length"
    assert len(full) >= 8
    stop = full[4:7]
    expected = full[:full.find(stop)]
    assert model.generate("the quick", max_tokens=24, temperature=0.0, stop=stop) == expected
    assert model.last_result.finish_reason == "stop"
    pieces = list(model.stream("the quick", max_tokens=24, temperature=0.0, stop=[stop, "\x00never"]))
    assert "".join(pieces) == expected


def test_generation_stops_at_context(model) -> None:
    prompt = model.tokenize("the quick brown fox")
    got = list(model.generate_tokens(prompt, None, temperature=0.0))
    assert len(got) == N_CTX - len(prompt) + 1
    assert model.last_result.finish_reason == "context"
    with pytest.raises(InvalidArgumentError, match="n_ctx"):
        model.generate_tokens(list(range(N_CTX + 1)), 4)
    text = model.generate("the quick brown fox", max_tokens=10 * N_CTX, temperature=0.0)
    assert model.last_result.finish_reason == "context" and text


def test_last_result_stats(model) -> None:
    model.reset()
    model.generate("the quick brown fox", max_tokens=8, temperature=0.0)
    r = model.last_result
    assert r.n_prompt == len(model.tokenize("the quick brown fox")) and r.n_cached == 0
    assert r.n_generated == 8 and r.n_decode == 7
    assert r.prefill_tok_s > 0 and r.decode_tok_s > 0


def test_bench(model) -> None:
    r = model.bench(n_prompt=16, n_gen=4, seed=0)
    assert r["n_prompt"] == 16 and r["n_gen"] == 4
    assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0
    assert model.n_cached == 0
    with pytest.raises(InvalidArgumentError):
        model.bench(n_prompt=N_CTX, n_gen=1)
    with pytest.raises(InvalidArgumentError):
        model.bench(n_prompt=0)


def test_engine_options_are_checked_in_the_core() -> None:
    """One options object crosses into the core; names are parsed and ranges checked there, and the
    I/O fault hooks are not among its properties (only _core.testing reaches them)."""
    from edge_rt import _core

    opts = _core.EngineOptions()
    assert not [name for name in dir(opts) if "fault" in name]
    with pytest.raises(InvalidArgumentError, match="expert_policy must be 'lru' or 'lfu'"):
        opts.expert_policy = "mru"
    with pytest.raises(InvalidArgumentError, match="io_mode"):
        opts.io_mode = "mmap"
    _core.check_options(opts)
    opts.window = -1
    with pytest.raises(InvalidArgumentError, match=r"window must be in \[0, 4096\]"):
        _core.check_options(opts)
    opts.window = 2
    with pytest.raises(InvalidArgumentError, match="window needs mem_budget"):
        _core.check_options(opts)
