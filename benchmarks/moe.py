#!/usr/bin/env python3
"""Mixture of experts under a memory budget: edge_rt's expert cache (per (layer, expert) reads, LRU or
decayed-LFU eviction) with and without expert prediction, vs the flash-read bound measured in the
same run, and vs llama.cpp (default mmap) squeezed by a balloon process to the same memory.

Protocol (as in benchmarks/RESULTS.md; machinery imported from benchmarks/streaming.py):

Part ``tiny`` -- prediction quality and cache policy on a trained model and real text.
- Models: the trained MoE master ``models/tiny-code-moe-f16.gguf`` (4 layers, 8 experts, top-2) and a
  Q8_0 copy made with llama.cpp's ``llama_model_quantize`` (``--tiny-q8``).
- Budget: expert cache = ``--tiny-cache`` (default 25% and 50%) of the file's expert bytes; ``mem_budget`` =
  everything else the engine holds (measured by a first load) + that cache + a margin.
- Text: ``benchmarks/data/quant_eval.txt`` tokenized with the model's tokenizer; ``--tiny-tokens``
  tokens in windows of ``n_ctx`` (the model's 256-token training context), teacher forced one token
  at a time (``generate_tokens(text[:i+1], max_tokens=1)``: each call evaluates one new token).
- Runs: expert_prefetch off / same / next / both (layers' routers) and next / both with the fitted
  next-layer predictor (``+fit``: the sidecar shipped next to the master, made by ``edge-rt fit-predictor``
  from quantize/data/calibration.txt, disjoint from this text) x expert_policy lru / lfu, interleaved, ``--tiny-reps``
  repetitions, each a fresh cold load (page cache dropped). Reported: hit rate, per-layer precision and
  recall of same-layer and next-layer prediction (from ``Model.expert_stats``), decode tokens/s.

Part ``mixtral`` -- speed on the Mixtral-shaped synthetic MoE (``mixtral-3g``: 32 layers, 8 experts
top-2, Q4_0, 3.4 GB, random weights).
- Expert cache = ``--fractions`` (default 25%, 50%, 100%) of the file's expert bytes; ``mem_budget`` =
  the non-expert part the engine holds (from a first load's ``memory_report``) + cache + margin.
- One run = cold load (caches dropped) + ``--n-prompt`` token prompt + ``--n-gen`` greedy tokens;
  decode tok/s = (n_gen - 1) / (first to last token). Variants (``--modes``, ``policy/prefetch``:
  default lfu/off, lfu/both, lfu/same, lfu/next, lru/off, lru/both; LFU is the engine's default) interleaved over ``--reps``
  repetitions; medians [min-max]; each policy's ``off`` run is its baseline. Expert counters are reset
  at the first token, so bytes and hit rates are the decode steps' own. Each repetition also times
  decode with every weight in RAM (no budget, ``--resident``): the compute ceiling.
- I/O bound: expert bytes that decode must read per token with prefetch off (that policy's on-demand
  misses at that cache size, median; the summary table uses the default policy's) / the sequential O_DIRECT read bandwidth of the model file
  measured in this run (before every run on 512 MiB -- the "paired" bound of that run -- and over
  2 GiB at the start and the end; the best of all for the run-wide bound).
- llama.cpp (llama-cpp-python, same file, same threads) runs in a subprocess under a balloon that
  leaves the same memory: edge_rt's budget + llama.cpp's own anonymous memory measured unconstrained
  (streaming.py's runner; Q4_0 is repacked into RAM by llama.cpp's default, so as in streaming.py the
  balloon runs use its mmap path, ``--no-repack``), interleaved with edge_rt (the default policy and
  prefetch, in a subprocess) under the same balloon, ``--llama-reps`` runs each.

    sudo "$(command -v python3)" benchmarks/moe.py --tiny-reps 5 --reps 5 --n-gen 24    # both parts (~30 min)
    sudo "$(command -v python3)" benchmarks/moe.py --parts tiny --tiny-reps 5 --out benchmarks/out/moe_tiny.json
    sudo "$(command -v python3)" benchmarks/moe.py --parts mixtral --reps 5 --n-gen 24 --out benchmarks/out/moe_mixtral.json

Writes benchmarks/out/moe.json (after each part) and benchmarks/moe_prediction.png (per-layer
recall/precision of the tiny model); prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:  # the sibling scripts, also when this one is imported
    sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_vs_llamacpp import machine_info  # noqa: E402
from streaming import (  # noqa: E402
    Balloon,
    GiB,
    MiB,
    _f,
    _s,
    _stats,
    drop_caches,
    log,
    odirect_read_bandwidth,
    other_load,
    proc_status,
    run_worker,
)

# Tiny part: prefetch modes; "+fit" runs next-layer prediction with the fitted predictor shipped next to
# the trained master (models/tiny-code-moe-f16.gguf.predictor.gguf, `edge-rt fit-predictor`, fitted on
# quantize/data/calibration.txt), the others with the routers (expert_predictor=None).
MODES = ("off", "same", "next", "both", "next+fit", "both+fit")
FITTED_PREDICTOR = ROOT / "models" / "tiny-code-moe-f16.gguf.predictor.gguf"
DEFAULT_POLICY = "lfu"  # the engine's default expert policy
DEFAULT_PREFETCH = "next"  # the engine's default expert prefetch: what is compared with llama.cpp


def split_mode(mode: str, sidecar: Path) -> Tuple[str, Optional[Path]]:
    """'next+fit' -> ('next', sidecar): the prefetch mode, and the fitted predictor (None: the routers)."""
    prefetch, _, fit = mode.partition("+")
    if fit and not Path(sidecar).is_file():
        raise SystemExit(f"mode {mode} needs a fitted predictor: run `edge-rt fit-predictor` to write {sidecar}")
    return prefetch, (Path(sidecar) if fit else None)


def expert_bytes(path: Path) -> Dict[str, int]:
    """Expert tensor bytes in the file (``*_exps`` tensors) and the rest."""
    from edge_rt.gguf_file import read_header

    g = read_header(path)
    ex = sum(t["n_bytes"] for t in g.tensors if "_exps" in t["name"])
    tot = sum(t["n_bytes"] for t in g.tensors)
    return {"expert_bytes": ex, "tensor_bytes": tot, "other_bytes": tot - ex}


def probe_budget(path: Path, n_ctx: int, threads: int, cache: int) -> Dict[str, Any]:
    """Load once under a generous budget with an explicit expert cache: what the engine holds
    besides the expert cache (pinned weights, window, KV, scratch) is the base of every budget."""
    import edge_rt

    eb = expert_bytes(path)
    m = edge_rt.load(path, threads=threads, n_ctx=n_ctx, mem_budget=eb["tensor_bytes"] + cache + GiB,
                     expert_cache=cache)
    rep = m.memory_report()
    m.close()
    base = rep["total"] - rep["classes"]["expert_cache"]
    return {"base_bytes": base, "report": rep, **eb}


def stats_summary(st: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in st.items() if k != "layers"}


# ---- part tiny -------------------------------------------------------------------------------------


def tiny_run(path: Path, budget: int, cache: int, policy: str, mode: str, windows: List[List[int]],
             n_ctx: int, threads: int, width: Optional[int] = None) -> Dict[str, Any]:
    import edge_rt

    drop_caches()
    prefetch, predictor = split_mode(mode, FITTED_PREDICTOR)
    m = edge_rt.load(path, threads=threads, n_ctx=n_ctx, mem_budget=budget, expert_cache=cache,
                     expert_policy=policy, expert_prefetch=prefetch, expert_prediction_width=width,
                     expert_predictor=predictor)
    n = 0
    t0 = time.perf_counter()
    for w in windows:
        m.reset()
        for i in range(len(w)):
            for _ in m.generate_tokens(w[:i + 1], max_tokens=1, temperature=0.0):
                pass
            n += 1
    dt = time.perf_counter() - t0
    st = m.expert_stats()
    out = {"policy": policy, "mode": mode, "tokens": n, "decode_tok_s": n / dt, "expert_stats": st,
           "stream_stats": m.stream_stats(), "memory_report": m.memory_report()}
    m.close()
    return out


def make_q8(src: Path, dst: Path) -> Optional[Path]:
    if dst.exists():
        return dst
    try:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        dst.parent.mkdir(parents=True, exist_ok=True)
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize returned {rc}")
        return dst
    except Exception as e:
        log(f"Q8_0 copy failed: {type(e).__name__}: {e}")
        return None


def bench_tiny(a: argparse.Namespace) -> Dict[str, Any]:
    import edge_rt

    paths = [ROOT / "models" / "tiny-code-moe-f16.gguf"]
    if a.tiny_q8:
        q8 = make_q8(paths[0], Path(a.cache_dir) / "tiny-code-moe-q8_0.gguf")
        if q8:
            paths.append(q8)
    text = (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()
    out: Dict[str, Any] = {"models": []}
    for path in paths:
        m = edge_rt.load(path, threads=a.threads, n_ctx=a.tiny_ctx)
        toks = m.tokenize(text)
        info = m.info()
        m.close()
        windows = [toks[s:s + a.tiny_ctx] for s in range(0, a.tiny_tokens, a.tiny_ctx)]
        windows = [w[:a.tiny_tokens - sum(len(x) for x in windows[:i])] for i, w in enumerate(windows)]
        eb = expert_bytes(path)
        for frac in a.tiny_cache:
            out["models"].append(bench_tiny_one(a, path, info, eb, windows, frac))
    return out


def bench_tiny_one(a: argparse.Namespace, path: Path, info: Dict[str, Any], eb: Dict[str, int],
                   windows: List[List[int]], frac: float) -> Dict[str, Any]:
    if True:
        cache = int(frac * eb["expert_bytes"])
        pr = probe_budget(path, a.tiny_ctx, a.threads, cache)
        budget = pr["base_bytes"] + cache + 4 * MiB
        rep0 = pr["report"]
        log(f"[tiny {path.name}] experts {eb['expert_bytes'] / 1e6:.1f} MB of {eb['tensor_bytes'] / 1e6:.1f} MB; "
            f"cache {cache / 1e6:.2f} MB = {rep0['expert_cache_slots']} of {rep0['total_experts']} experts "
            f"(slot {rep0['expert_slot_bytes']} B); budget {budget / 1e6:.1f} MB; {sum(map(len, windows))} tokens "
            f"in {len(windows)} windows")
        tiny_run(path, budget, cache, "lru", "both", [windows[0][:16]], a.tiny_ctx, a.threads)  # warm-up
        runs: List[Dict[str, Any]] = []
        for rep in range(a.tiny_reps):
            for policy in ("lru", "lfu"):
                for mode in MODES:
                    r = tiny_run(path, budget, cache, policy, mode, windows, a.tiny_ctx, a.threads)
                    r["rep"] = rep
                    runs.append(r)
                    st = r["expert_stats"]
                    log(f"[tiny {path.name}] rep {rep + 1} {policy} {mode}: {r['decode_tok_s']:.1f} tok/s, hit rate "
                        f"{st['hit_rate']:.3f}, read {st['bytes_read'] / 1e6:.1f} MB (spec {st['reads_speculative']}, "
                        f"unused {st['speculative_unused']}, dropped {st['predictions_dropped']}), stall "
                        f"{st['stall_seconds']:.3f} s")
        summary: Dict[str, Any] = {}
        for policy in ("lru", "lfu"):
            for mode in MODES:
                rs = [r for r in runs if r["policy"] == policy and r["mode"] == mode]
                summary[f"{policy}/{mode}"] = {
                    "decode_tok_s": _stats([r["decode_tok_s"] for r in rs]),
                    "hit_rate": _stats([r["expert_stats"]["hit_rate"] for r in rs]),
                    "bytes_read_per_token": _stats([r["expert_stats"]["bytes_read"] / r["tokens"] for r in rs]),
                    "stall_s": _stats([r["expert_stats"]["stall_seconds"] for r in rs]),
                    "speculative_unused": _stats([r["expert_stats"]["speculative_unused"] for r in rs]),
                    "reads_speculative": _stats([r["expert_stats"]["reads_speculative"] for r in rs]),
                }
        # per-layer prediction quality: routing (and so predictions) do not depend on timing; take the
        # first repetition's LRU runs (same-only, next-only and both)
        layers: Dict[str, Any] = {}
        for mode in ("same", "next", "both", "next+fit", "both+fit"):
            r = next(r for r in runs if r["policy"] == "lru" and r["mode"] == mode)
            layers[mode] = r["expert_stats"]["layers"]
        agg: Dict[str, Any] = {}
        for mode, ls in layers.items():
            for key in ("same_layer", "next_layer"):
                pred = sum(x[key]["predicted"] for x in ls)
                corr = sum(x[key]["correct"] for x in ls)
                need = sum(x[key]["needed"] for x in ls)
                agg[f"{mode}:{key}"] = {"predicted": pred, "correct": corr, "needed": need,
                                        "precision": corr / pred if pred else None,
                                        "recall": corr / need if need else None}
        # Prediction width (experts named per token by each predictor): recall against bytes, LFU + both,
        # one run each (routing and so recall/precision do not depend on timing).
        widths: Dict[str, Any] = {}
        for w in (a.tiny_widths if frac == a.tiny_cache[0] else []):
            r = tiny_run(path, budget, cache, "lfu", "both", windows, a.tiny_ctx, a.threads, width=w)
            st = r["expert_stats"]
            row: Dict[str, Any] = {"decode_tok_s": r["decode_tok_s"], "bytes_read_per_token": st["bytes_read"] / r["tokens"],
                                   "stall_s": st["stall_seconds"]}
            for key in ("same_layer", "next_layer"):
                pred = sum(x[key]["predicted"] for x in st["layers"])
                corr = sum(x[key]["correct"] for x in st["layers"])
                need = sum(x[key]["needed"] for x in st["layers"])
                row[key] = {"precision": corr / pred if pred else None, "recall": corr / need if need else None,
                            "recall_by_layer": [x[key]["recall"] for x in st["layers"]]}
            widths[str(w)] = row
            log(f"[tiny {path.name}] width {w}: next-layer recall {row['next_layer']['recall']:.3f} precision "
                f"{row['next_layer']['precision']:.3f}, same-layer recall {row['same_layer']['recall']:.3f}, "
                f"{row['bytes_read_per_token'] / 1e6:.2f} MB/token, {r['decode_tok_s']:.0f} tok/s")
        return {"model": str(path), "file_bytes": path.stat().st_size, "n_params": info["n_params"],
                "n_layer": info["n_layer"], "n_expert": info["n_expert"],
                "n_expert_used": info["n_expert_used"], "tokens": sum(map(len, windows)),
                "windows": len(windows), "cache_fraction": frac, "cache_bytes": cache,
                "budget_bytes": budget, "memory_report": rep0, **eb, "summary": summary,
                "layers": layers, "prediction": agg, "widths": widths, "runs": runs}


# ---- part mixtral ----------------------------------------------------------------------------------


def _emit(d: Dict[str, Any]) -> None:
    print("@@" + json.dumps(d), flush=True)


def edge_moe_run(path: str, budget: int, cache: int, mode: str, prompt: List[int], n_gen: int, threads: int,
                 policy: str = "lfu", emit: bool = False) -> Dict[str, Any]:
    """One cold run: load, prompt, n_gen greedy tokens; expert counters reset at the first token."""
    import edge_rt

    if not emit:
        drop_caches()
    from edge_rt.loading import predictor_path_for

    prefetch, predictor = split_mode(mode, predictor_path_for(path))
    t0 = time.perf_counter()
    m = edge_rt.load(path, threads=threads, n_ctx=512, mem_budget=budget, expert_cache=cache,
                     expert_policy=policy, expert_prefetch=prefetch, expert_predictor=predictor)
    t_load = time.perf_counter() - t0
    if emit:
        _emit({"event": "loaded", "load_s": t_load, "status": proc_status()})
    ts: List[float] = []
    prompt_stats = None
    for i, _ in enumerate(m.generate_tokens(prompt, max_tokens=n_gen, temperature=0.0)):
        t = time.perf_counter() - t0
        ts.append(t)
        if i == 0:
            prompt_stats = stats_summary(m.expert_stats(reset=True))
        if emit:
            _emit({"event": "first" if i == 0 else "token", "i": i + 1, "t": t, **({"ttft_s": t} if i == 0 else {})})
    st = m.expert_stats()
    out = {"mode": mode, "policy": policy, "load_s": t_load, "ttft_s": ts[0], "tokens": len(ts),
           "decode_tok_s": (len(ts) - 1) / (ts[-1] - ts[0]), "expert_stats": st, "prompt_expert_stats": prompt_stats,
           "stream_stats": m.stream_stats(), "memory_report": m.memory_report(),
           # counters were reset at the first token: what follows is n_gen - 1 decode steps
           "bytes_per_decode_token": st["bytes_read"] / max(1, len(ts) - 1)}
    m.close()
    if emit:
        _emit({"event": "done", "status": proc_status(), "result": out})
    return out


def edge_resident_run(path: str, prompt: List[int], n_gen: int, threads: int) -> Dict[str, Any]:
    """Every weight in RAM (no budget): the compute-only decode speed, the ceiling when I/O is hidden."""
    import edge_rt

    m = edge_rt.load(path, threads=threads, n_ctx=512)
    ts = [time.perf_counter() for _ in m.generate_tokens(prompt, max_tokens=n_gen, temperature=0.0)]
    m.close()
    return {"tokens": len(ts), "decode_tok_s": (len(ts) - 1) / (ts[-1] - ts[0])}


def run_moe_worker(args: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """edge_rt in a subprocess (for the balloon runs): streaming.run_worker with this script's worker."""
    return run_worker("", args, timeout, script=Path(__file__))


