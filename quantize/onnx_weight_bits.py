"""``export --target-size``: int4 or int8 weights per layer, chosen by measured sensitivity under a size.

The unit is a decoder layer (its seven projections, with the RoPE copies of Q and K, share one width:
an NPU graph compiles per layer, and MobileQuant's layouts are per layer). The byte count of each layer
at int4 and int8 is exact (codes, a float32 scale and an int4/int8 zero point per output channel); the
rest of the graph (lm_head, norms, encodings, protobuf) is measured once from a built graph.

Sensitivity, measured on the calibration text:

* each projection's output error at both widths, E(t, b) = tr((W - Q_b(W)) G (W - Q_b(W))^T), where G
  is the sum of x x^T of its input (the GPTQ statistics) and Q_b the export's own rounding;
* the end-to-end KL of the export against the float graph with every weight int8, and with one kind of
  projection (q, k, v, o, gate, up, down) int4 in every layer: ``7 + 1`` runs. The KL each kind adds,
  divided by its summed output error, gives that kind's KL per unit of output error;
* a layer's predicted KL at int4 is the sum over its projections of that factor times the error added.

The allocation is the mixed-precision search of ``edge-rt quantize`` (mixed.py: the Lagrangian greedy
over each layer's convex hull, then the best-per-byte fill), every layer starting at int4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InvalidArgumentError
from .onnx_graph import Dims

#: Bytes kept free under the target: the graph's protobuf framing varies by a few bytes with the widths.
SIZE_MARGIN = 4096
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def layer_weights(d: Dims, il: int) -> List[str]:
    return [f"blk.{il}.{k}.weight" for k in KINDS]


def graph_copies(name: str) -> List[str]:
    """The graph's weights made from one GGUF projection: Q and K have a RoPE-rotated copy."""
    if name.endswith(("attn_q.weight", "attn_k.weight")):
        return [name, name.replace(".weight", "_rot.weight")]
    return [name]


def weight_bytes(shape: Tuple[int, int], bits: int, w4_block: int = 0) -> int:
    """Stored bytes of one (N, K) weight: per channel, codes, float32 scales and zero points; block-wise
    int4 where ``w4_block`` divides K (onnx_blocks.stored_bytes)."""
    from .onnx_blocks import block_of, stored_bytes

    n, k = shape
    if bits == 4 and block_of(k, w4_block):
        return stored_bytes(shape, w4_block)
    return (n * k * bits + 7) // 8 + 4 * n + (n * bits + 7) // 8


@dataclass
class WeightBitsChoice:
    bits: Dict[int, int]                          # layer -> 4 or 8
    predicted_kl: Dict[int, float]                # layer -> predicted KL added at int4
    kind_kl: Dict[str, float]                     # measured: kind int4 in every layer, the rest int8
    kl_all_int8: float
    layer_bytes: Dict[int, Dict[int, int]]        # layer -> bits -> bytes
    fixed_bytes: int
    target_bytes: int

    def weight_bits(self, d: Dims) -> Dict[str, int]:
        return {w: b for il, b in self.bits.items() for w in layer_weights(d, il)}

    def graph_bytes(self) -> int:
        return self.fixed_bytes + sum(self.layer_bytes[il][b] for il, b in self.bits.items())

    def to_json(self) -> Dict[str, Any]:
        return {"target_bytes": self.target_bytes, "graph_bytes_predicted": self.graph_bytes(),
                "layers": {str(k): v for k, v in self.bits.items()},
                "predicted_kl_at_int4": {str(k): v for k, v in self.predicted_kl.items()},
                "measured_kl": ({"all_int8": self.kl_all_int8, **{f"{k}_int4": v for k, v in self.kind_kl.items()}}
                                if self.kind_kl else None),   # none when every layer fits at int8
                "method": "per-layer int4/int8 by mixed.search on predicted KL: per-kind KL per unit of output "
                          "error (measured end to end) times each projection's output error on calibration text"}


