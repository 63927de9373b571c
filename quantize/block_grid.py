"""The grid a quantized block stores its values on: value = scale * level + offset.

Every GGUF block type the toolchain writes decodes an element that way once its header (block scale,
6-bit sub-block scales and mins, ...) is read: ``scale`` and ``offset`` are fixed per group of values
(a 32-value block, or a 16/32-value sub-block of a K-quant super-block) and ``level`` is an integer in
``[lo, hi]``. Each format file exposes ``levels_<type>(blocks) -> Grid`` (the dequantizers are
``levels_<type>(blocks).values()``) and ``set_levels_<type>(blocks, levels) -> blocks`` (the same
header with other levels). That split is what error-feedback rounding needs (quantize/gptq.py): keep
the scales a search chose, pick each level with the error of the previous columns folded in.

Shapes: ``blocks`` is uint8 ``(NB, block_bytes)``; ``levels`` int16 ``(NB, n_group, group)``; ``scale``
float32 ``(NB, n_group, 1)``; ``offset`` the same or None (symmetric types); NB * n_group * group is
the number of values, in row-major order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Grid:
    levels: np.ndarray            # int16 (NB, n_group, group)
    scale: np.ndarray             # float32 (NB, n_group, 1)
    offset: Optional[np.ndarray]  # float32 (NB, n_group, 1), None when every group's offset is 0
    lo: int                       # smallest level the format stores
    hi: int                       # largest

    def values(self) -> np.ndarray:
        """float32 (NB, n_group * group), with ggml's evaluation order (scale * level, then + offset)."""
        y = self.scale * self.levels.astype(np.float32)
        if self.offset is not None:
            y = y + self.offset
        return y.reshape(self.levels.shape[0], -1)
