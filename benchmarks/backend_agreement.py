"""End-to-end agreement of an export's backends on held-out text.

The integer spec (docs/integer_spec.md) follows ONNX Runtime's CPU EP with QDQ semantics (``qdq_ref``:
graph optimizations off, every op DequantizeLinear -> float op -> QuantizeLinear). For each export
folder this runs the prefill graph through its KV cache over windows of benchmarks/data/quant_eval.txt
(held out from calibration) on ``qdq_ref`` and on each other backend (``int_ref``: edge_rt's C++ integer
kernels; ``htp``: onnxruntime-qnn's HTP emulator, CPU fallback disabled; ``ort_cpu``: ORT's fused
kernels) and prints, per backend, the share of positions whose top-1 token equals ``qdq_ref``'s and the
mean KL(qdq_ref || backend) of the next-token distributions, with the backend's time.

    python benchmarks/backend_agreement.py EXPORT_DIR... [--tokens 512] [--backends int_ref,htp]

The HTP emulator simulates the NPU on the CPU: seconds per chunk here, milliseconds on a phone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from edge_rt.quantize.evaluate import Reference, compare
    from edge_rt.quantize.onnx_eval import _Logits, backend_session
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--tokens", type=int, default=512, help="held-out tokens per export (whole windows)")
    ap.add_argument("--backends", default="int_ref,htp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    text = (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()
    rows = []
    for folder in a.exports:
        f = ExportFolder(folder)
        T, C = f.n_tokens("prefill"), f.n_cache
        window = T * max(1, min(C, 256) // T)
        ids = f.tokenizer().tokenize(text, add_special=False)
        windows = [ids[i:i + window] for i in range(0, min(a.tokens, len(ids)) - window + 1, window)]
        t0 = time.perf_counter()
        ref = Reference.compute(_Logits(f.runner(backend_session(f, "qdq_ref", a.threads), "prefill").window), windows)
        t_ref = time.perf_counter() - t0
        print(f"[{folder.name}] qdq_ref: {len(windows)} windows of {window} in {t_ref:.0f} s", flush=True)
        for backend in a.backends.split(","):
            t0 = time.perf_counter()
            sess = backend_session(f, backend, a.threads)
            t_load = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = compare(_Logits(f.runner(sess, "prefill").window), ref)
            row = {"export": folder.name, "scheme": f.manifest["scheme"]["name"], "backend": backend,
                   "positions": ref.n_predicted, "top1_vs_qdq_ref": r["top1"], "kl_vs_qdq_ref": r["kl_mean"],
                   "load_s": round(t_load, 1), "run_s": round(time.perf_counter() - t0, 1),
                   "qdq_ref_s": round(t_ref, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if a.json:
        a.json.write_text(json.dumps({"commit": commit, "rows": rows}, indent=1) + "\n")
    print(f"\ncommit {commit}\n\n| export | backend | positions | top-1 = qdq_ref | KL vs qdq_ref | load s | run s "
          f"(qdq_ref s) |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['export']} | {r['backend']} | {r['positions']} | {100 * r['top1_vs_qdq_ref']:.1f}% | "
              f"{r['kl_vs_qdq_ref']:.2g} | {r['load_s']} | {r['run_s']} ({r['qdq_ref_s']}) |")


if __name__ == "__main__":
    main()
