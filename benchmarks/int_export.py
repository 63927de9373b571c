"""Integer-only ONNX export: edge_rt's `export` against ONNX Runtime's `quantize_static`, scheme x model.

For each model and scheme:

1. edge_rt: `export_onnx` (MobileQuant layout; SmoothQuant, clip search and GPTQ rounding on the
   packaged calibration text) -> the prefill graph evaluated on held-out text
   (benchmarks/data/quant_eval.txt) with QDQ semantics (`qdq_ref`: ORT CPU EP, optimizations off) and,
   with --ort-cpu, ORT's fused integer kernels (`ort_cpu`);
2. the baseline: ORT `quantize_static` (QDQ, MinMax, per-channel weights) configured for QNN by
   `get_qnn_qdq_config` at the scheme's activation/weight types, applied to the same float graph
   (edge_rt's graph builder without quantization) and calibrated on exactly the same inputs (the feeds
   of edge_rt's calibration run), evaluated the same way (qdq_ref; --ort-cpu adds ORT's fused kernels);
3. both: HTP legality (load on the onnxruntime-qnn emulator, CPU fallback disabled), graph bytes,
   export time.

Metrics against the float source model (NumPy forward): perplexity, mean KL, top-1 agreement, on
windows of 256 tokens (4 prefill chunks of 64 through the KV cache).

    python benchmarks/int_export.py [--models dense,smollm2] [--schemes w8a8,w4a8,w8a16] [--eval-tokens 2048]

A scheme written ``w4a8@110MB`` is exported with ``--target-size 110MB`` (int4/int8 per layer; no baseline);
``w4a8:b0`` with ``--w4-block 0`` (int4 per channel; default: blocks of 16, QNN's LPBQ), ``w4a8:b32`` and
``w4a8:b64`` with blocks of 32 and 64.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

# edge_rt comes from the environment (the installed package, or PYTHONPATH=. on a built checkout): the
# checkout itself has no compiled core (tests/test_fresh_checkout.py).
from edge_rt.loading import parse_size
from edge_rt.quantize.calibrate import DEFAULT_CALIBRATION_TEXT
from edge_rt.quantize.evaluate import Reference, compare
from edge_rt.quantize.onnx_export import (
    DEFAULT_W4_BLOCK,
    calibration_ids,
    export_onnx,
    model_dims,
    open_export_source,
)
from edge_rt.quantize.onnx_export_folder import ExportFolder
from edge_rt.quantize.onnx_graph import SCHEMES, GraphBuilder
from edge_rt.quantize.onnx_runner import GraphRunner, float_session

ROOT = Path(__file__).resolve().parent.parent

CHUNK, CTX, WINDOW = 64, 256, 256
#: (name, ORT graph optimizations): ORT's fused integer kernels, and plain QDQ semantics
BACKENDS = (("qdq_ref", False), ("ort_cpu", True))


def model_paths() -> Dict[str, Path]:
    out = {"dense": ROOT / "models" / "tiny-code-dense-f16.gguf"}
    sys.path.insert(0, str(ROOT / "tests"))
    from real_models import model_path

    out["smollm2"] = model_path("smollm2-135m-instruct-q4_1")
    return out


class _Logits:
    def __init__(self, fn: Any) -> None:
        self.logits = fn


class _Recorder:
    """Wraps the float session: keeps a copy of every feed (the baseline's calibration inputs)."""

    def __init__(self, sess: Any) -> None:
        self.s, self.feeds = sess, []

    def get_outputs(self) -> Any:
        return self.s.get_outputs()

    def run(self, names: Any, feed: Dict[str, np.ndarray]) -> Any:
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        return self.s.run(names, feed)


def _legal(path: Path) -> str:
    from edge_rt.devices.qnn_htp import NotNpuLegalError, htp_session

    try:
        htp_session(str(path))
        return "yes"
    except NotNpuLegalError as e:
        return f"no: {len(e.nodes)} nodes refused ({', '.join(sorted({n.split('(')[-1][:-1] for n in e.nodes}))})"


def baseline(src: Any, d: Any, weights: Dict[str, np.ndarray], scheme: str, calib_windows: List[List[int]],
             out: Path) -> Dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    s = SCHEMES[scheme]
    t0 = time.perf_counter()
    fl = GraphBuilder(d, weights, s, CHUNK, CTX).build("float", calibration_outputs=False).model
    # ORT's calibrator only measures tensors with a known float type; onnx shape inference stops at
    # SimplifiedLayerNormalization (an ORT op), so type every intermediate here (all are float32)
    from onnx import TensorProto, helper

    known = {v.name for v in list(fl.graph.input) + list(fl.graph.output)}
    fl.graph.value_info.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for n in fl.graph.node for o in n.output if o not in known)
    rec = _Recorder(float_session(fl.SerializeToString()))
    runner = GraphRunner(rec, d, weights["token_embd.weight"], CHUNK, CTX)
    for w in calib_windows:
        runner.window(w, logits=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(rec.feeds)

        def get_next(self) -> Any:
            return next(self.it, None)

    cfg = get_qnn_qdq_config(fl, Reader(), activation_type=QuantType.QUInt16 if s.a_bits == 16 else QuantType.QUInt8,
                             weight_type=QuantType.QInt4 if s.w_bits == 4 else QuantType.QInt8, per_channel=True)
    path = out / f"baseline-{scheme}.onnx"
    quantize(fl, str(path), cfg)
    return {"path": path, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="dense,smollm2")
    ap.add_argument("--schemes", default="w8a8,w4a8,w8a16")
    ap.add_argument("--calib-tokens", type=int, default=2048)
    ap.add_argument("--eval-tokens", type=int, default=2048)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--ort-cpu", action="store_true", help="also evaluate with ORT's fused kernels (slow)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "int_export")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    global BACKENDS
    if not a.ort_cpu:
        BACKENDS = BACKENDS[:1]
    paths = model_paths()
    text = (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()
    rows = []
    for mname in a.models.split(","):
        src, quantized = open_export_source(paths[mname])
        d = model_dims(src)
        from edge_rt.quantize.reference_forward import NumpyModel
        from edge_rt.tokenizer import Tokenizer

        tok = Tokenizer.from_metadata(src.metadata())
        ids = tok.tokenize(text, add_special=False)[:a.eval_tokens]
        windows = [ids[i:i + WINDOW] for i in range(0, len(ids) - WINDOW + 1, WINDOW)]
        t0 = time.perf_counter()
        ref = Reference.compute(NumpyModel(src), windows)
        print(f"[{mname}] float reference on {len(windows)} windows: {time.perf_counter() - t0:.0f} s", flush=True)
        weights = {t.name: t.load() for t in src.tensors}
        calib_windows, _ = calibration_ids(tok, DEFAULT_CALIBRATION_TEXT.read_text(), CHUNK, CTX, a.calib_tokens)
        for spec in a.schemes.split(","):
            scheme, _, size = spec.partition("@")         # w4a8@110MB: per-layer widths under that size
            scheme, _, block = scheme.partition(":b")     # w4a8:b0: int4 per channel
            out = a.out / f"{mname}-{spec.replace(':', '-')}"
            t0 = time.perf_counter()
            export_onnx(paths[mname], out, scheme=scheme, chunk=CHUNK, ctx=CTX, force=True,
                        max_calib_tokens=a.calib_tokens, target_size=parse_size(size) if size else None,
                        w4_block=int(block) if block else DEFAULT_W4_BLOCK)
            t_export = time.perf_counter() - t0
            f = ExportFolder(out)
            m = json.loads((out / "manifest.json").read_text())
            row: Dict[str, Any] = {"model": mname, "scheme": spec, "source_quantized": quantized,
                                   "islands": m["islands"]["groups"], "int8_layers": m["weight_bits"]["layers"],
                                   "edge_rt_export_s": round(t_export, 1),
                                   "edge_rt_bytes": (out / "prefill.onnx").stat().st_size,
                                   "edge_rt_htp_legal": _legal(out / "prefill.onnx"),
                                   "edge_rt_decode_htp_legal": _legal(out / "decode.onnx")}
            for backend, opt in BACKENDS:
                r = compare(_Logits(f.runner(float_session(str(out / "prefill.onnx"), optimize=opt),
                                             "prefill").window), ref)
                row[f"edge_rt_{backend}"] = {k: r[k] for k in ("ppl", "ref_ppl", "kl_mean", "top1")}
            if not a.no_baseline and not size and not block:
                b = baseline(src, d, weights, scheme, calib_windows, out)
                row["ort_export_s"] = round(b["seconds"], 1)
                row["ort_bytes"] = b["path"].stat().st_size
                row["ort_htp_legal"] = _legal(b["path"])
                for backend, opt in BACKENDS:
                    rn = GraphRunner(float_session(str(b["path"]), optimize=opt), d, weights["token_embd.weight"],
                                     CHUNK, CTX)
                    r = compare(_Logits(rn.window), ref)
                    row[f"ort_{backend}"] = {k: r[k] for k in ("ppl", "ref_ppl", "kl_mean", "top1")}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (a.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| model | scheme | exporter | extra 16-bit / int8 layers | ppl (F32 ref) | KL mean | top-1 | "
          "KL (ort_cpu) | graph MB | HTP legal | export s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for who in ("edge_rt", "ort"):
            if f"{who}_qdq_ref" not in r:
                continue
            q = r[f"{who}_qdq_ref"]
            c = r.get(f"{who}_ort_cpu")
            kl_cpu = f"{c['kl_mean']:.5f}" if c else "-"
            name = "edge_rt export" if who == "edge_rt" else "ORT quantize_static (QNN config)"
            dec = r.get(f"{who}_decode_htp_legal")
            legal = r[f"{who}_htp_legal"] + (f" / {dec}" if dec else "")
            extra = "-"
            if who == "edge_rt":
                layers = r["int8_layers"]
                int8 = (f"{sum(b == 8 for b in layers.values())}/{len(layers)} int8" if isinstance(layers, dict)
                        else "")
                extra = ", ".join(r["islands"] or ["none"]) + (f"; {int8}" if int8 else "")
            print(f"| {r['model']} | {r['scheme']} | {name} | {extra} | {q['ppl']:.3f} ({q['ref_ppl']:.3f}) | "
                  f"{q['kl_mean']:.5f} | {100 * q['top1']:.1f}% | {kl_cpu} | "
                  f"{r[f'{who}_bytes'] / 1e6:.1f} | {legal} | {r[f'{who}_export_s']} |")


if __name__ == "__main__":
    main()
