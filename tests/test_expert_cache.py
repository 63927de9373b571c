"""Mixture-of-Experts under a memory budget: the expert cache and expert prefetch.

Under a budget an MoE model's expert tensors leave the layer units: each (layer, expert) is read on
its own into an expert cache, misses on demand, predicted experts ahead of the router. None of that
may change the output, so every test compares logits bitwise with the fully resident run (prefill of
every position, then single-token decode steps), across cache sizes from one expert to all of them,
both eviction policies and every prediction mode; and the telemetry must add up.

1. bitwise identical logits: three MoE families, several cache sizes, policies, prefetch modes, a
   prompt longer than one micro-batch (which uses every expert, more than a small cache holds).
2. memory: the expert cache is a class of the budget; an explicit size is honoured; the stated
   minimum loads; peak RSS of a streamed MoE run stays within the budget plus the runtime overhead.
3. telemetry: uses = hits + misses; no speculative reads without prediction; precision and recall
   in [0, 1]; a cache holding every expert misses each expert at most once.
4. errors: bad arguments; an injected read failure inside an expert read raises (no hang, no crash)
   and the model keeps working.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from test_streaming import RUNTIME_OVERHEAD_BYTES, _in_thread

import edge_rt
from edge_rt import EdgeRTError, InvalidArgumentError, OutOfMemoryError

from helpers import python_child

N_CTX = 512
THREADS = 2
_RNG = np.random.default_rng(77)
PROMPT = _RNG.integers(3, 500, size=23).astype(np.int32)
LONG_PROMPT = _RNG.integers(3, 500, size=150).astype(np.int32)  # > 128: two micro-batches under a budget
DECODE = [int(t) for t in _RNG.integers(3, 500, size=6)]
MIB = 1 << 20


def _preset(name: str, **overrides: Any) -> Dict[str, Any]:
    from edge_rt.synthetic import PRESETS

    return {**PRESETS[name], "tokenizer": "gpt2", "seed": 3, **overrides}


@pytest.fixture(scope="module", params=["tiny-moe", "tiny-qwen2moe", "tiny-qwen3moe"])
def moe_model(request, synthetic_model) -> Path:
    return synthetic_model(**_preset(request.param, weight_type="Q4_0"))


@pytest.fixture(scope="module")
def mixtral_small(synthetic_model) -> Path:
    return synthetic_model(**_preset("tiny-moe", weight_type="Q8_0"))


def _sequence(m, prompt: np.ndarray = PROMPT) -> List[np.ndarray]:
    """Prefill (every position's logits) from an empty cache, then single-token decode steps."""
    eng = m._engine
    eng.reset()
    outs = [np.array(eng.eval(prompt, True), copy=True)]
    for t in DECODE:
        outs.append(np.array(eng.eval(np.array([t], dtype=np.int32), False), copy=True))
    return outs


def _assert_same(ref: List[np.ndarray], got: List[np.ndarray], label: str) -> None:
    for i, (a, b) in enumerate(zip(ref, got)):
        if not np.array_equal(a, b):
            pytest.fail(f"{label}: step {i} differs from the resident run (max |diff| {np.abs(a - b).max():.3g})")


def _budget(path: Path) -> int:
    """A budget with room for everything: the expert cache size is then set explicitly."""
    return os.path.getsize(path) + 16 * MIB


def _slot_bytes(path: Path) -> int:
    m = edge_rt.load(path, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(path), expert_cache=1)
    rep = m.memory_report()
    m.close()
    return rep["expert_slot_bytes"]


# ---- 1. bitwise identical logits ----------------------------------------------------------------------


def test_logits_bitwise_identical_across_cache_sizes_policies_and_prefetch(moe_model) -> None:
    resident = edge_rt.load(moe_model, threads=THREADS, n_ctx=N_CTX)
    ref = _sequence(resident)
    ref_long = _sequence(resident, LONG_PROMPT)
    info = resident.info()
    total = info["n_layer"] * info["n_expert"]
    slot = _slot_bytes(moe_model)
    cases = [(1, "off", "lru"), (1, "both", "lru"), (info["n_expert_used"], "same", "lfu"),
             (3, "next", "lru"), (5, "both", "lfu"), (total, "both", "lru"), (total, "off", "lfu")]
    for slots, prefetch, policy in cases:
        m = edge_rt.load(moe_model, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(moe_model),
                         expert_cache=slots * slot, expert_prefetch=prefetch, expert_policy=policy)
        rep = m.memory_report()
        assert rep["expert_cache_slots"] == slots, rep
        label = f"{moe_model.name} cache {slots}/{total} prefetch {prefetch} {policy}"
        got = _in_thread(lambda: (_sequence(m), _sequence(m, LONG_PROMPT)), what=label)
        assert "error" not in got, f"{label}: {got.get('error')!r}"
        _assert_same(ref, got["value"][0], label)
        _assert_same(ref_long, got["value"][1], label + " (long prompt)")
        stats = m.expert_stats()
        assert stats["uses"] == stats["hits"] + stats["misses"] > 0, stats
        m.close()


def test_budget_derived_cache_is_bitwise_identical(mixtral_small) -> None:
    """Without expert_cache the cache takes what the budget leaves; a tight budget still matches."""
    ref = _sequence(edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX))
    big = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small))
    rep_big = big.memory_report()
    assert rep_big["expert_cache_slots"] == rep_big["total_experts"], rep_big
    _assert_same(ref, _sequence(big), "budget with room for every expert")
    slots_seen = set()
    for frac in (0.35, 0.6):
        budget = int(os.path.getsize(mixtral_small) * frac) + rep_big["classes"]["kv_cache"] + \
            rep_big["classes"]["scratch"]
        m = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=budget)
        rep = m.memory_report()
        assert rep["total"] <= budget and 1 <= rep["expert_cache_slots"] < rep["total_experts"], rep
        assert rep["classes"]["expert_cache"] == rep["expert_cache_slots"] * rep["expert_slot_bytes"], rep
        slots_seen.add(rep["expert_cache_slots"])
        _assert_same(ref, _sequence(m), f"budget {budget}")
    assert len(slots_seen) == 2, slots_seen


