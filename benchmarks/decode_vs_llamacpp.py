#!/usr/bin/env python3
"""Prefill and decode speed of edge_rt vs llama.cpp on TinyLlama-1.1B-shaped synthetic GGUFs,
beside the memory-bandwidth bound on decode measured in the same run.

Protocol (as in benchmarks/RESULTS.md): same GGUF file and thread count for both engines;
one warm-up each, then runs interleaved A B A B (``--reps`` each, >= 5); medians quoted with min-max;
ratios edge_rt / llama.cpp. Weights are resident (files are read once at load; the page cache and
the engines' own buffers keep them in RAM).

Each run: prefill = one evaluation of ``--n-prompt`` random token ids from an empty KV cache;
decode = ``--n-gen`` single-token evaluations after it (random ids, no sampling: the same work for
both engines). edge_rt uses ``Model.bench``; llama.cpp is timed around ``Llama.eval``.

The decode bound: every generated token reads all weight matrices once (the token embedding only one
row), so tok/s <= memory read bandwidth / bytes of weights per token. Bandwidth is the best of
several passes of a numpy uint8 max-reduction over a 1 GiB buffer (1 and ``--threads`` threads).
KV-cache reads are left out of the bound (under 1% of the weight bytes at these context lengths).

    python benchmarks/decode_vs_llamacpp.py                 # Q4_0 and Q8_0, 2 threads, 5 reps
    python benchmarks/decode_vs_llamacpp.py --types Q4_0 --reps 7
    python benchmarks/decode_vs_llamacpp.py --types Q4_K_M   # llama.cpp's mixture, quantized by llama.cpp
    python benchmarks/decode_vs_llamacpp.py --model ~/.cache/edge_rt/test-data/models/SmolLM2-135M-Instruct.Q4_1.gguf

Writes benchmarks/out/decode_vs_llamacpp.json; prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from edge_rt.atomic_io import atomic_write, write_text_atomic
from edge_rt.devices.profiler import memory_read_bandwidth as profiler_read_bandwidth
from edge_rt.synthetic import PRESETS, ensure_synthetic_model

ROOT = Path(__file__).resolve().parents[1]

# ---- machine --------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info(model_dir: Path) -> Dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine())
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                   if ln.startswith("MemTotal:")), 0)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 0
    disk = ""
    try:
        src = subprocess.run(["df", "--output=source,fstype,size", str(model_dir)], capture_output=True,
                             text=True, timeout=5).stdout.strip().splitlines()[-1].split()
        disk = f"{src[0]} ({src[1]}, {int(src[2]) / 2**20:.0f} GiB)"
        if shutil.which("lsblk"):
            out = subprocess.run(["lsblk", "-ndo", "MODEL,ROTA", src[0]], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if out:
                parts = out.split()
                model = " ".join(parts[:-1])
                disk += (f", {model}" if model else "") + (", rotational" if parts[-1] == "1" else ", non-rotational")
    except Exception:
        disk = disk or "unknown"
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
        "ram_gib": round(mem_kb / 2**20, 1), "disk": disk, "os": platform.platform(),
        "python": platform.python_version(),
    }


def edge_rt_source() -> str:
    """Which edge_rt this run measures: a checkout (with its commit) or an installed package. Run from a
    checkout without ``PYTHONPATH=.``, Python imports the installed package, not the checkout's code."""
    import edge_rt

    pkg = Path(edge_rt.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short", "HEAD")
    except OSError:  # no git on this machine
        return f"{pkg} (not known whether a checkout: git is not installed)"
    if head.returncode != 0 or git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
        return f"{pkg} (installed package)"  # not a git tree, or one that does not track it (site-packages)
    modified = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return f"{pkg} (checkout at {head.stdout.strip()}{', with uncommitted changes' if modified else ''})"


# ---- bandwidth --------------------------------------------------------------------------------------


def memory_read_bandwidth(threads: int, size: int = 1 << 30, passes: int = 5) -> float:
    """Best read bandwidth (bytes/s) with 1 and with ``threads`` threads, ``passes`` passes each
    (edge_rt.devices.profiler's measurement: threads reducing slices with ``np.max``)."""
    return max(profiler_read_bandwidth(n, size, passes) for n in sorted({1, threads}))


def weight_bytes_per_token(path: Path) -> Dict[str, int]:
    """Bytes of weights one decode step reads: all tensors, except the token embedding (one row)
    unless it is also the output head (tied)."""
    from edge_rt.gguf_file import read_header

    tensors = read_header(path).tensors
    total = 0
    emb = 0
    tied = not any(t["name"] == "output.weight" for t in tensors)
    for t in tensors:
        if t["name"] == "token_embd.weight" and not tied:
            emb = int(t["n_bytes"])
            total += int(t["n_bytes"]) // int(t["shape"][1])  # one row (shape is GGUF ne: [n_embd, n_vocab])
        else:
            total += int(t["n_bytes"])
    return {"bytes_per_token": total, "token_embd_bytes": emb, "file_bytes": path.stat().st_size}


# ---- engines -----------------------------------------------------------------------------------------


class LlamaCppRunner:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import llama_cpp

        self.version = getattr(llama_cpp, "__version__", "?")
        from edge_rt.llama_cpp_peer import open_llama, peer_note

        self.note = peer_note()
        self.llm = open_llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                              n_threads_batch=threads, logits_all=False, verbose=False, seed=0)

    def run(self, prompt: List[int], gen: List[int]) -> Dict[str, float]:
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        t2 = time.perf_counter()
        llm.reset()
        return {"prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": len(gen) / (t2 - t1)}


