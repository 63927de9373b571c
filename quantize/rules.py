"""Which tensors are quantized, and to what, for one target type (llama.cpp's llama-quantize rules).

What llama.cpp does (src/llama-quant.cpp) and we copy for ``edge-rt quantize --type T``:

* only tensors with 2 or more dimensions are quantized: norms and biases (1-D) stay F32;
* the MoE router ``ffn_gate_inp.weight`` (and ``ffn_gate_inp_shexp``) stays F32;
* the output head (``output.weight``, or ``token_embd.weight`` when the head is tied to it) becomes
  Q6_K for every T except Q8_0 and the float types (Q8_0 when its rows are not a multiple of 256);
* the token embedding otherwise gets T like the other matrices;
* a tensor whose rows are not a multiple of T's block falls back like llama.cpp: Q4_K -> Q5_0,
  Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 when even that block does not divide the row. Q3_K falls back
  to Q4_0 where llama.cpp picks IQ4_NL (which edge_rt neither writes nor computes; Q4_0 has the same
  32-element block and 4.5 bits per weight).

The per-tensor type of a mixed-precision recipe replaces the rule for the matrices; norms, biases and
the router keep their float type either way.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from .block_types import FILE_TYPE
from .codec import block_info

_FALLBACK = {"Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

#: Matrices kept in float whatever the target (llama.cpp keeps the router F32).
_KEEP_FLOAT = re.compile(r"(^|\.)ffn_gate_inp(_shexp)?\.weight$")


def is_quantizable(name: str, shape: Tuple[int, ...]) -> bool:
    """True for the tensors llama-quantize would quantize (numpy ``shape``, columns last)."""
    return len(shape) >= 2 and name.endswith(".weight") and not _KEEP_FLOAT.search(name)


def is_output_head(name: str, has_output: bool) -> bool:
    return name == "output.weight" or (not has_output and name == "token_embd.weight")


def fits(type_name: str, n_cols: int) -> bool:
    return n_cols % block_info(type_name)[0] == 0


def fallback(type_name: str, n_cols: int) -> str:
    """``type_name`` or llama.cpp's fallback when the row length does not fit its block."""
    t = type_name
    while not fits(t, n_cols):
        t = _FALLBACK.get(t, "F16")
    return t


def float_type(source_type: str) -> str:
    """Type a non-quantized tensor keeps: F32 stays F32, 16-bit masters keep 16 bits for matrices
    (llama.cpp writes 1-D tensors as F32 always)."""
    return source_type if source_type in ("F32", "F16", "BF16") else "F32"


def uniform_type(name: str, shape: Tuple[int, ...], target: str, *, has_output: bool,
                 source_type: str = "F32") -> str:
    """The type llama-quantize gives ``name`` for target ``target`` (see the module doc)."""
    if len(shape) < 2:
        return "F32"
    if not is_quantizable(name, shape):
        return "F32" if _KEEP_FLOAT.search(name) else float_type(source_type)
    n_cols = shape[-1]
    if target in ("F32", "F16", "BF16"):
        return target
    if is_output_head(name, has_output):
        if target == "Q8_0":
            return "Q8_0"
        return "Q6_K" if fits("Q6_K", n_cols) else fallback("Q8_0", n_cols)
    return fallback(target, n_cols)


def plan_uniform(tensors: Dict[str, Tuple[Tuple[int, ...], str]], target: str) -> Dict[str, str]:
    """{name: type} for every tensor; ``tensors`` maps name -> (numpy shape, source type)."""
    has_output = "output.weight" in tensors
    return {n: uniform_type(n, s, target, has_output=has_output, source_type=st) for n, (s, st) in tensors.items()}


def file_type_of(types: Dict[str, str], shapes: Dict[str, Tuple[int, ...]], target: Optional[str] = None) -> int:
    """``general.file_type`` for a written model: the target's ftype, or for a mix the ftype of the type
    holding most parameters among the quantized matrices."""
    if target is not None and target in FILE_TYPE:
        return FILE_TYPE[target]
    weight: Dict[str, int] = {}
    for n, t in types.items():
        s = shapes[n]
        if len(s) >= 2:
            k = 1
            for d in s:
                k *= int(d)
            weight[t] = weight.get(t, 0) + k
    if not weight:
        return FILE_TYPE["F32"]
    best = max(weight, key=lambda t: weight[t])
    return FILE_TYPE.get(best, FILE_TYPE["F16"])


def llama_cpp_name(type_name: str) -> str:
    """Type name as llama-quantize's --tensor-type accepts it (lower case)."""
    return type_name.lower()
