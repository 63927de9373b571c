"""The integer ops of an exported QDQ graph, read off the ONNX model, and how to run one on codes.

An exported graph is a chain of DequantizeLinear -> float op -> QuantizeLinear with only layout ops
(Reshape, Transpose, Concat) in between. ``graph_ops`` lists every float op as the integer op
docs/integer_spec.md defines for it (``IntOp``): GEMM (MatMul by a per-channel weight), MatMul of two
activations, Add, Mul, RMSNorm (SimplifiedLayerNormalization), Softmax, Sigmoid (a table), and
Requantize (a DequantizeLinear -> layout -> QuantizeLinear to another encoding, e.g. V into the cache).
``run_op`` computes one op's output codes with an implementation module: ``edge_rt.quantize.intref``
(NumPy) or ``edge_rt.quantize.intkernels`` (the C++ kernels); both have the same signatures.

``ort_op_values`` runs an export folder's graphs on ONNX Runtime's CPU EP with QDQ semantics and keeps
every op's input and output values, and ``agreement`` counts how far an implementation's codes are from
ORT's: the per-op checks of tests/test_intref.py and benchmarks/int_ops_agreement.py. ``single_op_model``
cuts one op out as its own QDQ graph (codes in, codes out), to run it alone on another backend (the HTP
emulator) with exactly the inputs the other implementations saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .onnx_graph import Encoding

#: Float ops of the exported graphs and the integer op each becomes (MatMul: gemm or matmul).
COMPUTE_OPS = {"MatMul": "matmul", "Add": "add", "Mul": "mul", "Softmax": "softmax", "Sigmoid": "sigmoid",
               "SimplifiedLayerNormalization": "rmsnorm"}
LAYOUT_OPS = ("Reshape", "Transpose", "Concat")


@dataclass
class Operand:
    """One input of an op: an activation (``tensor``: the dequantized float tensor ORT feeds the op) or
    a constant (``codes`` from the initializer: a norm weight, a bias, a projection weight)."""

    enc: Encoding
    tensor: Optional[str] = None
    codes: Optional[np.ndarray] = None


@dataclass
class IntOp:
    kind: str                  # gemm, matmul, add, mul, rmsnorm, softmax, sigmoid, requantize
    name: str                  # the ONNX node (for requantize: the QuantizeLinear)
    operands: List[Operand]
    out: str                   # the QuantizeLinear output that holds the op's codes
    out_enc: Encoding
    layout: List[Tuple[str, Any]] = field(default_factory=list)   # Reshape/Transpose from the op to that Q
    weight: Optional[Tuple[np.ndarray, np.ndarray, int]] = None    # gemm: codes (N, K) int8, scales (N,), bits
    eps: float = 0.0                                                # rmsnorm

    @property
    def inputs(self) -> List[str]:
        """The activation tensors the op reads (float, as dequantized by ORT)."""
        return [o.tensor for o in self.operands if o.tensor is not None]


class _Graph:
    """Producers, consumers and initializers of an ONNX graph."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.init = {i.name: i for i in g.initializer}
        self.arr = {n: numpy_helper.to_array(i) for n, i in self.init.items()}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: Dict[str, List[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def encoding(self, dq: Any) -> Encoding:
        from onnx import TensorProto

        zp = self.init[dq.input[2]]
        bits = {TensorProto.UINT8: 8, TensorProto.UINT16: 16}.get(zp.data_type)
        if bits is None or self.arr[dq.input[1]].size != 1:
            raise ValueError(f"[int_ops] {dq.name}: not a per-tensor uint8/uint16 encoding")
        return Encoding(bits, float(self.arr[dq.input[1]].reshape(-1)[0]), int(self.arr[dq.input[2]].reshape(-1)[0]))

    def source_dq(self, tensor: str) -> Optional[Any]:
        """The DequantizeLinear a tensor comes from through layout ops (None: a graph input or an op)."""
        n = self.producer.get(tensor)
        while n is not None and n.op_type in LAYOUT_OPS:
            n = self.producer.get(n.input[0])
        return n if n is not None and n.op_type == "DequantizeLinear" else None

    def operand(self, tensor: str, node: Any) -> Operand:
        dq = self.source_dq(tensor)
        if dq is None:
            raise ValueError(f"[int_ops] {node.name}: input {tensor} does not come from a DequantizeLinear")
        enc = self.encoding(dq)
        if dq.input[0] in self.init:
            if self.producer.get(tensor) is not dq:
                raise ValueError(f"[int_ops] {node.name}: constant {tensor} behind layout ops")
            return Operand(enc, codes=self.arr[dq.input[0]])
        return Operand(enc, tensor=tensor)

    def output_q(self, tensor: str, node: Any) -> Tuple[Any, List[Tuple[str, Any]]]:
        """The QuantizeLinear consuming ``tensor`` through layout ops, and those ops."""
        from onnx import helper

        layout: List[Tuple[str, Any]] = []
        while True:
            cons = self.consumers.get(tensor, [])
            if len(cons) != 1:
                raise ValueError(f"[int_ops] {node.name}: output {tensor} has {len(cons)} consumers, expected 1")
            c = cons[0]
            if c.op_type == "QuantizeLinear":
                return c, layout
            if c.op_type == "Reshape":
                layout.append(("reshape", tuple(int(v) for v in self.arr[c.input[1]])))
            elif c.op_type == "Transpose":
                layout.append(("transpose", tuple(helper.get_attribute_value(a) for a in c.attribute
                                                  if a.name == "perm")[0]))
            else:
                raise ValueError(f"[int_ops] {node.name}: output reaches {c.op_type} before a QuantizeLinear")
            tensor = c.output[0]

    def q_encoding(self, q: Any) -> Encoding:
        zp = self.arr[q.input[2]].reshape(-1)
        return Encoding(16 if zp.dtype == np.uint16 else 8, float(self.arr[q.input[1]].reshape(-1)[0]), int(zp[0]))


def _gemm_weight(g: _Graph, wdq: Any) -> Tuple[np.ndarray, np.ndarray, int]:
    """(codes (N, K) int8, scales (N,), bits) of the constant weight a DequantizeLinear dequantizes: per
    channel as stored, or block-wise int4 (onnx_blocks.py) as int8 codes s * q under the row scales S."""
    from onnx import TensorProto, helper

    bits = 4 if g.init[wdq.input[0]].data_type == TensorProto.INT4 else 8
    codes = np.ascontiguousarray(g.arr[wdq.input[0]].astype(np.int8).T)       # (N, K)
    if wdq.input[1] in g.init:
        return codes, g.arr[wdq.input[1]].astype(np.float32), bits
    from .onnx_blocks import expanded

    sdq = g.producer[wdq.input[1]]
    block = int(next(helper.get_attribute_value(a) for a in wdq.attribute if a.name == "block_size"))
    codes = expanded(codes, np.ascontiguousarray(g.arr[sdq.input[0]].T), block)
    return codes, g.arr[sdq.input[1]].astype(np.float32), 8


def weight_codes(model: Any, name: str) -> Tuple[np.ndarray, np.ndarray, int]:
    """The integer weight the spec's GEMM runs for graph weight ``name`` (e.g. ``blk.0.ffn_gate.weight``)
    of an export graph: (codes (N, K) int8, per-row scales (N,), bits)."""
    g = _Graph(model)
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        raise ValueError(f"[int_ops] {name} is not a dequantized weight of this graph")
    return _gemm_weight(g, dq)


def graph_ops(model: Any) -> List[IntOp]:
    """Every integer op of an exported QDQ graph (an onnx ModelProto), in graph order."""
    from onnx import helper

    g = _Graph(model)
    ops: List[IntOp] = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            dq = g.source_dq(node.input[0])
            if dq is not None and dq.input[0] not in g.init:     # DQ -> layout -> Q: a requantization
                ops.append(IntOp("requantize", node.name or node.output[0],
                                 [Operand(g.encoding(dq), tensor=node.input[0])], node.output[0], g.q_encoding(node)))
            continue
        if node.op_type not in COMPUTE_OPS:
            continue
        kind = COMPUTE_OPS[node.op_type]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Softmax", "SimplifiedLayerNormalization") and attrs.get("axis", -1) != -1:
            raise ValueError(f"[int_ops] {node.name}: only the last axis is supported")
        q, layout = g.output_q(node.output[0], node)
        op = IntOp(kind, node.name, [], q.output[0], g.q_encoding(q), layout, eps=float(attrs.get("epsilon", 0.0)))
        wdq = g.producer.get(node.input[1]) if len(node.input) > 1 else None
        if kind == "matmul" and wdq is not None and wdq.op_type == "DequantizeLinear" and wdq.input[0] in g.init:
            op.kind, op.weight = "gemm", _gemm_weight(g, wdq)
            op.operands = [g.operand(node.input[0], node)]
        else:
            op.operands = [g.operand(t, node) for t in node.input]
        ops.append(op)
    return ops


def codes_of(x: np.ndarray, enc: Encoding) -> np.ndarray:
    """The codes behind a dequantized float32 tensor (exact: |q - z| < 2^16 survives float32 rounding)."""
    q = np.round(x.astype(np.float64) / enc.scale) + enc.zero_point
    return q.astype(np.int64).astype(enc.dtype)


def _layout(y: np.ndarray, layout: List[Tuple[str, Any]]) -> np.ndarray:
    for kind, arg in layout:
        y = y.reshape(arg) if kind == "reshape" else y.transpose(arg)
    return np.ascontiguousarray(y)


def run_op(op: IntOp, acts: Dict[str, np.ndarray], impl: Any, tables: Optional[Dict[str, np.ndarray]] = None
           ) -> np.ndarray:
    """Output codes of ``op`` (in the layout of its QuantizeLinear) from the codes of its activation
    inputs (``acts``: tensor name -> codes), computed by ``impl`` (intref or intkernels). ``tables``
    caches the op's lookup table by op name (built with intref's table builders)."""
    from . import intref

    x = [o.codes if o.tensor is None else acts[o.tensor] for o in op.operands]
    e = [o.enc for o in op.operands]
    y = op.out_enc
    tables = {} if tables is None else tables
    if op.kind == "gemm":
        w, s_w, w_bits = op.weight
        r = impl.gemm(x[0], e[0].scale, e[0].zero_point, e[0].bits, w, s_w, w_bits, y.scale, y.zero_point, y.bits)
    elif op.kind == "matmul":
        r = impl.matmul(x[0], e[0].scale, e[0].zero_point, e[0].bits, np.swapaxes(x[1], -1, -2), e[1].scale,
                        e[1].zero_point, e[1].bits, y.scale, y.zero_point, y.bits)
    elif op.kind == "add":
        r = impl.add(x[0], e[0].scale, e[0].zero_point, e[0].bits, x[1], e[1].scale, e[1].zero_point, e[1].bits,
                     y.scale, y.zero_point, y.bits)
    elif op.kind == "mul":
        r = impl.mul(x[0], e[0].scale, e[0].zero_point, x[1], e[1].scale, e[1].zero_point,
                     y.scale, y.zero_point, y.bits)
    elif op.kind == "requantize":
        r = impl.requantize(x[0], e[0].scale, e[0].zero_point, y.scale, y.zero_point, y.bits)
    elif op.kind == "rmsnorm":
        r = impl.rmsnorm(x[0], e[0].scale, e[0].zero_point, x[1], e[1].scale, e[1].zero_point, op.eps,
                         y.scale, y.zero_point, y.bits)
    elif op.kind == "softmax":
        if op.name not in tables:
            tables[op.name] = intref.exp_table(e[0].scale, e[0].bits)
        r = impl.softmax(x[0], tables[op.name], y.scale, y.zero_point, y.bits)
    elif op.kind == "sigmoid":
        if op.name not in tables:
            tables[op.name] = intref.sigmoid_table(e[0].scale, e[0].zero_point, e[0].bits,
                                                   y.scale, y.zero_point, y.bits)
        r = impl.lut(x[0], tables[op.name])
    else:
        raise ValueError(f"[int_ops] unknown op kind {op.kind}")
    return _layout(r, op.layout)


def input_codes(op: IntOp, values: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The codes of ``op``'s activation inputs from ORT's (dequantized) values of them."""
    return {o.tensor: codes_of(values[o.tensor], o.enc) for o in op.operands if o.tensor is not None}


def ort_op_values(folder: Path, ids: Optional[List[int]] = None) -> List[Tuple[str, List[IntOp], Dict[str, Any]]]:
    """[(graph, ops, values)] for both graphs of an export folder, run on ORT's CPU EP with no graph
    rewrites (DequantizeLinear -> float op -> QuantizeLinear): the values of every op's inputs (float)
    and output (codes) on the prefill graph's second chunk (it attends to the first through the cache)
    and the decode graph's third token. ``ids``: the tokens (default: the folder's sample text)."""
    import onnx
    from onnx import TensorProto, helper

    from .onnx_export_folder import ExportFolder
    from .onnx_runner import float_session

    f = ExportFolder(folder)
    ids = f.sample_ids() if ids is None else ids
    res = []
    for graph, n in (("prefill", 2 * f.n_tokens("prefill")), ("decode", 3)):
        m = onnx.load(str(f.graph_path(graph)))
        ops = graph_ops(m)
        have = {o.name for o in m.graph.output}
        want = {t: TensorProto.FLOAT for op in ops for t in op.inputs}
        want.update({op.out: TensorProto.UINT16 if op.out_enc.bits == 16 else TensorProto.UINT8 for op in ops})
        m.graph.output.extend(helper.make_tensor_value_info(t, ty, None) for t, ty in want.items() if t not in have)
        values: Dict[str, Any] = {}
        f.runner(float_session(m.SerializeToString(), optimize=False), graph).window(
            ids[:n], on_outputs=lambda r: values.update(r))
        res.append((graph, ops, values))
    return res


def agreement(pairs: List[Tuple[IntOp, np.ndarray, np.ndarray]]) -> Dict[Tuple[str, int], Dict[str, float]]:
    """Per (op kind, output bits): element count, the fractions of codes exact / within 1 / within 3 LSB
    of the reference, and the largest difference, over (op, codes, reference codes) triples."""
    acc: Dict[Tuple[str, int], List[int]] = {}
    for op, mine, ref in pairs:
        d = np.abs(mine.astype(np.int64) - ref.astype(np.int64))
        s = acc.setdefault((op.kind, op.out_enc.bits), [0, 0, 0, 0, 0])
        s[0] += d.size
        s[1] += int((d == 0).sum())
        s[2] += int((d <= 1).sum())
        s[3] += int((d <= 3).sum())
        s[4] = max(s[4], int(d.max()))
    return {k: {"n": s[0], "exact": s[1] / s[0], "within_1": s[2] / s[0], "within_3": s[3] / s[0], "max": s[4]}
            for k, s in sorted(acc.items())}


def format_agreement(stats: Dict[Tuple[str, int], Dict[str, float]]) -> List[str]:
    return [f"{k:10s} A{b:<2d} n={s['n']:8d} exact={s['exact']:.5f} <=1={s['within_1']:.5f} "
            f"<=3={s['within_3']:.5f} max={s['max']}" for (k, b), s in stats.items()]


def single_op_model(model: Any, op: IntOp, codes: Dict[str, np.ndarray]) -> Tuple[Any, Dict[str, np.ndarray]]:
    """One op of ``model`` (not a requantize) as its own QDQ graph: each activation input a uint8/uint16
    graph input ``in{i}`` (its codes in the op's input layout) -> DequantizeLinear, constants with their
    own DequantizeLinear, the op with its attributes, QuantizeLinear to the op's output encoding -> graph
    output ``y`` (in the op's output layout: apply ``op.layout`` to compare with ``op.out``). Returns the
    model and its feeds from ``codes`` (``input_codes``)."""
    from onnx import TensorProto, helper, numpy_helper

    if op.kind == "requantize":
        raise ValueError("[int_ops] a requantize is a DequantizeLinear -> QuantizeLinear pair, not an op node")
    g = _Graph(model)
    node = next(n for n in model.graph.node if n.name == op.name)
    nodes, inits, inputs, feeds, names = [], [], [], {}, []

    def constant(dq: Any) -> None:
        # dq and what feeds it: initializers, or (block-wise int4, onnx_blocks.py) the DequantizeLinear of
        # the block scales that makes its per-element scales
        for n in dq.input:
            if n in g.init:
                inits.append(g.init[n])
            elif n:
                constant(g.producer[n])
        nodes.append(dq)

    for i, t in enumerate(node.input):
        dq = g.source_dq(t)
        if dq is not None and dq.input[0] in g.init and g.producer.get(t) is dq:     # a constant
            constant(dq)
            names.append(t)
            continue
        e = next(o.enc for o in op.operands if o.tensor == t)
        name = f"in{i}"
        feeds[name] = codes[t]
        inputs.append(helper.make_tensor_value_info(name, TensorProto.UINT16 if e.bits == 16 else TensorProto.UINT8,
                                                    list(codes[t].shape)))
        inits += [numpy_helper.from_array(np.float32(e.scale), name + ".scale"),
                  numpy_helper.from_array(np.asarray(e.zero_point, e.dtype), name + ".zero_point")]
        nodes.append(helper.make_node("DequantizeLinear", [name, name + ".scale", name + ".zero_point"], [name + ".dq"],
                                      name=name + ".dq"))
        names.append(name + ".dq")
    y = op.out_enc
    nodes.append(helper.make_node(node.op_type, names, ["y.float"], name=node.name,
                                  **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
    inits += [numpy_helper.from_array(np.float32(y.scale), "y.scale"),
              numpy_helper.from_array(np.asarray(y.zero_point, y.dtype), "y.zero_point")]
    nodes.append(helper.make_node("QuantizeLinear", ["y.float", "y.scale", "y.zero_point"], ["y"], name="y.q"))
    out = helper.make_tensor_value_info("y", TensorProto.UINT16 if y.bits == 16 else TensorProto.UINT8, None)
    m = helper.make_model(helper.make_graph(nodes, node.name, inputs, [out], inits),
                          opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = model.ir_version
    return m, feeds


def output_layout(y: np.ndarray, op: IntOp) -> np.ndarray:
    """An op's output codes (in the op's layout) moved to its QuantizeLinear's layout."""
    return _layout(y, op.layout)