class EdgeRTRunner:
    name = "edge_rt"

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import edge_rt

        self.version = getattr(edge_rt, "__version__", "?")
        self.m = edge_rt.load(path, threads=threads, n_ctx=n_ctx)

    def run(self, prompt: List[int], gen: List[int]) -> Dict[str, float]:
        m = self.m
        if hasattr(m, "bench"):
            r = m.bench(n_prompt=len(prompt), n_gen=len(gen))
            return {"prefill_tok_s": float(r["prefill_tok_s"]), "decode_tok_s": float(r["decode_tok_s"])}
        # Fallback for engines without bench(): prefill via logits(), decode via greedy generation.
        t0 = time.perf_counter()
        m.logits(prompt)
        t1 = time.perf_counter()
        n = 0
        t2 = time.perf_counter()
        for _ in m.generate_tokens(prompt, max_tokens=len(gen), temperature=0.0):
            n += 1
        t3 = time.perf_counter()
        return {"prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": max(n - 1, 1) / (t3 - t2)}


def _stats(xs: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


# Mixtures llama.cpp's quantizer makes (llama_ftype ids): the benchmark quantizes the preset's F16 file with
# llama_model_quantize, as llama-quantize would, so both engines read the bytes a user's file has.
LLAMA_MIXTURES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q3_K_M": 12}


def llama_quantized_model(preset: str, mixture: str, log: Callable[[str], None]) -> Path:
    import ctypes

    import llama_cpp

    src = ensure_synthetic_model(preset, weight_type="F16")
    dst = src.with_name(f"{src.stem}-{mixture}.gguf")
    if dst.is_file():
        return dst
    log(f"[{mixture}] quantizing {src.name} with llama.cpp")
    qp = llama_cpp.llama_model_quantize_default_params()
    qp.ftype = LLAMA_MIXTURES[mixture]
    with atomic_write(dst) as tmp:  # llama.cpp replaces the (empty, unpredictably named) file
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(qp))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize returned {rc}")
    return dst


