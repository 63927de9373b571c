"""docs/integer_spec.md against ONNX Runtime and the C++ kernels: every integer op of real exports.

Each op of an export's prefill and decode graphs (``edge_rt.quantize.int_ops``) is fed the input codes
ORT's CPU EP computes (QDQ semantics: no graph rewrites) and its output codes are compared with ORT's:
the NumPy reference (``intref``) within a few LSB, and the C++ kernels (``intkernels``) at every ISA
this machine runs bitwise equal to ``intref``.
"""

from __future__ import annotations

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
# "llama+islands": every extra 16-bit island group (onnx_islands.py) on, so 8- and 16-bit ops mix in new places
CASES = [("dense", "w8a8"), ("dense", "w4a8"), ("dense", "w8a16"), ("qwen2", "w8a8"), ("qwen3", "w4a8"),
         ("llama+islands", "w8a8")]


@pytest.fixture(scope="module")
def op_data(synthetic_model, tmp_path_factory):
    """op_data(model, scheme) -> [(graph, ops, values, ref)]: the ops of each graph of an export, ORT's
    values of their inputs (dequantized floats) and outputs (codes) on the last call of a real window, and
    intref's output codes of each op fed ORT's input codes."""
    from edge_rt.quantize import intref
    from edge_rt.quantize.int_ops import input_codes, ort_op_values, run_op
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
                arch, _, islands = model.partition("+")
                export_onnx(synthetic_model(arch=arch, **SMALL), out, scheme=scheme, chunk=CHUNK, ctx=CTX,
                            max_calib_tokens=256,
                            islands="attn_in,rope,ffn_in,ffn_act,kv" if islands else "auto")
            cache[(model, scheme)] = [(g, ops, vals, [run_op(op, input_codes(op, vals), intref) for op in ops])
                                      for g, ops, vals in ort_op_values(out)]
        return cache[(model, scheme)]

    make.root = root      # the export folders: root / f"{model}-{scheme}"
    return make


@pytest.mark.parametrize("model,scheme", CASES)
def test_intref_matches_ort_per_op(op_data, model, scheme):
    """Every op's codes from intref agree with ORT's: within 3 LSB for >= 99.9% of the elements (the
    issue's target for 8-bit outputs; 16-bit outputs are held to the same) and exactly for >= 99%. Measured
    on these exports (both graphs): every element within 1 LSB; 8-bit outputs exact but for 3 of 131,328
    GEMM codes (dense w4a8); 16-bit outputs >= 99.865% exact per op kind."""
    from edge_rt.quantize.int_ops import agreement, format_agreement

    pairs = []
    for _, ops, vals, ref in op_data(model, scheme):
        assert {op.kind for op in ops} >= {"gemm", "matmul", "add", "mul", "rmsnorm", "softmax", "sigmoid"}
        pairs += [(op, mine, vals[op.out]) for op, mine in zip(ops, ref)]
    stats = agreement(pairs)
    lines = format_agreement(stats)
    print(f"\n{model} {scheme}\n" + "\n".join(lines))
    for s in stats.values():
        assert s["within_3"] >= 0.999 and s["exact"] >= 0.99, lines


def _isas() -> List[str]:
    from edge_rt import _core

    return [i for i in ("scalar", "avx2", "avx512vnni") if i in _core.compiled_isas() and _core.cpu_supports(i)]


@pytest.mark.parametrize("model,scheme", CASES)
def test_kernels_equal_intref_per_op(op_data, model, scheme):
    """The C++ integer kernels (intkernels) reproduce intref's codes bit for bit on every op of both graphs,
    at every ISA this machine runs (avx512vnni's own matmul_acc, vpdpbusd, where the CPU has it)."""
    from edge_rt.quantize import intkernels
    from edge_rt.quantize.int_ops import input_codes, run_op

    isas = _isas()
    assert "scalar" in isas
    for graph, ops, vals, ref in op_data(model, scheme):
        tables: dict = {}
        for isa in isas:
            impl = intkernels.on_isa(isa)
            for op, want in zip(ops, ref):
                got = run_op(op, input_codes(op, vals), impl, tables)
                assert got.dtype == want.dtype and np.array_equal(got, want), (graph, op.name, op.kind, isa)


def test_int4_packed_once_equals_unpacked():
    """gemm on weights packed once (pack_int4) equals gemm on the int8 codes, odd K included."""
    from edge_rt.quantize import intkernels, intref

    rng = np.random.default_rng(3)
    a = rng.integers(0, 65536, (5, 37)).astype(np.uint16)
    w = rng.integers(-7, 8, (9, 37)).astype(np.int8)
    s_w = (rng.random(9) * 0.01 + 1e-3).astype(np.float32)
    args = (1e-4, 30000, 16)
    want = intref.gemm(a, *args, w, s_w, 4, 0.02, 32768, 16)
    for isa in _isas():
        assert np.array_equal(intkernels.gemm(a, *args, intkernels.pack_int4(w), s_w, 4, 0.02, 32768, 16, isa=isa),
                              want)
        assert np.array_equal(intkernels.gemm(a, *args, w, s_w, 4, 0.02, 32768, 16, isa=isa), want)


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

    with pytest.raises(InvalidArgumentError, match="must be a numpy array of uint16"):
        _core.int_requantize(a.astype(">u2"), (1.0, 0, 16), (1.0, 0, 16), None)
    missing = [i for i in ("avx2", "avx512vnni") if not _core.cpu_supports(i)]
    if missing:
        with pytest.raises(InvalidArgumentError, match="not available"):
            intkernels.requantize(a, 1.0, 0, 1.0, 0, 8, isa=missing[-1])


