#!/usr/bin/env python3
"""Streaming models larger than the memory budget: edge_rt's sliding-window layer streaming vs a
naive streaming baseline and vs the same placement without overlap, vs the flash-read bound measured in
the same run, and vs llama.cpp (default mmap) squeezed by a balloon process to the same memory.

Protocol (as in benchmarks/RESULTS.md):

- Models: synthetic TinyLlama-1.1B-shaped Q8_0 and Llama-3.2-3B-shaped Q4_0 GGUFs (random weights).
- Budgets: ``--fractions`` (default 25%, 50%, 75%) of the model's file size, passed as ``mem_budget``.
- Every run is cold: ``sync; echo 3 > /proc/sys/vm/drop_caches`` first (root only; skipped with a
  message otherwise). Each of ``--reps`` repetitions runs, interleaved, the naive baseline once and,
  per budget, edge_rt with prefetch and edge_rt without overlap; medians quoted with min-max.
- Three edge_rt modes. ``prefetch``: the engine's defaults under the budget (layers pinned where the
  budget allows, the rest streamed through the window, reads ahead of compute). ``no overlap``: the
  same placement with ``prefetch=False`` (window of 1, each streamed layer read when it is needed):
  what the overlap alone gains. ``naive``: load each layer, compute, free, no overlap: every layer
  (and the output head) streamed through one slot, ``prefetch=False`` at the engine's minimum budget
  (``edge_rt.minimum_budget``); it does not depend on the budget and fits in all of them, so it runs
  once per repetition.
- One run = load + ``--n-prompt`` token prompt + ``--n-gen`` greedy tokens. TTFT = load start to the
  first generated token (imports excluded); decode tok/s = (n_gen - 1) / (time from first to last
  token).
- I/O bound: streamed bytes per token (``memory_report()['streamed_bytes_per_token']``) divided by
  the sequential O_DIRECT read bandwidth of the model file itself, measured in this run (large
  blocks, best over a few queue depths, each pass after dropping caches).
- llama.cpp (llama-cpp-python, same file, same threads, default mmap) runs in a subprocess while a
  balloon process holds memory so that only ``budget + llama.cpp's own needs`` stays MemAvailable.
  Its own needs (anonymous memory: KV cache, compute buffers, the interpreter) are measured in an
  unconstrained run first (``RssAnon``). The balloon never takes the machine below ``--min-avail``
  and has oom_score_adj 1000 so that the kernel kills it before anything else; it is always killed
  in a ``finally``. edge_rt runs once under the same balloon too (in a subprocess, like llama.cpp).
  llama.cpp thrashes under the balloon: its runs generate only ``--llama-gen`` tokens under
  ``--llama-timeout`` seconds, and a run cut off reports the tokens it finished.

    sudo "$(command -v python3)" benchmarks/streaming.py                # both models, 3 budgets, 5 reps
    sudo "$(command -v python3)" benchmarks/streaming.py --models tinyllama-1.1b:Q8_0 --reps 3

Writes benchmarks/out/streaming.json and a timeline PNG (edge_rt.timeline) for the
TinyLlama Q8_0 50% budget run; prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:  # the sibling scripts, also when this one is imported
    sys.path.insert(0, str(ROOT / "benchmarks"))

from edge_rt.devices.profiler import read_pass  # noqa: E402

from decode_vs_llamacpp import machine_info  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
N_CTX = 512  # every run's context, llama.cpp's too (edge_rt's budgets and minimum include its KV cache)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- system ----------------------------------------------------------------------------------------


def meminfo() -> Dict[str, int]:
    out = {}
    for ln in Path("/proc/meminfo").read_text().splitlines():
        k, v = ln.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def mem_available() -> int:
    return meminfo()["MemAvailable"]


def proc_status(pid: Any = "self") -> Dict[str, int]:
    out = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith(("Vm", "Rss")):
            k, v = ln.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


_CAN_DROP: Optional[bool] = None


def drop_caches() -> bool:
    """Drop the page cache (root only). Returns False, once with a message, where it cannot."""
    global _CAN_DROP
    if _CAN_DROP is False:
        return False
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        _CAN_DROP = True
    except OSError as e:
        log(f"cannot drop caches ({e}): cold runs are NOT cold")
        _CAN_DROP = False
    return _CAN_DROP


def other_load() -> List[str]:
    """Processes other than this benchmark using CPU now (contention note for the report)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ni,pcpu,comm", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=5).stdout.splitlines()[1:]
    except Exception:
        return []
    mine = {os.getpid()}
    busy = []
    for ln in out:
        p = ln.split(None, 3)
        if len(p) == 4 and int(p[0]) not in mine and float(p[2]) >= 5.0 and p[3] not in ("ps",):
            busy.append(f"{p[3]} (pid {p[0]}, nice {p[1]}, {p[2]}% cpu)")
    return busy