def bench_type(weight_type: str, preset: str, threads: int, n_prompt: int, n_gen: int, reps: int,
               bound_bw: float, log: Callable[[str], None], model: Optional[Path] = None) -> Dict[str, Any]:
    """One file: the preset's synthetic model of ``weight_type``, or ``model`` (a real GGUF, labelled
    ``weight_type``)."""
    t0 = time.perf_counter()
    if model is not None:
        path = model
    elif weight_type in LLAMA_MIXTURES:
        path = llama_quantized_model(preset, weight_type, log)
    else:
        path = ensure_synthetic_model(preset, weight_type=weight_type)
    log(f"[{weight_type}] model {path} ({path.stat().st_size / 1e6:.0f} MB, ready in "
        f"{time.perf_counter() - t0:.1f} s)")
    wb = weight_bytes_per_token(path)
    n_ctx = max(512, n_prompt + n_gen)
    if model is not None:
        from edge_rt.inspection import inspect

        n_vocab = int(inspect(path)["tokenizer"]["n_vocab"])
    else:
        n_vocab = PRESETS[preset]["n_vocab"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, n_vocab, n_prompt).tolist()
    gen = rng.integers(0, n_vocab, n_gen).tolist()

    runners: List[Any] = []
    errors: Dict[str, str] = {}
    for cls in (EdgeRTRunner, LlamaCppRunner):
        try:
            runners.append(cls(path, threads, n_ctx))
        except Exception as e:  # report and go on: the other engine and the bound still mean something
            errors[cls.name] = f"{type(e).__name__}: {e}"
            log(f"[{weight_type}] {cls.name} unavailable: {errors[cls.name]}")

    results: Dict[str, Dict[str, List[float]]] = {r.name: {"prefill_tok_s": [], "decode_tok_s": []}
                                                  for r in runners}
    for r in runners:  # warm-up (page-in, thread pools, allocator)
        r.run(prompt, gen)
    for i in range(reps):  # interleaved A B A B
        for r in runners:
            res = r.run(prompt, gen)
            for k, v in res.items():
                results[r.name][k].append(v)
        log(f"[{weight_type}] rep {i + 1}/{reps}: " + "  ".join(
            f"{n} pp {results[n]['prefill_tok_s'][-1]:.1f} tg {results[n]['decode_tok_s'][-1]:.2f}"
            for n in results))

    bound = bound_bw / wb["bytes_per_token"]
    out: Dict[str, Any] = {"model": str(path), "weight_type": weight_type, **wb,
                           "decode_bound_tok_s": bound, "engines": {}, "errors": errors,
                           "versions": {r.name: r.version for r in runners},
                           "peer": next((r.note for r in runners if hasattr(r, "note")), None)}
    for name, res in results.items():
        e = {k: _stats(v) for k, v in res.items()}
        e["decode_fraction_of_bound"] = e["decode_tok_s"]["median"] / bound
        out["engines"][name] = e
    if len(results) == 2:
        a, b = out["engines"]["edge_rt"], out["engines"]["llama.cpp"]
        out["ratio_edge_rt_over_llama_cpp"] = {
            k: a[k]["median"] / b[k]["median"] for k in ("prefill_tok_s", "decode_tok_s")}
        # per-pair ratios show the spread of the comparison itself
        out["pair_ratio_range"] = {
            k: [min(x / y for x, y in zip(a[k]["runs"], b[k]["runs"])),
                max(x / y for x, y in zip(a[k]["runs"], b[k]["runs"]))]
            for k in ("prefill_tok_s", "decode_tok_s")}
    return out