def bench_mixtral(a: argparse.Namespace) -> Dict[str, Any]:
    from edge_rt.synthetic import PRESETS, ensure_synthetic_model

    path = ensure_synthetic_model("mixtral-3g", cache_dir=a.cache_dir)
    fsize = path.stat().st_size
    eb = expert_bytes(path)
    n_vocab = PRESETS["mixtral-3g"]["n_vocab"]
    prompt = [(1 + 7919 * i) % n_vocab for i in range(a.n_prompt)]
    pr = probe_budget(path, 512, a.threads, int(0.25 * eb["expert_bytes"]))
    base = pr["base_bytes"]
    caches = {f"{int(round(f * 100))}%": int(f * eb["expert_bytes"]) for f in a.fractions}
    budgets = {k: base + c + 16 * MiB for k, c in caches.items()}
    log(f"[mixtral] {path} ({fsize / 1e9:.2f} GB; experts {eb['expert_bytes'] / 1e9:.2f} GB; engine base "
        f"{base / 1e6:.0f} MB); budgets " + ", ".join(f"{k}: {b / 1e6:.0f} MB" for k, b in budgets.items()))
    out: Dict[str, Any] = {"model": str(path), "file_bytes": fsize, **eb, "base_bytes": base,
                           "probe_report": pr["report"], "caches": caches, "budgets": budgets, "sizes": {},
                           "contention": []}
    bws = [odirect_read_bandwidth(path, depths=(1, 4), passes=1)]
    log(f"[mixtral] O_DIRECT read {bws[-1]['bytes_per_s'] / 1e9:.2f} GB/s")
    edge_moe_run(str(path), budgets[next(iter(budgets))], caches[next(iter(caches))], "both", prompt, 4,
                 a.threads)  # warm-up (uncounted)
    runs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {k: {m: [] for m in a.modes} for k in caches}
    resident: List[Dict[str, Any]] = []
    for rep in range(a.reps):
        out["contention"] += [f"rep {rep + 1}: {x}" for x in other_load()]
        if a.resident:  # compute ceiling: every weight in RAM (no budget), warm after its load
            resident.append(edge_resident_run(str(path), prompt, a.n_gen, a.threads))
            log(f"[mixtral] rep {rep + 1} resident (no budget): {resident[-1]['decode_tok_s']:.2f} tok/s")
        for name in caches:
            for variant in a.modes:
                policy, mode = variant.split("/")
                pbw = odirect_read_bandwidth(path, depths=(1, 4), max_bytes=512 * MiB, passes=1)["bytes_per_s"]
                r = edge_moe_run(str(path), budgets[name], caches[name], mode, prompt, a.n_gen, a.threads,
                                 policy=policy)
                r["paired_bw"] = pbw
                runs[name][variant].append(r)
                st = r["expert_stats"]
                log(f"[mixtral] rep {rep + 1} {name} {variant}: {r['decode_tok_s']:.2f} tok/s, hit {st['hit_rate']:.3f}, "
                    f"{r['bytes_per_decode_token'] / 1e6:.0f} MB/token read (spec {st['reads_speculative']}, unused "
                    f"{st['speculative_unused']}, dropped {st['predictions_dropped']}), stall {st['stall_seconds']:.2f} s, "
                    f"TTFT {r['ttft_s']:.2f} s, O_DIRECT {pbw / 1e9:.2f} GB/s")
    bws.append(odirect_read_bandwidth(path, depths=(1, 4), passes=1))
    paired = [r["paired_bw"] for d in runs.values() for rs in d.values() for r in rs]
    bw = max([b["bytes_per_s"] for b in bws] + paired)
    out["odirect"] = bws
    out["resident"] = resident
    out["resident_decode_tok_s"] = _stats([r["decode_tok_s"] for r in resident]) if resident else None
    out["odirect_paired"] = _stats(paired)
    out["odirect_bytes_per_s"] = bw
    log(f"[mixtral] O_DIRECT best {bw / 1e9:.2f} GB/s (paired median {statistics.median(paired) / 1e9:.2f})")

    # llama.cpp's own needs, unconstrained (streaming.py's worker and runner)
    llama_own = 0
    no_repack = False
    if a.llama:
        warm = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": 4}
        lf = run_worker("llama", warm, a.llama_timeout)
        own = max(lf.get("peak_rss_anon", 0), (lf.get("status_done") or {}).get("RssAnon", 0))
        out["llama_unconstrained"] = lf
        out["llama_default_anon_bytes"] = own
        log(f"[mixtral] llama.cpp unconstrained (default): TTFT {lf.get('ttft_s', float('nan')):.2f} s, decode "
            f"{lf.get('decode_tok_s', float('nan')):.2f} tok/s, RssAnon {own / MiB:.0f} MiB")
        if own > fsize // 2:
            no_repack = True
            lf2 = run_worker("llama", dict(warm, no_repack=True), a.llama_timeout)
            out["llama_unconstrained_no_repack"] = lf2
            own = max(lf2.get("peak_rss_anon", 0), (lf2.get("status_done") or {}).get("RssAnon", 0))
            log(f"[mixtral] llama.cpp --no-repack unconstrained: TTFT {lf2.get('ttft_s', float('nan')):.2f} s, decode "
                f"{lf2.get('decode_tok_s', float('nan')):.2f} tok/s, RssAnon {own / MiB:.0f} MiB")
        llama_own = own
    out["llama_no_repack"] = no_repack
    out["llama_own_needs_bytes"] = llama_own

    for name in caches:
        res: Dict[str, Any] = {"cache_bytes": caches[name], "budget_bytes": budgets[name], "modes": {}}
        for mode, rs in runs[name].items():
            res["modes"][mode] = {
                "decode_tok_s": _stats([r["decode_tok_s"] for r in rs]),
                "ttft_s": _stats([r["ttft_s"] for r in rs]),
                "hit_rate": _stats([r["expert_stats"]["hit_rate"] for r in rs]),
                "bytes_per_decode_token": _stats([r["bytes_per_decode_token"] for r in rs]),
                "stall_s": _stats([r["expert_stats"]["stall_seconds"] for r in rs]),
                "runs": rs,
            }
        res["memory_report"] = runs[name][a.modes[0]][0]["memory_report"]
        for variant, mr in res["modes"].items():
            policy = variant.split("/")[0]
            off = res["modes"].get(f"{policy}/off")
            if not off:
                continue
            need = off["bytes_per_decode_token"]["median"]
            mr["needed_bytes_per_token"] = need
            mr["io_bound_tok_s"] = bw / need if need else float("inf")
            mr["over_off"] = mr["decode_tok_s"]["median"] / off["decode_tok_s"]["median"]
            mr["over_bound"] = mr["decode_tok_s"]["median"] / mr["io_bound_tok_s"]
            if out["resident_decode_tok_s"]:
                ceil = min(mr["io_bound_tok_s"], out["resident_decode_tok_s"]["median"])
                mr["over_min_bound_resident"] = mr["decode_tok_s"]["median"] / ceil
            mr["over_off_pairs"] = [x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(mr["runs"], off["runs"])]
        base = next((p for p in (DEFAULT_POLICY, "lru") if f"{p}/off" in res["modes"]), None)
        if base:  # the I/O bound of the summary: what the default policy must read without prediction
            res["bound_policy"] = base
            res["needed_bytes_per_token"] = res["modes"][f"{base}/off"]["needed_bytes_per_token"]
            res["io_bound_tok_s"] = res["modes"][f"{base}/off"]["io_bound_tok_s"]
        if a.llama:
            target = budgets[name] + llama_own
            res["balloon_target_avail"] = target
            lr: List[Dict[str, Any]] = []
            er: List[Dict[str, Any]] = []
            try:
                with Balloon(max(target, a.min_avail), a.min_avail // 2) as bal:
                    res["balloon"] = {"held_bytes": bal.held, "avail_after": bal.avail_after}
                    largs = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": a.llama_gen,
                             "no_repack": no_repack}
                    eargs = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": a.n_gen,
                             "budget": budgets[name], "cache": caches[name], "mode": DEFAULT_PREFETCH}
                    for rep in range(a.llama_reps):  # interleaved: llama.cpp, edge_rt, llama.cpp, ...
                        r = run_worker("llama", largs, a.llama_timeout)
                        lr.append(r)
                        log(f"[mixtral] {name} rep {rep + 1}/{a.llama_reps} llama.cpp under balloon: {r['tokens']} "
                            f"tokens, TTFT {r.get('ttft_s', float('nan')):.2f} s, decode "
                            f"{r.get('decode_tok_s', float('nan')):.3f} tok/s"
                            + (" (timed out)" if r["timed_out"] else "") + (f" ERROR {r['error'][-300:]}" if r.get("error") else ""))
                        r = run_moe_worker(eargs, a.llama_timeout)
                        er.append(r)
                        log(f"[mixtral] {name} rep {rep + 1}/{a.llama_reps} edge_rt ({DEFAULT_PREFETCH}) under balloon: "
                            f"{r['tokens']} tokens, decode {r.get('decode_tok_s', float('nan')):.2f} tok/s, peak RssAnon "
                            f"{r.get('peak_rss_anon', 0) / MiB:.0f} MiB" + (f" ERROR {r['error'][-300:]}" if r.get("error") else ""))
            except Exception as e:
                log(f"[mixtral] {name}: balloon runs failed: {type(e).__name__}: {e}")
                res["balloon_error"] = f"{type(e).__name__}: {e}"
            res["llama_cpp"], res["edge_rt_balloon"] = lr, er
            res["edge_rt_balloon_mode"] = f"{DEFAULT_POLICY}/{DEFAULT_PREFETCH}"
            res["edge_balloon_peak_rss_anon"] = max((r.get("peak_rss_anon", 0) for r in er), default=0)
            lt = [r["decode_tok_s"] for r in lr if "decode_tok_s" in r]
            et = [r["decode_tok_s"] for r in er if "decode_tok_s" in r]
            res["llama_decode_tok_s"] = statistics.median(lt) if lt else None
            res["llama_ttft_s"] = statistics.median([r["ttft_s"] for r in lr if "ttft_s" in r]) if any("ttft_s" in r for r in lr) else None
            res["edge_balloon_decode_tok_s"] = statistics.median(et) if et else None
            e_dec = res["edge_balloon_decode_tok_s"] or \
                res["modes"].get(f"{DEFAULT_POLICY}/{DEFAULT_PREFETCH}", {}).get("decode_tok_s", {}).get("median")
            res["edge_over_llama"] = (e_dec / res["llama_decode_tok_s"]) if (e_dec and res["llama_decode_tok_s"]) else None
        out["sizes"][name] = res
    return out


