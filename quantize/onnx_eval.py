"""``edge-rt eval OUT_DIR``: quality of an export folder against the float model it was exported from.

The export's prefill graph runs each window chunk by chunk through its KV cache, on ONNX Runtime's
CPU EP (``backend="ort_cpu"``: ORT's fused integer kernels; ``"qdq_ref"``: graph optimizations off, so
every op is DequantizeLinear -> float op -> QuantizeLinear) or on the HTP emulator (``"htp"``). The
reference is the source model in float32 (the NumPy forward pass, reference_forward.py): the F16
master, or for a quantized source its dequantized weights. Metrics are those of evaluate.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..errors import InvalidArgumentError
from .evaluate import Reference, compare
from .onnx_export_folder import ExportFolder

BACKENDS = ("ort_cpu", "qdq_ref", "htp")


class _Logits:
    def __init__(self, fn: Callable[[Any], np.ndarray]) -> None:
        self.logits = fn


def evaluate_export(folder: Path, text: str, *, backend: str = "ort_cpu", reference: Optional[Path] = None,
                    window: Optional[int] = None, max_tokens: Optional[int] = None, threads: Optional[int] = None,
                    progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    from .onnx_export import open_export_source
    from .onnx_runner import float_session
    from .reference_forward import NumpyModel

    if backend not in BACKENDS:
        raise InvalidArgumentError(f"[eval] unknown backend {backend!r} for an export folder; expected one of "
                                   f"{', '.join(BACKENDS)}")
    if not text.strip():
        raise InvalidArgumentError("[eval] the evaluation text is empty")
    f = ExportFolder(folder)
    T, C = f.n_tokens("prefill"), f.n_cache
    if window is None:
        window = T * max(1, min(C, 256) // T)
    if window % T or window > C:
        raise InvalidArgumentError(f"[eval] window {window}: the export needs a multiple of its chunk ({T}) "
                                   f"no larger than its cache ({C})")
    ids = f.tokenizer().tokenize(text, add_special=False)[:max_tokens]
    windows = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]
    if not windows:
        raise InvalidArgumentError(f"[eval] the evaluation text has {len(ids)} tokens; one window needs {window}")
    if backend == "htp":
        from ..devices.qnn_htp import htp_session

        sess = htp_session(str(f.graph_path("prefill")))
    else:
        sess = float_session(str(f.graph_path("prefill")), threads, optimize=backend == "ort_cpu")
    runner = f.runner(sess, "prefill")
    src, _ = open_export_source(Path(reference) if reference else f.source)
    total = 2 * len(windows)
    ref_model = NumpyModel(src)
    ref = Reference.compute(ref_model, windows)
    ref_model.close()
    if progress is not None:
        progress(len(windows), total)
    out: Dict[str, Any] = compare(_Logits(runner.window), ref,
                                  None if progress is None else (lambda d, t: progress(len(windows) + d, total)))
    out.update({"n_windows": len(windows), "n_ctx": window, "backend": backend,
                "scheme": f.manifest["scheme"]["name"], "reference": str(reference or f.source)})
    return out
