"""GGUF block types the engine computes with: elements per block and bytes per block (ggml layouts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockType:
    name: str
    type_id: int        # ggml_type id stored in GGUF tensor infos
    block_elems: int    # elements per block
    block_bytes: int    # bytes per block

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.block_bytes / self.block_elems


BLOCK_TYPES: dict[str, BlockType] = {
    t.name: t
    for t in (
        BlockType("F32", 0, 1, 4),
        BlockType("F16", 1, 1, 2),
        BlockType("Q4_0", 2, 32, 18),
        BlockType("Q4_1", 3, 32, 20),
        BlockType("Q5_0", 6, 32, 22),
        BlockType("Q5_1", 7, 32, 24),
        BlockType("Q8_0", 8, 32, 34),
        BlockType("Q3_K", 11, 256, 110),
        BlockType("Q4_K", 12, 256, 144),
        BlockType("Q5_K", 13, 256, 176),
        BlockType("Q6_K", 14, 256, 210),
        BlockType("BF16", 30, 1, 2),
    )
}


def row_bytes(type_name: str, n: int) -> int:
    """Bytes of one row of ``n`` elements; ``n`` must be a multiple of the block size."""
    t = BLOCK_TYPES[type_name]
    if n % t.block_elems:
        raise ValueError(f"[quantize] row of {n} elements is not a multiple of the {type_name} block ({t.block_elems})")
    return n // t.block_elems * t.block_bytes
