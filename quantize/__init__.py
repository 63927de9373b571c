"""edge_rt.quantize: the quantization toolchain (installed from the top-level ``quantize/`` folder).

The calibrated, mixed-precision GGUF exporter and the integer-only ONNX exporter land here (see the
project's quantization issue). Today the package provides the GGUF block-type table shared by the
toolchain and the tests, and the block quantizers (``quantize`` / ``dequantize``, quants.py).
"""

from __future__ import annotations

from .block_types import BLOCK_TYPES, BlockType, row_bytes
from .quants import QUANT_TYPES, dequantize, quantize

__all__ = ["BLOCK_TYPES", "BlockType", "row_bytes", "QUANT_TYPES", "quantize", "dequantize"]
