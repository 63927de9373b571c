"""Prefill on an NPU backend, decode on the CPU (``load(npu=...)``): accuracy and TTFT vs all-CPU.

    python benchmarks/npu_tier.py [--models dense,smollm2] [--backends cpu-ep,qnn-htp] [--prompts 256]
        [--htp-prompts 32] [--ttft-tokens 512] [--reps 5] [--htp-reps 2] [--exports DIR]

For each model: a W8A8 export (``edge-rt export``: prefill chunk 64, 576 cache slots; made into
``--exports`` unless there; the trained dense model with the default range search on 2048 calibration
tokens, SmolLM2-135M-Instruct (its Q4_1 GGUF, dequantized for the export) with the range search on 4096,
both with the export's default residual rotation and ``--islands auto``, or ``--islands SPEC``).
Held-out prompts: consecutive slices of ``benchmarks/data/quant_eval.txt`` (not the calibration text),
8 to 192 tokens long (1 to 3 chunks, most with a padded last chunk), no BOS.

Per backend and prompt, against the all-CPU run of the same GGUF (same threads, same n_ctx):

* first token: greedy argmax of the first generated token equal (the prompt's last token runs as one
  CPU step after the NPU prefilled the rest: edge_rt's default); ``npu-logits``: the first token taken
  from the prefill graph's own logits instead (all prompt tokens on the NPU), measured on cpu-ep only
  (its first ``--variant-prompts`` prompts);
* first 16 greedy tokens identical;
* KL(all-CPU || NPU-prefilled) of the first token's distribution, mean over prompts;
* TTFT of a 512-token prompt (reset, then the time to the first generated token), interleaved with
  the all-CPU run, medians with min-max; the per-chunk split backend / host (the Python driver's
  share); the NPU stage's memory estimate (the ``npu`` class) against the RSS growth measured when its
  session loads and runs one chunk (cpu-ep only);
* with ``--kv-rounding-prompts N``: no NPU graph at all, the CPU's own K/V rounded to the export's
  static cache encoding (what the 8-bit KV cache alone costs);
* with ``--float-prompts N``: no NPU graph either, the float32 model the export approximates
  (the GGUF's weights dequantized, quantize/reference_forward.py) prefills: the floor of any export,
  since the CPU engine computes those weights at its own precision.

The HTP backend is onnxruntime-qnn's x86 emulator: its speed says nothing about a phone's NPU, and it is
slow enough here that it gets ``--htp-prompts`` prompts and ``--htp-reps`` TTFT runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK, CTX = 64, 576
EXPORTS = {"dense": dict(range_method="search", max_calib_tokens=2048),
           "smollm2": dict(range_method="search", max_calib_tokens=4096)}


def model_paths(names: List[str]) -> Dict[str, Path]:
    out = {}
    if "dense" in names:
        out["dense"] = ROOT / "models" / "tiny-code-dense-f16.gguf"
    if "smollm2" in names:
        sys.path.insert(0, str(ROOT / "tests"))
        from real_models import model_path

        out["smollm2"] = model_path("smollm2-135m-instruct-q4_1")
    return out


def ensure_export(name: str, gguf: Path, root: Path, islands: str = "auto") -> Path:
    from edge_rt.quantize.onnx_export import export_onnx

    out = root / f"{name}-w8a8" if islands == "auto" else root / f"{name}-w8a8-islands-{islands.replace(',', '+')}"
    if not (out / "manifest.json").is_file():
        print(f"[{name}] exporting W8A8 (islands {islands}) to {out} ...", file=sys.stderr)
        export_onnx(gguf, out, scheme="w8a8", chunk=CHUNK, ctx=CTX, force=True, islands=islands, **EXPORTS[name])
    return out


def held_out_prompts(model: Any, n: int) -> List[List[int]]:
    text = (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()
    ids = model.tokenize(text, add_special=False)
    prompts, pos = [], 0
    for i in range(n):
        length = 8 + (i * 53) % 185
        if pos + length > len(ids):
            raise SystemExit(f"held-out text too short for {n} prompts")
        prompts.append(ids[pos:pos + length])
        pos += length
    return prompts


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    p, q = softmax(p_logits), softmax(q_logits)
    return float(np.sum(p * (np.log(p + 1e-300) - np.log(q + 1e-300))))


def first_logits_and_tokens(m: Any, prompt: List[int], n_gen: int):
    """The first generated token's logits (the path generate takes) and the greedy continuation."""
    m.reset()
    logits = m._eval_chunks(list(prompt))          # edge_rt's prompt path (NPU stage on an NpuModel)
    toks = list(m.generate_tokens(prompt, max_tokens=n_gen, temperature=0))   # reuses that cache
    return logits, toks