def _fmt(s: Dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def markdown(report: Dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"Machine: {report['machine']['cpu']}, {report['machine']['usable_cpus']} usable CPUs "
        f"({report['machine']['logical_cpus']} logical), {report['machine']['ram_gib']} GiB RAM, "
        f"disk {report['machine']['disk']}",
        f"Memory read bandwidth ({p['threads']} threads, best of {p['bw_passes']}): "
        f"{report['bandwidth_gb_s']:.2f} GB/s",
        f"Model: {', '.join(p['models']) or p['preset'] + ' synthetic'}; prefill {p['n_prompt']} tokens, "
        f"decode {p['n_gen']} tokens, "
        f"{p['threads']} threads, {p['reps']} interleaved runs each after a warm-up; median [min-max].",
        f"edge_rt: {report['edge_rt']}",
        *sorted({f"Peer: {t['peer']}." for t in report["types"] if t.get("peer")}),
        "",
        "| type | engine | prefill tok/s | decode tok/s | decode bound tok/s | decode / bound |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in report["types"]:
        for name, e in t["engines"].items():
            lines.append(f"| {t['weight_type']} | {name} | {_fmt(e['prefill_tok_s'])} | "
                         f"{_fmt(e['decode_tok_s'], 2)} | {t['decode_bound_tok_s']:.2f} | "
                         f"{100 * e['decode_fraction_of_bound']:.0f}% |")
        if "ratio_edge_rt_over_llama_cpp" in t:
            r, rr = t["ratio_edge_rt_over_llama_cpp"], t["pair_ratio_range"]
            lines.append(
                f"| {t['weight_type']} | **edge_rt / llama.cpp** | "
                f"**{r['prefill_tok_s']:.2f}x** [{rr['prefill_tok_s'][0]:.2f}-{rr['prefill_tok_s'][1]:.2f}] | "
                f"**{r['decode_tok_s']:.2f}x** [{rr['decode_tok_s'][0]:.2f}-{rr['decode_tok_s'][1]:.2f}] | | |")
        for name, err in t["errors"].items():
            lines.append(f"| {t['weight_type']} | {name} | n/a | n/a | {t['decode_bound_tok_s']:.2f} | "
                         f"({err.splitlines()[0][:80]}) |")
    lines.append("")
    lines.append("Weights read per decoded token: " + ", ".join(
        f"{t['weight_type']} {t['bytes_per_token'] / 1e6:.0f} MB" for t in report["types"]))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tinyllama-1.1b", choices=sorted(PRESETS))
    ap.add_argument("--types", nargs="+", default=["Q4_0", "Q8_0"])
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="a GGUF file to run instead of the synthetic types (repeatable); e.g. the SmolLM2 "
                         "file tests/real_models.py fetches")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bw-passes", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "decode_vs_llamacpp.json")
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from edge_rt.synthetic import synthetic_cache_dir

    cache = synthetic_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    machine = machine_info(cache)
    log(f"machine: {machine}")
    if a.reps < 5:
        log(f"note: --reps {a.reps} is below the protocol's minimum of 5")

    types = []
    bws = []
    files = [(m.stem, m) for m in a.model] or [(wt, None) for wt in a.types]
    for label, model in files:
        # bandwidth measured around each engine comparison, in the same process and run
        bws.append(memory_read_bandwidth(a.threads, passes=a.bw_passes))
        log(f"memory read bandwidth: {bws[-1] / 1e9:.2f} GB/s")
        types.append(bench_type(label, a.preset, a.threads, a.n_prompt, a.n_gen, a.reps, max(bws), log, model))
    bw = max(bws)
    for t in types:  # apply the final best bandwidth to every bound
        t["decode_bound_tok_s"] = bw / t["bytes_per_token"]
        for e in t["engines"].values():
            e["decode_fraction_of_bound"] = e["decode_tok_s"]["median"] / t["decode_bound_tok_s"]

    report = {
        "benchmark": "decode_vs_llamacpp",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "edge_rt": edge_rt_source(),
        "params": {"preset": a.preset, "models": [str(m) for m in a.model],
                   "threads": a.threads, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
                   "reps": a.reps, "bw_passes": a.bw_passes},
        "bandwidth_gb_s": bw / 1e9,
        "bandwidth_samples_gb_s": [b / 1e9 for b in bws],
        "types": types,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(a.out, json.dumps(report, indent=2))
    print(markdown(report))
    log(f"wrote {a.out}")
    return 0 if all(not t["errors"] for t in types) else 1


if __name__ == "__main__":
    raise SystemExit(main())
