"""The GGUF tensor types edge_rt writes and computes with: the one registry every list of types derives
from (the quantizers, ``edge-rt quantize --type`` and ``--candidates``, the synthetic-model generator).

Each :class:`BlockType` gives the ggml layout (elements and bytes per block, ``static_assert``ed in the
C++ core) and the ``general.file_type`` llama.cpp writes for a file whose bulk is that type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class BlockType:
    name: str
    type_id: int        # ggml_type id stored in GGUF tensor infos
    block_elems: int    # elements per block
    block_bytes: int    # bytes per block
    file_type: int      # llama.cpp's general.file_type (enum llama_ftype) for a file mostly of this type

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.block_bytes / self.block_elems

    @property
    def is_float(self) -> bool:
        """F32, F16, BF16: stored as values, not quantized blocks."""
        return self.block_elems == 1


#: Every type, by name, in registry order: the float types, then the quantized ones in the order the
#: mixed-precision search lists its candidates (Q3_K, the legacy 32-element types, the other K-quants,
#: Q8_0).
BLOCK_TYPES: Dict[str, BlockType] = {
    t.name: t
    for t in (
        BlockType("F32", 0, 1, 4, 0),
        BlockType("F16", 1, 1, 2, 1),
        BlockType("BF16", 30, 1, 2, 32),
        BlockType("Q3_K", 11, 256, 110, 12),  # MOSTLY_Q3_K_M
        BlockType("Q4_0", 2, 32, 18, 2),
        BlockType("Q4_1", 3, 32, 20, 3),
        BlockType("Q5_0", 6, 32, 22, 8),
        BlockType("Q5_1", 7, 32, 24, 9),
        BlockType("Q4_K", 12, 256, 144, 15),  # MOSTLY_Q4_K_M (there is no plain Q4_K ftype)
        BlockType("Q5_K", 13, 256, 176, 17),  # MOSTLY_Q5_K_M
        BlockType("Q6_K", 14, 256, 210, 18),
        BlockType("Q8_0", 8, 32, 34, 7),
    )
}

#: Names of every type, in registry order.
TYPE_NAMES: Tuple[str, ...] = tuple(BLOCK_TYPES)
#: The float types (values, not blocks).
FLOAT_TYPES: Tuple[str, ...] = tuple(n for n, t in BLOCK_TYPES.items() if t.is_float)
#: The quantized block types.
QUANTIZED_TYPES: Tuple[str, ...] = tuple(n for n, t in BLOCK_TYPES.items() if not t.is_float)
#: llama.cpp's ``general.file_type`` by type name.
FILE_TYPE: Dict[str, int] = {n: t.file_type for n, t in BLOCK_TYPES.items()}


def row_bytes(type_name: str, n: int) -> int:
    """Bytes of one row of ``n`` elements; ``n`` must be a multiple of the block size."""
    t = BLOCK_TYPES[type_name]
    if n % t.block_elems:
        raise ValueError(f"[quantize] row of {n} elements is not a multiple of the {type_name} block ({t.block_elems})")
    return n // t.block_elems * t.block_bytes
