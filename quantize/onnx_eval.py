"""``edge-rt eval OUT_DIR``: quality of an export folder against the float model it was exported from.

The export's prefill graph runs each window chunk by chunk through its KV cache, on ONNX Runtime's
CPU EP (``backend="ort_cpu"``: ORT's fused integer kernels; ``"qdq_ref"``: graph optimizations off, so
every op is DequantizeLinear -> float op -> QuantizeLinear), on the HTP emulator (``"htp"``) or on
edge_rt's C++ integer kernels (``"int_ref"``: docs/integer_spec.md, bit for bit intref's). The
reference is the source model in float32 (the NumPy forward pass, reference_forward.py): the F16
master, or for a quantized source its dequantized weights. Metrics are those of evaluate.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import InvalidArgumentError
from .evaluate import Reference, compare
from .onnx_export_folder import ExportFolder

BACKENDS = ("ort_cpu", "qdq_ref", "htp", "int_ref")


class _Logits:
    def __init__(self, fn: Callable[[Any], np.ndarray]) -> None:
        self.logits = fn


class _IntGraphSession:
    """The integer graph (int_graph.IntGraph on the C++ kernels) behind ONNX Runtime's session calls."""

    def __init__(self, graph: Path) -> None:
        from types import SimpleNamespace

        from . import intkernels
        from .int_graph import IntGraph

        self.g = IntGraph(graph, intkernels)
        self._outputs = [SimpleNamespace(name=n) for n in self.g.outputs]

    def get_outputs(self) -> List[Any]:
        return self._outputs

    def run(self, names: Optional[List[str]], feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        out = self.g.run(feed)
        return [out[n] for n in (names or self.g.outputs)]


def backend_session(f: ExportFolder, backend: str, threads: Optional[int] = None) -> Any:
    """A session-like runner of the export's prefill graph on ``backend`` (one of BACKENDS)."""
    from .onnx_runner import float_session

    if backend == "htp":
        from ..devices.qnn_htp import htp_session

        return htp_session(str(f.graph_path("prefill")))
    if backend == "int_ref":
        return _IntGraphSession(f.graph_path("prefill"))
    return float_session(str(f.graph_path("prefill")), threads, optimize=backend == "ort_cpu")


def evaluate_export(folder: Path, text: str, *, backend: str = "ort_cpu", reference: Optional[Path] = None,
                    window: Optional[int] = None, max_tokens: Optional[int] = None, threads: Optional[int] = None,
                    progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    from .onnx_export import open_export_source
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
    runner = f.runner(backend_session(f, backend, threads), "prefill")
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