# ---- report ----------------------------------------------------------------------------------------


def markdown(report: Dict[str, Any]) -> str:
    mi, p = report["machine"], report["params"]
    L = [f"Machine: {mi['cpu']}, {mi['usable_cpus']} usable CPUs, {mi['ram_gib']} GiB RAM, disk {mi['disk']}; "
         f"{p['threads']} threads.", ""]
    tiny = report.get("tiny")
    if tiny:
        for m in tiny["models"]:
            name = Path(m["model"]).name
            L += [f"### {name}: {m['tokens']} tokens of benchmarks/data/quant_eval.txt, teacher forced; expert cache "
                  f"{m['cache_fraction']:.0%} of {m['expert_bytes'] / 1e6:.1f} MB expert bytes "
                  f"({m['memory_report']['expert_cache_slots']} of {m['memory_report']['total_experts']} experts), "
                  f"{p['tiny_reps']} runs each, median [min-max]", "",
                  "| policy | prefetch | hit rate | expert MB read / token | stall s | speculative reads (unused) | decode tok/s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
            for key, s in m["summary"].items():
                pol, mode = key.split("/")
                L.append(f"| {pol} | {mode} | {_s(s['hit_rate'], 3)} | {_s({k: v / 1e6 if k != 'runs' else v for k, v in s['bytes_read_per_token'].items()}, 3)} "
                         f"| {_s(s['stall_s'], 3)} | {s['reads_speculative']['median']:.0f} ({s['speculative_unused']['median']:.0f}) "
                         f"| {_s(s['decode_tok_s'], 1)} |")
            if m["cache_fraction"] != tiny["models"][0]["cache_fraction"]:
                L.append("")
                continue
            L += ["", "Per-layer prediction (LRU; same-layer from the `same` run, next-layer from the `next` run (router) "
                  "and the `next+fit` run (fitted predictor); precision = correct / predicted, recall = correct / needed):", "",
                  "| layer | uses | same-layer precision | same-layer recall | next-layer precision | next-layer recall "
                  "| fitted next-layer precision | fitted next-layer recall |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for i, (ls, ln, lf) in enumerate(zip(m["layers"]["same"], m["layers"]["next"], m["layers"]["next+fit"])):
                L.append(f"| {i} | {ls['uses']} | {_f(ls['same_layer']['precision'], 3)} | {_f(ls['same_layer']['recall'], 3)} "
                         f"| {_f(ln['next_layer']['precision'], 3)} | {_f(ln['next_layer']['recall'], 3)} "
                         f"| {_f(lf['next_layer']['precision'], 3)} | {_f(lf['next_layer']['recall'], 3)} |")
            ag = m["prediction"]
            L.append(f"| all | | {_f(ag['same:same_layer']['precision'], 3)} | {_f(ag['same:same_layer']['recall'], 3)} "
                     f"| {_f(ag['next:next_layer']['precision'], 3)} | {_f(ag['next:next_layer']['recall'], 3)} "
                     f"| **{_f(ag['next+fit:next_layer']['precision'], 3)}** | **{_f(ag['next+fit:next_layer']['recall'], 3)}** |")
            if m.get("widths"):
                L += ["", "Prediction width (experts each predictor names per token; LFU, both predictors, one run each):", "",
                      "| width | next-layer recall | next-layer precision | next-layer recall by layer | same-layer recall "
                      "| same-layer precision | expert MB read / token | decode tok/s |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
                for w, r in m["widths"].items():
                    nl, sl = r["next_layer"], r["same_layer"]
                    by = " / ".join(_f(x, 3) for x in nl["recall_by_layer"][1:])
                    L.append(f"| {w} | {_f(nl['recall'], 3)} | {_f(nl['precision'], 3)} | {by} | {_f(sl['recall'], 3)} "
                             f"| {_f(sl['precision'], 3)} | {_f(r['bytes_read_per_token'] / 1e6, 3)} | {_f(r['decode_tok_s'], 1)} |")
            L.append(f"\n(`both` run: same-layer P/R {_f(ag['both:same_layer']['precision'], 3)}/"
                     f"{_f(ag['both:same_layer']['recall'], 3)}, next-layer P/R {_f(ag['both:next_layer']['precision'], 3)}/"
                     f"{_f(ag['both:next_layer']['recall'], 3)})\n")
    mx = report.get("mixtral")
    if mx:
        L += [f"### mixtral-3g Q4_0 ({mx['file_bytes'] / 1e9:.2f} GB, experts {mx['expert_bytes'] / 1e9:.2f} GB, "
              f"{mx['probe_report']['expert_slot_bytes'] / 1e6:.1f} MB per expert): prompt {p['n_prompt']} + "
              f"{p['n_gen']} generated tokens, {p['reps']} interleaved cold runs per mode, median [min-max]; "
              f"O_DIRECT best {mx['odirect_bytes_per_s'] / 1e9:.2f} GB/s (paired median "
              f"{mx['odirect_paired']['median'] / 1e9:.2f}, range {mx['odirect_paired']['min'] / 1e9:.2f}-"
              f"{mx['odirect_paired']['max'] / 1e9:.2f})", "",
              "| expert cache | budget | policy / prefetch | hit rate | expert MB read / decode token | stall s | decode tok/s | / off | / I/O bound | / paired I/O bound | / min(I/O bound, resident) | TTFT s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in mx["sizes"].items():
            for mode, mr in r["modes"].items():
                b = mr["bytes_per_decode_token"]
                # each run against the bound from the O_DIRECT bandwidth measured right before it
                need = mr.get("needed_bytes_per_token")
                pf = statistics.median([x["decode_tok_s"] * need / x["paired_bw"] for x in mr["runs"]]) if need else None
                L.append(f"| {name} ({r['cache_bytes'] / 1e6:.0f} MB, {r['memory_report']['expert_cache_slots']} experts) "
                         f"| {r['budget_bytes'] / 1e6:.0f} MB | {mode} | {_s(mr['hit_rate'], 3)} "
                         f"| {b['median'] / 1e6:.0f} [{b['min'] / 1e6:.0f}-{b['max'] / 1e6:.0f}] | {_s(mr['stall_s'])} "
                         f"| {_s(mr['decode_tok_s'])} | **{_f(mr.get('over_off'))}x** | **{_f(mr.get('over_bound'))}** "
                         f"| {_f(pf)} | {_f(mr.get('over_min_bound_resident'))} | {_s(mr['ttft_s'])} |")
        if mx.get("resident_decode_tok_s"):
            L.append(f"\nResident (no budget, every weight in RAM, warm) decode: {_s(mx['resident_decode_tok_s'])} tok/s: "
                     "the compute ceiling on this machine.")
        L += ["", f"I/O bound tok/s = O_DIRECT best / expert bytes read per decode token with the default policy "
              f"({DEFAULT_POLICY.upper()}) and prefetch off (median); edge_rt runs the defaults, "
              f"{DEFAULT_POLICY}/{DEFAULT_PREFETCH}; under the balloon {p.get('llama_reps', 1)} interleaved runs of "
              f"each engine, medians:", "",
              f"| expert cache | needed MB / token | I/O bound tok/s | edge_rt {DEFAULT_PREFETCH} tok/s "
              f"| edge_rt {DEFAULT_PREFETCH} under balloon tok/s (peak RssAnon MiB) "
              "| llama.cpp under balloon tok/s (TTFT s) | edge_rt / llama.cpp |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in mx["sizes"].items():
            dflt = r["modes"].get(f"{DEFAULT_POLICY}/{DEFAULT_PREFETCH}", {}).get("decode_tok_s", {}).get("median")
            lt = r.get("llama_decode_tok_s")
            lcell = (f"{_f(lt, 3)} ({_f(r.get('llama_ttft_s'))})" if lt is not None else
                     ("0 (no 2nd token)" if r.get("llama_cpp") else "not run"))
            L.append(f"| {name} | {_f(r.get('needed_bytes_per_token', 0) / 1e6, 0)} | {_f(r.get('io_bound_tok_s'))} "
                     f"| {_f(dflt)} | {_f(r.get('edge_balloon_decode_tok_s'))} ({r.get('edge_balloon_peak_rss_anon', 0) / MiB:.0f}) "
                     f"| {lcell} | **{_f(r.get('edge_over_llama'), 1)}x** |")
        if mx.get("llama_unconstrained"):
            lf = mx["llama_unconstrained"]
            L.append(f"\nllama.cpp unconstrained (cold, default): TTFT {_f(lf.get('ttft_s'))} s, decode "
                     f"{_f(lf.get('decode_tok_s'))} tok/s, RssAnon {mx['llama_default_anon_bytes'] / MiB:.0f} MiB"
                     + (f"; balloon runs use --no-repack (own needs {mx['llama_own_needs_bytes'] / MiB:.0f} MiB)"
                        if mx.get("llama_no_repack") else ""))
        for c in mx["contention"][:4]:
            L.append(f"- other CPU load seen: {c}")
    return "\n".join(L)


def plot_prediction(tiny: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in tiny["models"] if m["cache_fraction"] == tiny["models"][0]["cache_fraction"]]
    fig, axes = plt.subplots(1, len(ms), figsize=(5.5 * len(ms), 3.6), squeeze=False)
    for ax, m in zip(axes[0], ms):
        n = len(m["layers"]["same"])
        xs = list(range(n))
        w = 0.14
        for j, (mode, key, lab) in enumerate([("same", "same_layer", "same-layer"), ("next", "next_layer", "next-layer"),
                                              ("next+fit", "next_layer", "next-layer fitted")]):
            ls = m["layers"][mode]
            ax.bar([x + (2 * j - 2.5) * w for x in xs], [layer[key]["recall"] or 0 for layer in ls], w,
                   label=f"{lab} recall")
            ax.bar([x + (2 * j - 1.5) * w for x in xs], [layer[key]["precision"] or 0 for layer in ls], w,
                   label=f"{lab} precision")
        ax.axhline(0.8, color="k", lw=0.8, ls="--")
        ax.set_xticks(xs)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{Path(m['model']).name}, cache {m['cache_fraction']:.0%}", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("edge_rt expert prediction on real text (dashed: recall target 0.8)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["tiny", "mixtral"], choices=["tiny", "mixtral"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default="/tmp/moe-bench")
    ap.add_argument("--tiny-tokens", type=int, default=512)
    ap.add_argument("--tiny-ctx", type=int, default=256)
    ap.add_argument("--tiny-cache", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--tiny-reps", type=int, default=3)
    ap.add_argument("--tiny-q8", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--tiny-widths", nargs="*", type=int, default=[2, 3, 4],
                    help="prediction widths to compare (LFU, both predictors) at the first cache size")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    ap.add_argument("--modes", nargs="+", default=["lfu/off", "lfu/both", "lfu/same", "lfu/next", "lru/off", "lru/both"],
                    help="policy/prefetch variants of the mixtral part; each policy's off run is its baseline; "
                         "a '+fit' prefetch (e.g. lfu/next+fit) uses the fitted predictor MODEL.predictor.gguf "
                         "(edge-rt fit-predictor MODEL), the others the routers")
    ap.add_argument("--resident", action=argparse.BooleanOptionalAction, default=True,
                    help="mixtral: also time decode with every weight in RAM (the compute ceiling)")
    ap.add_argument("--n-prompt", type=int, default=8)
    ap.add_argument("--n-gen", type=int, default=24)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--llama", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--llama-gen", type=int, default=4)
    ap.add_argument("--llama-reps", type=int, default=5,
                    help="interleaved llama.cpp / edge_rt runs under the balloon per cache size")
    ap.add_argument("--llama-timeout", type=float, default=120.0)
    ap.add_argument("--min-avail", type=int, default=256 * MiB)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "moe.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "moe_prediction.png")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.modes = [m if "/" in m else f"{DEFAULT_POLICY}/{m}" for m in a.modes]

    if a.worker:
        w = json.loads(a.worker)
        edge_moe_run(w["path"], w["budget"], w["cache"], w["mode"], w["prompt"], w["n_gen"], w["threads"], emit=True)
        return 0

    machine = machine_info(Path(a.cache_dir) if Path(a.cache_dir).exists() else ROOT)
    log(f"machine: {machine}")
    busy = other_load()
    if busy:
        log("other CPU load now: " + "; ".join(busy))
    t_start = time.time()
    report: Dict[str, Any] = {"benchmark": "moe", "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
                              "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "worker"},
                              "other_load_at_start": busy}
    for part in a.parts:
        report[part] = bench_tiny(a) if part == "tiny" else bench_mixtral(a)
        report["duration_s"] = time.time() - t_start
        report["caches_dropped"] = drop_caches()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        from edge_rt.atomic_io import write_text_atomic

        write_text_atomic(a.out, json.dumps(report, indent=1, default=str))
        log(f"wrote {a.out}")
    print(markdown(report))
    if report.get("tiny") and a.plot:
        try:
            plot_prediction(report["tiny"], a.plot)
            log(f"wrote {a.plot}")
        except Exception as e:
            log(f"plot failed: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
