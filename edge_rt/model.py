"""The embedded Python API: ``edge_rt.load(path)`` (edge_rt/loading.py) returns a :class:`Model`.

A :class:`Model` pairs the native engine (``_core.Engine``: weights + KV cache, GIL released while it
computes) with the GGUF's tokenizer and a numpy sampler. It keeps the list of token ids whose keys and
values sit in the KV cache, so a new prompt that extends the previous sequence (a chat turn, a retry
with the same prefix) only evaluates the new tokens.

A Model is not thread-safe and not re-entrant: one generation at a time. Starting a generation (or
calling :meth:`Model.logits`, :meth:`Model.bench`, :meth:`Model.reset`) while an earlier generator is
still open makes that earlier generator raise :class:`~edge_rt.errors.EdgeRTError` when it resumes,
instead of silently decoding from a cache that no longer holds its sequence.
"""

from __future__ import annotations

import operator
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from .errors import EdgeRTError, InvalidArgumentError
from .loading import is_int
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from .chat_template import ChatTemplate
    from .observer import EvalObserver
    from .tokenizer import Tokenizer

__all__ = ["Model", "GenerationResult", "FinishReason"]

PathLike = Union[str, "os.PathLike[str]"]
StopArg = Union[str, Sequence[str], None]

#: Why a generation ended: "eog" (the model produced an end-of-generation token), "stop" (a stop
#: string was produced; the text ends before it), "length" (max_tokens reached), "context" (the KV
#: cache is full: n_ctx tokens), "aborted" (the caller stopped iterating or an error occurred).
FinishReason = str

# Prompt and logits() evaluation is split into batches of at most this many tokens, which bounds the
# engine's activation scratch and the size of each logits block independently of n_ctx.
_EVAL_CHUNK = 512


@dataclass
class GenerationResult:
    """What the last generation on a :class:`Model` did (see :attr:`Model.last_result`).

    Attributes:
        text: Generated text (for :meth:`Model.stream`/:meth:`Model.generate`: exactly what was
            returned, i.e. cut before a stop string).
        token_ids: Generated token ids (end-of-generation tokens excluded; a stop string's tokens
            included).
        finish_reason: One of "eog", "stop", "length", "context", "aborted".
        n_prompt: Prompt length in tokens.
        n_cached: Prompt tokens whose KV cache entries were reused from the previous call.
        prefill_s: Seconds spent evaluating the uncached prompt tokens.
        decode_s: Seconds spent sampling and evaluating generated tokens (excluding the caller's time).
        n_decode: Number of single-token evaluations in ``decode_s``.
    """

    text: str = ""
    token_ids: List[int] = field(default_factory=list)
    finish_reason: FinishReason = "aborted"
    n_prompt: int = 0
    n_cached: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    n_decode: int = 0

    @property
    def n_generated(self) -> int:
        """Number of generated tokens."""
        return len(self.token_ids)

    @property
    def prefill_tok_s(self) -> float:
        """Prompt tokens evaluated per second (0.0 when nothing was evaluated)."""
        n = self.n_prompt - self.n_cached
        return n / self.prefill_s if self.prefill_s > 0 and n > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        """Generated tokens per second over the decode phase (0.0 when there was none)."""
        return self.n_decode / self.decode_s if self.decode_s > 0 and self.n_decode > 0 else 0.0


