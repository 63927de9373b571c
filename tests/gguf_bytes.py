"""Byte-level GGUF writer for tests: builds valid files and, on request, precisely broken ones.

Unlike the ``gguf`` package it lets a test lie about anything (counts, lengths, types, offsets), and it
records where each section starts so a test can cut a file inside a chosen part.

Layout written (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; key/values; tensor infos;
padding to the alignment; tensor data (each tensor at its offset, padded to the alignment).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

# GGUF metadata value types.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

_SCALAR_FMT = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
    BOOL: "<B", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}

# ggml tensor types: id -> (block elements, block bytes).
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K = 0, 1, 2, 3, 8, 12, 14
TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2),
}


def gguf_string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype: int, value: Any, elem_type: Optional[int] = None) -> bytes:
    """Encodes a value (without its type tag). Arrays: vtype=ARRAY, elem_type set, value a sequence."""
    if vtype == STRING:
        return gguf_string(value)
    if vtype == ARRAY:
        assert elem_type is not None
        body = b"".join(encode_value(elem_type, v) for v in value)
        return struct.pack("<IQ", elem_type, len(value)) + body
    return struct.pack(_SCALAR_FMT[vtype], value)


@dataclass
class KV:
    key: str | bytes
    vtype: int
    value: Any = None
    elem_type: Optional[int] = None
    raw: Optional[bytes] = None  # when set, written verbatim after the type tag instead of `value`

    def encode(self) -> bytes:
        body = self.raw if self.raw is not None else encode_value(self.vtype, self.value, self.elem_type)
        return gguf_string(self.key) + struct.pack("<I", self.vtype) + body


@dataclass
class Tensor:
    name: str | bytes
    ne: Sequence[int]           # innermost first, as in ggml
    type_id: int = F32
    offset: Optional[int] = None  # relative to the data section; None: placed after the previous one
    ne_signed: bool = False       # write dims as i64 (to write negative values)

    def n_bytes(self) -> int:
        blk, size = TYPE_SIZES.get(self.type_id, (1, 1))
        n = 1
        for d in self.ne:
            n *= d
        return n // blk * size


@dataclass
class GGUFBytes:
    kvs: list[KV] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    version: int = 3
    magic: bytes = b"GGUF"
    alignment: int = 32
    n_kv: Optional[int] = None       # override the counts written in the header
    n_tensors: Optional[int] = None
    data_extra: int = 0              # bytes appended (positive) or cut (negative) at the end
    data_size: Optional[int] = None  # write exactly this many data bytes (for tensors claiming huge sizes)
    # Filled by build(): where each part starts, for truncation tests.
    marks: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, vtype: int, value: Any = None, elem_type: Optional[int] = None) -> "GGUFBytes":
        self.kvs.append(KV(key, vtype, value, elem_type))
        return self

    def tensor(self, name: str, ne: Sequence[int], type_id: int = F32, offset: Optional[int] = None) -> "GGUFBytes":
        self.tensors.append(Tensor(name, list(ne), type_id, offset))
        return self

    def build(self) -> bytes:
        out = bytearray()
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        n_t = len(self.tensors) if self.n_tensors is None else self.n_tensors
        out += self.magic + struct.pack("<IQQ", self.version, n_t, n_kv)
        self.marks["header_end"] = len(out)
        for k, kv in enumerate(self.kvs):
            self.marks[f"kv{k}"] = len(out)
            key_len = len(gguf_string(kv.key))
            self.marks[f"kv{k}_value"] = len(out) + key_len + 4
            out += kv.encode()
        # Assign offsets: explicit ones are kept; the others follow the previous tensor, aligned.
        al = self.alignment
        cursor = 0
        offsets = []
        for t in self.tensors:
            off = t.offset if t.offset is not None else (cursor + al - 1) // al * al
            offsets.append(off)
            cursor = max(cursor, off + max(t.n_bytes(), 0))
        for k, (t, off) in enumerate(zip(self.tensors, offsets)):
            self.marks[f"ti{k}"] = len(out)
            out += gguf_string(t.name) + struct.pack("<I", len(t.ne))
            for d in t.ne:
                out += struct.pack("<q" if t.ne_signed else "<Q", d)
            out += struct.pack("<IQ", t.type_id, off)
        self.marks["ti_end"] = len(out)
        out += b"\0" * ((-len(out)) % al)
        self.marks["data"] = len(out)
        data_len = (cursor + al - 1) // al * al if self.tensors else 0
        if self.data_size is not None:
            data_len = self.data_size
        # Deterministic non-zero payload so cuts inside data are distinguishable from padding.
        out += bytes((i * 7 + 1) & 0xFF for i in range(data_len))
        if self.data_extra > 0:
            out += b"\0" * self.data_extra
        elif self.data_extra < 0:
            del out[self.data_extra:]
        return bytes(out)


def minimal_valid() -> GGUFBytes:
    """A small valid file exercising every section: assorted metadata and three tensors."""
    g = GGUFBytes()
    g.add("general.architecture", STRING, "llama")
    g.add("general.alignment", UINT32, 32)
    g.add("llama.block_count", UINT32, 1)
    g.add("some.flag", BOOL, True)
    g.add("some.float", FLOAT32, 0.5)
    g.add("some.u64", UINT64, 2**64 - 1)
    g.add("tokenizer.ggml.tokens", ARRAY, ["<unk>", "<s>", "</s>", "hello"], STRING)
    g.add("tokenizer.ggml.scores", ARRAY, [0.0, -1.0, -2.0, -3.0], FLOAT32)
    g.add("tokenizer.ggml.token_type", ARRAY, [2, 3, 3, 1], INT32)
    g.add("some.bools", ARRAY, [True, False], BOOL)
    g.tensor("token_embd.weight", [64, 4], Q8_0)
    g.tensor("output_norm.weight", [64], F32)
    g.tensor("blk.0.attn_q.weight", [256, 2], Q4_K)
    return g
