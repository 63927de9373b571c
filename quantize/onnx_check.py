"""``--check htp``: every graph of an export folder loaded and run on the HTP emulator, CPU fallback off.

Loading proves NPU legality (a refused node raises NotNpuLegalError naming it). Each graph then runs a
window of real tokens (the calibration text's first) on the emulator and on ORT's CPU EP with graph
optimizations off (the QDQ reference: DequantizeLinear -> float op -> QuantizeLinear); the outputs are
compared in their own quantized units (LSB): logits in the lm_head output encoding, cache entries as
codes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from .onnx_export_folder import ExportFolder


def _lsb_stats(a: np.ndarray, b: np.ndarray, scale: float) -> Dict[str, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale
    diff = np.round(diff)
    return {"within_3_lsb": float((diff <= 3).mean()), "exact": float((diff == 0).mean()),
            "max_lsb": float(diff.max())}


def check_htp(out_dir: Path, soc: str = "sm8650", n_decode: int = 8,
              progress: Optional[Callable[[str, int, int], None]] = None) -> Dict[str, Any]:
    """Load and run each graph on the emulated HTP; raises NotNpuLegalError on the first refused graph.
    Returns per-graph load/run seconds and LSB agreement with the CPU EP; writes check_htp.json."""
    from ..devices.qnn_htp import htp_session
    from .onnx_runner import float_session

    f = ExportFolder(Path(out_dir))
    ids = f.sample_ids()
    report: Dict[str, Any] = {"soc": soc, "graphs": {}}
    for i, gname in enumerate(f.graph_names()):
        t0 = time.perf_counter()
        sess = htp_session(str(f.graph_path(gname)), soc)
        t_load = time.perf_counter() - t0
        cpu = float_session(str(f.graph_path(gname)), optimize=False)
        T = f.n_tokens(gname)
        n = T if T > 1 else n_decode
        outs: Dict[str, Dict[str, np.ndarray]] = {"htp": {}, "cpu": {}}
        for which, s in (("htp", sess), ("cpu", cpu)):
            kept = outs[which]
            runner = f.runner(s, gname)
            t1 = time.perf_counter()
            logits = runner.window(ids[:n], on_outputs=lambda r, kept=kept: kept.update(
                {k: v for k, v in r.items() if k.startswith("new_")}))
            kept["logits"] = logits
            if which == "htp":
                t_run = time.perf_counter() - t1
        lg_scale = f.activation("logits_q")["scale"]
        cache = {"exact": [], "within_3_lsb": [], "max_lsb": []}
        for k in outs["htp"]:
            if k.startswith("new_"):
                st = _lsb_stats(outs["htp"][k], outs["cpu"][k], 1.0)
                for key in cache:
                    cache[key].append(st[key])
        top1 = float((outs["htp"]["logits"].argmax(-1) == outs["cpu"]["logits"].argmax(-1)).mean())
        report["graphs"][gname] = {
            "all_nodes_on_htp": True, "load_seconds": round(t_load, 2), "run_seconds": round(t_run, 2),
            "tokens_run": n, "logits_vs_cpu_ep": _lsb_stats(outs["htp"]["logits"], outs["cpu"]["logits"], lg_scale),
            "cache_codes_vs_cpu_ep": {"exact": float(np.mean(cache["exact"])),
                                      "within_3_lsb": float(np.mean(cache["within_3_lsb"])),
                                      "max_lsb": float(np.max(cache["max_lsb"]))},
            "top1_vs_cpu_ep": top1}
        if progress:
            progress("check htp", i + 1, len(f.graph_names()))
    (Path(out_dir) / "check_htp.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
