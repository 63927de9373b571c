#!/usr/bin/env python3
"""Quantization quality: edge_rt's searched mixed-precision GGUF vs llama.cpp's Q4_0 and Q4_K_M.

For each trained F16 master (models/tiny-code-dense-f16.gguf, models/tiny-code-moe-f16.gguf):

1. llama.cpp quantizes the master to Q4_0 and Q4_K_M (llama-cpp-python's llama_model_quantize);
2. edge_rt calibrates on its built-in calibration text (quantize/data/calibration.txt), measures
   per-tensor sensitivity and writes searched mixes whose FILE size is at most each llama.cpp file's
   size, plus a few more sizes for the Pareto curve, and uniform files (edge-rt quantize --type) for
   reference. Sensitivity of the reported mixes: ``--sensitivity measure`` (default; one model run per
   tensor and candidate type) or ``calibrated`` (one run per tensor at the smallest candidate, scaled
   by the importance-weighted weight error) or ``fitted`` (calibrated, with per-type factors
   measured on the 4 most sensitive tensors); unless ``--no-compare``, the other methods' two
   target-size mixes are searched and evaluated too;
3. every file is evaluated against the F16 master on benchmarks/data/quant_eval.txt (held-out files
   disjoint from the calibration text; see tools/make_quant_texts.py): mean KL divergence, perplexity,
   top-1 agreement over windows of 256 tokens.

Logits, calibration statistics and sensitivity runs: edge_rt for both models (the engine runs the MoE
model and records per-expert statistics); llama.cpp only quantizes its own two files. Candidate
types: the toolchain's defaults (Q3_K Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K Q8_0); an ablation repeats the
two target-size searches without Q5_K, another writes uniform Q4_0/Q4_K and the calibrated Q4_0-size
mix with nearest-level rounding instead of GPTQ (``gptq=False``). Targets: at Q4_0's size KL <= 0.5x Q4_0's, at Q4_K_M's size
KL <= 0.8x Q4_K_M's.

With the methods compared (the default), it validates the calibrated and fitted predictions against the
measurement of every (tensor, candidate type) pair on the sensitivity tokens, at no extra model
runs: Spearman rank correlation of predicted vs measured dKL, for the calibrated prediction and the
raw importance-weighted error, and per type the median and the sum of predicted / measured (a type
the predictor favours too much shows a ratio well below 1).

Sensitivity runs use the first ``--sens-tokens`` tokens of the calibration text (default: the
toolchain's DEFAULT_SENS_TOKENS, 1024; the text has 4096), never the evaluation text.

    nice python3 benchmarks/quant_quality.py [--windows 48] [--out benchmarks/out] [--sens-tokens 1024]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from edge_rt.atomic_io import write_text_atomic
from edge_rt.quantize import codec
from edge_rt.quantize.calibrate import CalibStats, token_windows
from edge_rt.quantize.evaluate import LogitsRunner, Reference, compare
from edge_rt.quantize.gguf_io import read_gguf
from edge_rt.quantize.pipeline import DEFAULT_SENS_TOKENS, quantize_model
from edge_rt.quantize.sensitivity import Sensitivity, spearman

ROOT = Path(__file__).resolve().parents[1]

MODELS = {"dense": ROOT / "models" / "tiny-code-dense-f16.gguf", "moe": ROOT / "models" / "tiny-code-moe-f16.gguf"}
EVAL_TEXT = ROOT / "benchmarks" / "data" / "quant_eval.txt"


def llama_quantize(src: Path, dst: Path, ftype: int) -> float:
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {dst}")
    return time.perf_counter() - t


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def run_model(kind: str, master: Path, out: Path, n_windows: int, threads: int, sens_method: str,
              compare_methods: bool, sens_tokens: int = DEFAULT_SENS_TOKENS) -> dict:
    import llama_cpp

    backend = "edge_rt"
    n_params = read_gguf(master).n_params
    res: dict = {"master": str(master.relative_to(ROOT)), "n_params": n_params, "backend": backend, "files": {}}
    text = EVAL_TEXT.read_text()
    with LogitsRunner(master, backend, None, threads) as r:
        windows = token_windows(r.tokenize(text), r.n_ctx, n_windows * r.n_ctx)[:n_windows]
        ref = Reference.compute(r, windows)
    res["eval_tokens"] = ref.n_predicted

    def evaluate(path: Path) -> dict:
        with LogitsRunner(path, backend, None, threads) as r:
            m = compare(r, ref)
        m["size"] = path.stat().st_size
        return m

    files = res["files"]
    # llama.cpp presets
    for name, ft in (("llama.cpp Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0),
                     ("llama.cpp Q4_K_M", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)):
        p = out / f"{kind}-llamacpp-{name.split()[-1]}.gguf"
        secs = llama_quantize(master, p, ft)
        files[name] = {**evaluate(p), "quantize_s": secs}
        log(kind, name, files[name]["size"], f"KL {files[name]['kl_mean']:.5f}")

    # edge_rt: calibration + sensitivity once (timed), then searches reuse them
    calib = out / f"{kind}.calib.npz"
    t = time.perf_counter()
    r = quantize_model(master, out / f"{kind}-ert-Q4_K.gguf", qtype="Q4_K", save_calib=calib, threads=threads)
    res["time_uniform_q4k_s"] = time.perf_counter() - t
    res["calibration"] = r.calib
    res["calibration_runner"] = CalibStats.load(calib).meta.get("runner")
    files["edge_rt Q4_K (uniform)"] = evaluate(r.out)
    for ty in ("Q4_0", "Q5_0", "Q6_K", "Q8_0"):
        r = quantize_model(master, out / f"{kind}-ert-{ty}.gguf", qtype=ty, load_calib=calib, threads=threads)
        files[f"edge_rt {ty} (uniform)"] = evaluate(r.out)
    log(kind, "uniform done")

    targets = {"at Q4_0 size": files["llama.cpp Q4_0"]["size"], "at Q4_K_M size": files["llama.cpp Q4_K_M"]["size"]}
    # the sensitivity table(s): the first search of each method measures it (timed), the others load it
    methods = [sens_method] + ([m for m in ("calibrated", "fitted", "measure") if m != sens_method] if compare_methods else [])
    sens_json, res["time_mix_with_sensitivity_s"], res["stage_seconds_mix"] = {}, {}, {}
    res["sensitivity_primary"] = sens_method
    res["sens_tokens"] = sens_tokens

    def label(m: str, what: str) -> str:
        return f"edge_rt mix {what}" if m == sens_method else f"{m} sensitivity: mix {what}"

    for m in methods:
        t = time.perf_counter()
        first = quantize_model(master, out / f"{kind}-mix-{m}-q4_0size.gguf", target_bytes=targets["at Q4_0 size"],
                               load_calib=calib, threads=threads, backend=backend, method=m,
                               sens_tokens=sens_tokens)
        res["time_mix_with_sensitivity_s"][m] = time.perf_counter() - t
        res["stage_seconds_mix"][m] = first.stage_seconds
        sens_json[m] = Path(str(first.out) + ".sensitivity.json")
        files[label(m, "at Q4_0 size")] = {**evaluate(first.out), "predicted_kl": first.predicted_kl}
        log(kind, m, "at Q4_0 size", f"KL {files[label(m, 'at Q4_0 size')]['kl_mean']:.5f}",
            f"({res['time_mix_with_sensitivity_s'][m]:.0f} s)")
        if m != sens_method:
            r = quantize_model(master, out / f"{kind}-mix-{m}-q4_k_msize.gguf", target_bytes=targets["at Q4_K_M size"],
                               load_calib=calib, load_sensitivity=sens_json[m], threads=threads, backend=backend)
            files[label(m, "at Q4_K_M size")] = {**evaluate(r.out), "predicted_kl": r.predicted_kl}
    lo, hi = targets["at Q4_0 size"], files["edge_rt Q6_K (uniform)"]["size"]
    extra = {"at Q4_K_M size": targets["at Q4_K_M size"]}
    for i, f in enumerate(np.linspace(0.80, 0.90, 2)):
        extra[f"size {i}"] = int(lo * f)
    for i, f in enumerate(np.linspace(0.25, 0.75, 3)):
        extra[f"size {i + 2}"] = int(lo + (hi - lo) * f)
    for lab, size in extra.items():
        try:
            r = quantize_model(master, out / f"{kind}-mix-{size}.gguf", target_bytes=size, load_calib=calib,
                               load_sensitivity=sens_json[sens_method], threads=threads, backend=backend)
        except Exception as e:  # a budget below the smallest mix
            log(kind, lab, "skipped:", e)
            continue
        files[f"edge_rt mix {lab}"] = {**evaluate(r.out), "predicted_kl": r.predicted_kl}
        log(kind, lab, files[f"edge_rt mix {lab}"]["size"], f"KL {files[f'edge_rt mix {lab}']['kl_mean']:.5f}")

    # ablation: the same searches without Q5_K among the candidates (primary sensitivity table)
    sj = json.loads(sens_json[sens_method].read_text())
    sj["candidates"] = [c for c in sj["candidates"] if c != "Q5_K"]
    for table in ("bytes", "dkl", "measured", "weighted_error"):
        for per_type in sj.get(table, {}).values():
            per_type.pop("Q5_K", None)
    no_q5k = out / f"{kind}-no-q5_k.sensitivity.json"
    no_q5k.write_text(json.dumps(sj))
    for lab, size in targets.items():
        r = quantize_model(master, out / f"{kind}-mix-no-q5_k-{size}.gguf", target_bytes=size, load_calib=calib,
                           load_sensitivity=no_q5k, threads=threads, backend=backend)
        files[f"ablation: mix {lab} without Q5_K"] = {**evaluate(r.out), "predicted_kl": r.predicted_kl}

    # ablation: nearest-level rounding instead of GPTQ (same calibration, same scale searches): the
    # uniform Q4_0 / Q4_K files and the toolchain-default (calibrated) mix at Q4_0 size
    for ty in ("Q4_0", "Q4_K"):
        r = quantize_model(master, out / f"{kind}-ert-{ty}-nearest.gguf", qtype=ty, load_calib=calib,
                           threads=threads, gptq=False)
        files[f"ablation: {ty} (uniform), nearest level"] = evaluate(r.out)
    r = quantize_model(master, out / f"{kind}-mix-calibrated-nearest-q4_0size.gguf", target_bytes=targets["at Q4_0 size"],
                       load_calib=calib, threads=threads, backend=backend, method="calibrated",
                       sens_tokens=sens_tokens, gptq=False)
    files["ablation: calibrated mix at Q4_0 size, nearest level"] = {**evaluate(r.out), "predicted_kl": r.predicted_kl}
    log(kind, "nearest-level ablation done")

    q40, q4km = files["llama.cpp Q4_0"], files["llama.cpp Q4_K_M"]
    m40, m4km = files["edge_rt mix at Q4_0 size"], files["edge_rt mix at Q4_K_M size"]
    res["ratio_kl_at_q4_0"] = m40["kl_mean"] / q40["kl_mean"]
    res["ratio_kl_at_q4_k_m"] = m4km["kl_mean"] / q4km["kl_mean"]
    res["ratio_kl_by_sensitivity"] = {m: {"at Q4_0 size": files[label(m, "at Q4_0 size")]["kl_mean"] / q40["kl_mean"],
                                          "at Q4_K_M size": files[label(m, "at Q4_K_M size")]["kl_mean"] / q4km["kl_mean"]}
                                      for m in methods}
    res["ratio_kl_nearest_level"] = {
        k: files[f"ablation: {k}"]["kl_mean"] / q40["kl_mean"]
        for k in ("Q4_0 (uniform), nearest level", "Q4_K (uniform), nearest level", "calibrated mix at Q4_0 size, nearest level")}
    res["ratio_kl_gptq_uniform"] = {ty: files[f"edge_rt {ty} (uniform)"]["kl_mean"] / q40["kl_mean"] for ty in ("Q4_0", "Q4_K")}
    res["ratio_kl_without_q5_k"] = {
        "at Q4_0 size": files["ablation: mix at Q4_0 size without Q5_K"]["kl_mean"] / q40["kl_mean"],
        "at Q4_K_M size": files["ablation: mix at Q4_K_M size without Q5_K"]["kl_mean"] / q4km["kl_mean"]}
    mp = n_params / 1e6
    res["s_per_mparam"] = {"edge_rt Q4_K uniform (calibration included)": res["time_uniform_q4k_s"] / mp,
                           **{f"edge_rt mix, {m} sensitivity (+ search + write, calibration loaded)": v / mp
                              for m, v in res["time_mix_with_sensitivity_s"].items()},
                           "llama.cpp Q4_K_M": q4km["quantize_s"] / mp}

    if "measure" in sens_json:
        # the predictions against direct measurement of every (tensor, candidate type)
        meas = Sensitivity.from_json(json.loads(sens_json["measure"].read_text()))
        res["validation"] = {}
        for pm in ("calibrated", "fitted"):
            if pm not in sens_json:
                continue
            cal = Sensitivity.from_json(json.loads(sens_json[pm].read_text()))
            a, b, c, tys = [], [], [], []
            for n in meas.measured:
                for ty, v in meas.measured[n].items():
                    if ty in cal.dkl.get(n, {}):
                        a.append(cal.dkl[n][ty])
                        b.append(v)
                        c.append(cal.werr[n][ty])
                        tys.append(ty)
            a, b, c, tys = map(np.array, (a, b, c, tys))
            ratio = a / np.maximum(b, 1e-12)
            res["validation"][pm] = {
                "pairs": int(len(a)), "spearman_predicted_vs_measured": spearman(a, b),
                "spearman_weighted_error_vs_measured": spearman(c, b),
                "median_ratio_predicted_over_measured": float(np.median(ratio)),
                "model_runs": int(sum(len(v) for v in cal.measured.values())),
                "base_types": sorted({ty for n in cal.measured for ty in cal.measured[n]}) if pm == "calibrated" else None,
                "type_factor": cal.type_factor,
                "per_type": {ty: {"median_ratio_predicted_over_measured": float(np.median(ratio[tys == ty])),
                                  "sum_predicted_over_sum_measured": float(a[tys == ty].sum() / b[tys == ty].sum()),
                                  "pairs": int((tys == ty).sum())}
                             for ty in meas.candidates if (tys == ty).any()}}
        res["validation"]["measure_model_runs"] = int(sum(len(v) for v in meas.measured.values()))
        log(kind, res["validation"])
    return res


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), dpi=120)
    axes = np.atleast_1d(axes)
    mib = 1 / 2**20
    for ax, (kind, res) in zip(axes, results.items()):
        f = res["files"]
        mixes = sorted((v["size"] * mib, v["kl_mean"]) for k, v in f.items() if k.startswith("edge_rt mix"))
        xs, ys = zip(*mixes)
        ax.plot(xs, ys, "o-", color="tab:blue", ms=4,
                label=f"edge_rt searched mixes ({res.get('sensitivity_primary', 'calibrated')} sensitivity)")
        for m, (mk, col) in {"calibrated": ("D", "tab:green"), "fitted": ("v", "tab:purple"),
                             "measure": ("o", "tab:cyan")}.items():
            other = [(v["size"] * mib, v["kl_mean"]) for k, v in f.items() if k.startswith(f"{m} sensitivity: mix ")]
            if other:
                ax.plot(*zip(*other), mk, color=col, ms=5, label=f"target-size mixes, {m} sensitivity")
        for k, v in f.items():
            if k.startswith("llama.cpp"):
                ax.plot([v["size"] * mib], [v["kl_mean"]], "s", color="tab:red", ms=7)
                ax.annotate(k, (v["size"] * mib, v["kl_mean"]), textcoords="offset points", xytext=(5, 4),
                            fontsize=8, color="tab:red")
            elif "uniform" in k:
                ax.plot([v["size"] * mib], [v["kl_mean"]], "^", color="tab:gray", ms=6)
                ax.annotate(k.replace(" (uniform)", ""), (v["size"] * mib, v["kl_mean"]), textcoords="offset points",
                            xytext=(5, -9), fontsize=7, color="tab:gray")
        ax.set_yscale("log")
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel("mean KL divergence vs F16 (nats)")
        ax.set_title(f"{kind}: {Path(res['master']).name} (logits: {res['backend']})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=48, help="evaluation windows of 256 tokens")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="dense,moe")
    ap.add_argument("--sensitivity", choices=("measure", "fitted", "calibrated"), default="measure",
                    help="sensitivity method of the reported mixes (default: measure, one run per tensor and type)")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the other methods (their two target-size mixes and the predictor validation)")
    ap.add_argument("--sens-tokens", type=int, default=DEFAULT_SENS_TOKENS,
                    help="calibration-text tokens for the sensitivity runs (default: %(default)s)")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "quant_pareto.png")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in a.models.split(","):
        results[kind] = run_model(kind, MODELS[kind], a.out, a.windows, a.threads,
                                   a.sensitivity, not a.no_compare, a.sens_tokens)
    import os

    results["_machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "python": platform.python_version(), "quantizer": codec.implementation()}
    write_text_atomic(a.out / "quant_quality.json", json.dumps(results, indent=1))
    plot({k: v for k, v in results.items() if not k.startswith("_")}, a.plot)
    for kind, res in results.items():
        if kind.startswith("_"):
            continue
        print(f"\n## {kind} ({res['master']}, {res['n_params'] / 1e6:.2f} M params, logits {res['backend']}, "
              f"calibration on {res['calibration_runner']}, {res['eval_tokens']} tokens, "
              f"sensitivity {res['sensitivity_primary']} on {res['sens_tokens']} tokens)")
        print("| file | size (bytes) | bpw | mean KL | PPL | top-1 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for k, v in sorted(res["files"].items(), key=lambda kv: kv[1]["size"]):
            print(f"| {k} | {v['size']:,} | {8 * v['size'] / res['n_params']:.2f} | {v['kl_mean']:.5f} | "
                  f"{v['ppl']:.3f} | {100 * v['top1']:.2f}% |")
        print(f"KL ratio at Q4_0 size: {res['ratio_kl_at_q4_0']:.3f} (target <= 0.5); "
              f"at Q4_K_M size: {res['ratio_kl_at_q4_k_m']:.3f} (target <= 0.8)")
        print("KL ratios by sensitivity method:",
              {m: {k: round(v, 3) for k, v in d.items()} for m, d in res["ratio_kl_by_sensitivity"].items()})
        print("KL ratios of the ablation without Q5_K:", {k: round(v, 3) for k, v in res["ratio_kl_without_q5_k"].items()})
        print("KL / llama.cpp Q4_0's, GPTQ uniform:", {k: round(v, 3) for k, v in res["ratio_kl_gptq_uniform"].items()},
              "nearest-level ablation:", {k: round(v, 3) for k, v in res["ratio_kl_nearest_level"].items()})
        print("seconds per million parameters:", {k: round(v, 2) for k, v in res["s_per_mparam"].items()})
        if "validation" in res:
            print("sensitivity validation:", res["validation"])


if __name__ == "__main__":
    main()
