"""edge_rt.quantize: the quantization toolchain (installed from the top-level ``quantize/`` folder).

``edge-rt quantize`` / :func:`pipeline.quantize_model` drive it. Modules, in the order a model goes
through them:

* gguf_io.py, safetensors_io.py -- read GGUF masters and Hugging Face checkpoints, write GGUF;
  rules.py -- llama-quantize's per-tensor type rules; block_types.py, codec.py -- the type table and
  the one encode/decode entry point;
* calibrate.py (+ reference_forward.py) -- per-column activation statistics on the engine, and each
  matrix's input second moments for GPTQ from the NumPy forward pass;
* quants.py (quants_legacy.py, kquants.py, quants_search.py, block_grid.py) -- the block quantizers,
  bit-exact with ggml's, and each type's level grid; gptq.py -- error-feedback rounding on that grid;
* sensitivity.py, mixed.py -- per-tensor sensitivity and the type search under a byte budget;
* evaluate.py -- perplexity, KL divergence and top-1 agreement against a reference;
* onnx_export.py (+ onnx_graph.py, onnx_ranges.py, onnx_runner.py, onnx_export_folder.py, onnx_check.py,
  onnx_eval.py) -- integer-only ONNX QDQ export for NPUs, its HTP emulator check and evaluation;
  intref.py -- the NumPy reference of docs/integer_spec.md; intkernels.py -- the C++ integer kernels with
  intref's signatures; int_ops.py -- an exported graph's ops as those integer ops, and their check
  against ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

from .block_types import BLOCK_TYPES, BlockType, row_bytes

__all__ = ["BLOCK_TYPES", "BlockType", "row_bytes", "QUANT_TYPES", "quantize", "dequantize"]


def __getattr__(name: str) -> Any:
    """``QUANT_TYPES``, ``quantize`` and ``dequantize`` from quants.py, imported on first use (the
    quantizers are most of the package's import time; the type registry is not)."""
    if name in ("QUANT_TYPES", "quantize", "dequantize"):
        from . import quants

        return getattr(quants, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
