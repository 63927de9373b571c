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

# The trained dense model (llama, 6 layers, GQA) at the three schemes, exported with min/max ranges (the
# range search changes scales, not ops, and takes a minute a scheme); synthetic qwen2 (Q/K/V biases) and
# qwen3 (Q/K norms) with the range search.
DENSE = Path(__file__).resolve().parent.parent / "models" / "tiny-code-dense-f16.gguf"
SMALL = dict(n_vocab=384, n_embd=64, n_ff=128, n_layer=2, n_head=4, n_head_kv=2, weight_type="F16")
CHUNK, CTX = 8, 32
CASES = [("dense", "w8a8"), ("dense", "w4a8"), ("dense", "w8a16"), ("qwen2", "w8a8"), ("qwen3", "w4a8")]


@pytest.fixture(scope="module")
def op_data(synthetic_model, tmp_path_factory):
    """op_data(model, scheme) -> [(graph, ops, values, ref)]: the ops of each graph of an export, ORT's
    values of their inputs (dequantized floats) and outputs (codes) on the last call of a real window, and
    intref's output codes of each op fed ORT's input codes."""
    from edge_rt.quantize import intref
    from edge_rt.quantize.int_ops import run_op
    from edge_rt.quantize.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("int_exports")
    cache: Dict[Tuple[str, str], list] = {}

    def make(model: str, scheme: str) -> list:
        if (model, scheme) not in cache:
            out = root / f"{model}-{scheme}"
            if model == "dense":
                export_onnx(DENSE, out, scheme=scheme, chunk=CHUNK, ctx=CTX, max_calib_tokens=128,
                            range_method="minmax")
            else:
                export_onnx(synthetic_model(arch=model, **SMALL), out, scheme=scheme, chunk=CHUNK, ctx=CTX,
                            max_calib_tokens=256)
            cache[(model, scheme)] = [(g, ops, vals, [run_op(op, input_codes(op, vals), intref) for op in ops])
                                      for g, ops, vals in ort_op_values(out)]
        return cache[(model, scheme)]

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


@pytest.mark.parametrize("model,scheme", CASES)
def test_intref_matches_ort_per_op(op_data, model, scheme):
    """Every op's codes from intref agree with ORT's: within 3 LSB for >= 99.9% of the elements (the
    issue's target for 8-bit outputs; 16-bit outputs are held to the same) and exactly for >= 99%. Measured
    (SMALL exports, both graphs): every element within 1 LSB, A8 exact but for a handful."""
    stats: Dict[Tuple[str, int], List[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for _, ops, vals, ref in op_data(model, scheme):
        assert {op.kind for op in ops} >= {"gemm", "matmul", "add", "mul", "rmsnorm", "softmax", "sigmoid"}
        for op, mine in zip(ops, ref):
            d = np.abs(mine.astype(np.int64) - vals[op.out].astype(np.int64))
            s = stats[(op.kind, op.out_enc.bits)]
            s[0] += d.size
            s[1] += int((d == 0).sum())
            s[2] += int((d <= 1).sum())
            s[3] += int((d <= 3).sum())
            s[4] = max(s[4], int(d.max()))
    lines = [f"{k:10s} A{b:<2d} n={s[0]:7d} exact={s[1] / s[0]:.5f} <=1={s[2] / s[0]:.5f} <=3={s[3] / s[0]:.5f} "
             f"max={s[4]}" for (k, b), s in sorted(stats.items())]
    print(f"\n{model} {scheme}\n" + "\n".join(lines))
    for s in stats.values():
        assert s[3] >= 0.999 * s[0] and s[1] >= 0.99 * s[0], lines


def _isas() -> List[str]:
    from edge_rt import _core

    return [i for i in ("scalar", "avx2", "avx512vnni") if i in _core.compiled_isas() and _core.cpu_supports(i)]


@pytest.mark.parametrize("model,scheme", CASES)
def test_kernels_equal_intref_per_op(op_data, model, scheme):
    """The C++ integer kernels (intkernels) reproduce intref's codes bit for bit on every op of both graphs,
    at every ISA this machine runs (scalar and avx2 here; avx512vnni runs the avx2 kernels)."""
    from edge_rt.quantize import intkernels
    from edge_rt.quantize.int_ops import run_op

    isas = _isas()
    assert "scalar" in isas
    for graph, ops, vals, ref in op_data(model, scheme):
        tables: dict = {}
        for isa in isas:
            impl = _OnIsa(intkernels, isa)
            for op, want in zip(ops, ref):
                got = run_op(op, input_codes(op, vals), impl, tables)
                assert got.dtype == want.dtype and np.array_equal(got, want), (graph, op.name, op.kind, isa)


class _OnIsa:
    """intkernels with every call pinned to one ISA."""

    def __init__(self, mod, isa: str) -> None:
        self.mod, self.isa = mod, isa

    def __getattr__(self, name: str):
        fn = getattr(self.mod, name)
        return lambda *a, **k: fn(*a, isa=self.isa, **k)


def test_int_kernels_refuse_bad_input():
    """Codes of the wrong dtype, weights outside the symmetric range, an ISA the CPU lacks: named errors."""
    from edge_rt.errors import InvalidArgumentError
    from edge_rt.quantize import intkernels

    a = np.zeros((2, 4), np.uint8)
    w = np.ones((3, 4), np.int8)
    s = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="8-bit codes must be uint8"):
        intkernels.gemm(a.astype(np.uint16), 1.0, 0, 8, w, s, 8, 1.0, 0, 8)
    with pytest.raises(InvalidArgumentError, match=r"outside \[-127, 127\]"):
        intkernels.gemm(a, 1.0, 0, 8, np.full((3, 4), -128, np.int8), s, 8, 1.0, 0, 8)
    with pytest.raises(InvalidArgumentError, match="zero point 300"):
        intkernels.requantize(a, 1.0, 300, 1.0, 0, 8)
    with pytest.raises(InvalidArgumentError, match="exp table"):
        intkernels.softmax(a, np.zeros(256, np.uint32), 1.0 / 255, 0, 8)
    from edge_rt import _core

    missing = [i for i in ("avx2", "avx512vnni") if not _core.cpu_supports(i)]
    if missing:
        with pytest.raises(InvalidArgumentError, match="not available"):
            intkernels.requantize(a, 1.0, 0, 1.0, 0, 8, isa=missing[-1])