def choose_weight_bits(d: Dims, weights: Dict[str, np.ndarray], target_bytes: int, graph_bytes_int4: int,
                       kl: Callable[[Dict[str, int]], float], output_error: Callable[[str, int], float],
                       progress: Optional[Callable[[str, int, int], None]] = None,
                       w4_block: int = 0, graph_bytes_int8: Optional[int] = None) -> WeightBitsChoice:
    """``graph_bytes_int4``: serialized size of the graph with every projection int4 (block-wise where
    ``w4_block`` divides K); ``graph_bytes_int8``, with every projection int8: the protobuf framing of the
    two layouts differs (block-wise int4 has twice the tensors), and the difference is spread evenly
    over the layers' int8 bytes.
    ``kl(weight_bits)``: calibration KL of the export with those widths (GGUF weight -> bits).
    ``output_error(graph_weight, bits)``: E of one graph weight (after the export's rounding)."""
    from .mixed import search
    from .sensitivity import Sensitivity

    layers = range(d.n_layer)
    layer_bytes = {il: {b: sum(weight_bytes(weights[w].shape, b, w4_block) for w in layer_weights(d, il)
                               for _ in graph_copies(w)) for b in (4, 8)} for il in layers}
    if graph_bytes_int8 is not None:
        framing = graph_bytes_int8 - graph_bytes_int4 - sum(lb[8] - lb[4] for lb in layer_bytes.values())
        for il in layers:
            layer_bytes[il][8] += framing // d.n_layer + (1 if il < framing % d.n_layer else 0)
    fixed = graph_bytes_int4 - sum(lb[4] for lb in layer_bytes.values())
    smallest, largest = graph_bytes_int4, graph_bytes_int4 + sum(lb[8] - lb[4] for lb in layer_bytes.values())
    if target_bytes < smallest + SIZE_MARGIN:
        raise InvalidArgumentError(f"[export] --target-size {target_bytes:,} bytes is below the smallest graph, every "
                                   f"layer int4: {smallest + SIZE_MARGIN:,} bytes")
    total, done = 1 + len(KINDS), 0

    def measure(bits: Dict[str, int]) -> float:
        nonlocal done
        v = kl(bits)
        done += 1
        if progress:
            progress("weight bits", done, total)
        return v

    every8 = {w: 8 for il in layers for w in layer_weights(d, il)}
    if target_bytes >= largest:
        return WeightBitsChoice({il: 8 for il in layers}, {}, {}, 0.0, layer_bytes, fixed, target_bytes)
    base = measure(every8)
    kind_kl = {kind: measure({w: 4 if w.split(".")[2] == kind else 8 for w in every8})
               for kind in KINDS}
    # (the trial graphs above rounded every weight at both widths: their output errors are known now)
    added = {(w, il): sum(output_error(g, 4) - output_error(g, 8) for g in graph_copies(w))
             for il in layers for w in layer_weights(d, il)}
    factor = {}
    for kind in KINDS:
        err = sum(max(e, 0.0) for (w, _), e in added.items() if w.split(".")[2] == kind)
        factor[kind] = max(kind_kl[kind] - base, 0.0) / err if err > 0 else 0.0
    predicted = {il: sum(factor[w.split(".")[2]] * max(added[(w, il)], 0.0) for w in layer_weights(d, il))
                 for il in layers}
    sens = Sensitivity("export", ("int4", "int8"))
    for il in layers:
        sens.bytes[str(il)] = {"int4": layer_bytes[il][4], "int8": layer_bytes[il][8]}
        sens.dkl[str(il)] = {"int4": predicted[il], "int8": 0.0}
    mix = search(sens, target_bytes - fixed - SIZE_MARGIN)
    bits = {il: 8 if mix[str(il)] == "int8" else 4 for il in layers}
    return WeightBitsChoice(bits, predicted, kind_kl, base, layer_bytes, fixed, target_bytes)