# ---- flash bound ---------------------------------------------------------------------------------


def odirect_read_bandwidth(path: Path, block: int = 8 * MiB, depths=(1, 2, 4), max_bytes: int = 2 * GiB,
                           passes: int = 2) -> Dict[str, Any]:
    """Sequential O_DIRECT read bandwidth (bytes/s) of ``path``: ``depth`` threads each keep one
    ``block``-sized preadv in flight into its own page-aligned buffer, taking consecutive blocks
    from a shared cursor (so the file is read front to back with ``depth`` requests in flight).
    Best over depths and passes; caches dropped before each pass (O_DIRECT bypasses them anyway)."""
    size = min(path.stat().st_size, max_bytes) // block * block
    results: Dict[str, float] = {}
    for depth in depths:
        for _ in range(passes):
            drop_caches()
            bw = read_pass(path, size, block, depth, direct=True)
            results[str(depth)] = max(results.get(str(depth), 0.0), bw)
    best_depth = max(results, key=results.get)
    return {"bytes_per_s": results[best_depth], "best_depth": int(best_depth), "by_depth": results,
            "block": block, "bytes_read": size, "passes": passes}


# ---- balloon -----------------------------------------------------------------------------------------

BALLOON_CODE = r"""
import mmap, os, sys, time
target, floor = int(sys.argv[1]), int(sys.argv[2])
try:
    open('/proc/self/oom_score_adj', 'w').write('1000')  # the kernel kills the balloon first
except OSError:
    pass
def avail():
    for ln in open('/proc/meminfo'):
        if ln.startswith('MemAvailable:'):
            return int(ln.split()[1]) * 1024
chunks = []
def grab(n):
    # MAP_POPULATE faults every page in now: resident (no swap here to push it out), not just reserved
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, 'MAP_POPULATE', 0))
    for off in range(0, n, 1 << 20):  # and touch one byte a MiB (a no-op where MAP_POPULATE worked)
        m[off] = 1
    chunks.append(m)
step = 256 << 20
while step >= (4 << 20):
    while avail() - step > target:
        grab(step)
    step //= 4
print('ready', sum(len(c) for c in chunks), avail(), flush=True)
# Hold the target both ways while other processes (a shared machine) allocate and free: re-inflate
# when more than 64 MiB above it; deflate when something else needs memory, never leaving the
# machine below `floor`.
while True:
    time.sleep(0.2)
    while chunks and avail() < floor:
        chunks.pop().close()
    extra = avail() - target
    if extra > (64 << 20):
        grab(min(extra - (16 << 20), 256 << 20) // 4096 * 4096)
"""