def ttft(m: Any, ids: List[int]) -> float:
    m.reset()
    t0 = time.perf_counter()
    gen = m.generate_tokens(ids, max_tokens=1, temperature=0)
    next(gen)
    dt = time.perf_counter() - t0
    gen.close()
    return dt


def stage_rss(export: Path, backend: str, threads: int) -> Dict[str, int]:
    """RSS growth while the backend's session loads and runs one chunk, vs the stage's estimate, measured
    in a fresh interpreter: in this process the allocator would hand the stage the memory an earlier
    session freed (the seventh and eighth sessions' runs measured 48 and 20 MB of growth for SmolLM2
    against 388 MB in a fresh process)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_stage_rss_here, (str(export), backend, threads))


def _stage_rss_here(export: str, backend: str, threads: int) -> Dict[str, int]:
    import psutil

    from edge_rt.devices.npu import open_backend
    from edge_rt.npu_stage import NpuStage
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    folder = ExportFolder(Path(export))

    class Sink:  # takes the KV hand-off without an engine
        def write_kv(self, *a: Any) -> None:
            pass

        def commit_kv(self, *a: Any) -> None:
            pass

    proc = psutil.Process()
    before = proc.memory_info().rss
    stage = NpuStage(folder, open_backend(backend, folder.graph_path("prefill"), threads))
    stage.prefill(Sink(), list(range(CHUNK)), 0, CHUNK)
    return {"measured_rss_growth": proc.memory_info().rss - before, "estimate": sum(stage.bytes.values()),
            **{f"estimate_{k}": v for k, v in stage.bytes.items()}}


def handed_off(cpu: Any, prompts: List[List[int]], ref: List[Any], n_gen: int, kv_of: Any) -> Dict[str, Any]:
    """No NPU graph: each prompt's cache for all but its last token comes from ``kv_of(prompt)`` (per layer,
    (n, kv_dim) K and V rows in the engine's layout), written with Engine.write_kv; then the last
    token and the greedy continuation on the CPU, compared with the all-CPU run."""
    first = same = 0
    kls = []
    for p, (r_logits, r_toks) in zip(prompts, ref):
        cpu.reset()
        cpu._eval(p[:-1], False)
        for il, (k, v) in enumerate(kv_of(p)):
            cpu._engine.write_kv(il, 0, k, v)
        logits = cpu._eval([p[-1]], False)[0]
        toks = list(cpu.generate_tokens(p, max_tokens=n_gen, temperature=0))   # reuses the written cache
        first += int(toks[:1] == r_toks[:1])
        same += int(toks == r_toks)
        kls.append(kl(r_logits, logits))
    return {"prompts": len(prompts), "first_token_agreement": first / len(prompts),
            "first16_identical": same / len(prompts), "kl_mean": float(np.mean(kls)),
            "kl_median": float(np.median(kls)), "kl_max": float(np.max(kls))}


def kv_rounding_only(cpu: Any, folder: Any, prompts: List[List[int]], ref: List[Any], n_gen: int) -> Dict[str, Any]:
    """The CPU's own K/V of each prompt rounded to the export's static cache encoding: what the cache
    encoding alone costs."""
    acts = folder.manifest["activations"]
    top = 65535 if acts["l0.cache_k"]["dtype"] == "uint16" else 255

    def rounded(p: List[int]):
        layers = []
        for il in range(folder.dims.n_layer):
            rows = []
            for kind, x in zip("kv", cpu._engine.read_kv(il, 0, len(p) - 1)):
                e = acts[f"l{il}.cache_{kind}"]
                q = np.clip(np.round(x / e["scale"]) + e["zero_point"], 0, top)
                rows.append(((q - e["zero_point"]) * np.float32(e["scale"])).astype(np.float32))
            layers.append(rows)
        return layers

    return handed_off(cpu, prompts, ref, n_gen, rounded)


def float_prefill(cpu: Any, gguf: Path, prompts: List[List[int]], ref: List[Any], n_gen: int) -> Dict[str, Any]:
    """The float32 model the export approximates (quantize/reference_forward.py on the GGUF's weights,
    dequantized as the export reads them) prefills each prompt: the floor any export of that model
    reaches, since the CPU engine it hands off to computes the same weights at its own precision (its
    activations rounded to 8 bits per 32-block for quantized weights)."""
    from edge_rt.quantize.gguf_io import read_gguf
    from edge_rt.quantize.reference_forward import NumpyModel

    ref_model = NumpyModel(read_gguf(gguf, dequantize=True))
    return handed_off(cpu, prompts, ref, n_gen, lambda p: ref_model.prompt_kv(p[:-1]))


def run_model(name: str, gguf: Path, export: Optional[Path], args: argparse.Namespace) -> Dict[str, Any]:
    import edge_rt
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    warnings.simplefilter("ignore")      # n_ctx 576 exceeds the dense model's training context (256)
    cpu = edge_rt.load(gguf, threads=args.threads, n_ctx=CTX)
    prompts = held_out_prompts(cpu, max(args.prompts, args.htp_prompts))
    t0 = time.perf_counter()
    ref = [first_logits_and_tokens(cpu, p, args.gen) for p in prompts]
    print(f"[{name}] all-CPU reference: {len(prompts)} prompts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ttft_ids = cpu.tokenize((ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()[-40000:],
                            add_special=False)[:args.ttft_tokens]
    out: Dict[str, Any] = {"model": str(gguf), "export": str(export) if export else None, "backends": {}}
    if args.kv_rounding_prompts:
        n = args.kv_rounding_prompts
        out["kv_rounding_only"] = kv_rounding_only(cpu, ExportFolder(export), prompts[:n], ref[:n], args.gen)
        print(f"[{name}] KV rounding only: {json.dumps(out['kv_rounding_only'])}", file=sys.stderr)
    if args.float_prompts:
        out["float_prefill"] = float_prefill(cpu, gguf, prompts[:args.float_prompts], ref, args.gen)
        print(f"[{name}] float prefill: {json.dumps(out['float_prefill'])}", file=sys.stderr)
    for backend in args.backends:
        n = args.htp_prompts if backend == "qnn-htp" else args.prompts
        reps = args.htp_reps if backend == "qnn-htp" else args.reps
        t0 = time.perf_counter()
        m = edge_rt.load(gguf, threads=args.threads, npu=backend, npu_model=export)
        load_s = time.perf_counter() - t0
        first = same16 = first_npu_logits = 0
        kls, kls_npu_logits = [], []
        t0 = time.perf_counter()
        for i, p in enumerate(prompts[:n]):
            logits, toks = first_logits_and_tokens(m, p, args.gen)
            r_logits, r_toks = ref[i]
            first += int(toks[:1] == r_toks[:1])
            same16 += int(toks == r_toks)
            kls.append(kl(r_logits, logits))
            if backend == "cpu-ep" and i < args.variant_prompts:   # the first token from the graph's logits
                m.reset()
                g = m.npu_stage.prefill(m._engine, p, 0, len(p))
                first_npu_logits += int(int(np.argmax(g)) == r_toks[0])
                kls_npu_logits.append(kl(r_logits, g))
        acc_s = time.perf_counter() - t0
        times_before = m.npu_stage.times.as_dict()
        t_cpu, t_npu = [], []
        ttft(cpu, ttft_ids[:CHUNK])   # warm-up
        ttft(m, ttft_ids[:CHUNK])
        for _ in range(reps):
            t_cpu.append(ttft(cpu, ttft_ids))
            t_npu.append(ttft(m, ttft_ids))
        after = m.npu_stage.times.as_dict()
        chunks = after["chunks"] - times_before["chunks"]
        res = {
            "load_s": load_s, "prompts": n, "accuracy_s": acc_s,
            "first_token_agreement": first / n, "first16_identical": same16 / n,
            "kl_mean": float(np.mean(kls)), "kl_median": float(np.median(kls)), "kl_max": float(np.max(kls)),
            "ttft_tokens": len(ttft_ids), "ttft_reps": reps,
            "ttft_s": statistics.median(t_npu), "ttft_s_min": min(t_npu), "ttft_s_max": max(t_npu),
            "cpu_ttft_s": statistics.median(t_cpu), "cpu_ttft_s_min": min(t_cpu), "cpu_ttft_s_max": max(t_cpu),
            "backend_ms_per_chunk": 1e3 * (after["backend_s"] - times_before["backend_s"]) / chunks,
            "host_ms_per_chunk": 1e3 * (after["host_s"] - times_before["host_s"]) / chunks,
            "info": m.info()["npu"], "memory_classes": m.memory_report()["classes"],
        }
        if kls_npu_logits:
            res["npu_logits_prompts"] = len(kls_npu_logits)
            res["npu_logits_first_token_agreement"] = first_npu_logits / len(kls_npu_logits)
            res["npu_logits_kl_mean"] = float(np.mean(kls_npu_logits))
        m.close()
        if backend == "cpu-ep":     # (an HTP session would compile the graph once more)
            res["rss"] = stage_rss(export, backend, args.threads)
        out["backends"][backend] = res
        print(f"[{name}] {backend}: {json.dumps({k: v for k, v in res.items() if k != 'info'})}", file=sys.stderr)
    cpu.close()
    return out


def table(results: Dict[str, Any]) -> str:
    rows = ["| model | backend | prompts | first token | first 16 | KL mean (median, max) | first token from "
            "graph logits | TTFT 512 s [min-max] | all-CPU TTFT s [min-max] | ms/chunk backend + host |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        for b, x in r["backends"].items():
            alt = (f"{100 * x['npu_logits_first_token_agreement']:.1f}% (KL {x['npu_logits_kl_mean']:.2g})"
                   if "npu_logits_first_token_agreement" in x else "-")
            rows.append(
                f"| {name} | {b} | {x['prompts']} | {100 * x['first_token_agreement']:.1f}% | "
                f"{100 * x['first16_identical']:.1f}% | {x['kl_mean']:.2g} ({x['kl_median']:.2g}, {x['kl_max']:.2g}) | "
                f"{alt} | {x['ttft_s']:.2f} [{x['ttft_s_min']:.2f}-{x['ttft_s_max']:.2f}] | "
                f"{x['cpu_ttft_s']:.2f} [{x['cpu_ttft_s_min']:.2f}-{x['cpu_ttft_s_max']:.2f}] | "
                f"{x['backend_ms_per_chunk']:.0f} + {x['host_ms_per_chunk']:.1f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="dense,smollm2")
    ap.add_argument("--backends", default="cpu-ep,qnn-htp")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--htp-prompts", type=int, default=32)
    ap.add_argument("--variant-prompts", type=int, default=64, help="prompts for the graph-logits variant")
    ap.add_argument("--kv-rounding-prompts", type=int, default=0,
                    help="also measure the CPU with its own K/V rounded to the export's cache encoding")
    ap.add_argument("--float-prompts", type=int, default=0,
                    help="also measure prefill by the float32 reference of the same weights (the floor)")
    ap.add_argument("--islands", default="auto", help="the export's --islands (e.g. auto, or ffn_in,ffn_act,kv)")
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--ttft-tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--htp-reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exports", type=Path, default=ROOT / "benchmarks" / "out" / "npu_tier")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    args.exports.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    results = {}
    for name, gguf in model_paths(args.models.split(",")).items():
        needs_export = bool(args.backends or args.kv_rounding_prompts)
        export = ensure_export(name, gguf, args.exports, args.islands) if needs_export else None
        results[name] = run_model(name, gguf, export, args)
        if args.json:
            args.json.write_text(json.dumps({"commit": commit, "machine": platform.processor() or platform.machine(),
                                             "results": results}, indent=1) + "\n")
    print(f"commit {commit}, threads {args.threads}")
    print(table(results))


if __name__ == "__main__":
    main()
