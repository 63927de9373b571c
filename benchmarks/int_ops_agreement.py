"""Integer ops of real exports: docs/integer_spec.md (intref) against ONNX Runtime, the C++ kernels
against intref, and the kernels' speed per ISA.

For each model and scheme: export (min/max ranges, prefill chunk 8, KV length 32: the ops are those of
any export, the range method only changes scales), run both graphs on ORT's CPU EP with QDQ semantics
(``int_ops.ort_op_values``), feed every op ORT's input codes and print, per op kind and output width,
how far intref's codes are from ORT's (exact / within 1 / within 3 LSB, max); then count the ops whose
C++ kernel output differs from intref's at each ISA this machine runs (must be 0). Last, the prefill
graph's GEMMs (all projections and lm_head of one chunk) timed per ISA through ``intkernels.gemm`` with
the weights prepared once as a runtime holds them (int8 codes, int4 packed two per byte; the timed calls
still include the binding's checks, the weight range check among them): runs interleaved A B A B after a
warm-up, medians and min-max of the total, and the ratio scalar / SIMD.

With ``--htp`` (needs ``pip install ".[qnn]"``), each op of the prefill graph is also cut out as its own
QDQ graph (``int_ops.single_op_model``) and run alone on the HTP emulator (CPU fallback disabled) on the
same input codes, and the emulator's codes are compared with intref's.

    python benchmarks/int_ops_agreement.py [--models dense,smollm2] [--schemes w8a8,w4a8,w8a16] [--runs 5] [--htp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parent.parent


def model_paths() -> Dict[str, Path]:
    out = {"dense": ROOT / "models" / "tiny-code-dense-f16.gguf"}
    sys.path.insert(0, str(ROOT / "tests"))
    from real_models import model_path

    out["smollm2"] = model_path("smollm2-135m-instruct-q4_1")
    return out


def main() -> None:
    import numpy as np
    import onnx

    from edge_rt import _core
    from edge_rt.quantize import intkernels, intref
    from edge_rt.quantize.int_ops import (
        agreement,
        format_agreement,
        input_codes,
        ort_op_values,
        output_layout,
        run_op,
        single_op_model,
    )
    from edge_rt.quantize.onnx_export import export_onnx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="dense,smollm2")
    ap.add_argument("--schemes", default="w8a8,w4a8,w8a16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--htp", action="store_true", help="also run every prefill op alone on the HTP emulator")
    args = ap.parse_args()
    if args.htp:
        from edge_rt.devices.qnn_htp import htp_session
    isas = [i for i in ("scalar", "avx2", "avx512vnni") if i in _core.compiled_isas() and _core.cpu_supports(i)]
    paths = model_paths()
    print(f"ISAs: {', '.join(isas)}")
    for model in args.models.split(","):
        if paths.get(model) is None:
            print(f"{model}: not available, skipped")
            continue
        for scheme in args.schemes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "export"
                export_onnx(paths[model], out, scheme=scheme, chunk=8, ctx=32, max_calib_tokens=128,
                            range_method="minmax")
                data = ort_op_values(out)
                prefill = onnx.load(str(out / "prefill.onnx")) if args.htp else None
            pairs, mismatches, gemms, htp = [], {i: 0 for i in isas}, [], []
            for graph, ops, vals in data:
                for op in ops:
                    codes = input_codes(op, vals)
                    ref = run_op(op, codes, intref)
                    pairs.append((op, ref, vals[op.out]))
                    for isa in isas:
                        mismatches[isa] += not np.array_equal(run_op(op, codes, intkernels.on_isa(isa)), ref)
                    if graph == "prefill" and op.kind == "gemm":
                        w, s_w, w_bits = op.weight
                        packed = intkernels.pack_int4(w) if w_bits == 4 else w
                        e, y = op.operands[0].enc, op.out_enc
                        gemms.append((codes[op.operands[0].tensor], (e.scale, e.zero_point, e.bits), packed, s_w,
                                      w_bits, (y.scale, y.zero_point, y.bits)))
                    if graph == "prefill" and args.htp and op.kind != "requantize":
                        m, feeds = single_op_model(prefill, op, codes)
                        htp.append((op, output_layout(htp_session(m.SerializeToString()).run(None, feeds)[0], op), ref))
            print(f"\n{model} {scheme}: intref vs ORT CPU EP, {len(pairs)} ops of prefill + decode")
            print("\n".join("  " + line for line in format_agreement(agreement(pairs))))
            if htp:
                print(f"  HTP emulator vs intref, each of the {len(htp)} prefill ops run alone:")
                print("\n".join("  " + line for line in format_agreement(agreement(htp))))
            differ = ", ".join(f"{i} {n}" for i, n in mismatches.items())
            print(f"  ops whose kernel codes differ from intref: {differ}")
            times: Dict[str, list] = {i: [] for i in isas}
            for rep in range(args.runs + 1):
                for isa in isas:
                    t = time.perf_counter()
                    for a, (s_a, z_a, a_bits), w, s_w, w_bits, (s_y, z_y, y_bits) in gemms:
                        intkernels.gemm(a, s_a, z_a, a_bits, w, s_w, w_bits, s_y, z_y, y_bits, isa=isa)
                    if rep:                    # the first round warms up
                        times[isa].append(time.perf_counter() - t)
            med = {i: statistics.median(v) for i, v in times.items()}
            print(f"  prefill GEMMs ({len(gemms)}, one chunk of 8 tokens), median of {args.runs}: " + ", ".join(
                f"{i} {med[i] * 1e3:.1f} ms ({min(times[i]) * 1e3:.1f}-{max(times[i]) * 1e3:.1f})" for i in isas))
            for i in isas[1:]:
                print(f"  scalar / {i}: {med['scalar'] / med[i]:.2f}x")


if __name__ == "__main__":
    main()
