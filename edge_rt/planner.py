"""The planner: where a model's weights go on a device and how fast it will run, before loading it.

:func:`plan` reads the GGUF header and asks the core for the placement a load would make
(``_core.plan``: the same ``place_weights`` the engine runs, with the same classes reserved before it), then
predicts speed from a device profile (devices/profile_schema.py) with an explicit cost model:

decode, one token (threads ``T``; rates from the profile are per thread):
  - each weight unit (a layer without its experts, or the output head) costs
    ``max(elements / (dot_decode[type] * T), bytes / memory_bw(T))``: the kernels' in-cache rate or the
    memory bandwidth, whichever binds (a roofline per unit); plus the attention's KV reads;
  - MoE: each layer runs ``k`` experts, costed the same way;
  - flash: every streamed unit is read once per token, and expert-cache misses are read too: with a
    cache of ``S`` of the model's ``L * E`` experts and routing assumed uniform, a fraction
    ``1 - S / (L * E)`` of the ``L * k`` experts a token uses are read (``flash_bytes_per_token``);
  - a streamed layer of a type the engine repacks into groups of 8 rows (Q4_0, Q4_K) is repacked in place
    by an I/O worker after its read: ``bytes / repack`` (the profile times that in-place repack);
  - the engine overlaps flash reads with compute when it prefetches (window >= 2, or expert prefetch on),
    and one worker's repack with the other workers' reads, so a token costs ``max(compute, flash,
    repack)``; without prefetch ``compute + flash + repack``.
prefill, ``n_prompt`` tokens: the same with the profile's prefill rates (8 activation rows per weight
row), every streamed unit read once per micro-batch, attention's ``n^2`` products at the F32 rate.
TTFT is the prefill's time; ``ttft_cold_s`` adds reading the pinned weights from flash at load.

What the model leaves out (read its misses with this in mind): thread synchronisation and the per-token
fixed costs of the engine (norms, RoPE, sampling: well under 1 ms on a 1B model), other processes using
the cores or the disk, and routing that is not uniform (a trained MoE's cache hits more often).

:func:`choose` is ``load(..., plan="auto")``: the budget from the profile when none is given (resident if
the model fits the profile's usable memory), and the window whose predicted decode is fastest.

NPU: the placement has no NPU tier yet. The NPU stage (``load(npu=...)``) adds prefill on an NPU; its
planning belongs in :func:`_predict` as a third prefill path (chunks at the profile's
``npu.chunk_latency_s``) and an ``npu`` place per unit, without changing what is here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import InvalidArgumentError, OutOfMemoryError

__all__ = ["plan", "choose", "predict_for_model"]

PathLike = Union[str, "os.PathLike[str]"]
ProfileArg = Union[None, str, "os.PathLike[str]", Dict[str, Any]]
#: Windows :func:`choose` compares (0: place_weights' default, the largest that fits).
CANDIDATE_WINDOWS = (0, 1, 2, 3, 4)


def _options(path: PathLike, threads: Optional[int], n_ctx: Optional[int], mem_budget: Optional[Union[int, str]],
             window: Optional[int], prefetch: bool, expert_cache: Optional[Union[int, str]], expert_prefetch: str,
             expert_predictor: Optional[PathLike]) -> Any:
    """EngineOptions exactly as :func:`edge_rt.load` builds them (same reserved classes, same placement)."""
    from .loading import _core, _memory_options, _open_model_header, _predictor_options

    opts = _core().EngineOptions()
    _memory_options(opts, "plan", mem_budget, window, prefetch, expert_cache, expert_prefetch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_ctx above the training context: the plan is still right
        try:
            p, header, _ = _open_model_header(path, threads, n_ctx, opts)
        except OutOfMemoryError:
            if not opts.mem_budget:
                raise
            # The metadata alone exceeds the budget (the reader stopped before allocating past it).
            from .loading import minimum_budget

            least = minimum_budget(path, threads, n_ctx, prefetch=prefetch, expert_prefetch=expert_prefetch,
                                   expert_predictor=expert_predictor)["total"]
            raise OutOfMemoryError(f"[plan] memory budget {opts.mem_budget} bytes is below the minimum {least} "
                                   f"bytes for '{path}' (its metadata alone needs more)") from None
    _predictor_options(opts, p, expert_predictor)
    return p, header, opts


def plan(model: PathLike, profile: ProfileArg = None, *, mem_budget: Optional[Union[int, str]] = None,
         threads: Optional[int] = None, n_ctx: Optional[int] = None, window: Optional[int] = None,
         prefetch: bool = True, expert_cache: Optional[Union[int, str]] = None, expert_prefetch: str = "next",
         expert_predictor: Optional[PathLike] = "auto", n_prompt: int = 128) -> Dict[str, Any]:
    """Place ``model`` for ``profile`` and predict its speed, from the GGUF header alone.

    ``profile``: a profile dict, a JSON file, a shipped profile's name or None for this machine's
    (``edge-rt profile``). The other arguments as :func:`edge_rt.load` (``threads`` defaults to the
    profile's ``cpu.cores``); ``n_prompt``: the prompt length of the prefill and TTFT prediction (decode
    is predicted at position ``n_prompt``).

    Returns a dict (``edge-rt plan --json``): ``model``, ``profile``, ``threads``, ``n_ctx``, ``mem_budget``
    (None: resident), ``window``, ``prefetch``, ``expert_prefetch``, ``placement`` (``mode`` resident or
    streaming; ``units``: per layer and the head, ``name``, ``bytes``, ``place`` pinned or streamed;
    ``window``, ``slot_bytes``, ``pinned_bytes``, ``streamed_bytes``; ``expert_cache`` for MoE: ``slots``,
    ``total``, ``slot_bytes``, ``bytes``; ``memory``: bytes per class as the load will reserve them;
    ``minimum_budget``), ``flash_bytes_per_token``, and ``predicted``: ``decode_tok_s``, ``prefill_tok_s``,
    ``ttft_s``, ``ttft_cold_s``, ``load_s`` and the terms behind them (``decode``, ``prefill``).

    Raises ProfileError (the field named), OutOfMemoryError (budget below the minimum, a window or expert
    cache that does not fit), and what :func:`edge_rt.load` raises for the file and the options.
    """
    from .devices.profile_schema import load_profile
    from .loading import _core

    prof = load_profile(profile)
    if threads is None:
        threads = int(prof["cpu"]["cores"])
    if isinstance(n_prompt, bool) or not isinstance(n_prompt, int) or n_prompt < 1:
        raise InvalidArgumentError(f"[plan] n_prompt must be an integer >= 1, got {n_prompt!r}")
    p, header, opts = _options(model, threads, n_ctx, mem_budget, window, prefetch, expert_cache, expert_prefetch,
                               expert_predictor)
    tensors = {t["name"]: t for t in header.tensors}
    md = header.metadata
    del header
    placed = dict(_core().plan(str(p), opts))
    out = _describe(p, prof, opts, placed, tensors, md)
    out["predicted"] = _predict(prof, opts, placed, tensors, md, n_prompt)
    out["flash_bytes_per_token"] = out["predicted"]["decode"]["flash_bytes"]
    return out


def _unit_name(u: int, n_layer: int) -> str:
    return "output" if u == n_layer else f"blk.{u}"


def _describe(p: Path, prof: Dict[str, Any], opts: Any, placed: Dict[str, Any], tensors: Dict[str, Any],
              md: Any) -> Dict[str, Any]:
    n_layer = len(placed["units"]) - 1
    streaming = bool(placed["streaming"])
    units = [{"name": _unit_name(u["unit"], n_layer), "bytes": int(u["bytes"]),
              "place": "pinned" if u["pinned"] else "streamed"} for u in placed["units"]]
    expert_cache = None
    if placed["moe"] and streaming:  # resident: every expert is a plain resident weight
        expert_cache = {"slots": int(placed["expert_slots"]), "total": int(placed["total_experts"]),
                        "slot_bytes": int(placed["expert_slot_bytes"]),
                        "bytes": int(placed["expert_class_bytes"])}
    floor = dict(placed["minimum_budget"])
    resident_weights = sum(int(t["n_bytes"]) for t in tensors.values())
    # The memory classes as Model.memory_report() names them. Besides the placed weights, pinned weights hold
    # what the load reserves before placing them: the expert predictor and RoPE factors.
    extra_pinned = (int(placed["reserved"]) - floor["metadata"] - floor["kv_cache"] - floor["scratch"]
                    - floor.get("npu", 0))
    memory = {
        "pinned_weights": extra_pinned + (int(placed["pinned_class_bytes"]) if streaming else resident_weights),
        "window_slots": int(placed["window_class_bytes"]) if streaming else 0,
        "expert_cache": int(placed["expert_class_bytes"]) if streaming else 0,
        "kv_cache": floor["kv_cache"], "scratch": floor["scratch"], "metadata": floor["metadata"],
        "npu": floor.get("npu", 0),  # the NPU prefill stage's (ModelParams::npu_bytes); the planner places none
    }
    memory["total"] = sum(memory.values())
    return {
        "model": str(p),
        "profile": prof["name"],
        "threads": int(opts.threads),
        "n_ctx": int(opts.n_ctx),
        "mem_budget": int(opts.mem_budget) or None,
        "window": int(placed["window"]) if streaming else None,
        "prefetch": bool(opts.prefetch),
        "expert_prefetch": str(opts.expert_prefetch),
        "placement": {
            "mode": "streaming" if streaming else "resident",
            "units": units,
            "window": int(placed["window"]),
            "slot_bytes": int(placed["slot_bytes"]),
            "pinned_bytes": sum(u["bytes"] for u in units if u["place"] == "pinned"),
            "streamed_bytes": sum(u["bytes"] for u in units if u["place"] == "streamed"),
            "expert_cache": expert_cache,
            "memory": memory,
            "minimum_budget": floor,
        },
    }


# ---- the cost model ----------------------------------------------------------------------------------

def _rates(prof: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    return prof["dot"][prof["cpu"]["isa"]]


def _rate(prof: Dict[str, Any], wtype: str, path: str) -> float:
    table = _rates(prof)
    if wtype not in table:
        raise InvalidArgumentError(f"[plan] profile {prof['name']!r} has no {prof['cpu']['isa']} rate for weight "
                                   f"type {wtype} (dot.{prof['cpu']['isa']}.{wtype})")
    return float(table[wtype][path])


def _memory_bw(prof: Dict[str, Any], threads: int) -> float:
    bw = prof["memory"]["read_bandwidth"]
    return min(float(bw["all_threads"]), float(bw["single_thread"]) * threads)


def _matrix_s(prof: Dict[str, Any], t: Dict[str, Any], threads: int, tokens: float, path: str, bw: float,
              share: float = 1.0) -> Tuple[float, float]:
    """(kernel seconds, memory seconds) to multiply ``share`` of matrix ``t`` by ``tokens`` activation rows,
    its bytes read once; the matrix takes the larger of the two."""
    memory = t["n_bytes"] * share / bw
    if len(t["shape"]) < 2:
        return 0.0, memory  # a norm: read, hardly any arithmetic
    if path == "decode" and "decode_ram" in _rates(prof).get(t["type"], {}):
        path = "decode_ram"  # measured streaming from RAM, where decode's weights are
    return t["n_elements"] * share * tokens / (_rate(prof, t["type"], path) * threads), memory


def _hparam(md: Any, key: str, default: int = 0) -> int:
    arch = md.get("general.architecture")
    v = md.get(f"{arch}.{key}", default)
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def _predict(prof: Dict[str, Any], opts: Any, placed: Dict[str, Any], tensors: Dict[str, Any], md: Any,
             n_prompt: int) -> Dict[str, Any]:
    threads = int(opts.threads)
    bw = _memory_bw(prof, threads)
    flash_bw = float(prof["flash"]["read_bandwidth"])
    n_layer = len(placed["units"]) - 1
    streaming = bool(placed["streaming"])
    n_embd, n_head = _hparam(md, "embedding_length"), max(1, _hparam(md, "attention.head_count", 1))
    n_head_kv = _hparam(md, "attention.head_count_kv", n_head) or n_head
    head_dim = _hparam(md, "attention.key_length", n_embd // n_head) or n_embd // n_head
    kv_row_bytes = 2 * n_head_kv * head_dim * 2  # K and V, fp16

    unit_tensors = [[tensors[n] for n in u["tensors"]] for u in placed["units"]]
    streamed_bytes = sum(int(u["bytes"]) for u in placed["units"] if streaming and not u["pinned"])
    # Streamed matrices the engine keeps in groups of 8 rows are repacked after every read (the profile's
    # repack rate exists for the types its ISA repacks; a tied head stays in the file's layout).
    rates = _rates(prof)
    repack_per_pass = sum(t["n_bytes"] / rates[t["type"]]["repack"]
                          for u, ts in zip(placed["units"], unit_tensors) if streaming and not u["pinned"]
                          for t in ts if len(t["shape"]) == 2 and t["shape"][1] % 8 == 0
                          and "repack" in rates.get(t["type"], {}) and t["name"] != "token_embd.weight")

    # Experts: per layer the three matrices of one expert (elements, bytes), k used per token.
    moe = bool(placed["moe"])
    n_expert, k_used = _hparam(md, "expert_count"), _hparam(md, "expert_used_count")
    experts = [[t for t in tensors.values() if t["name"].startswith(f"blk.{il}.") and "_exps." in t["name"]]
               for il in range(n_layer)] if moe else []
    expert_bytes = max((sum(t["n_bytes"] for t in ts) // n_expert for ts in experts), default=0)
    miss = 0.0
    if moe and streaming:
        miss = max(0.0, 1.0 - placed["expert_slots"] / max(1, placed["total_experts"]))
    overlap = bool(opts.prefetch) and placed["window"] != 1  # a window of one slot reads, then computes
    expert_overlap = bool(opts.prefetch) and str(opts.expert_prefetch) != "off"

    def phase(tokens: int, path: str, passes: int) -> Dict[str, Any]:
        weights = [_matrix_s(prof, t, threads, tokens, path, bw) for ts in unit_tensors for t in ts]
        experts_used = k_used if tokens == 1 else n_expert * (1 - (1 - k_used / max(1, n_expert)) ** tokens)
        weights += [_matrix_s(prof, t, threads, tokens * k_used / max(1, experts_used), path, bw,
                              share=experts_used / max(1, n_expert)) for ts in experts for t in ts]
        weights_s = sum(max(c, m) for c, m in weights)
        # Attention: decode reads the KV rows of the positions so far; a prompt multiplies n^2/2 pairs.
        pos = n_prompt if tokens == 1 else tokens / 2
        attention_s = n_layer * max(pos * kv_row_bytes / bw,
                                    2 * tokens * pos * n_head * head_dim / (_rate(prof, "F32", path) * threads))
        compute_s = weights_s + attention_s
        layer_flash = passes * streamed_bytes
        expert_flash = passes * n_layer * experts_used * miss * expert_bytes
        flash_s = (layer_flash + expert_flash) / flash_bw
        repack_s = passes * repack_per_pass
        # Reads the engine issues ahead run beside compute, and so does the repack that follows each read:
        # one I/O worker repacks a slot while the others read the next one, so disk, repack and compute form
        # a pipeline bound by its slowest stage. On-demand reads (no prefetch) wait, repack included.
        hidden = (layer_flash if overlap else 0) + (expert_flash if expert_overlap else 0)
        total = (max(compute_s, hidden / flash_bw, repack_s if overlap else 0)
                 + (layer_flash + expert_flash - hidden) / flash_bw + (0 if overlap else repack_s))
        kernels_s, memory_s = sum(c for c, _ in weights), sum(m for _, m in weights)
        bound = "flash" if streaming and flash_s >= compute_s else "memory" if memory_s >= kernels_s else "compute"
        return {"seconds": total, "compute_s": compute_s, "kernels_s": kernels_s, "memory_s": memory_s,
                "attention_s": attention_s, "flash_s": flash_s, "repack_s": repack_s,
                "flash_bytes": int(layer_flash + expert_flash),
                "bound": bound}

    decode = phase(1, "decode", 1)
    ubatch = 128 if streaming or moe else 256  # Engine::ubatch_for's defaults
    prefill = phase(n_prompt, "prefill", -(-n_prompt // ubatch))
    if streaming:
        load_bytes = int(placed["pinned_class_bytes"])
    else:
        load_bytes = sum(int(t["n_bytes"]) for t in tensors.values())
    load_s = load_bytes / flash_bw
    return {
        "decode_tok_s": 1.0 / decode["seconds"],
        "prefill_tok_s": n_prompt / prefill["seconds"],
        "ttft_s": prefill["seconds"],
        "ttft_cold_s": load_s + prefill["seconds"],
        "load_s": load_s,
        "n_prompt": n_prompt,
        "expert_miss_rate": miss if moe else None,
        "decode": decode,
        "prefill": prefill,
    }


# ---- plan="auto" ---------------------------------------------------------------------------------------

def choose(model: PathLike, profile: ProfileArg = None, *, mem_budget: Optional[Union[int, str]] = None,
           threads: Optional[int] = None, n_ctx: Optional[int] = None, **kwargs: Any) -> Dict[str, Any]:
    """What ``load(model, plan="auto")`` applies: the :func:`plan` it chose, with ``choice``: the ``load``
    keywords (``mem_budget``, ``window``, ``threads``).

    Without ``mem_budget`` the model runs resident when its resident memory fits the profile's
    ``memory.usable_bytes``, else under that budget. Under a budget each window of
    :data:`CANDIDATE_WINDOWS` that fits is planned and the fastest predicted decode wins (ties: the
    default window). An explicit ``window`` in ``kwargs`` is kept.
    """
    from .devices.profile_schema import load_profile

    prof = load_profile(profile)
    budget = mem_budget
    if budget is None:
        resident = plan(model, prof, threads=threads, n_ctx=n_ctx, **kwargs)
        if resident["placement"]["memory"]["total"] <= prof["memory"]["usable_bytes"]:
            resident["choice"] = {"mem_budget": None, "window": None, "threads": resident["threads"]}
            return resident
        budget = int(prof["memory"]["usable_bytes"])
    windows = [kwargs.pop("window")] if kwargs.get("window") else list(CANDIDATE_WINDOWS)
    kwargs.pop("window", None)
    best: Optional[Dict[str, Any]] = None
    errors: List[str] = []
    for w in windows:
        try:
            cand = plan(model, prof, mem_budget=budget, threads=threads, n_ctx=n_ctx, window=w or None, **kwargs)
        except OutOfMemoryError as e:
            errors.append(str(e))
            continue
        if best is None or cand["predicted"]["decode_tok_s"] > best["predicted"]["decode_tok_s"] * 1.01:
            cand["choice"] = {"mem_budget": cand["mem_budget"], "window": w or None, "threads": cand["threads"]}
            best = cand
    if best is None:
        raise OutOfMemoryError(errors[0])
    return best


def predict_for_model(model: Any, profile: ProfileArg, n_prompt: int) -> Dict[str, Any]:
    """The :func:`plan` of a loaded :class:`~edge_rt.model.Model` with the options it was loaded with (its
    ``load_options``), for printing predicted beside measured."""
    o = dict(model.load_options)
    return plan(model.path, profile, n_ctx=model.n_ctx, threads=model.threads, n_prompt=n_prompt, **o)
