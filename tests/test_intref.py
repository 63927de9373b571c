"""docs/integer_spec.md against ONNX Runtime and the C++ kernels: every integer op of real exports.

Each op of an export's prefill and decode graphs (``edge_rt.quantize.int_ops``) is fed the input codes
ORT's CPU EP computes (QDQ semantics: no graph rewrites) and its output codes are compared with ORT's:
the NumPy reference (``intref``) within a few LSB, and the C++ kernels (``intkernels``) at every ISA
this machine runs bitwise equal to ``intref``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# GQA (4 heads over 2 KV heads); qwen2 has Q/K/V biases, qwen3 Q/K norms
SMALL = dict(n_vocab=384, n_embd=64, n_ff=128, n_layer=2, n_head=4, n_head_kv=2, weight_type="F16")
CHUNK, CTX = 8, 32
CASES = [("llama", "w8a8"), ("llama", "w4a8"), ("llama", "w8a16"), ("qwen2", "w8a8"), ("qwen3", "w4a8")]


@pytest.fixture(scope="module")
def op_data(synthetic_model, tmp_path_factory):
    """op_data(arch, scheme) -> [(graph, ops, values)]: the ops of each graph of a SMALL export and ORT's
    values of their inputs (dequantized floats) and outputs (codes) on the last call of a real window."""
    from edge_rt.quantize.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("int_exports")
    cache: Dict[Tuple[str, str], list] = {}

    def make(arch: str, scheme: str) -> list:
        if (arch, scheme) not in cache:
            out = root / f"{arch}-{scheme}"
            export_onnx(synthetic_model(arch=arch, **SMALL), out, scheme=scheme, chunk=CHUNK, ctx=CTX,
                        max_calib_tokens=256)
            cache[(arch, scheme)] = ort_op_values(out)
        return cache[(arch, scheme)]

    return make


def ort_op_values(folder: Path) -> list:
    """[(graph, ops, values)] for both graphs of an export: prefill's second chunk (it attends to the
    first through the cache) and decode's third token."""
    import onnx
    from onnx import TensorProto, helper

    from edge_rt.quantize.int_ops import graph_ops
    from edge_rt.quantize.onnx_export_folder import ExportFolder
    from edge_rt.quantize.onnx_runner import float_session

    f = ExportFolder(folder)
    ids = f.sample_ids()
    res = []
    for graph, n in (("prefill", 2 * f.n_tokens("prefill")), ("decode", 3)):
        m = onnx.load(str(f.graph_path(graph)))
        ops = graph_ops(m)
        have = {o.name for o in m.graph.output}
        want = {t: TensorProto.FLOAT for op in ops for t in op.inputs}
        want.update({op.out: TensorProto.UINT16 if op.out_enc.bits == 16 else TensorProto.UINT8 for op in ops})
        m.graph.output.extend(helper.make_tensor_value_info(t, ty, None) for t, ty in want.items() if t not in have)
        vals: dict = {}
        f.runner(float_session(m.SerializeToString(), optimize=False), graph).window(
            ids[:n], on_outputs=lambda r: vals.update(r))
        res.append((graph, ops, vals))
    return res


def input_codes(op, vals) -> dict:
    from edge_rt.quantize.int_ops import codes_of

    return {o.tensor: codes_of(vals[o.tensor], o.enc) for o in op.operands if o.tensor is not None}


@pytest.mark.parametrize("arch,scheme", CASES)
def test_intref_matches_ort_per_op(op_data, arch, scheme):
    """Every op's codes from intref agree with ORT's: within 3 LSB for >= 99.9% of the elements (the
    issue's target for 8-bit outputs; 16-bit outputs are held to the same) and exactly for >= 99%. Measured
    (SMALL exports, both graphs): every element within 1 LSB, A8 exact but for a handful."""
    from edge_rt.quantize import intref
    from edge_rt.quantize.int_ops import run_op

    stats: Dict[Tuple[str, int], List[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for _, ops, vals in op_data(arch, scheme):
        assert {op.kind for op in ops} >= {"gemm", "matmul", "add", "mul", "rmsnorm", "softmax", "sigmoid"}
        for op in ops:
            d = np.abs(run_op(op, input_codes(op, vals), intref).astype(np.int64) - vals[op.out].astype(np.int64))
            s = stats[(op.kind, op.out_enc.bits)]
            s[0] += d.size
            s[1] += int((d == 0).sum())
            s[2] += int((d <= 1).sum())
            s[3] += int((d <= 3).sum())
            s[4] = max(s[4], int(d.max()))
    lines = [f"{k:10s} A{b:<2d} n={s[0]:7d} exact={s[1] / s[0]:.5f} <=1={s[2] / s[0]:.5f} <=3={s[3] / s[0]:.5f} "
             f"max={s[4]}" for (k, b), s in sorted(stats.items())]
    print(f"\n{arch} {scheme}\n" + "\n".join(lines))
    for s in stats.values():
        assert s[3] >= 0.999 * s[0] and s[1] >= 0.99 * s[0], lines
