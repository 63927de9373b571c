"""The planner's predicted decode speed against the measured one, on this machine.

For every case of the streaming and MoE benchmarks plus resident Q4_0/Q8_0 (synthetic models of real
shapes, ``edge_rt.synthetic``): plan the load with ``edge_rt.planner.plan`` (GGUF header + the device
profile), then load the model with the same options and measure decode (``Model.bench``: an 8-token
prompt, ``--n-gen`` decode tokens, ``--reps`` runs after a warm-up, median with min-max).

Two predictions per case:
- **profile**: the profile ``edge-rt profile`` measured once at the start of the run (what a user has);
- **paired**: memory bandwidth, flash bandwidth (the model file itself, O_DIRECT at the engine's request
  size and depth) and the model's kernel rates re-measured right before each timed run (A B A B), so that
  the cost model is judged apart from how far this shared machine's disk and cores drift between the
  profile and the run; the ratio is the median of the per-run ratios.

Bytes read from flash per token are measured too (stream and expert telemetry) against the plan's.

    python benchmarks/planner.py --out benchmarks/out/planner.json        # about 10-15 minutes
    python benchmarks/planner.py --cases resident                         # resident Q4_0/Q8_0 only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

# edge_rt from the environment (installed, or PYTHONPATH=. over a built tree), never the checkout itself:
# a fresh clone's edge_rt/ has no compiled core (tests/test_fresh_checkout.py).
import edge_rt
from edge_rt.devices.profiler import (
    flash_read_bandwidth,
    kernel_rates,
    measure_profile,
    memory_read_bandwidth,
)
from edge_rt.planner import plan
from edge_rt.synthetic import ensure_synthetic_model

MB = 10**6
MiB = 1 << 20
N_PROMPT = 8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tensor_bytes(path: Path, experts: Optional[bool] = None) -> int:
    from edge_rt.gguf_file import read_header

    ts = read_header(path).tensors
    return sum(t["n_bytes"] for t in ts if experts is None or ("_exps" in t["name"]) == experts)


def cases(which: List[str]) -> List[Dict[str, Any]]:
    """(name, model, load options) of every case asked for."""
    out: List[Dict[str, Any]] = []
    if "resident" in which:
        for wtype in ("Q4_0", "Q8_0"):
            p = ensure_synthetic_model("tinyllama-1.1b", weight_type=wtype)
            out.append({"name": f"TinyLlama {wtype} resident", "model": p, "options": {}})
    if "streaming" in which:
        for preset, wtype, label in (("tinyllama-1.1b", "Q8_0", "TinyLlama Q8_0"), ("llama-3.2-3b", "Q4_0",
                                                                                     "Llama-3.2-3B Q4_0")):
            p = ensure_synthetic_model(preset, weight_type=wtype)
            size = p.stat().st_size
            for frac in (0.25, 0.5, 0.75):
                out.append({"name": f"{label} {frac:.0%} budget", "model": p,
                            "options": {"mem_budget": int(size * frac)}})
    if "moe" in which:
        p = ensure_synthetic_model("mixtral-3g")
        experts, others = tensor_bytes(p, True), tensor_bytes(p, False)
        for frac in (0.25, 0.5):
            cache = int(experts * frac)
            # What moe.py gives: the non-expert weights pinned, the cache, and room for KV, scratch, metadata.
            out.append({"name": f"mixtral-3g expert cache {frac:.0%}", "model": p,
                        "options": {"mem_budget": others + cache + 128 * MiB, "expert_cache": cache}})
    return out


def paired_profile(base: Dict[str, Any], model: Path, threads: int, types: List[str]) -> Dict[str, Any]:
    """``base`` with memory, flash (read from ``model``) and the model's kernel rates measured now."""
    from edge_rt import _core

    prof = copy.deepcopy(base)
    prof["memory"]["read_bandwidth"] = {"single_thread": memory_read_bandwidth(1, 256 * MiB, passes=2),
                                        "all_threads": memory_read_bandwidth(threads, 256 * MiB, passes=2)}
    fl = flash_read_bandwidth(int(_core.IO_CHUNK_BYTES), int(_core.IO_THREADS), flash_file=model, size=256 * MiB,
                              passes=1)
    prof["flash"]["read_bandwidth"] = fl["bytes_per_s"]
    isa = prof["cpu"]["isa"]
    for t in set(types) | {"F32"}:
        prof["dot"][isa][t] = kernel_rates(t, isa, 0.02, ram=True, ram_matrix_bytes=64 * MiB)
    prof["name"] += " (paired)"
    return prof