# ---- 2. memory -----------------------------------------------------------------------------------------


def test_stated_minimum_loads_and_below_it_is_an_error(mixtral_small) -> None:
    ref = _sequence(edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX))
    with pytest.raises(OutOfMemoryError, match=r"below the minimum (\d+) bytes") as e:
        edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=4 * MIB // 4)
    import re

    minimum = int(re.search(r"below the minimum (\d+) bytes", str(e.value)).group(1))
    assert edge_rt.minimum_budget(mixtral_small, threads=THREADS, n_ctx=N_CTX)["total"] == minimum
    m = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=minimum)
    rep = m.memory_report()
    assert rep["expert_cache_slots"] >= 1 and rep["total"] <= minimum, rep
    _assert_same(ref, _sequence(m), "budget at the stated minimum")
    with pytest.raises(OutOfMemoryError):
        edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=minimum - 4096)


def test_explicit_cache_that_does_not_fit_is_an_error(mixtral_small) -> None:
    slot = _slot_bytes(mixtral_small)
    rep = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small),
                       expert_cache=slot).memory_report()
    budget = rep["total"] + 2 * slot
    with pytest.raises(OutOfMemoryError, match="expert cache"):
        edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=budget, expert_cache=20 * slot)


_RSS_CHILD = textwrap.dedent("""
    import json, os, sys
    import edge_rt
    from edge_rt.synthetic import write_synthetic_gguf, PRESETS
    path, budget = sys.argv[1], int(sys.argv[2])

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

    before = status("VmHWM")
    m = edge_rt.load(path, threads=2, n_ctx=256, mem_budget=budget)
    m.generate("once upon a time", max_tokens=8, temperature=0.0)
    print(json.dumps(dict(report=m.memory_report(), stats=m.expert_stats(), vm_hwm=status("VmHWM"),
                          vm_hwm_before_load=before, n_generated=m.last_result.n_generated)))
""")


