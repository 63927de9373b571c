#!/usr/bin/env python3
"""Offline study: how well can a layer's experts be predicted before its router runs, on the trained MoE?

Not a runtime benchmark (benchmarks/moe.py measures the engine's predictors in decode). This runs the
NumPy reference forward (edge_rt.quantize.reference_forward) of ``models/tiny-code-moe-f16.gguf`` and
scores, for every layer i >= 1, the top-w experts predicted from two hidden states against the top-k
the router picks (recall = correct / k, the engine's definition):

* ``x_attn(i-1)``: the residual stream after layer i-1's attention -- the engine's ``next`` predictor;
* ``x_out(i-1)``: layer i-1's output = the state entering layer i -- the engine's ``same`` predictor
  (and the issue's "layer i's router applied to layer i-1's output");

each with two maps from state to router logits:

* ``router``: layer i's own router on the state, normalized with layer i's FFN norm (what the engine does);
* ``fitted``: a linear map (n_embd + 1 -> n_expert, ridge least squares on per-token-centred router
  logits) fitted on the calibration text (quantize/data/calibration.txt) and scored on the held-out
  evaluation text (benchmarks/data/quant_eval.txt), disjoint files.

    python3 benchmarks/moe_predictor_study.py [--tokens 4096]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_rt.quantize.calibrate import read_text, token_windows
from edge_rt.quantize.gguf_io import read_gguf
from edge_rt.quantize.reference_forward import NumpyModel

ROOT = Path(__file__).resolve().parents[1]

RIDGE = 1e-3   # relative to the mean diagonal of X^T X


def layer_states(nm: NumpyModel, text: str, max_tokens: int):
    """Per layer i: (x_attn(i), x_out(i), router logits of layer i), rows = tokens."""
    out = [[[], [], []] for _ in range(nm.n_layer)]
    orig = nm._ffn

    def ffn(p: str, h: np.ndarray) -> np.ndarray:
        il = int(p.split(".")[1])
        out[il][2].append(h @ nm.w[p + "ffn_gate_inp.weight"].T)   # h is already FFN-normed
        y = orig(p, h)
        out[il][0].append(state["x_attn"])
        return y

    state = {}
    norm = nm._norm

    def spy_norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        # the FFN norm's input is the residual after attention; the next attn norm's is the layer output
        for il in range(nm.n_layer):
            if w is nm.w[f"blk.{il}.ffn_norm.weight"]:
                state["x_attn"] = x.copy()
            if w is nm.w[f"blk.{il}.attn_norm.weight"] and il > 0:
                out[il - 1][1].append(x.copy())
            if il == nm.n_layer - 1 and w is nm.w["output_norm.weight"]:
                out[il][1].append(x.copy())
        return norm(x, w)

    nm._ffn, nm._norm = ffn, spy_norm
    try:
        ids = nm.tokenize(text, add_special=False)
        for win in token_windows(ids, nm.n_ctx, max_tokens):
            nm.logits(win)
    finally:
        nm._ffn, nm._norm = orig, norm
    return [tuple(np.concatenate(parts) for parts in layer) for layer in out]


def normed(nm: NumpyModel, x: np.ndarray, il: int) -> np.ndarray:
    return nm._norm(x, nm.w[f"blk.{il}.ffn_norm.weight"])


def recall(pred: np.ndarray, truth: np.ndarray, k: int, width: int) -> float:
    t = np.argsort(-truth, axis=1, kind="stable")[:, :k]
    p = np.argsort(-pred, axis=1, kind="stable")[:, :width]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(t, p)]))


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a = np.c_[x, np.ones(len(x))].astype(np.float64)
    y = y - y.mean(axis=1, keepdims=True)
    g = a.T @ a
    return np.linalg.solve(g + RIDGE * np.mean(np.diag(g)) * np.eye(len(g)), a.T @ y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-code-moe-f16.gguf")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens of each text (fit / score)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    a = ap.parse_args()
    nm = NumpyModel(read_gguf(a.model))
    if not nm.n_expert:
        raise SystemExit(f"{a.model} is not an MoE model")
    k = nm.n_expert_used
    fit_states = layer_states(nm, read_text(None), a.tokens)
    eval_states = layer_states(nm, (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text(), a.tokens)
    rows = []
    for src, name in ((0, "x_attn(i-1) [engine: next]"), (1, "x_out(i-1) [engine: same]")):
        for how in ("router", "fitted"):
            by_width = {}
            for width in (k, k + 1):
                per_layer = []
                for il in range(1, nm.n_layer):
                    xe = normed(nm, eval_states[il - 1][src], il)
                    truth = eval_states[il][2]
                    if how == "router":
                        pred = xe @ nm.w[f"blk.{il}.ffn_gate_inp.weight"].T
                    else:
                        w = fit(normed(nm, fit_states[il - 1][src], il), fit_states[il][2])
                        pred = np.c_[xe, np.ones(len(xe))] @ w
                    per_layer.append(recall(pred, truth, k, width))
                by_width[width] = per_layer
            rows.append((name, how, by_width))
    print(f"{a.model.name}: recall of layer i's top-{k} experts, layers 1..{nm.n_layer - 1}, "
          f"fit on {a.tokens} calibration tokens, scored on {a.tokens} held-out tokens\n")
    print("| state | map | " + " | ".join(f"recall at width {w} (per layer)" for w in (k, k + 1)) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in (k, k + 1)) + " |")
    for name, how, bw in rows:
        cells = [f"{np.mean(v):.3f} ({' / '.join(f'{x:.3f}' for x in v)})" for v in bw.values()]
        print(f"| {name} | {how} | " + " | ".join(cells) + " |")
    if a.json:
        a.json.write_text(json.dumps([{"state": n, "map": h, "recall": {str(w): v for w, v in bw.items()}}
                                      for n, h, bw in rows], indent=1))


if __name__ == "__main__":
    main()
