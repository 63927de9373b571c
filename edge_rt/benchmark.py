"""Speed of one model on this machine: :func:`bench`, and the engine's telemetry after a run.

The protocol (what ``edge-rt bench`` prints): load the model, run one short warm-up (touches every
weight page and starts the thread pool), then ``repetitions`` timed runs, each a prefill of
``prompt_tokens`` random token ids (seeded: ``seed + i`` for run ``i``) followed by ``gen_tokens``
decode steps. Speeds are tokens per second; the median of the runs is quoted with min and max. Timing
uses :meth:`edge_rt.Model.bench`, which skips sampling and detokenization.

Comparisons against llama.cpp and physical bounds live in ``benchmarks/``; this measures one engine.
"""

from __future__ import annotations

import os
import statistics
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import InvalidArgumentError

__all__ = ["bench", "telemetry"]

PathLike = Union[str, "os.PathLike[str]"]


def telemetry(model: Any, n_tokens: int) -> Dict[str, Any]:
    """What the engine measured since the counters were last reset, per token of ``n_tokens``.

    Returns a dict with ``memory`` (:meth:`Model.memory_report`), ``n_tokens``, ``npu`` (None without
    an NPU stage: its ``info()["npu"]`` and :class:`~edge_rt.npu_stage.ChunkTimes` since load), ``experts`` (None
    unless an expert cache is in use: ``{"stats": Model.expert_stats(), "predictor": the fitted
    predictor's path or None}``) and ``streaming`` (None unless layers stream:
    :func:`edge_rt.timeline.summarize` of the stream events, per token).
    """
    from .timeline import summarize

    rep = model.memory_report()
    out: Dict[str, Any] = {"memory": rep, "n_tokens": n_tokens, "experts": None, "streaming": None, "npu": None}
    stage = getattr(model, "npu_stage", None)
    if stage is not None:
        out["npu"] = {**stage.describe(), **stage.times.as_dict()}
    if rep.get("expert_cache_slots"):
        out["experts"] = {"stats": model.expert_stats(), "predictor": model.info().get("expert_predictor")}
    if rep["streaming"] and rep["streamed_units"]:
        out["streaming"] = summarize(model.stream_events(), n_tokens)
    return out


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"[bench] {name} must be an integer >= 1, got {value!r}")


