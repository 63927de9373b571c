"""A whole exported QDQ graph run on integer codes (docs/integer_spec.md): the ``int-ref`` NPU backend.

An export's graphs (quantize/onnx_graph.py) are chains of DequantizeLinear -> float op -> QuantizeLinear
with only layout ops (Reshape, Transpose, Concat) between them. :class:`IntGraph` walks one in graph
order on codes alone: the float graph inputs (``x``, ``cos``, ``sin``, ``mask``) are quantized by their
QuantizeLinear as ONNX defines it (x / scale rounded half to even, plus the zero point, saturated); cache
inputs are codes already; a DequantizeLinear hands its input's codes on (with their encoding), layout ops
move codes, and every float op is the integer op ``int_ops.graph_ops`` reads it as, computed by ``impl``
(``edge_rt.quantize.intref``, NumPy, or ``edge_rt.quantize.intkernels``, the C++ kernels: the two give
the same codes bit for bit) straight into its QuantizeLinear's codes. Outputs: codes where the graph
outputs codes (the new K/V), and where it outputs floats (the logits) their dequantized value.

A Concat joins codes only when its inputs share one encoding (the exporter quantizes new K/V with the
cache's); anything else in the graph is refused by name rather than approximated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .int_ops import COMPUTE_OPS, LAYOUT_OPS, IntOp, _Graph, graph_ops, run_op
from .onnx_graph import Encoding

__all__ = ["IntGraph", "quantize_linear"]


def quantize_linear(x: np.ndarray, enc: Encoding) -> np.ndarray:
    """ONNX QuantizeLinear in float32: saturate(round_half_even(x / scale) + zero_point)."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(enc.scale)).astype(np.float64) + enc.zero_point
    return np.clip(np.nan_to_num(q, nan=0.0), 0, (1 << enc.bits) - 1).astype(enc.dtype)