def test_int_kernels_take_unpickled_arrays():
    """An unpickled array's dtype is a distinct (equal) object; the kernels took only the canonical one and
    refused such codes with "must be a numpy array of uint16, got uint16" (found by the aarch64 test, whose
    ops travel to qemu as a pickle)."""
    import pickle

    from edge_rt.quantize import intkernels, intref

    rng = np.random.default_rng(3)
    a = pickle.loads(pickle.dumps(rng.integers(0, 65536, (3, 40), dtype=np.uint16)))
    w = pickle.loads(pickle.dumps(rng.integers(-127, 128, (5, 40), dtype=np.int8)))
    s_w = pickle.loads(pickle.dumps(np.full(5, 0.01, np.float32)))
    assert a.dtype is not np.dtype(np.uint16)
    assert np.array_equal(intkernels.requantize(a, 0.5, 7, 0.25, 9, 16), intref.requantize(a, 0.5, 7, 0.25, 9, 16))
    args = (a, 1e-3, 100, 16, w, s_w, 8, 0.05, 3, 8)
    assert np.array_equal(intkernels.gemm(*args), intref.gemm(*args))
    table = pickle.loads(pickle.dumps(intref.exp_table(1e-3, 16)))
    assert np.array_equal(intkernels.softmax(a, table, 1 / 255, 0, 8), intref.softmax(a, table, 1 / 255, 0, 8))
    sig = pickle.loads(pickle.dumps(intref.sigmoid_table(1e-3, 100, 16, 1 / 65535, 0, 16)))
    assert np.array_equal(intkernels.lut(a, sig), intref.lut(a, sig))


def _requires_qnn(test):
    """Skips without onnxruntime-qnn locally; under CI (the test extra installs it) a missing one fails."""
    import os

    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError:
        if os.environ.get("CI") != "true":
            return pytest.mark.skip(reason='onnxruntime-qnn not installed (pip install "edge-rt[qnn]")')(test)
    return test


@_requires_qnn
def test_intref_matches_htp_emulator_per_op(op_data):
    """Each op of layer 0 of the qwen2 w8a8 prefill graph, cut out as its own QDQ graph and run alone on the emulated
    HTP (CPU fallback disabled) on the input codes intref saw: 8-bit outputs within 3 LSB of intref for
    >= 99.9% of the elements (the issue's target; measured: all within 1 LSB). The 16-bit distribution is
    wider and printed (measured: 16-bit MatMul 94.5% within 3 LSB, a tail to 60; Mul 97.5%, to 19): the
    emulator's 16-bit arithmetic is not ORT's either."""
    import onnx

    from edge_rt.devices.qnn_htp import htp_session
    from edge_rt.quantize.int_ops import agreement, format_agreement, input_codes, output_layout, single_op_model

    graph, ops, vals, ref = op_data("qwen2", "w8a8")[0]
    assert graph == "prefill"
    model = onnx.load(str(op_data.root / "qwen2-w8a8" / "prefill.onnx"))
    pairs = []
    for op, want in zip(ops, ref):
        if op.kind == "requantize" or not op.name.startswith("l0."):      # layer 0 holds every kind of op
            continue
        m, feeds = single_op_model(model, op, input_codes(op, vals))
        got = output_layout(htp_session(m.SerializeToString()).run(None, feeds)[0], op)
        pairs.append((op, got, want))
    stats = agreement(pairs)
    lines = format_agreement(stats)
    print("\nHTP emulator vs intref, qwen2 w8a8 prefill\n" + "\n".join(lines))
    assert {k for k, _ in stats} >= {"gemm", "matmul", "add", "mul", "rmsnorm", "softmax", "sigmoid"}
    for (_, bits), s in stats.items():
        assert s["within_3"] >= (0.999 if bits == 8 else 0.9), lines


def test_single_op_model_keeps_block_weights(op_data):
    """A GEMM with block-wise int4 weights (two DequantizeLinear: the block scales, then the blocked codes)
    cut out as its own graph keeps both (it raised KeyError on the block scales' node before) and, run on
    ORT's CPU EP on intref's input codes, is within 1 LSB of intref."""
    import onnx

    from edge_rt.quantize.int_ops import agreement, input_codes, output_layout, single_op_model
    from edge_rt.quantize.onnx_runner import float_session

    graph, ops, vals, ref = op_data("qwen3", "w4a8")[0]
    model = onnx.load(str(op_data.root / "qwen3-w4a8" / "prefill.onnx"))
    pairs = []
    for op, want in zip(ops, ref):
        if op.kind != "gemm" or not op.name.startswith("l0."):
            continue
        m, feeds = single_op_model(model, op, input_codes(op, vals))
        assert sum(n.op_type == "DequantizeLinear" for n in m.graph.node) == 3      # input, block scales, codes
        got = output_layout(float_session(m.SerializeToString(), 1).run(None, feeds)[0], op)
        pairs.append((op, got, want))
    assert len(pairs) >= 7                          # Q, K, V, O, gate, up, down at least
    for s in agreement(pairs).values():
        assert s["within_1"] == 1.0, s
