"""Parity check for edge_rt on a device (Jetson, or any other build): greedy generation on the embedded default
model compared with the x86-64 reference in reference.json, which this script writes on x86-64.

  EDGE_RT_ISA=scalar EDGE_RT_VEC_OPS=avx2 python parity.py --check scalar
                                                       the scalar kernels: the same tokens and the same logits,
                                                       bit for bit (SHA-256 of the float32 logits)
  python parity.py --check best                        the best kernels: the same tokens up to the first
                                                       near-tie (a reference step whose top-2 logits are
                                                       within 1e-3); what follows a near-tie may differ
  EDGE_RT_ISA=scalar EDGE_RT_VEC_OPS=avx2 python parity.py --write-reference   (x86-64) rewrites reference.json

The reference holds the AVX2 flavour of ggml's float vector ops (kernels.h GgmlVecOps), the one ARM builds
compute; an AVX-512 x86 host computes the other by default, hence EDGE_RT_VEC_OPS=avx2 for the bitwise modes.

Prints one JSON object; exits 1 when the check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

import edge_rt

REFERENCE = Path(__file__).resolve().parent / "reference.json"
PROMPT = "def fibonacci(n):"
N_TOKENS = 32
THREADS = 2  # threads do not change results; fixed so that runs compare like for like
NEAR_TIE = 1e-3


def measure() -> dict:
    """Greedy tokens after PROMPT, the SHA-256 of the logits of prompt + tokens (one row per position), and the
    top-1 minus top-2 logit margin of every generation step."""
    path = Path(edge_rt.__file__).resolve().parent / "models" / "default.gguf"
    model = edge_rt.load(path, threads=THREADS)
    ids = model.tokenize(PROMPT)
    tokens = list(model.generate_tokens(ids, max_tokens=N_TOKENS, temperature=0))
    logits = np.ascontiguousarray(model.logits(ids + tokens[:-1]), dtype="<f4")
    steps = np.sort(logits[len(ids) - 1:], axis=1)
    margins = (steps[:, -1] - steps[:, -2]).astype(float)
    return {"isa": model.info()["isa"], "prompt": PROMPT, "prompt_ids": ids, "tokens": tokens,
            "logits_sha256": hashlib.sha256(logits.tobytes()).hexdigest(),
            "margins": [round(m, 6) for m in margins.tolist()]}


def check(mode: str, got: dict, ref: dict) -> dict:
    result = {"mode": mode, "isa": got["isa"], "tokens": got["tokens"], "reference_tokens": ref["tokens"]}
    if got["prompt_ids"] != ref["prompt_ids"]:
        return {**result, "ok": False, "why": "the prompt tokenizes differently"}
    diff = next((i for i, (a, b) in enumerate(zip(got["tokens"], ref["tokens"])) if a != b), None)
    if diff is None and len(got["tokens"]) != len(ref["tokens"]):
        diff = min(len(got["tokens"]), len(ref["tokens"]))
    result["first_difference"] = diff
    if mode == "scalar":
        same_logits = got["logits_sha256"] == ref["logits_sha256"]
        result["logits_equal"] = same_logits
        ok = diff is None and same_logits
        return {**result, "ok": ok, "why": "" if ok else "scalar kernels must match the x86-64 reference exactly"}
    tie = next((i for i, m in enumerate(ref["margins"]) if m < NEAR_TIE), None)
    result["first_near_tie"] = tie
    ok = diff is None or (tie is not None and diff >= tie)
    return {**result, "ok": ok, "why": "" if ok else f"token {diff} differs before any near-tie"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", choices=("scalar", "best"))
    group.add_argument("--write-reference", action="store_true")
    args = ap.parse_args(argv)
    scalar_env = os.environ.get("EDGE_RT_ISA") == "scalar"
    if (args.write_reference or args.check == "scalar") and not scalar_env:
        ap.error("set EDGE_RT_ISA=scalar for the scalar check and for --write-reference")
    from edge_rt import _core

    if (args.write_reference or args.check == "scalar") and _core.vec_ops_flavour() != "avx2":
        ap.error("set EDGE_RT_VEC_OPS=avx2 for the scalar check and for --write-reference (the reference's "
                 "float vector ops, which ARM builds compute)")
    got = measure()
    if args.write_reference:
        REFERENCE.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in got.items()) + "\n}\n")
        print(json.dumps({"wrote": str(REFERENCE), "tokens": got["tokens"]}))
        return 0
    result = check(args.check, got, json.loads(REFERENCE.read_text()))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