class Model:
    """A loaded model: generation, tokenization, logits and a micro-benchmark.

    Create it with :func:`edge_rt.load`; the constructor is for the package and for tests that supply
    their own engine. Use it as a context manager (or call :meth:`close`) to free the weights and the
    KV cache deterministically.
    """

    #: The placement options :func:`edge_rt.load` was given (the planner's inputs: mem_budget, window,
    #: prefetch, expert_cache, expert_prefetch, expert_predictor), and the plan ``load(plan="auto")`` applied.
    load_options: Dict[str, Any] = {}
    plan: Optional[Dict[str, Any]] = None

    def __init__(self, engine: Any, tokenizer: "Tokenizer", *, path: Optional[Path] = None,
                 tokenizer_model: Optional[str] = None, chat_template: Optional[str] = None) -> None:
        """Wrap an engine (the ``_core.Engine`` contract) and a tokenizer. Prefer :func:`load`.
        ``chat_template``: the file's ``tokenizer.chat_template`` text, if it has one."""
        self._engine: Any = engine
        self._tokenizer = tokenizer
        self._path = path
        self._tokenizer_model = tokenizer_model
        self._n_ctx = int(engine.n_ctx)
        self._n_vocab = int(engine.n_vocab)
        self._threads = int(engine.threads)
        self._cache: List[int] = []  # token ids whose KV entries are in the engine, in order
        self._epoch = 0  # bumped by every operation that takes over the KV cache
        self._last_result: Optional[GenerationResult] = None
        self._observer: Optional["EvalObserver"] = None
        self._eog = frozenset(int(t) for t in (tokenizer.eog_ids or ()))
        self._template_source = chat_template
        self._templates: Dict[str, "ChatTemplate"] = {}

    # ---- properties ------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """KV cache capacity in tokens (prompt + generated)."""
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        """Number of logits per token."""
        return self._n_vocab

    @property
    def threads(self) -> int:
        """Worker threads of the engine."""
        return self._threads

    @property
    def path(self) -> Optional[Path]:
        """The model file, when loaded with :func:`load`."""
        return self._path

    @property
    def tokenizer(self) -> "Tokenizer":
        """The model's tokenizer."""
        return self._tokenizer

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._engine is None

    @property
    def last_result(self) -> Optional[GenerationResult]:
        """Statistics of the most recent generation (finished or abandoned), or None."""
        return self._last_result

    @property
    def n_cached(self) -> int:
        """Number of tokens currently held in the KV cache."""
        return len(self._cache)

    # ---- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the engine (weights and KV cache). Further engine calls raise EdgeRTError."""
        self._epoch += 1
        self._engine = None
        self._cache = []

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self._path.name if self._path is not None else "?"
        state = "closed" if self.closed else f"n_ctx={self._n_ctx} threads={self._threads}"
        return f"<edge_rt.Model {name} {state}>"

    def reset(self) -> None:
        """Clear the KV cache (the next generation evaluates its whole prompt)."""
        eng = self._require_engine("reset")
        self._epoch += 1
        eng.reset()
        self._cache = []

    # ---- tokenizer -------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        """Token ids of ``text``; ``add_special`` adds BOS/EOS as the model's metadata asks,
        ``parse_special`` turns control-token text (e.g. ``<|eot_id|>``) into those tokens."""
        return list(self._tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special))

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of ``ids``; control tokens are rendered only when ``special`` is true."""
        try:
            int_ids = [operator.index(i) for i in ids]
        except TypeError:
            raise InvalidArgumentError(
                f"[detokenize] expected a sequence of integer token ids, got {ids!r:.80}") from None
        return self._tokenizer.detokenize(int_ids, special=special)

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, prompt: str, max_tokens: Optional[int] = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, seed: Optional[int] = None, stop: StopArg = None, *,
                 min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64) -> str:
        """Generate a completion of ``prompt`` and return it (without the prompt).

        Arguments are those of :meth:`stream`. Generation ends at an end-of-generation token, a stop
        string (excluded from the result), ``max_tokens`` or a full KV cache; :attr:`last_result`
        tells which.
        """
        return "".join(self.stream(prompt, max_tokens, temperature, top_k, top_p, seed, stop,
                                   min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n))

    def stream(self, prompt: str, max_tokens: Optional[int] = 128, temperature: float = 0.8,
               top_k: int = 40, top_p: float = 0.95, seed: Optional[int] = None, stop: StopArg = None, *,
               min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64) -> Iterator[str]:
        """Generate a completion of ``prompt``, yielding text pieces as soon as they are final.

        Args:
            prompt: Text to complete; tokenized with BOS as the model asks.
            max_tokens: Most tokens to generate; ``None`` generates until an end-of-generation token
                or a full KV cache.
            temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n: See
                :class:`~edge_rt.sampling.SamplingParams`; ``temperature <= 0`` is greedy.
            seed: Sampler seed; the same seed and arguments give the same text.
            stop: One string or several; generation ends as soon as one appears, and no text from
                the stop string on is ever yielded (pieces that could be the start of a stop string
                are held back until they cannot).

        The pieces concatenate to exactly :meth:`generate`'s result. Arguments are validated when
        this method is called; the prompt is evaluated on the first ``next()``. Statistics land in
        :attr:`last_result` when the iterator finishes or is closed.

        Raises:
            InvalidArgumentError: a bad argument, or a prompt longer than ``n_ctx`` tokens.
        """
        stops = _normalize_stop(stop)
        ids = self.tokenize(prompt, add_special=True)
        if not ids:
            raise InvalidArgumentError("[generate] the prompt is empty and this model adds no BOS token: give "
                                       "some text to continue")
        gen, res = self._start(ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                               seed=seed, min_p=min_p, repeat_penalty=repeat_penalty,
                               repeat_last_n=repeat_last_n)
        return self._stream_text(gen, res, stops)

    def _stream_text(self, gen: Iterator[int], res: GenerationResult, stops: List[str]) -> Iterator[str]:
        from .tokenizer import StreamDecoder

        decoder = StreamDecoder(self._tokenizer)
        pending = ""  # decoded text not yet yielded: it may be the beginning of a stop string
        out: List[str] = []
        stopped = False
        try:
            for tok in gen:
                pending += decoder.feed(tok)
                if not pending:
                    continue
                if stops:
                    cut = _find_stop(pending, stops)
                    if cut is not None:
                        pending = pending[:cut]
                        stopped = True
                        break
                    hold = _stop_prefix_len(pending, stops)
                else:
                    hold = 0
                if hold < len(pending):
                    piece, pending = pending[:len(pending) - hold], pending[len(pending) - hold:]
                    out.append(piece)
                    yield piece
            if not stopped:
                pending += decoder.flush()
                if stops:
                    cut = _find_stop(pending, stops)
                    if cut is not None:
                        pending = pending[:cut]
                        stopped = True
            if pending:
                out.append(pending)
                yield pending
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()  # lets the token generator record how it ended
            res.text = "".join(out)
            if stopped:
                res.finish_reason = "stop"

    def chat_template(self, template: Optional[str] = None) -> "ChatTemplate":
        """The compiled chat template :meth:`chat` uses: ``template`` (a built-in name such as
        ``"chatml"``, ``"llama3"``, ``"gemma"``, ``"phi3"``, or Jinja text), else the file's
        ``tokenizer.chat_template``, else ChatML. Raises ChatTemplateError if it does not compile."""
        from .chat_template import ChatTemplate

        source = template or self._template_source or "chatml"
        if source not in self._templates:
            tok = self._tokenizer
            text = [tok.token_text(i) if i is not None else "" for i in (tok.bos_id, tok.eos_id)]
            from_file = template is None and self._template_source is not None
            self._templates[source] = ChatTemplate(source, bos_token=text[0], eos_token=text[1],
                                                   name="tokenizer.chat_template" if from_file else None)
        return self._templates[source]

    def chat(self, messages: Sequence[Dict[str, Any]], max_tokens: Optional[int] = 256, temperature: float = 0.8,
             top_k: int = 40, top_p: float = 0.95, seed: Optional[int] = None, stop: StopArg = None, *,
             min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
             template: Optional[str] = None) -> str:
        """The assistant's reply to ``messages`` (see :meth:`chat_stream`), as one string."""
        return "".join(self.chat_stream(messages, max_tokens, temperature, top_k, top_p, seed, stop, min_p=min_p,
                                        repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                        template=template))

    def chat_stream(self, messages: Sequence[Dict[str, Any]], max_tokens: Optional[int] = 256,
                    temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95, seed: Optional[int] = None,
                    stop: StopArg = None, *, min_p: float = 0.0, repeat_penalty: float = 1.0,
                    repeat_last_n: int = 64, template: Optional[str] = None) -> Iterator[str]:
        """Stream the assistant's reply to ``messages`` (OpenAI-style ``[{"role", "content"}, ...]``).

        The messages are rendered by :meth:`chat_template` (sandboxed; see :mod:`edge_rt.chat_template`)
        with the generation prompt, tokenized with control tokens parsed (one BOS even when both the
        template and the tokenizer add it), and generated as :meth:`stream` does; the reply ends at the
        model's end-of-turn token. Earlier turns still in the KV cache are not evaluated again.

        Raises:
            InvalidArgumentError: malformed messages, bad sampling settings, or a prompt over n_ctx.
            ChatTemplateError: the template failed (syntax, sandbox, size or time limit).
        """
        text = self.chat_template(template).render(messages, add_generation_prompt=True)
        stops = _normalize_stop(stop)
        ids = self.tokenize(text, add_special=True, parse_special=True)
        bos = self._tokenizer.bos_id
        if len(ids) >= 2 and ids[0] == ids[1] == bos:
            del ids[0]
        gen, res = self._start(ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                               min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n)
        return self._stream_text(gen, res, stops)

    def generate_tokens(self, token_ids: Sequence[int], max_tokens: Optional[int] = 128, *,
                        temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95,
                        seed: Optional[int] = None, min_p: float = 0.0, repeat_penalty: float = 1.0,
                        repeat_last_n: int = 64) -> Iterator[int]:
        """Generate token ids after the prompt ``token_ids`` (taken as is: no BOS is added).

        The KV cache prefix shared with the previous sequence is reused: only the new prompt tokens
        are evaluated. Generation stops before yielding an end-of-generation token, after
        ``max_tokens`` tokens (``None``: no limit), or when the KV cache is full (the last token is
        yielded but not evaluated); :attr:`last_result` records which.

        Raises:
            InvalidArgumentError: empty prompt, a token id outside ``[0, n_vocab)``, a prompt longer
                than ``n_ctx``, or bad sampling settings (checked when called, not on first ``next()``).
            EdgeRTError: the generator resumed after another operation took over the KV cache.
        """
        gen, _ = self._start(token_ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             seed=seed, min_p=min_p, repeat_penalty=repeat_penalty,
                             repeat_last_n=repeat_last_n)
        return gen

    def _start(self, token_ids: Sequence[int], max_tokens: Optional[int], *, temperature: float, top_k: int,
               top_p: float, seed: Optional[int], min_p: float, repeat_penalty: float,
               repeat_last_n: int) -> Tuple[Iterator[int], GenerationResult]:
        """Validate eagerly; return the (lazy) token generator and the result it will fill in."""
        self._require_engine("generate")
        prompt = self._check_tokens(token_ids, "generate")
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 0):
            raise InvalidArgumentError(f"[generate] max_tokens must be an integer >= 0 or None, got {max_tokens!r}")
        sampler = Sampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                         repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n), seed)
        res = GenerationResult(n_prompt=len(prompt))
        return self._generate(prompt, max_tokens, sampler, res), res

    def _generate(self, prompt: List[int], max_tokens: Optional[int], sampler: Sampler,
                  res: GenerationResult) -> Iterator[int]:
        self._require_engine("generate")
        self._epoch += 1
        epoch = self._epoch
        self._last_result = res
        try:
            if max_tokens == 0:
                res.finish_reason = "length"
                return
            # Reuse the cached prefix, but always evaluate at least one token to get logits.
            n_keep = min(_common_prefix(self._cache, prompt), len(prompt) - 1)
            self._truncate(n_keep)
            res.n_cached = n_keep
            t0 = time.perf_counter()
            logits = self._eval_chunks(prompt[n_keep:])
            res.prefill_s = time.perf_counter() - t0
            history = prompt + []
            while True:
                t0 = time.perf_counter()
                tok = sampler.sample(logits, history)
                dt = time.perf_counter() - t0
                if tok in self._eog:
                    res.decode_s += dt
                    res.finish_reason = "eog"
                    return
                res.token_ids.append(tok)
                history.append(tok)
                yield tok
                self._check_epoch(epoch)
                if max_tokens is not None and len(res.token_ids) >= max_tokens:
                    res.finish_reason = "length"
                    return
                if len(self._cache) >= self._n_ctx:
                    res.finish_reason = "context"
                    return
                t0 = time.perf_counter()
                logits = self._eval([tok], all_logits=False)[0]
                res.decode_s += dt + (time.perf_counter() - t0)
                res.n_decode += 1
        finally:
            if not res.text and res.token_ids:
                try:
                    res.text = self._tokenizer.detokenize(res.token_ids)
                except Exception:  # statistics only; never mask the real outcome
                    pass

    # ---- logits and benchmark --------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of ``token_ids`` evaluated from an empty context.

        Returns a float32 array of shape ``(len(token_ids), n_vocab)``; row i predicts token i+1.
        The KV cache then holds ``token_ids``, so a generation whose prompt extends them reuses it.

        Raises:
            InvalidArgumentError: empty input, ids outside ``[0, n_vocab)``, or more than ``n_ctx``
                tokens.
        """
        eng = self._require_engine("logits")
        ids = self._check_tokens(token_ids, "logits")
        self._epoch += 1
        eng.reset()
        self._cache = []
        out = np.empty((len(ids), self._n_vocab), dtype=np.float32)
        for s in range(0, len(ids), _EVAL_CHUNK):
            chunk = ids[s:s + _EVAL_CHUNK]
            out[s:s + len(chunk)] = self._eval(chunk, all_logits=True)
        return out

    def bench(self, n_prompt: int = 128, n_gen: int = 64, seed: int = 0) -> Dict[str, float]:
        """Time prefill (one evaluation of ``n_prompt`` random token ids) and decode (``n_gen``
        single-token evaluations) from an empty KV cache, which is cleared again afterwards.

        Returns:
            ``{"prefill_tok_s", "decode_tok_s", "n_prompt", "n_gen", "prefill_s", "decode_s",
            "threads"}``.

        Raises:
            InvalidArgumentError: ``n_prompt < 1``, ``n_gen < 1`` or ``n_prompt + n_gen > n_ctx``.
        """
        eng = self._require_engine("bench")
        for name, v in (("n_prompt", n_prompt), ("n_gen", n_gen)):
            if not is_int(v) or v < 1:
                raise InvalidArgumentError(f"[bench] {name} must be an integer >= 1, got {v!r}")
        if n_prompt + n_gen > self._n_ctx:
            raise InvalidArgumentError(f"[bench] n_prompt + n_gen = {n_prompt + n_gen} exceeds n_ctx = {self._n_ctx}")
        rng = np.random.default_rng(seed)
        prompt = rng.integers(0, self._n_vocab, size=n_prompt, dtype=np.int32)
        gen = rng.integers(0, self._n_vocab, size=(n_gen, 1), dtype=np.int32)
        self._epoch += 1
        eng.reset()
        self._cache = []
        try:
            t0 = time.perf_counter()
            self._bench_prefill(eng, prompt)
            prefill_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(n_gen):
                eng.eval(gen[i], False)
            decode_s = time.perf_counter() - t0
        finally:
            eng.reset()
        return {
            "prefill_tok_s": n_prompt / prefill_s if prefill_s > 0 else float("inf"),
            "decode_tok_s": n_gen / decode_s if decode_s > 0 else float("inf"),
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "threads": self._threads,
        }

    def _bench_prefill(self, eng: Any, prompt: np.ndarray) -> None:
        """The prefill :meth:`bench` times, into an empty cache (NpuModel runs it on its stage)."""
        eng.eval(prompt, False)

    def info(self) -> Dict[str, Any]:
        """Engine facts (architecture, sizes, hyperparameters, tensor types, ISA, threads) plus
        ``n_ctx``, ``path``, ``tokenizer_model`` and ``tokenizer_n_vocab``."""
        eng = self._require_engine("info")
        d: Dict[str, Any] = dict(eng.info())
        d["n_ctx"] = self._n_ctx
        d["path"] = str(self._path) if self._path is not None else None
        d["tokenizer_model"] = self._tokenizer_model or getattr(self._tokenizer, "model", None)
        d["tokenizer_n_vocab"] = int(self._tokenizer.n_vocab)
        return d

    def memory_report(self) -> Dict[str, Any]:
        """The engine's memory by class and the weight placement.

        Keys: ``budget`` (bytes, 0 = none), ``classes`` (``pinned_weights``, ``window_slots``,
        ``expert_cache``, ``kv_cache``, ``scratch``, ``metadata``: bytes each; ``metadata`` is the GGUF
        key/values the engine keeps plus the tokenizer's estimate,
        ``edge_rt.loading.HOST_METADATA_FACTOR``), ``total``, ``streaming``, ``window``
        (slots), ``slot_bytes``, ``pinned_units`` / ``streamed_units`` (layer ids; ``n_layer`` is the
        output head), ``streamed_bytes_per_token`` and ``io`` (``direct`` or ``buffered``); MoE under a
        budget: ``expert_cache_slots`` (experts the cache holds), ``expert_slot_bytes`` and
        ``total_experts`` (``n_layer * n_expert``).
        """
        return dict(self._require_engine("memory_report").memory_report())

    def stream_stats(self, reset: bool = False) -> Dict[str, Any]:
        """Streaming counters since load or the last reset: ``bytes_read``, ``io_seconds`` (slot fills),
        ``stall_seconds`` (compute waiting for I/O), ``acquires`` and ``stalls``. All zero when every
        weight is resident."""
        eng = self._require_engine("stream_stats")
        d = dict(eng.stream_stats())
        if reset:
            eng.clear_stream_telemetry()
        return d

    def stream_events(self) -> List[Dict[str, Any]]:
        """One record per streamed layer use (``unit``, ``bytes``, and times in seconds since load:
        ``io_start``/``io_end`` of its read, ``wait_start``/``acquired`` around the compute's wait,
        ``released``): the data behind ``edge-rt bench --plot``."""
        return list(self._require_engine("stream_events").stream_events())

    def expert_stats(self, reset: bool = False) -> Dict[str, Any]:
        """Expert cache counters (MoE under a budget) since load or the last reset.

        ``uses`` (experts the routers selected, per layer and micro-batch), ``hits`` (found cached or
        already being read by a prediction), ``misses`` (read on demand), ``hit_rate``,
        ``bytes_read``, ``reads_on_demand``, ``reads_speculative``, ``speculative_unused`` (predicted
        reads evicted unused), ``predictions_dropped`` (cap on speculative bytes, or no free slot),
        ``stall_seconds`` (compute waiting for expert reads), ``cache_slots``, ``slot_bytes``, and
        ``layers``: per layer ``uses``, ``hits`` and, for ``same_layer`` and ``next_layer``,
        ``predicted``/``correct``/``needed`` with ``precision`` and ``recall`` (None before any
        prediction). ``reset=True`` clears the counters (and the stream counters) after reading.
        """
        eng = self._require_engine("expert_stats")
        d = dict(eng.expert_stats())
        d["hit_rate"] = d["hits"] / d["uses"] if d["uses"] else None
        for layer in d["layers"]:
            for key in ("same_layer", "next_layer"):
                p = layer[key]
                p["precision"] = p["correct"] / p["predicted"] if p["predicted"] else None
                p["recall"] = p["correct"] / p["needed"] if p["needed"] else None
        if reset:
            eng.clear_stream_telemetry()
        return d

    def expert_events(self) -> List[Dict[str, Any]]:
        """One record per expert read (``layer``, ``expert``, ``speculative``, ``io_start``/``io_end``
        in seconds since load): the expert rows of ``edge-rt bench --plot``."""
        return list(self._require_engine("expert_events").expert_events())

    @contextmanager
    def observe(self, observer: "EvalObserver") -> Iterator["EvalObserver"]:
        """Installs ``observer`` (an :class:`edge_rt.observer.EvalObserver`) for the evaluations run
        inside the ``with`` block, and removes it on leaving; yields the observer. One observer at a
        time: calibration statistics, routing traces and tools that inspect the forward pass are
        observers (see :mod:`edge_rt.observer`)."""
        engine = self._require_engine("observe")
        if self._observer is not None:
            raise InvalidArgumentError("[observe] an observer is already installed on this model")
        engine.set_observer(observer)
        self._observer = observer
        try:
            yield observer
        finally:
            self._observer = None
            if self._engine is not None:
                self._engine.set_observer(None)

    # ---- internals -------------------------------------------------------------------------------

    def _require_engine(self, op: str) -> Any:
        if self._engine is None:
            raise EdgeRTError(f"[{op}] the model is closed")
        return self._engine

    def _check_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            raise EdgeRTError("[generate] another operation used this Model's KV cache while this "
                              "generation was paused; a Model runs one generation at a time")

    def _check_tokens(self, token_ids: Sequence[int], op: str) -> List[int]:
        try:
            arr = np.asarray(token_ids)
        except (TypeError, ValueError):  # ragged nesting, or objects numpy cannot hold
            raise InvalidArgumentError(f"[{op}] expected a non-empty 1-D sequence of token ids, got "
                                       f"{token_ids!r:.80}") from None
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidArgumentError(f"[{op}] expected a non-empty 1-D sequence of token ids, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise InvalidArgumentError(f"[{op}] token ids must be integers, got dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= self._n_vocab))
        if bad.size:
            raise InvalidArgumentError(
                f"[{op}] token id {int(arr[bad[0]])} at position {int(bad[0])} is outside [0, {self._n_vocab})")
        if arr.size > self._n_ctx:
            raise InvalidArgumentError(
                f"[{op}] {arr.size} tokens exceed the context size n_ctx={self._n_ctx}; "
                "load the model with a larger n_ctx (edge-rt: --ctx) or shorten the input")
        return [int(t) for t in arr]

    def _truncate(self, n_keep: int) -> None:
        if n_keep < len(self._cache):
            eng = self._require_engine("generate")
            if n_keep == 0:
                eng.reset()
            else:
                eng.truncate(n_keep)
            del self._cache[n_keep:]

    def _eval(self, tokens: Sequence[int], all_logits: bool) -> np.ndarray:
        """Evaluate tokens at the end of the cache, keeping the cache list in step with the engine."""
        eng = self._require_engine("eval")
        try:
            out = eng.eval(np.asarray(tokens, dtype=np.int32), all_logits)
        except BaseException:
            # The engine's cache may hold part of the batch (e.g. interrupted): start over next time.
            self._cache = []
            try:
                eng.reset()
            except Exception:
                pass
            raise
        self._cache.extend(int(t) for t in tokens)
        return out

    def _eval_chunks(self, tokens: List[int]) -> np.ndarray:
        """Evaluate tokens in batches of at most _EVAL_CHUNK; return the last token's logits (n_vocab,)."""
        out: Optional[np.ndarray] = None
        for s in range(0, len(tokens), _EVAL_CHUNK):
            out = self._eval(tokens[s:s + _EVAL_CHUNK], all_logits=False)
        assert out is not None
        return out[-1]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    m = min(len(a), len(b))
    if m == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:m], dtype=np.int64) != np.asarray(b[:m], dtype=np.int64))
    return int(diff[0]) if diff.size else m


def _normalize_stop(stop: StopArg) -> List[str]:
    if stop is None:
        return []
    try:
        stops = [stop] if isinstance(stop, str) else list(stop)
    except TypeError:
        raise InvalidArgumentError(f"[generate] stop must be a str or a sequence of str, got {stop!r}") from None
    for s in stops:
        if not isinstance(s, str) or not s:
            raise InvalidArgumentError(f"[generate] stop strings must be non-empty str, got {s!r}")
    return stops


def _find_stop(text: str, stops: List[str]) -> Optional[int]:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    best: Optional[int] = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def _stop_prefix_len(text: str, stops: List[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