def test_peak_rss_of_a_streamed_moe_run_within_budget(synthetic_model) -> None:
    """A 190 MB Q8_0 MoE streamed at 40% of its size: VmHWM <= budget + the runtime overhead."""
    path = synthetic_model(**_preset("tiny-moe", n_embd=1024, n_ff=1024, n_layer=6, n_head=8, n_head_kv=4,
                                     weight_type="Q8_0"))
    size = os.path.getsize(path)
    assert size > 150 * MIB, size
    budget = int(size * 0.4)
    r = python_child(["-c", _RSS_CHILD, str(path), str(budget)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    d = json.loads(r.stdout.strip().splitlines()[-1])
    rep, stats = d["report"], d["stats"]
    summary = (f"budget {budget / MIB:.1f} MiB, VmHWM {d['vm_hwm'] / MIB:.1f} MiB (before load "
               f"{d['vm_hwm_before_load'] / MIB:.1f} MiB), engine total {rep['total'] / MIB:.1f} MiB, expert cache "
               f"{rep['expert_cache_slots']}/{rep['total_experts']} slots, misses {stats['misses']}")
    print(summary)
    assert d["n_generated"] == 8
    assert rep["total"] <= budget and rep["expert_cache_slots"] < rep["total_experts"], summary
    assert stats["misses"] > 0, summary
    assert d["vm_hwm"] <= budget + RUNTIME_OVERHEAD_BYTES, f"peak RSS too high: {summary}"


# ---- 3. telemetry --------------------------------------------------------------------------------------


def test_stats_add_up(mixtral_small) -> None:
    slot = _slot_bytes(mixtral_small)
    off = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small),
                       expert_cache=3 * slot, expert_prefetch="off")
    _sequence(off)
    s = off.expert_stats()
    assert s["reads_speculative"] == 0 and s["misses"] == s["reads_on_demand"] > 0, s
    assert all(layer["same_layer"]["predicted"] == 0 and layer["same_layer"]["recall"] is None
               for layer in s["layers"]), s
    assert 0 < s["bytes_read"] <= s["reads_on_demand"] * s["slot_bytes"], s
    total = off.stream_stats()  # the stream counters include the expert reads
    assert total["bytes_read"] >= s["bytes_read"] and total["io_seconds"] > 0, total
    assert total["stall_seconds"] >= s["stall_seconds"] > 0 and total["stalls"] > 0, (total, s)
    assert off.expert_stats(reset=True)["uses"] == s["uses"]
    assert off.expert_stats()["uses"] == 0

    on = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small),
                      expert_cache=3 * slot, expert_prefetch="both")
    _sequence(on)
    s = on.expert_stats()
    assert s["uses"] == s["hits"] + s["misses"] and s["reads_speculative"] > 0, s
    assert len(s["layers"]) == on.info()["n_layer"]
    assert sum(layer["uses"] for layer in s["layers"]) == s["uses"]
    for il, layer in enumerate(s["layers"]):
        for key in ("same_layer", "next_layer"):
            p = layer[key]
            if key == "next_layer" and il == 0:
                assert p["predicted"] == 0, p  # nothing runs before layer 0
                continue
            assert p["predicted"] > 0 and p["needed"] > 0, (il, key, p)
            assert 0.0 <= p["precision"] <= 1.0 and 0.0 <= p["recall"] <= 1.0, (il, key, p)
    events = on.expert_events()
    assert events and all(e["io_end"] >= e["io_start"] > 0 for e in events)
    assert sum(e["speculative"] for e in events) <= s["reads_speculative"]


def test_prediction_width(mixtral_small) -> None:
    """Wider predictions name w experts per token (decode: exactly w per layer and predictor) and
    leave the logits unchanged."""
    ref = _sequence(edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX))
    slot = _slot_bytes(mixtral_small)
    for width in (1, 4, 8):
        m = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small),
                         expert_cache=3 * slot, expert_prediction_width=width, expert_prefetch="both")
        got = _sequence(m)
        _assert_same(ref, got, f"prediction width {width}")
        m.expert_stats(reset=True)
        m._engine.eval(np.array([DECODE[0]], dtype=np.int32), False)  # one decode token
        for il, layer in enumerate(m.expert_stats()["layers"]):
            assert layer["same_layer"]["predicted"] == width, (il, layer)
            assert layer["next_layer"]["predicted"] == (width if il > 0 else 0), (il, layer)
            if width == 8:
                assert layer["same_layer"]["recall"] == 1.0, (il, layer)
    with pytest.raises(InvalidArgumentError, match="expert_prediction_width"):
        edge_rt.load(mixtral_small, mem_budget=_budget(mixtral_small), expert_prediction_width=-1)


def test_cache_sized_in_expert_bytes_holds_every_expert(mixtral_small) -> None:
    """expert_cache counts the experts' bytes in the file: all of them caches every expert, although
    each slot pads its reads to 4096 bytes."""
    import gguf

    r = gguf.GGUFReader(str(mixtral_small))
    expert_bytes = sum(int(t.n_bytes) for t in r.tensors if "_exps." in t.name)
    m = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=2 * _budget(mixtral_small),
                     expert_cache=expert_bytes)
    rep = m.memory_report()
    assert rep["expert_cache_slots"] == rep["total_experts"], rep
    half = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=2 * _budget(mixtral_small),
                        expert_cache=expert_bytes // 2).memory_report()
    assert half["expert_cache_slots"] == rep["total_experts"] // 2, half


