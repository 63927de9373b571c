"""An export folder as written by ``edge-rt export``: manifest, graphs, the host's embedding table.

The tokenizer is the source model's (the manifest names it); reading it needs that file or folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import ModelFormatError, ModelIOError
from .onnx_graph import Dims
from .onnx_runner import GraphRunner


class ExportFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise ModelIOError(f"[onnx] {self.path} is not an export folder (no manifest.json)")
        try:
            self.manifest: Dict[str, Any] = json.loads(mf.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"[onnx] {mf}: not valid JSON ({e})") from None
        from .onnx_export import FORMAT, READABLE_FORMATS

        if self.manifest.get("format") not in READABLE_FORMATS:
            raise ModelFormatError(f"[onnx] {mf}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.dims = Dims(**self.manifest["dims"])
        self._emb: Optional[np.ndarray] = None
        self._tok: Any = None

    @property
    def embeddings(self) -> np.ndarray:
        if self._emb is None:
            self._emb = np.load(self.path / "embeddings.npy", mmap_mode="r")
        return self._emb

    @property
    def rotation(self) -> Optional[np.ndarray]:
        """The residual stream's rotation Q (float32 [n_embd, n_embd]; residual_rotation.py), or None:
        embeddings.npy rows are the model's rows times Q."""
        entry = self.manifest.get("residual_rotation")
        if not entry:
            return None
        path = self.path / entry["file"]
        if not path.is_file():
            raise ModelIOError(f"[onnx] {path} (the residual rotation named in the manifest) is missing")
        q = np.load(path)
        if q.shape != (self.dims.n_embd, self.dims.n_embd):
            raise ModelFormatError(f"[onnx] {path}: shape {q.shape}, expected ({self.dims.n_embd}, {self.dims.n_embd})")
        return q

    @property
    def source(self) -> Path:
        return Path(self.manifest["source"]["path"])

    def tokenizer(self) -> Any:
        if self._tok is None:
            from ..tokenizer import Tokenizer
            from .onnx_export import open_export_source

            src = Path(self.manifest["tokenizer"]["source"])
            if not src.exists():
                raise ModelIOError(f"[onnx] the tokenizer's source {src} (named in the manifest) is missing")
            self._tok = Tokenizer.from_metadata(open_export_source(src)[0].metadata())
        return self._tok

    def sample_ids(self, n: int = 256) -> List[int]:
        """Real tokens for checks: the start of the packaged calibration text."""
        from .calibrate import DEFAULT_CALIBRATION_TEXT

        return self.tokenizer().tokenize(DEFAULT_CALIBRATION_TEXT.read_text()[:20000], add_special=False)[:n]

    def graph_names(self) -> List[str]:
        return list(self.manifest["graphs"])

    def graph_path(self, name: str) -> Path:
        return self.path / self.manifest["graphs"][name]["file"]

    def n_tokens(self, name: str) -> int:
        return int(self.manifest["graphs"][name]["n_tokens"])

    @property
    def n_cache(self) -> int:
        return int(self.manifest["graphs"]["prefill"]["n_cache"])

    def activation(self, point: str) -> Dict[str, Any]:
        return self.manifest["activations"][point]

    def runner(self, session: Any, name: str) -> GraphRunner:
        acts = self.manifest["activations"]
        dtype = np.uint16 if acts["l0.cache_k"]["dtype"] == "uint16" else np.uint8
        zeros = [(acts[f"l{i}.cache_k"]["zero_point"], acts[f"l{i}.cache_v"]["zero_point"])
                 for i in range(self.dims.n_layer)]
        return GraphRunner(session, self.dims, self.embeddings, self.n_tokens(name), self.n_cache,
                           cache_dtype=dtype, cache_zero=zeros)
