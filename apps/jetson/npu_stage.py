"""The prefill stage on the image's accelerator, for test.sh: exports the embedded default model (w8a8,
min/max ranges, seconds) and runs held-out prompts with the prefill on the best ONNX Runtime backend the
image has (``tensorrt``, else ``cuda``: a Jetson's GPU; else ``cpu-ep``, ONNX Runtime's CPU standing in)
and decode on the CPU, against the all-CPU run; prints a JSON report.

    python npu_stage.py [--backend NAME] [--prompts N]

The report: the backend and its device line, and how many prompts' first generated token (and first 8)
equal the all-CPU run's; ``ok``: the bar edge_rt sets a prefill backend, first tokens >= 95% equal. Exits
non-zero only when the stage cannot run (a backend that cannot load, an export that fails).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List

import edge_rt

CTX, CHUNK, GEN = 256, 32, 8


def best_backend() -> str:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    if "TensorrtExecutionProvider" in have:
        return "tensorrt"
    if "CUDAExecutionProvider" in have:
        return "cuda"
    return "cpu-ep"


def prompts(model: "edge_rt.Model", n: int) -> List[List[int]]:
    """Prompts of 20..100 tokens cut from a generated Python text (not the export's calibration text)."""
    text = "\n".join(f"def f{i}(x, y):\n    return x * {i} + y\n\nclass C{i}:\n    value = {i * 7}\n"
                     for i in range(64))
    ids = model.tokenize(text, add_special=False)
    out, pos = [], 0
    for i in range(n):
        length = 20 + (i * 37) % 81
        out.append(ids[pos:pos + length])
        pos = (pos + length) % max(1, len(ids) - 120)
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default=None, help="npu= backend (default: the best this image has)")
    ap.add_argument("--prompts", type=int, default=20)
    args = ap.parse_args(argv)
    from edge_rt.quantize.onnx_export import export_onnx

    model_path = Path(edge_rt.__file__).resolve().parent / "models" / "default.gguf"
    backend = args.backend or best_backend()
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "default-w8a8"
        export_onnx(model_path, export, scheme="w8a8", chunk=CHUNK, ctx=CTX, max_calib_tokens=256,
                    range_method="minmax")
        with edge_rt.load(model_path, threads=2, n_ctx=CTX) as cpu:
            ps = prompts(cpu, args.prompts)
            ref = [list(cpu.generate_tokens(p, max_tokens=GEN, temperature=0)) for p in ps]
        with edge_rt.load(model_path, threads=2, npu=backend, npu_model=export) as m:
            got = [list(m.generate_tokens(p, max_tokens=GEN, temperature=0)) for p in ps]
            device = m.info()["npu"]["device"]
    first = sum(a[0] == b[0] for a, b in zip(got, ref))
    report = {"backend": backend, "device": device, "prompts": len(ps), "first_token_equal": first,
              f"first_{GEN}_equal": sum(a == b for a, b in zip(got, ref)), "ok": first >= 0.95 * len(ps)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