class Balloon:
    """A subprocess that holds memory until only ``target`` bytes stay MemAvailable."""

    def __init__(self, target: int, floor: int):
        self.target, self.floor = target, floor
        self.proc: Optional[subprocess.Popen] = None
        self.held = 0
        self.avail_after = 0

    def __enter__(self) -> "Balloon":
        drop_caches()  # page cache would otherwise be evicted by the balloon, slowly
        self.proc = subprocess.Popen([sys.executable, "-c", BALLOON_CODE, str(self.target), str(self.floor)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError("balloon failed to inflate")
        self.held, self.avail_after = int(line[1]), int(line[2])
        log(f"balloon holds {self.held / GiB:.2f} GiB; MemAvailable now {self.avail_after / MiB:.0f} MiB "
            f"(target {self.target / MiB:.0f} MiB)")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# ---- workers (run in subprocesses for the balloon runs) ---------------------------------------------


def _emit(d: Dict[str, Any]) -> None:
    print("@@" + json.dumps(d), flush=True)


def worker_llama(a: Dict[str, Any]) -> None:
    import numpy as np

    from edge_rt.llama_cpp_peer import open_llama

    t0 = time.perf_counter()
    # no_repack: llama.cpp's --no-repack, so Q4_0 weights stay in the mmap'd file instead of being copied
    # (repacked) to RAM; otherwise its default, except on an AMX build (see edge_rt/llama_cpp_peer.py).
    llm = open_llama(a["path"], extra_buffers=False if a.get("no_repack") else None, n_ctx=N_CTX,
                     n_threads=a["threads"], n_threads_batch=a["threads"], verbose=False, seed=0)
    t_load = time.perf_counter()
    _emit({"event": "loaded", "load_s": t_load - t0, "status": proc_status()})
    llm.eval(a["prompt"])
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t_first = time.perf_counter()
    _emit({"event": "first", "ttft_s": t_first - t0, "t": t_first - t0, "status": proc_status()})
    for i in range(a["n_gen"] - 1):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        _emit({"event": "token", "i": i + 2, "t": time.perf_counter() - t0})
    _emit({"event": "done", "status": proc_status()})


def worker_edge(a: Dict[str, Any]) -> None:
    import edge_rt

    t0 = time.perf_counter()
    m = edge_rt.load(a["path"], threads=a["threads"], n_ctx=N_CTX, mem_budget=a["budget"],
                     prefetch=a.get("prefetch", True))
    _emit({"event": "loaded", "load_s": time.perf_counter() - t0, "status": proc_status()})
    for i, _ in enumerate(m.generate_tokens(a["prompt"], max_tokens=a["n_gen"], temperature=0.0)):
        t = time.perf_counter() - t0
        _emit({"event": "first" if i == 0 else "token", "i": i + 1, "t": t,
               **({"ttft_s": t} if i == 0 else {})})
    _emit({"event": "done", "status": proc_status(), "stats": m.stream_stats(),
           "memory_report": m.memory_report()})


def run_worker(kind: str, args: Dict[str, Any], timeout: float, script: Optional[Path] = None) -> Dict[str, Any]:
    """Run a worker subprocess (caches dropped first); collect its events, killing it at ``timeout``.
    ``script`` (default this file) is run as ``script --worker [kind] ARGS_JSON``."""
    drop_caches()
    cmd = [sys.executable, str((script or Path(__file__)).resolve()), "--worker"] + ([kind] if kind else []) + \
        [json.dumps(args)]
    # The worker inherits this environment, so it imports the same edge_rt as this process.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: List[Dict[str, Any]] = []
    peak_anon = [0]
    avail: List[int] = []  # MemAvailable while it runs (what the balloon actually left)

    def reader() -> None:
        for ln in proc.stdout:
            if ln.startswith("@@"):
                events.append(json.loads(ln[2:]))

    def sampler() -> None:  # the worker's anonymous memory, sampled (its own needs)
        while proc.poll() is None:
            try:
                peak_anon[0] = max(peak_anon[0], proc_status(proc.pid).get("RssAnon", 0))
                avail.append(mem_available())
            except (OSError, ValueError):
                pass
            time.sleep(0.1)

    th = [threading.Thread(target=reader, daemon=True), threading.Thread(target=sampler, daemon=True)]
    for t in th:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    th[0].join(5)
    err = proc.stderr.read()[-2000:] if proc.stderr else ""
    out = summarize_worker(events, timed_out, proc.returncode, err, peak_anon[0])
    if avail:
        out["mem_available"] = {"min": min(avail), "median": statistics.median(avail), "max": max(avail)}
    return out


def summarize_worker(events: List[Dict[str, Any]], timed_out: bool, rc: Optional[int], err: str,
                     peak_anon: int) -> Dict[str, Any]:
    toks = [e["t"] for e in events if e["event"] in ("first", "token")]
    out: Dict[str, Any] = {"timed_out": timed_out, "rc": rc, "tokens": len(toks), "peak_rss_anon": peak_anon}
    for e in events:
        if e["event"] == "loaded":
            out["load_s"] = e["load_s"]
            out["status_loaded"] = e["status"]
        elif e["event"] == "first":
            out["ttft_s"] = e["ttft_s"]
        elif e["event"] == "done":
            out["status_done"] = e.get("status")
            if "result" in e:
                out["result"] = e["result"]
            for k in ("stats", "memory_report"):
                if k in e:
                    out[k] = e[k]
    if len(toks) >= 2:
        out["decode_tok_s"] = (len(toks) - 1) / (toks[-1] - toks[0])
    if rc not in (0, None) and not timed_out:
        out["error"] = err
    return out


# ---- edge_rt in-process runs -------------------------------------------------------------------------


# edge_rt modes -> prefetch; "naive" runs at the minimum budget, the others at each budget
# (prefetch=False means a window of one slot)
PREFETCH = {"prefetch": True, "no_overlap": False, "naive": False}


def edge_run(path: Path, budget: int, prefetch: bool, prompt: List[int], n_gen: int, threads: int,
             keep_events: bool = False) -> Dict[str, Any]:
    """One cold edge_rt run in this process: drop caches, load, generate; timings and telemetry."""
    import edge_rt

    drop_caches()
    t0 = time.perf_counter()
    m = edge_rt.load(path, threads=threads, n_ctx=N_CTX, mem_budget=budget, prefetch=prefetch)
    t_load = time.perf_counter() - t0
    ts = []
    for _ in m.generate_tokens(prompt, max_tokens=n_gen, temperature=0.0):
        ts.append(time.perf_counter() - t0)
    rep = m.memory_report()
    st = m.stream_stats()
    out = {"load_s": t_load, "ttft_s": ts[0], "tokens": len(ts),
           "decode_tok_s": (len(ts) - 1) / (ts[-1] - ts[0]),
           "stats": st, "memory_report": rep}
    if keep_events:
        out["events"] = m.stream_events()
        out["token_times"] = ts
    m.close()
    return out


def _stats(xs: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


# ---- one model ---------------------------------------------------------------------------------------


def bench_model(preset: str, wtype: str, a: argparse.Namespace) -> Dict[str, Any]:
    from edge_rt.synthetic import PRESETS, ensure_synthetic_model

    path = ensure_synthetic_model(preset, weight_type=wtype)
    fsize = path.stat().st_size
    tag = f"{preset}:{wtype}"
    log(f"[{tag}] {path} ({fsize / 1e6:.0f} MB)")
    n_vocab = PRESETS[preset]["n_vocab"]
    prompt = [(1 + 7919 * i) % n_vocab for i in range(a.n_prompt)]
    budgets = {f"{int(round(f * 100))}%": int(f * fsize) for f in a.fractions}
    out: Dict[str, Any] = {"model": str(path), "preset": preset, "weight_type": wtype, "file_bytes": fsize,
                           "budgets": {}, "contention": []}

    bws = [odirect_read_bandwidth(path)]
    log(f"[{tag}] O_DIRECT read: {bws[-1]['bytes_per_s'] / 1e9:.2f} GB/s (depth {bws[-1]['best_depth']}; "
        f"by depth {', '.join(f'{k}: {v / 1e9:.2f}' for k, v in bws[-1]['by_depth'].items())})")

    import edge_rt

    min_budget = edge_rt.minimum_budget(path, threads=a.threads, n_ctx=N_CTX, prefetch=False)["total"]
    out["minimum_budget_bytes"] = min_budget
    log(f"[{tag}] minimum budget (the naive baseline's): {min_budget / MiB:.1f} MiB")
    # (budget name, mode) in the order each repetition runs them; the naive run sits in the middle
    plan = [(name, mode) for name in budgets for mode in ("prefetch", "no_overlap")]
    plan.insert(len(plan) // 2, ("min", "naive"))
    runs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {b: {"prefetch": [], "no_overlap": []} for b in budgets}
    runs["min"] = {"naive": []}
    timeline = None
    for name, mode in plan:  # warm-up: one (uncounted) run per mode
        edge_run(path, budgets.get(name, min_budget), PREFETCH[mode], prompt, min(a.n_gen, 4), a.threads)
    for rep in range(a.reps):  # interleaved: A B C A B C over budgets and modes
        out["contention"] += [f"rep {rep + 1}: {x}" for x in other_load()]
        if rep > 0:  # the bound is measured between repetitions too (this VM's disk varies)
            bws.append(odirect_read_bandwidth(path, passes=1))
        for name, mode in plan:
            keep = (rep == 0 and mode == "prefetch" and name == "50%")
            # the flash bound right before this run (this VM's disk bandwidth drifts by 1.5x)
            pair_bw = odirect_read_bandwidth(path, depths=(1, 4), max_bytes=512 * MiB, passes=1)["bytes_per_s"]
            r = edge_run(path, budgets.get(name, min_budget), PREFETCH[mode], prompt, a.n_gen, a.threads,
                         keep_events=keep)
            if keep:
                timeline = {"events": r.pop("events"), "token_times": r.pop("token_times"),
                            "budget": name}
            r["paired_bw"] = pair_bw
            r["paired_bound_tok_s"] = pair_bw / r["memory_report"]["streamed_bytes_per_token"]
            r["fraction_of_paired_bound"] = r["decode_tok_s"] / r["paired_bound_tok_s"]
            runs[name][mode].append(r)
            mr = r["memory_report"]
            log(f"[{tag}] rep {rep + 1}/{a.reps} {name} {mode}: {r['decode_tok_s']:.2f} tok/s "
                f"({100 * r['fraction_of_paired_bound']:.0f}% of the bound at {pair_bw / 1e9:.2f} GB/s), "
                f"W={mr['window']}, {mr['streamed_bytes_per_token'] / 1e6:.0f} MB/token streamed, "
                f"TTFT {r['ttft_s']:.2f} s, stalls {r['stats']['stalls']}/{r['stats']['acquires']}")
    rv = runs["min"]["naive"]
    naive = {k: _stats([r[k] for r in rv]) for k in ("decode_tok_s", "ttft_s", "load_s", "fraction_of_paired_bound")}
    naive["streamed_bytes_per_token"] = rv[0]["memory_report"]["streamed_bytes_per_token"]
    naive["runs"] = rv
    out["naive"] = naive
    bws.append(odirect_read_bandwidth(path))  # again after the edge_rt runs: the bound brackets them
    bw = max(b["bytes_per_s"] for b in bws)
    seen = ", ".join("%.2f" % (b["bytes_per_s"] / 1e9) for b in bws)
    log(f"[{tag}] O_DIRECT read: {seen} GB/s over the run; "
        f"bound uses the best, {bw / 1e9:.2f}")
    out["odirect"] = bws
    out["odirect_bytes_per_s"] = bw

    # llama.cpp's own needs: anonymous memory (KV, compute buffers, interpreter), unconstrained run.
    warm_args = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": 4}
    llama_free = run_worker("llama", warm_args, a.llama_timeout)
    own = max(llama_free.get("peak_rss_anon", 0),
              (llama_free.get("status_done") or {}).get("RssAnon", 0))
    out["llama_unconstrained"] = llama_free
    out["llama_default_anon_bytes"] = own
    no_repack = own > fsize // 2
    if no_repack:
        # Default llama.cpp copies (repacks) Q4_0 weights into anonymous memory: it needs the whole
        # model in RAM and cannot run within any budget below it. The comparison under the balloon
        # uses its mmap path instead (--no-repack); its own needs are measured that way.
        log(f"[{tag}] llama.cpp default holds {own / MiB:.0f} MiB anonymous memory (weights repacked into "
            f"RAM, more than every budget): balloon runs use use_extra_bufts=False (--no-repack)")
        llama_free_nr = run_worker("llama", dict(warm_args, no_repack=True), a.llama_timeout)
        out["llama_unconstrained_no_repack"] = llama_free_nr
        own = max(llama_free_nr.get("peak_rss_anon", 0),
                  (llama_free_nr.get("status_done") or {}).get("RssAnon", 0))
        log(f"[{tag}] llama.cpp --no-repack unconstrained cold: TTFT {llama_free_nr.get('ttft_s', float('nan')):.2f} s, "
            f"decode {llama_free_nr.get('decode_tok_s', float('nan')):.2f} tok/s, own needs {own / MiB:.0f} MiB")
    out["llama_no_repack"] = no_repack
    out["llama_own_needs_bytes"] = own
    log(f"[{tag}] llama.cpp unconstrained cold: TTFT {llama_free.get('ttft_s', float('nan')):.2f} s, "
        f"decode {llama_free.get('decode_tok_s', float('nan')):.2f} tok/s (4 tokens), own needs "
        f"(RssAnon) {own / MiB:.0f} MiB")

    for name, budget in budgets.items():
        res: Dict[str, Any] = {"budget_bytes": budget}
        rp, rn = runs[name]["prefetch"], runs[name]["no_overlap"]
        rep0 = rp[0]["memory_report"]
        sbpt = rep0["streamed_bytes_per_token"]
        res["memory_report"] = rep0
        res["streamed_bytes_per_token"] = sbpt
        res["io_bound_tok_s"] = bw / sbpt if sbpt else float("inf")
        res["edge_rt"] = {k: _stats([r[k] for r in rp]) for k in ("decode_tok_s", "ttft_s", "load_s")}
        res["no_overlap"] = {k: _stats([r[k] for r in rn]) for k in ("decode_tok_s", "ttft_s", "load_s")}
        res["edge_rt"]["stall_fraction"] = _stats([r["stats"]["stall_seconds"] / max(1e-9, r["stats"]["io_seconds"])
                                                   for r in rp])
        res["edge_rt"]["measured_bytes_per_token"] = _stats(
            # one forward pass per yielded token (the prompt's, then n_gen - 1 decode steps)
            [r["stats"]["bytes_read"] / max(1, r["tokens"]) for r in rp])
        if all("fraction_of_paired_bound" in r for r in rp + rn):
            res["edge_rt"]["fraction_of_paired_bound"] = _stats([r["fraction_of_paired_bound"] for r in rp])
            res["no_overlap"]["fraction_of_paired_bound"] = _stats([r["fraction_of_paired_bound"] for r in rn])
        res["edge_rt"]["runs"] = rp
        res["no_overlap"]["runs"] = rn
        res["decode_over_io_bound"] = res["edge_rt"]["decode_tok_s"]["median"] / res["io_bound_tok_s"]
        # ratios of medians; the ranges pair the runs of one repetition
        for base, runs_b in (("naive", rv), ("no_overlap", rn)):
            res[f"prefetch_over_{base}"] = (res["edge_rt"]["decode_tok_s"]["median"]
                                            / statistics.median(r["decode_tok_s"] for r in runs_b))
            pairs = [x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(rp, runs_b)]
            res[f"prefetch_over_{base}_range"] = [min(pairs), max(pairs)]

        if a.llama and (a.llama_fractions is None or name in {f"{int(round(f * 100))}%" for f in a.llama_fractions}):
            target = budget + own
            res["balloon_target_avail"] = target
            if target < a.min_avail:
                log(f"[{tag}] {name}: target {target / MiB:.0f} MiB below --min-avail "
                    f"{a.min_avail / MiB:.0f} MiB: balloon leaves {a.min_avail / MiB:.0f} MiB")
            llama_runs: List[Dict[str, Any]] = []
            edge_bal: List[Dict[str, Any]] = []
            try:
                with Balloon(max(target, a.min_avail), a.min_avail // 2) as bal:
                    res["balloon"] = {"held_bytes": bal.held, "avail_after": bal.avail_after}
                    largs = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": a.llama_gen,
                             "no_repack": no_repack}
                    for _ in range(a.llama_reps):
                        r = run_worker("llama", largs, a.llama_timeout)
                        llama_runs.append(r)
                        if r.get("mem_available"):
                            log(f"[{tag}] {name} MemAvailable during the run: "
                                f"min {r['mem_available']['min'] / MiB:.0f} MiB, median {r['mem_available']['median'] / MiB:.0f} MiB")
                        log(f"[{tag}] {name} llama.cpp under balloon: {r['tokens']} tokens, "
                            f"TTFT {r.get('ttft_s', float('nan')):.2f} s, decode "
                            f"{r.get('decode_tok_s', float('nan')):.3f} tok/s"
                            + (" (timed out)" if r["timed_out"] else "") + (f" ERROR {r['error'][-300:]}" if r.get("error") else ""))
                        if a.edge_under_balloon:
                            eargs = {"path": str(path), "threads": a.threads, "prompt": prompt, "n_gen": a.n_gen,
                                     "budget": budget}
                            r = run_worker("edge", eargs, a.llama_timeout)
                            edge_bal.append(r)
                            if r.get("mem_available"):
                                log(f"[{tag}] {name} MemAvailable during the run: "
                                    f"min {r['mem_available']['min'] / MiB:.0f} MiB, median {r['mem_available']['median'] / MiB:.0f} MiB")
                            log(f"[{tag}] {name} edge_rt under balloon: {r['tokens']} tokens, TTFT "
                                f"{r.get('ttft_s', float('nan')):.2f} s, decode {r.get('decode_tok_s', float('nan')):.2f} tok/s"
                                + (f" ERROR {r['error'][-300:]}" if r.get("error") else ""))
            except Exception as e:
                log(f"[{tag}] {name}: balloon runs failed: {type(e).__name__}: {e}")
                res["balloon_error"] = f"{type(e).__name__}: {e}"
            res["llama_cpp"] = llama_runs
            res["edge_rt_balloon"] = edge_bal

            def med(rs: List[Dict[str, Any]], k: str) -> Optional[float]:
                xs = [r[k] for r in rs if k in r]
                return statistics.median(xs) if xs else None

            lt, lf = med(llama_runs, "decode_tok_s"), med(llama_runs, "ttft_s")
            et, ef = med(edge_bal, "decode_tok_s"), med(edge_bal, "ttft_s")
            res["llama_decode_tok_s"], res["llama_ttft_s"] = lt, lf
            res["edge_balloon_decode_tok_s"], res["edge_balloon_ttft_s"] = et, ef
            # edge_rt / llama.cpp under the same memory: edge_rt's runs under the balloon where made
            # (same conditions), else its in-process medians.
            e_dec = et if et is not None else res["edge_rt"]["decode_tok_s"]["median"]
            e_ttft = ef if ef is not None else res["edge_rt"]["ttft_s"]["median"]
            res["edge_over_llama_decode"] = (e_dec / lt) if lt else None
            res["edge_ttft_over_llama_ttft"] = (e_ttft / lf) if lf else None
            if lt is None and llama_runs:
                res["llama_note"] = "no second token before the timeout"
        out["budgets"][name] = res
    out["timeline"] = timeline
    return out


# ---- report ------------------------------------------------------------------------------------------


def _f(x: Optional[float], d: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def _s(s: Dict[str, Any], d: int = 2) -> str:
    return f"{s['median']:.{d}f} [{s['min']:.{d}f}-{s['max']:.{d}f}]"


def markdown(report: Dict[str, Any]) -> str:
    p, mi = report["params"], report["machine"]
    lines = [
        f"Machine: {mi['cpu']}, {mi['usable_cpus']} usable CPUs, {mi['ram_gib']} GiB RAM, disk {mi['disk']}",
        f"{p['threads']} threads; prompt {p['n_prompt']} tokens, decode {p['n_gen']} tokens (llama.cpp under the "
        f"balloon: {p['llama_gen']} tokens, {p['llama_timeout']:.0f} s cap); {p['reps']} interleaved cold runs "
        f"per edge_rt mode after a warm-up; median [min-max].",
        "",
        "| model | budget | streamed MB/token | O_DIRECT GB/s | I/O bound tok/s | edge_rt tok/s | / bound "
        "| / paired bound | naive tok/s | prefetch / naive | no-overlap tok/s | prefetch / no-overlap "
        "| edge_rt under balloon tok/s | llama.cpp under balloon tok/s "
        "| edge_rt / llama.cpp | TTFT edge_rt s | TTFT llama.cpp s |",
        "| --- " * 17 + "|",
    ]
    for m in report["models"]:
        for name, r in m["budgets"].items():
            lt = r.get("llama_decode_tok_s")
            lcell = _f(lt, 3) if lt is not None else ("0 (no 2nd token)" if r.get("llama_cpp") else "not run")
            ttft_e = r.get("edge_balloon_ttft_s") or r["edge_rt"]["ttft_s"]["median"]
            pf = _s(r["edge_rt"]["fraction_of_paired_bound"]) if "fraction_of_paired_bound" in r["edge_rt"] else "n/a"
            lines.append(
                f"| {m['preset']} {m['weight_type']} ({m['file_bytes'] / 1e9:.2f} GB) | {name} "
                f"({r['budget_bytes'] / 1e6:.0f} MB) | {r['streamed_bytes_per_token'] / 1e6:.0f} | "
                f"{m['odirect_bytes_per_s'] / 1e9:.2f} | {r['io_bound_tok_s']:.2f} | {_s(r['edge_rt']['decode_tok_s'])} | "
                f"**{r['decode_over_io_bound']:.2f}** | {pf} | {_s(m['naive']['decode_tok_s'])} | "
                f"**{r['prefetch_over_naive']:.2f}x** | {_s(r['no_overlap']['decode_tok_s'])} | "
                f"{r['prefetch_over_no_overlap']:.2f}x | {_f(r.get('edge_balloon_decode_tok_s'))} | {lcell} | "
                f"**{_f(r.get('edge_over_llama_decode'), 1)}x** | {_f(ttft_e)} | {_f(r.get('llama_ttft_s'))} |")
    lines += ["", "Targets: edge_rt / I/O bound >= 0.85; prefetch / naive >= 1.5x; edge_rt / llama.cpp (same "
              "memory) >= 1.5x; TTFT edge_rt <= llama.cpp.", "Naive: every layer and the output head streamed "
              "through one slot, read when needed (prefetch=False at the minimum budget); one run per repetition, "
              "the same for every budget. No-overlap: the budget's own placement with prefetch=False."]
    for m in report["models"]:
        nv = m["naive"]
        ranges = ", ".join(f"{n} {r['prefetch_over_naive_range'][0]:.2f}-{r['prefetch_over_naive_range'][1]:.2f} / "
                           f"{r['prefetch_over_no_overlap_range'][0]:.2f}-{r['prefetch_over_no_overlap_range'][1]:.2f}"
                           for n, r in m["budgets"].items())
        lines.append(f"- {m['preset']} {m['weight_type']}: naive at the minimum budget "
                     f"{m['minimum_budget_bytes'] / MiB:.1f} MiB streams {nv['streamed_bytes_per_token'] / 1e6:.0f} "
                     f"MB/token, TTFT {_s(nv['ttft_s'])} s; per-repetition prefetch / naive and / no-overlap: {ranges}.")
        lf = m.get("llama_unconstrained", {})
        if m.get("llama_no_repack"):
            lines.append(f"- {m['preset']} {m['weight_type']}: llama.cpp's default repacks Q4_0 weights into "
                         f"anonymous memory ({m['llama_default_anon_bytes'] / MiB:.0f} MiB held): it cannot run "
                         f"below the model's size at all; the balloon runs use its mmap path (--no-repack).")
        lines.append(f"- {m['preset']} {m['weight_type']}: llama.cpp unconstrained (cold, 4 tokens, default): TTFT "
                     f"{_f(lf.get('ttft_s'))} s, decode {_f(lf.get('decode_tok_s'))} tok/s; own needs (RssAnon"
                     f"{' with --no-repack' if m.get('llama_no_repack') else ''}) "
                     f"{m['llama_own_needs_bytes'] / MiB:.0f} MiB, so the balloon leaves budget + that.")
        rates = ", ".join(f"{n} {r['edge_rt']['decode_tok_s']['median'] * r['streamed_bytes_per_token'] / 1e9:.2f}"
                          for n, r in m["budgets"].items())
        seen = ", ".join("%.2f" % (b["bytes_per_s"] / 1e9) for b in m["odirect"])
        lines.append(f"- {m['preset']} {m['weight_type']}: edge_rt flash read rate while decoding (tok/s x streamed "
                     f"bytes/token, GB/s): {rates}; O_DIRECT reader over the run: {seen} GB/s.")
        for c in m["contention"][:4]:
            lines.append(f"  - other CPU load seen: {c}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tinyllama-1.1b:Q8_0", "llama-3.2-3b:Q4_0"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=8)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--llama", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--llama-fractions", nargs="+", type=float, default=None,
                    help="budgets (fractions) with balloon runs; default all")
    ap.add_argument("--llama-gen", type=int, default=4)
    ap.add_argument("--llama-reps", type=int, default=1)
    ap.add_argument("--llama-timeout", type=float, default=120.0)
    ap.add_argument("--edge-under-balloon", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--min-avail", type=int, default=256 * MiB,
                    help="the balloon never leaves less than this MemAvailable (bytes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "streaming.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "out" / "timeline_tinyllama_q8_0_50.png")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker:
        {"llama": worker_llama, "edge": worker_edge}[a.worker[0]](json.loads(a.worker[1]))
        return 0

    from edge_rt.synthetic import synthetic_cache_dir

    machine = machine_info(synthetic_cache_dir())
    log(f"machine: {machine}")
    if a.reps < 5:
        log(f"note: --reps {a.reps} is below the protocol's minimum of 5")
    busy = other_load()
    if busy:
        log("other CPU load now: " + "; ".join(busy))
    models: List[Dict[str, Any]] = []
    t_start = time.time()
    report: Dict[str, Any] = {}
    for spec in a.models:
        preset, wtype = spec.split(":")
        models.append(bench_model(preset, wtype, a))
        report = {
            "benchmark": "streaming",
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": time.time() - t_start,
            "machine": machine, "caches_dropped": bool(_CAN_DROP),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "worker"},
            "models": models, "complete": len(models) == len(a.models),
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        # After each model: a cut-off run keeps its results (and never leaves a half-written file).
        from edge_rt.atomic_io import write_text_atomic

        write_text_atomic(a.out, json.dumps(report, indent=1))
    print(markdown(report))
    log(f"wrote {a.out}")
    tl = next((m["timeline"] for m in models if m.get("timeline")), None)
    if tl and a.plot:
        try:
            from edge_rt.timeline import plot_timeline

            m0 = next(m for m in models if m.get("timeline"))
            plot_timeline(tl["events"], a.plot, n_tokens=3,
                          title=f"edge_rt streaming timeline: {m0['preset']} {m0['weight_type']}, budget "
                                f"{tl['budget']} of file ({a.threads} threads)")
            log(f"wrote {a.plot}")
        except Exception as e:  # the numbers stand without the picture
            log(f"timeline plot failed: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
