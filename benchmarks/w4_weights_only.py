"""What the int4 weight grid alone costs: SmolLM2-135M (or the trained dense model) with only its projection
weights rounded as `edge-rt export` rounds int4 weights, activations and everything else float32.

The model's weights get the export's residual rotation (residual_rotation.py), then each projection
(Q, K, V, O, gate, up, down) is rounded: per output channel (``b0``) or block-wise under a per-channel
scale (QNN's LPBQ, onnx_blocks.py: ``b32``, ``b16``), to nearest or by GPTQ on the input matrices
H = sum x x^T of calibration text (the NumPy forward pass's, on the rotated model). The NumPy forward
pass (reference_forward.py) then runs the held-out text (benchmarks/data/quant_eval.txt) in windows of
256 and is compared with the unrounded model: perplexity, mean KL, top-1. This separates the weights'
share of a W4A8 export's error from the 8-bit activations'.

    python benchmarks/w4_weights_only.py [--model smollm2] [--layouts b0,b32,b16] [--calib-tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 256
KINDS = ("attn_q.", "attn_k.", "attn_v.", "attn_output.", "ffn_gate.", "ffn_up.", "ffn_down.")


def main() -> None:
    from edge_rt.quantize.calibrate import DEFAULT_CALIBRATION_TEXT
    from edge_rt.quantize.evaluate import Reference, compare
    from edge_rt.quantize.gguf_io import read_gguf
    from edge_rt.quantize.onnx_blocks import round_blocks
    from edge_rt.quantize.onnx_export import model_dims
    from edge_rt.quantize.onnx_graph import quantize_weight
    from edge_rt.quantize.onnx_ranges import gptq_rows
    from edge_rt.quantize.reference_forward import NumpyModel
    from edge_rt.quantize.residual_rotation import rotate_residual

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", choices=("smollm2", "dense"))
    ap.add_argument("--layouts", default="b0,b32,b16")
    ap.add_argument("--calib-tokens", type=int, default=2048)
    ap.add_argument("--eval-tokens", type=int, default=2048)
    a = ap.parse_args()
    if a.model == "dense":
        path = ROOT / "models" / "tiny-code-dense-f16.gguf"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from real_models import model_path

        path = model_path("smollm2-135m-instruct-q4_1")
    src = read_gguf(path, dequantize=True)
    base = NumpyModel(src)
    ids = base.tokenize((ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text(), add_special=False)
    windows = [ids[i:i + WINDOW] for i in range(0, a.eval_tokens - WINDOW + 1, WINDOW)]
    ref = Reference.compute(base, windows)
    rotated = dict(base.w)
    rotate_residual(rotated, model_dims(src))
    projs = [k for k in rotated if k.startswith("blk.") and any(x in k for x in KINDS)]

    def model_with(weights: Dict[str, np.ndarray]) -> NumpyModel:
        m = NumpyModel.__new__(NumpyModel)
        m.__dict__.update(base.__dict__)
        m.w = weights
        return m

    rot = model_with(dict(rotated))
    rot.record_gram(True)
    cal = base.tokenize(DEFAULT_CALIBRATION_TEXT.read_text(), add_special=False)[:a.calib_tokens]
    for i in range(0, len(cal) - WINDOW + 1, WINDOW):
        rot.logits(cal[i:i + WINDOW])
    grams, alias = rot.gram()
    rot.record_gram(False)

    def rounded(name: str, w: np.ndarray, block: int, gptq: bool) -> np.ndarray:
        h = grams[alias[name]][0]
        if not block:
            if not gptq:
                q, s = quantize_weight(w, 4)
                return q * s[:, None]
            from edge_rt.quantize.onnx_ranges import clip_search

            clip = clip_search(w, 4, h)
            q, s = gptq_rows(w, 4, h, clip)
            return q * s[:, None]
        codes, row, _ = round_blocks(w, block, h, gptq)
        return codes * row[:, None]

    print(f"[{a.model}] {len(windows)} windows of {WINDOW}; float ppl {compare(rot, ref)['ref_ppl']:.3f}", flush=True)
    rows = []
    for layout in a.layouts.split(","):
        block = int(layout[1:])
        for gptq in (False, True):
            t0 = time.perf_counter()
            w = dict(rotated)
            for k in projs:
                w[k] = rounded(k, rotated[k], block, gptq).astype(np.float32)
            r = compare(model_with(w), ref)
            row = {"layout": layout, "rounding": "gptq" if gptq else "nearest",
                   **{k: r[k] for k in ("ppl", "ref_ppl", "kl_mean", "top1")}, "seconds": time.perf_counter() - t0}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| int4 layout | rounding | ppl (float) | ppl vs float | KL mean | top-1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['layout']} | {r['rounding']} | {r['ppl']:.3f} ({r['ref_ppl']:.3f}) | "
              f"{100 * (r['ppl'] / r['ref_ppl'] - 1):+.1f}% | {r['kl_mean']:.4f} | {100 * r['top1']:.1f}% |")


if __name__ == "__main__":
    main()