class IntGraph:
    """One exported graph (an ONNX file or ModelProto) on integer codes; :meth:`run` takes the graph's
    inputs by name and returns its outputs by name, as an ONNX Runtime session would."""

    def __init__(self, model: Union[str, Path, Any], impl: Any) -> None:
        import onnx

        self.model = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
        self.impl = impl
        self._g = _Graph(self.model)
        ops = graph_ops(self.model)
        self._compute = {op.name: op for op in ops if op.kind != "requantize"}
        self._requant = {op.out: op for op in ops if op.kind == "requantize"}
        self._tables: Dict[str, np.ndarray] = {}
        self.inputs = [i.name for i in self.model.graph.input]
        self.outputs = [o.name for o in self.model.graph.output]
        for node in self.model.graph.node:
            known = (node.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity") or node.op_type in LAYOUT_OPS
                     or node.op_type in COMPUTE_OPS)
            if not known:
                raise ValueError(f"[int_graph] {node.name}: {node.op_type} has no integer op")

    def _dq_encoding(self, node: Any) -> Encoding:
        return self._g.encoding(node)

    def run(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g = self._g
        # tensor name -> (codes, encoding): every tensor that is codes (Q outputs, cache inputs) or the
        # dequantized value of codes (DQ outputs and layout ops over them)
        codes: Dict[str, Tuple[np.ndarray, Optional[Encoding]]] = {}
        for name in self.inputs:
            if name not in feed:
                raise ValueError(f"[int_graph] input {name!r} not fed")
            arr = np.asarray(feed[name])
            if arr.dtype in (np.uint8, np.uint16):
                codes[name] = (arr, None)
        values: Dict[str, np.ndarray] = {}  # float tensors the graph outputs as floats
        for node in self.model.graph.node:
            op = node.op_type
            if op == "QuantizeLinear":
                src = node.input[0]
                if node.output[0] in self._requant:
                    iop = self._requant[node.output[0]]
                    codes[node.output[0]] = (self._run(iop, codes), iop.out_enc)
                elif src in feed and src not in codes:  # a float graph input
                    enc = g.q_encoding(node)
                    codes[node.output[0]] = (quantize_linear(feed[src], enc), enc)
                # else: the QuantizeLinear of a compute op, whose codes its op already wrote
            elif op == "DequantizeLinear":
                if node.input[0] in g.init:
                    continue  # a constant (weights, norm gains): read by graph_ops
                enc = self._dq_encoding(node)
                c, _ = codes[node.input[0]]
                codes[node.output[0]] = (c, enc)
            elif op in LAYOUT_OPS:
                if node.input[0] not in codes:
                    continue  # between a compute op and its QuantizeLinear: part of that op's layout
                codes[node.output[0]] = self._layout(node, codes)
            elif op in COMPUTE_OPS:
                iop = self._compute[node.name]
                codes[iop.out] = (self._run(iop, codes), iop.out_enc)
            elif op == "Identity":
                src = node.input[0]
                if src in codes:
                    c, enc = codes[src]
                    if enc is not None and self._is_dq_output(src):
                        values[node.output[0]] = ((c.astype(np.float64) - enc.zero_point) * enc.scale
                                                  ).astype(np.float32)
                    codes[node.output[0]] = (c, enc)
        out: Dict[str, np.ndarray] = {}
        for name in self.outputs:
            if name in values:
                out[name] = values[name]
            elif name in codes:
                c, enc = codes[name]
                out[name] = self._as_output(name, c, enc)
            else:
                raise ValueError(f"[int_graph] output {name!r} was not computed")
        return out

    def _is_dq_output(self, tensor: str) -> bool:
        n = self._g.producer.get(tensor)
        return n is not None and n.op_type == "DequantizeLinear"

    def _as_output(self, name: str, c: np.ndarray, enc: Optional[Encoding]) -> np.ndarray:
        from onnx import TensorProto

        out = next(o for o in self.model.graph.output if o.name == name)
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            if enc is None:
                raise ValueError(f"[int_graph] output {name!r} is float but has no encoding")
            return ((c.astype(np.float64) - enc.zero_point) * enc.scale).astype(np.float32)
        return c

    def _run(self, iop: IntOp, codes: Dict[str, Tuple[np.ndarray, Optional[Encoding]]]) -> np.ndarray:
        acts = {}
        for o in iop.operands:
            if o.tensor is None:
                continue
            c, enc = codes[o.tensor]
            if enc is not None and (enc.bits, enc.zero_point, enc.scale) != (o.enc.bits, o.enc.zero_point,
                                                                              o.enc.scale):
                raise ValueError(f"[int_graph] {iop.name}: input {o.tensor} holds codes of another encoding")
            acts[o.tensor] = c
        return run_op(iop, acts, self.impl, self._tables)

    def _layout(self, node: Any, codes: Dict[str, Tuple[np.ndarray, Optional[Encoding]]]
                ) -> Tuple[np.ndarray, Optional[Encoding]]:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        c, enc = codes[node.input[0]]
        if node.op_type == "Reshape":
            shape = [int(v) for v in self._g.arr[node.input[1]]]
            shape = [c.shape[i] if v == 0 else v for i, v in enumerate(shape)]  # ONNX: 0 copies the dim
            return np.ascontiguousarray(c.reshape(shape)), enc
        if node.op_type == "Transpose":
            return np.ascontiguousarray(c.transpose(attrs.get("perm"))), enc
        parts: List[np.ndarray] = []
        for t in node.input:  # Concat
            if t not in codes:
                raise ValueError(f"[int_graph] {node.name}: input {t} is not codes")
            pc, penc = codes[t]
            if penc != enc:
                raise ValueError(f"[int_graph] {node.name}: concatenates codes of different encodings")
            parts.append(pc)
        return np.ascontiguousarray(np.concatenate(parts, axis=int(attrs.get("axis", 0)))), enc