def test_cache_holding_every_expert_misses_each_at_most_once(mixtral_small) -> None:
    m = edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(mixtral_small),
                     expert_prefetch="off")
    rep = m.memory_report()
    assert rep["expert_cache_slots"] == rep["total_experts"]
    _sequence(m, LONG_PROMPT)
    first = m.expert_stats(reset=True)
    assert 0 < first["misses"] <= rep["total_experts"], first
    _sequence(m, LONG_PROMPT)
    again = m.expert_stats()
    assert again["misses"] == 0 and again["hit_rate"] == 1.0, again


def test_dense_model_under_a_budget_has_no_expert_cache(synthetic_model) -> None:
    path = synthetic_model(arch="llama", n_layer=2)
    m = edge_rt.load(path, threads=THREADS, n_ctx=N_CTX, mem_budget=_budget(path))
    rep = m.memory_report()
    assert rep["expert_cache_slots"] == 0 and rep["classes"]["expert_cache"] == 0, rep
    m.logits([5, 6, 7])
    s = m.expert_stats()
    assert s["uses"] == 0 and s["layers"] == [] and s["hit_rate"] is None, s


# ---- 4. errors ----------------------------------------------------------------------------------------


def test_invalid_expert_arguments(mixtral_small) -> None:
    b = _budget(mixtral_small)
    with pytest.raises(InvalidArgumentError, match="expert_policy"):
        edge_rt.load(mixtral_small, mem_budget=b, expert_policy="mru")
    with pytest.raises(InvalidArgumentError, match="expert_prefetch"):
        edge_rt.load(mixtral_small, mem_budget=b, expert_prefetch="always")
    with pytest.raises(InvalidArgumentError, match="needs mem_budget"):
        edge_rt.load(mixtral_small, expert_cache="10MB")
    with pytest.raises(InvalidArgumentError, match="expert_cache"):
        edge_rt.load(mixtral_small, mem_budget=b, expert_cache=-1)


@pytest.mark.parametrize("short_read", [False, True], ids=["eio", "short-read"])
def test_injected_fault_in_an_expert_read_raises_without_hang(mixtral_small, short_read) -> None:
    """The fault-injecting reader fails every read past its threshold: each eval must then raise the
    mapped error (never hang or crash), leave n_past unchanged, and the engine must close cleanly."""
    from edge_rt import ModelFormatError, ModelIOError, _testing

    expected = ModelFormatError if short_read else ModelIOError
    ref = _sequence(edge_rt.load(mixtral_small, threads=THREADS, n_ctx=N_CTX))
    slot = _slot_bytes(mixtral_small)
    budget = _budget(mixtral_small)
    # Everything but the experts is pinned at load (pinned_weights: the bytes read then); the fault
    # lands in the second expert read of the first token.
    probe = _testing.engine(str(mixtral_small), THREADS, N_CTX, mem_budget=budget, expert_cache_bytes=2 * slot)
    rep = probe.memory_report()
    assert not rep["streamed_units"], rep
    loaded = rep["classes"]["pinned_weights"]
    del probe

    def scenario():
        eng = _testing.engine(str(mixtral_small), THREADS, N_CTX, mem_budget=budget, expert_cache_bytes=2 * slot,
                          fault_after_bytes=loaded + slot + 1, fault_short_read=short_read)
        results = []
        for step in (PROMPT, PROMPT, np.array(DECODE[:1], dtype=np.int32)):
            try:
                results.append(np.array(eng.eval(step, True), copy=True))
            except EdgeRTError as e:
                results.append(e)
            results.append(eng.n_past)
        del eng  # joins the I/O threads: must not hang either
        return results

    got = _in_thread(scenario, what="expert fault")
    assert "error" not in got, repr(got.get("error"))
    results = got["value"]
    first = results[0]
    assert type(first) is expected and "injected" in str(first) and "expert" in str(first), repr(first)
    assert results[1] == 0, "n_past moved although the eval failed"
    for value, n_past in zip(results[2::2], results[3::2]):
        if isinstance(value, Exception):
            assert type(value) is expected and n_past == 0, (repr(value), n_past)
        else:  # every expert it needed was still cached: then the numbers must be right
            assert np.array_equal(value, ref[0]) and n_past == len(PROMPT)