def bench(model: PathLike, *, threads: Optional[int] = None, prompt_tokens: int = 128, gen_tokens: int = 64,
          repetitions: int = 3, seed: int = 0, mem_budget: Optional[Union[int, str]] = None,
          plot: Optional[PathLike] = None, expert_cache: Optional[Union[int, str]] = None,
          expert_policy: str = "lfu", expert_prefetch: str = "next",
          expert_prediction_width: Optional[int] = None, expert_predictor: Optional[PathLike] = "auto",
          npu: Optional[str] = None, npu_model: Optional[PathLike] = None, npu_scheme: Optional[str] = None,
          profile: Any = None) -> Dict[str, Any]:
    """Measure prefill and decode speed of the GGUF ``model`` (see the module docstring).

    The model is loaded with ``n_ctx = prompt_tokens + gen_tokens`` and the given ``threads``,
    ``mem_budget`` and expert options (as :func:`edge_rt.load`; a context above the training context
    is fine for timing and not warned about), and closed afterwards. With ``npu`` (and ``npu_model``,
    ``npu_scheme``, as in :func:`edge_rt.load`) the prefill runs on that NPU backend, the context is
    the export's, and the result adds ``npu``: the stage (``info()["npu"]``) and the last run's
    per-chunk times (backend and host).

    ``plot``: a PNG path; draws the per-layer I/O and compute timeline of the last run's first decode
    tokens (needs a ``mem_budget`` under which layers stream) and, for MoE models, the expert reads
    (into ``plot`` itself when no layer streams, else next to it as ``<stem>_experts<suffix>``).
    Needs matplotlib. The check that something streams comes before any timed run.

    ``profile``: a device profile (as :func:`edge_rt.planner.plan` takes; ``"local"`` is used only when this
    machine has one): the result then has ``predicted``, the planner's prediction for the same options
    (``profile``, ``decode_tok_s``, ``prefill_tok_s``, ``ttft_s``, ``flash_bytes_per_token``).

    Returns a dict: ``model``, ``arch``, ``n_params``, ``isa``, ``threads``, ``n_prompt``, ``n_gen``,
    ``repetitions``, ``prefill_tok_s`` and ``decode_tok_s`` (medians) with ``_min``/``_max``; with a
    ``mem_budget`` also ``telemetry`` (:func:`telemetry` after the last run); with ``plot`` also
    ``plots`` (the files written); with a ``profile``, ``predicted``.

    Raises InvalidArgumentError for counts below 1 or a ``plot`` with nothing streaming, and what
    :func:`edge_rt.load` raises.
    """
    from .loading import load

    for name, value in (("prompt_tokens", prompt_tokens), ("gen_tokens", gen_tokens),
                        ("repetitions", repetitions)):
        _check_count(name, value)
    if plot is not None and mem_budget is None:
        raise InvalidArgumentError("[plot] --plot (plot=) draws the streaming timeline: give a --mem-budget "
                                   "(mem_budget=) below the model's size so that layers stream")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_ctx above the training context is fine for timing
        m = load(model, threads=threads, n_ctx=None if npu else prompt_tokens + gen_tokens, mem_budget=mem_budget,
                 expert_cache=expert_cache, expert_policy=expert_policy, expert_prefetch=expert_prefetch,
                 expert_prediction_width=expert_prediction_width, expert_predictor=expert_predictor, npu=npu,
                 npu_model=npu_model, npu_scheme=npu_scheme)
    with m:
        info = m.info()
        rep = m.memory_report()
        if plot is not None and not rep["streamed_units"] and rep["expert_cache_slots"] >= rep["total_experts"]:
            raise InvalidArgumentError(f"[plot] nothing streams: the whole model fits the {mem_budget} budget; "
                                       "give a smaller --mem-budget to draw the timeline")
        # Warm-up: touches every weight page and the thread pool once before timing.
        m.bench(n_prompt=min(prompt_tokens, 16), n_gen=min(gen_tokens, 4), seed=seed)
        runs = []
        for i in range(repetitions):
            m.stream_stats(reset=True)  # telemetry and the timeline cover the last run only
            runs.append(m.bench(n_prompt=prompt_tokens, n_gen=gen_tokens, seed=seed + i))
        extra: Dict[str, Any] = {}
        if mem_budget is not None:
            extra["telemetry"] = telemetry(m, n_tokens=gen_tokens + 1)
        if npu:
            extra["npu"] = {**info["npu"], **runs[-1]["npu"]}
        if plot is not None:
            extra["plots"] = _plot(m, Path(plot), model, mem_budget, gen_tokens)
        if profile is not None:
            extra["predicted"] = _predicted(m, profile, prompt_tokens)
        threads_used = m.threads
    pre = [r["prefill_tok_s"] for r in runs]
    dec = [r["decode_tok_s"] for r in runs]
    return {
        "model": str(model),
        "arch": info.get("arch"),
        "n_params": info.get("n_params"),
        "isa": info.get("isa"),
        "threads": threads_used,
        "n_prompt": prompt_tokens,
        "n_gen": gen_tokens,
        "repetitions": repetitions,
        "prefill_tok_s": statistics.median(pre),
        "prefill_tok_s_min": min(pre),
        "prefill_tok_s_max": max(pre),
        "decode_tok_s": statistics.median(dec),
        "decode_tok_s_min": min(dec),
        "decode_tok_s_max": max(dec),
        **extra,
    }


def _predicted(m: Any, profile: Any, prompt_tokens: int) -> Optional[Dict[str, Any]]:
    """The planner's prediction for the loaded model (None for ``"local"`` when this machine has no profile)."""
    from .devices.profile_schema import default_profile_path
    from .planner import predict_for_model

    if profile == "local" and not default_profile_path().is_file():
        return None
    r = predict_for_model(m, profile, prompt_tokens)
    p = r["predicted"]
    return {"profile": r["profile"], "decode_tok_s": p["decode_tok_s"], "prefill_tok_s": p["prefill_tok_s"],
            "ttft_s": p["ttft_s"], "flash_bytes_per_token": r["flash_bytes_per_token"]}


def _plot(m: Any, plot: Path, model: PathLike, mem_budget: Any, gen_tokens: int) -> List[Path]:
    """Draw the last run's timelines (see :func:`bench`); returns the files written."""
    from .timeline import plot_expert_timeline, plot_timeline

    title = f"{Path(model).name}: budget {mem_budget or 'none'}, threads {m.threads}"
    written: List[Path] = []
    experts = m.expert_events()
    if m.stream_events() or not experts:  # layer timeline (errors clearly when nothing streamed)
        # Pass 0 of the last run is its prompt; draw the first decode tokens after it.
        plot_timeline(m.stream_events(), plot, n_tokens=min(gen_tokens, 4), first_pass=1, title=title)
        written.append(plot)
    if experts:
        eplot = plot.with_name(plot.stem + "_experts" + plot.suffix) if written else plot
        plot_expert_timeline(experts, eplot, title=title)
        written.append(eplot)
    return written