def measure(case: Dict[str, Any], threads: int, n_gen: int, reps: int, base: Dict[str, Any], paired: bool
            ) -> Dict[str, Any]:
    """Load the case, warm up, then ``reps`` runs; with ``paired``, before each run the profile's memory, flash
    and kernel numbers are re-measured and the case planned again (runs interleaved A B A B)."""
    n_ctx = N_PROMPT + n_gen + 8
    types = sorted(set(_types(case["model"])))
    m = edge_rt.load(case["model"], threads=threads, n_ctx=n_ctx, **case["options"])
    with m:
        m.bench(n_prompt=N_PROMPT, n_gen=4, seed=99)  # warm-up: pages, threads, the expert cache
        runs, flash_per_pass, predicted, profiles = [], [], [], []
        for i in range(reps):
            if paired:
                pp = paired_profile(base, case["model"], threads, types)
                predicted.append(plan(case["model"], pp, threads=threads, n_ctx=n_ctx, n_prompt=N_PROMPT,
                                      **case["options"])["predicted"]["decode_tok_s"])
                profiles.append(paired_profile_summary(pp))
            m.stream_stats(reset=True)
            r = m.bench(n_prompt=N_PROMPT, n_gen=n_gen, seed=i)
            runs.append(r["decode_tok_s"])
            # Layers and experts (stream_stats counts both); per pass: the prompt's and each decode step's.
            flash_per_pass.append(m.stream_stats()["bytes_read"] / (n_gen + 1))
        rep = m.memory_report()
    out = {"decode_tok_s": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs,
           "flash_bytes_per_pass": statistics.median(flash_per_pass), "memory_report": rep}
    if paired:
        ratios = [g / p for g, p in zip(runs, predicted)]
        out.update(paired_predicted=statistics.median(predicted), paired_predictions=predicted,
                   paired_ratio=statistics.median(ratios), paired_ratio_min=min(ratios),
                   paired_ratio_max=max(ratios), paired_profiles=profiles)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["resident", "streaming", "moe"],
                    choices=["resident", "streaming", "moe"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-paired", action="store_true", help="Skip the re-measured (paired) predictions.")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    log(f"measuring the device profile (edge-rt profile); load average {os.getloadavg()}")
    base = measure_profile(threads=a.threads, flash_dir=Path(os.path.expanduser("~/.cache/edge_rt")))
    results: List[Dict[str, Any]] = []
    for case in cases(a.cases):
        opts = case["options"]
        pl = plan(case["model"], base, threads=a.threads, n_ctx=N_PROMPT + a.n_gen + 8, n_prompt=N_PROMPT, **opts)
        log(f"{case['name']}: predicted {pl['predicted']['decode_tok_s']:.2f} tok/s, measuring")
        got = measure(case, a.threads, a.n_gen, a.reps, base, not a.no_paired)
        row = {"case": case["name"], "model": str(case["model"]), "options": opts,
               "placement": {k: pl["placement"][k] for k in ("mode", "window", "pinned_bytes", "streamed_bytes",
                                                              "expert_cache")},
               "predicted": pl["predicted"], "flash_bytes_per_token": pl["flash_bytes_per_token"], "measured": got,
               "ratio": got["decode_tok_s"] / pl["predicted"]["decode_tok_s"], "loadavg": os.getloadavg()}
        log(f"  measured {got['decode_tok_s']:.2f} [{got['min']:.2f}-{got['max']:.2f}] tok/s: measured / predicted "
            f"{row['ratio']:.2f}" + (f", / paired {got['paired_ratio']:.2f}" if "paired_ratio" in got else "")
            + f"; load average {row['loadavg'][0]:.1f}")
        results.append(row)
    report = {"profile": base, "threads": a.threads, "n_prompt": N_PROMPT, "n_gen": a.n_gen, "reps": a.reps,
              "results": results}
    print_table(report)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1, default=str))


def _types(path: Path) -> List[str]:
    from edge_rt.gguf_file import read_header

    return [t["type"] for t in read_header(path).tensors]


def paired_profile_summary(p: Dict[str, Any]) -> Dict[str, float]:
    return {"memory_all_threads": p["memory"]["read_bandwidth"]["all_threads"],
            "flash": p["flash"]["read_bandwidth"]}


def print_table(report: Dict[str, Any]) -> None:
    p = report["profile"]
    bw = p["memory"]["read_bandwidth"]
    print(f"Profile: memory {bw['single_thread'] / 1e9:.2f} / {bw['all_threads'] / 1e9:.2f} GB/s (1 / "
          f"{p['cpu']['cores']} threads), flash {p['flash']['read_bandwidth'] / 1e9:.2f} GB/s, isa {p['cpu']['isa']}")
    print()
    print("| case | placement | flash MB/token planned | flash MB/pass measured | predicted tok/s | measured tok/s "
          "| measured / predicted | paired predicted tok/s | measured / paired [min-max] "
          "| paired memory / flash GB/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in report["results"]:
        pl, m = r["placement"], r["measured"]
        place = "resident"
        if pl["mode"] != "resident":
            place = f"window {pl['window']}, pinned {pl['pinned_bytes'] / MB:.0f} MB"
            if pl["expert_cache"]:
                place += f", experts {pl['expert_cache']['slots']}/{pl['expert_cache']['total']}"
        paired = "paired_ratio" in m
        if paired:
            mem = statistics.median(x["memory_all_threads"] for x in m["paired_profiles"]) / 1e9
            fl = statistics.median(x["flash"] for x in m["paired_profiles"]) / 1e9
        cells = [r["case"], place, f"{r['flash_bytes_per_token'] / MB:.0f}", f"{m['flash_bytes_per_pass'] / MB:.0f}",
                 f"{r['predicted']['decode_tok_s']:.2f}", f"{m['decode_tok_s']:.2f} [{m['min']:.2f}-{m['max']:.2f}]",
                 f"**{r['ratio']:.2f}**", f"{m['paired_predicted']:.2f}" if paired else "-",
                 f"**{m['paired_ratio']:.2f}** [{m['paired_ratio_min']:.2f}-{m['paired_ratio_max']:.2f}]"
                 if paired else "-", f"{mem:.1f} / {fl:.2f}" if paired else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
