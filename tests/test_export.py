"""`edge-rt export` (ONNX QDQ graphs for NPUs) on tiny synthetic models: graph numerics, the export
folder, `edge-rt eval` on it, the HTP emulator check, and bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_rt.quantize.calibrate import DEFAULT_CALIBRATION_TEXT

from helpers import hide_module

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# small enough that an export with its HTP check takes seconds; GQA (4 heads over 2 KV heads)
SMALL = dict(n_vocab=384, n_embd=64, n_ff=128, n_layer=2, n_head=4, n_head_kv=2, weight_type="F16")
CHUNK, CTX = 8, 32


def _cli(*args: str) -> subprocess.CompletedProcess:
    # python_child starts it in the folder holding the edge_rt under test: from the repository root,
    # `python -m` would import the checkout's sources instead of the installed package (as in CI)
    from helpers import python_child

    return python_child(["-m", "edge_rt", *args], capture_output=True, text=True, timeout=600)


def _qnn_available() -> bool:
    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError:
        return False
    return True


def requires_qnn(test):
    """Skips without onnxruntime-qnn locally; under CI (the test extra installs it) a missing one fails."""
    import os

    if _qnn_available() or os.environ.get("CI") == "true":
        return test
    return pytest.mark.skip(reason='onnxruntime-qnn not installed (pip install "edge-rt[qnn]")')(test)


@pytest.fixture(scope="module")
def export_of(synthetic_model, tmp_path_factory):
    """export_of(arch, scheme) -> export folder of a SMALL synthetic model, cached for the module."""
    from edge_rt.quantize.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def make(arch: str = "llama", scheme: str = "w8a8", islands: str = "auto") -> Path:
        if (arch, scheme, islands) not in cache:
            src = synthetic_model(arch=arch, **SMALL)
            out = root / f"{arch}-{scheme}-{islands.replace(',', '+')}"
            export_onnx(src, out, scheme=scheme, chunk=CHUNK, ctx=CTX, max_calib_tokens=256, islands=islands)
            cache[(arch, scheme, islands)] = out
        return cache[(arch, scheme, islands)]

    return make


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_float_graph_matches_numpy_forward(synthetic_model, arch):
    """The graph's rewrites (NEOX row order, rotate_half folded into weights, 1/sqrt(d) in W_q or the
    Q norm, grouped GQA) are exact: the float graph reproduces the NumPy forward pass, chunk by chunk
    through its KV cache (prefill) and token by token (decode)."""
    from edge_rt.quantize.onnx_export import model_dims, open_export_source
    from edge_rt.quantize.onnx_graph import SCHEMES, GraphBuilder
    from edge_rt.quantize.onnx_runner import GraphRunner, float_session
    from edge_rt.quantize.reference_forward import NumpyModel

    src, quantized = open_export_source(synthetic_model(arch=arch, **SMALL))
    assert quantized is None
    d = model_dims(src)
    w = {t.name: t.load() for t in src.tensors}
    ids = list(np.random.default_rng(1).integers(0, SMALL["n_vocab"], 3 * CHUNK))
    ref = NumpyModel(src).logits(ids)
    for T in (CHUNK, 1):
        spec = GraphBuilder(d, w, SCHEMES["w8a8"], T, CTX).build("f")
        got = GraphRunner(float_session(spec.model.SerializeToString()), d, w["token_embd.weight"], T, CTX).window(ids)
        assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max())), (arch, T)


def test_export_folder_and_eval(export_of):
    """The folder holds both graphs, the embeddings and a manifest with every encoding; `edge-rt eval`
    on it (ORT CPU EP) agrees closely with the float model."""
    out = export_of("llama", "w8a8")
    assert sorted(p.name for p in out.iterdir()) == ["decode.onnx", "embeddings.npy", "manifest.json", "prefill.onnx",
                                                     "residual_rotation.npy"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["opset"] == 21 and m["scheme"]["name"] == "w8a8"
    assert m["graphs"]["prefill"]["n_tokens"] == CHUNK and m["graphs"]["decode"]["n_tokens"] == 1
    isl = m["islands"]
    assert isl["trace"][0]["step"] == "base" and len(isl["trace"]) >= 6
    kv = "uint16" if "kv" in isl["extra_16_bit"] else "uint8"
    assert m["graphs"]["prefill"]["inputs"]["past_k.{i}"] == [kv, [2, CTX, 16]] and m["scheme"]["kv_cache"] == kv
    assert m["activations"]["l0.qk"]["dtype"] == "uint16"
    assert m["activations"]["l0.sig"]["dtype"] == ("uint16" if "l0.ffn_act" in isl["extra_16_bit"] else "uint8")
    assert m["residual_rotation"]["file"] == "residual_rotation.npy"
    assert m["weights"]["blk.0.ffn_up.weight"]["dtype"] == "int8"
    assert m["source"]["quantized"] is False
    text = DEFAULT_CALIBRATION_TEXT.read_text()[30000:40000]
    tf = out.parent / "eval.txt"
    tf.write_text(text)
    r = _cli("eval", str(out), "--text", str(tf), "--max-tokens", "256", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["backend"] == "ort_cpu" and res["n_tokens"] == 8 * (CTX - 1)
    assert res["kl_mean"] < 0.05 and res["top1"] > 0.8
    # a GGUF still needs its reference named
    r = _cli("eval", m["source"]["path"], "--text", str(tf))
    assert r.returncode == 1 and "--reference is required" in r.stderr, r.stderr


def test_eval_int_ref_backend_agrees_with_ort(export_of):
    """`eval --backend int_ref` runs the prefill graph on edge_rt's C++ integer kernels: its logits give
    ORT's QDQ reference's top-1 on held-out text (block-wise int4 weights included), and its quality
    against the float model is ORT's within noise."""
    from edge_rt.quantize.evaluate import Reference, compare
    from edge_rt.quantize.onnx_eval import _Logits, backend_session, evaluate_export
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    text = DEFAULT_CALIBRATION_TEXT.read_text()[30000:40000]
    for scheme in ("w8a8", "w4a8"):
        out = export_of("llama", scheme)
        f = ExportFolder(out)
        ids = f.tokenizer().tokenize(text, add_special=False)
        windows = [ids[i:i + CTX] for i in range(0, 4 * CTX, CTX)]
        ort = Reference.compute(_Logits(f.runner(backend_session(f, "qdq_ref"), "prefill").window), windows)
        agree = compare(_Logits(f.runner(backend_session(f, "int_ref"), "prefill").window), ort)
        assert agree["top1"] >= 0.98 and agree["kl_mean"] < 1e-3, (scheme, agree)
    res = evaluate_export(out, text, max_tokens=2 * CTX, backend="int_ref")
    ref = evaluate_export(out, text, max_tokens=2 * CTX, backend="qdq_ref")
    assert res["backend"] == "int_ref" and abs(res["kl_mean"] - ref["kl_mean"]) < 0.2 * ref["kl_mean"] + 1e-4


def test_w4a8_and_w8a16_layouts(export_of):
    """w4a8: int4 projections, int8 lm_head; w8a16: every activation and the cache 16-bit. Evaluated
    with QDQ semantics (qdq_ref), w8a16 is closer to the float model than w4a8."""
    from edge_rt.quantize.onnx_eval import evaluate_export

    m4 = json.loads((export_of("llama", "w4a8") / "manifest.json").read_text())
    assert m4["weights"]["blk.0.ffn_up.weight"]["dtype"] == "int4"
    assert m4["weights"]["blk.0.ffn_up.weight"]["block"] == 16          # block-wise (LPBQ) by default
    assert m4["weights"]["output.weight"]["dtype"] == "int8"
    m16 = json.loads((export_of("llama", "w8a16") / "manifest.json").read_text())
    assert {a["dtype"] for a in m16["activations"].values()} == {"uint16"}
    text = DEFAULT_CALIBRATION_TEXT.read_text()[30000:40000]
    w4 = evaluate_export(export_of("llama", "w4a8"), text, max_tokens=128, backend="qdq_ref")
    w16 = evaluate_export(export_of("llama", "w8a16"), text, max_tokens=128, backend="qdq_ref")
    assert w16["kl_mean"] < w4["kl_mean"] < 0.2


def test_activation_widths_follow_the_scheme(synthetic_model):
    """Projection outputs are 8 or 16-bit activations, never the weights' width (a w4 scheme once gave
    them 4-bit encodings), and the 16-bit islands are 16-bit in every scheme."""
    from edge_rt.quantize.onnx_export import model_dims, open_export_source
    from edge_rt.quantize.onnx_graph import SCHEMES, GraphBuilder

    src, _ = open_export_source(synthetic_model(**SMALL))
    w = {t.name: t.load() for t in src.tensors}
    for scheme, a in (("w4a8", 8), ("w8a8", 8), ("w4a16", 16)):
        pts = GraphBuilder(model_dims(src), w, SCHEMES[scheme], 4, 8).build("f").points
        assert set(pts.values()) == {8, 16} if a == 8 else {16}, scheme
        assert pts["l0.gate"] == pts["l0.q"] == pts["l0.cache_k"] == a
        assert pts["l0.attn_out"] == pts["l0.ffn_out"] == pts["l0.qk"] == pts["l0.probs"] == pts["logits_q"] == 16


def test_gptq_rows_lowers_output_error():
    from edge_rt.quantize.onnx_graph import quantize_weight
    from edge_rt.quantize.onnx_ranges import clip_search, gptq_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)) @ rng.standard_normal((64, 64))      # correlated inputs
    h = x.T @ x
    w = rng.standard_normal((32, 64)).astype(np.float32)

    def err(q, s):
        e = w - q * s[:, None]
        return float(np.einsum("nk,kl,nl->", e, h, e))

    rtn = err(*quantize_weight(w, 4))
    clip = clip_search(w, 4, h)
    assert err(*quantize_weight(w, 4, clip)) <= rtn
    q, s = gptq_rows(w, 4, h, clip)
    assert np.abs(q).max() <= 7 and err(q, s) < 0.8 * rtn


def test_block_weights_lie_on_a_4_bit_lattice():
    """Block-wise int4 (onnx_blocks.py): the int8 codes the spec runs are s * q with q in [-8, 7] (-8 only
    where s < 16, so s * q >= -127) and s in [1, 16] per block; S keeps 15 significant bits; rounding to
    nearest has less error than per-channel int4 on rows whose blocks differ in scale, and GPTQ (block
    scales picked during the walk) lowers the output error, on the same lattice."""
    from edge_rt.quantize.onnx_blocks import block_scales, round_blocks, split
    from edge_rt.quantize.onnx_graph import quantize_weight

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 128)) * np.repeat(rng.uniform(0.05, 1.0, (32, 4)), 32, axis=1)).astype(np.float32)
    codes, row, s = round_blocks(w, 32)
    assert codes.dtype == np.int8 and s.shape == (32, 4) and s.min() >= 1 and s.max() <= 16
    tall_row, tall_s = block_scales(np.tile(w, (10, 1)), 32)             # 320 rows: searched in two passes
    assert np.array_equal(tall_row, np.tile(row, 10)) and np.array_equal(tall_s, np.tile(s, (10, 1)))

    def on_lattice(codes, s):
        q = split(codes, s, 32)
        assert q.max() <= 7 and q.min() >= -8 and codes.min() >= -127 and (q == -8).any()
        assert np.array_equal(q.astype(np.int16) * np.repeat(s, 32, axis=1), codes)

    on_lattice(codes, s)
    m, _ = np.frexp(row.astype(np.float64))
    assert np.all(m * 2 ** 15 == np.round(m * 2 ** 15))
    err_block = np.linalg.norm(w - codes * row[:, None])
    qc, sc = quantize_weight(w, 4)
    assert err_block < 0.7 * np.linalg.norm(w - qc * sc[:, None])
    x = rng.standard_normal((512, 128)) @ rng.standard_normal((128, 128))
    h = x.T @ x

    def out_err(c, r):
        e = w - c * r[:, None]
        return float(np.einsum("nk,kl,nl->", e, h, e))

    g_codes, g_row, g_s = round_blocks(w, 32, h)
    on_lattice(g_codes, g_s)
    assert g_s.min() >= 1 and g_s.max() <= 16
    assert out_err(g_codes, g_row) < 0.8 * out_err(codes, row)


def test_block_weight_graph_is_the_int8_weight(export_of):
    """ONNX Runtime's two DequantizeLinear (block scales, then the blocked int4) give exactly the weight the
    integer spec runs (int_ops.weight_codes: int8 codes s * q under S), in float32."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from edge_rt.quantize.int_ops import weight_codes

    model = onnx.load(str(export_of("llama", "w4a8") / "prefill.onnx"))
    name = "blk.1.ffn_down.weight"
    codes, scale, bits = weight_codes(model, name)
    assert bits == 8 and -120 <= codes.min() and codes.max() <= 112
    assert (codes < -112).any()         # int4 code -8 (s < 16): the graph below holds it, so does the HTP's
    keep = {name, name + ".steps"}
    nodes = [n for n in model.graph.node if n.output[0] in keep]
    inits = [i for i in model.graph.initializer if i.name.startswith(name + ".")]
    g = helper.make_graph(nodes, "w", [], [helper.make_tensor_value_info(name, 1, None)], inits)
    m = helper.make_model(g, opset_imports=model.opset_import)
    m.ir_version = model.ir_version
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    np.testing.assert_array_equal(got, (codes.astype(np.float32) * scale[:, None]).T)


@pytest.mark.slow
def test_range_search_beats_minmax_on_trained_model(tmp_path):
    """On the trained dense model at w4a8 with per-channel int4, SmoothQuant + clip search + GPTQ give a
    lower KL against the float model than min/max with round-to-nearest (measured with QDQ semantics);
    block-wise int4 beats per-channel int4 at min/max."""
    from edge_rt.quantize.onnx_eval import evaluate_export
    from edge_rt.quantize.onnx_export import export_onnx

    master = Path(__file__).resolve().parent.parent / "models" / "tiny-code-dense-f16.gguf"
    text = (Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "quant_eval.txt").read_text()[:40000]
    kl = {}
    for method, block in (("minmax", 0), ("search", 0), ("minmax", 32)):
        out = tmp_path / f"{method}-{block}"
        export_onnx(master, out, scheme="w4a8", chunk=32, ctx=64, max_calib_tokens=512, range_method=method,
                    w4_block=block)
        kl[method, block] = evaluate_export(out, text, max_tokens=512, backend="qdq_ref")["kl_mean"]
    assert kl["search", 0] < 0.8 * kl["minmax", 0], kl
    # block-wise int4 (QNN's LPBQ, blocks of 32) rounded to nearest beats per-channel int4 rounded so
    assert kl["minmax", 32] < 0.8 * kl["minmax", 0], kl


@requires_qnn
@pytest.mark.parametrize("arch,scheme,islands", [
    ("llama", "w8a8", "auto"), ("llama", "w4a8", "auto"), ("llama", "w8a16", "auto"), ("qwen2", "w8a8", "auto"),
    ("qwen3", "w4a8", "auto"),
    # every island group at once, and the FFN's alone (what SmolLM2's search chooses)
    ("llama", "w8a8", "attn_in,rope,ffn_in,ffn_act,kv"), ("qwen3", "w4a8", "ffn_in,ffn_act")])
def test_check_htp_all_nodes_on_npu(export_of, arch, scheme, islands):
    """Every graph loads on the emulated HTP with CPU fallback disabled, and agrees with ORT's QDQ reference."""
    from edge_rt.quantize.onnx_check import check_htp

    rep = check_htp(export_of(arch, scheme, islands), n_decode=2)
    for g in ("prefill", "decode"):
        c = rep["graphs"][g]
        assert c["all_nodes_on_htp"]
        assert c["cache_codes_vs_cpu_ep"]["within_3_lsb"] > 0.95, (g, c)   # random weights: a wide tail
        assert c["top1_vs_cpu_ep"] >= 0.75, (g, c)


@requires_qnn
def test_check_htp_names_refused_nodes(tmp_path):
    """A node the HTP does not take (RMSNorm on an 8-bit input) is named in the error."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_rt.devices.qnn_htp import NotNpuLegalError, htp_session

    def c(name, a):
        return numpy_helper.from_array(np.asarray(a), name)

    inits = [c("s", np.float32(0.05)), c("z", np.uint8(128)), c("gq", np.full(16, 65535, np.uint16)),
             c("gs", np.float32(1 / 65535)), c("gz", np.uint16(0))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["g"]),
             helper.make_node("SimplifiedLayerNormalization", ["xd", "g"], ["y0"], name="the_norm", axis=-1),
             helper.make_node("QuantizeLinear", ["y0", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    path = tmp_path / "bad.onnx"
    onnx.save(m, str(path))
    with pytest.raises(NotNpuLegalError, match="the_norm") as ei:
        htp_session(str(path))
    assert ei.value.nodes == ["the_norm (SimplifiedLayerNormalization)"]


def test_quantized_source_is_dequantized_and_said(synthetic_model, tmp_path):
    from edge_rt.quantize.onnx_export import export_onnx

    src = synthetic_model(**{**SMALL, "weight_type": "Q8_0"})
    r = export_onnx(src, tmp_path / "out", chunk=CHUNK, ctx=CTX, max_calib_tokens=64)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["source"]["quantized"] is True and m["source"]["quantized_type"] == "Q8_0"
    assert any("Q8_0" in n for n in r.notes)


def test_bad_input(synthetic_model, tmp_path, monkeypatch):
    src = synthetic_model(**SMALL)
    out = tmp_path / "out"
    # too little calibration text: the minimum is named, and nothing is left behind
    short = tmp_path / "short.txt"
    short.write_text("x = 1\n")
    r = _cli("export", str(src), str(out), "--chunk", "8", "--ctx", "32", "--calib", str(short))
    assert r.returncode == 1 and "at least 32 are needed" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [short]
    # an existing OUT_DIR needs --force
    out.mkdir()
    (out / "keep").write_text("x")
    r = _cli("export", str(src), str(out), "--chunk", "8", "--ctx", "32")
    assert r.returncode == 1 and "--force" in r.stderr
    assert (out / "keep").exists()
    # an unknown island names the valid ones, before any work
    r = _cli("export", str(src), str(tmp_path / "isl"), "--islands", "ffn_in,ffn")
    assert r.returncode == 1 and "unknown island 'ffn'" in r.stderr and "ffn_act" in r.stderr, r.stderr
    assert not (tmp_path / "isl").exists()
    # a block size the HTP was not seen to take names the ones offered
    r = _cli("export", str(src), str(tmp_path / "blk"), "--scheme", "w4a8", "--w4-block", "48")
    assert r.returncode == 1 and "--w4-block 48: expected one of 0, 16, 32, 64" in r.stderr, r.stderr
    assert not (tmp_path / "blk").exists()
    # MoE is refused by name
    moe = synthetic_model(**{**SMALL, "n_expert": 4, "n_expert_used": 2})
    r = _cli("export", str(moe), str(tmp_path / "moe"))
    assert r.returncode == 1 and "Mixture-of-Experts" in r.stderr, r.stderr
    # hostile input is refused as `quantize` refuses it: a truncated GGUF, and a file that is not one
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(Path(src).read_bytes()[:5000])
    for f in (bad, short):
        r = _cli("export", str(f), str(tmp_path / "x"))
        assert r.returncode == 1 and r.stderr.startswith("edge-rt: error:") and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "x").exists()
    # --check htp without the extra names it
    from edge_rt.quantize.onnx_export import export_onnx

    hide_module(monkeypatch, "onnxruntime_qnn")
    with pytest.raises(ImportError, match=r'pip install "edge-rt\[qnn\]"'):
        export_onnx(src, tmp_path / "q", check="htp")
    assert not (tmp_path / "q").exists()


def test_failed_export_leaves_no_folder(synthetic_model, tmp_path, monkeypatch):
    """A failure after the staging folder exists (here: writing the manifest) removes it."""
    from edge_rt.quantize import onnx_export

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(onnx_export, "_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        onnx_export.export_onnx(synthetic_model(**SMALL), tmp_path / "out", chunk=CHUNK, ctx=CTX, max_calib_tokens=64)
    assert list(tmp_path.iterdir()) == []


def _codes_of(folder: Path, names: list, ids: list) -> dict:
    """Integer codes of the named Q outputs of the prefill graph (ORT CPU EP, QDQ semantics), first chunk."""
    import onnx
    from onnx import TensorProto, helper

    from edge_rt.quantize.onnx_export_folder import ExportFolder
    from edge_rt.quantize.onnx_runner import float_session

    m = onnx.load(str(folder / "prefill.onnx"))
    types = {n.output[0]: n.input[2] for n in m.graph.node if n.op_type == "QuantizeLinear"}
    inits = {i.name: i.data_type for i in m.graph.initializer}
    m.graph.output.extend(helper.make_tensor_value_info(n, inits[types[n]], None) for n in names)
    f = ExportFolder(folder)
    got = {}
    f.runner(float_session(m.SerializeToString(), optimize=False), "prefill").window(
        ids[:CHUNK], on_outputs=lambda r: got.update({n: r[n] for n in names}))
    assert all(inits[types[n]] in (TensorProto.UINT8, TensorProto.UINT16) for n in names)
    return got


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8", "w8a16"])
def test_intref_matches_qdq_reference_per_op(export_of, scheme):
    """docs/integer_spec.md's GEMM, Add and Mul (edge_rt.quantize.intref), fed the codes ORT computes
    for an export, reproduce ORT's output codes within 1 LSB (exactly for almost all elements)."""
    import onnx

    from edge_rt.quantize import intref
    from edge_rt.quantize.int_ops import weight_codes
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    out = export_of("llama", scheme)
    f = ExportFolder(out)
    acts = f.manifest["activations"]
    A = f.manifest["scheme"]["activation_bits"]
    W = f.manifest["scheme"]["weight_bits"]
    model = onnx.load(str(out / "prefill.onnx"))
    c = _codes_of(out, ["l0.ffn_norm.q", "l0.gate.q", "l0.sig.q", "l0.silu.q", "l0.resid1.q", "l0.attn_out.q",
                        "l0.resid2.q", "l0.ffn_out.q"], f.sample_ids())

    def enc(p):
        e = acts[p]
        return e["scale"], e["zero_point"], 16 if e["dtype"] == "uint16" else 8

    def agree(mine, theirs):
        d = np.abs(mine.astype(np.int64) - theirs.astype(np.int64))
        assert d.max() <= 1 and (d == 0).mean() > 0.99, (d.max(), (d == 0).mean())

    w, s_w, w_bits = weight_codes(model, "blk.0.ffn_gate.weight")     # (N, K); w4: block-wise, as int8
    assert w_bits == (8 if W == 8 or f.manifest["weights"]["blk.0.ffn_gate.weight"].get("block") else 4)
    sa, za, ba = enc("l0.ffn_norm")
    sy, zy, by = enc("l0.gate")
    agree(intref.gemm(c["l0.ffn_norm.q"], sa, za, ba, w, s_w, w_bits, sy, zy, by), c["l0.gate.q"])
    assert ba == A
    agree(intref.mul(c["l0.gate.q"], *enc("l0.gate")[:2], c["l0.sig.q"], *enc("l0.sig")[:2], *enc("l0.silu")),
          c["l0.silu.q"])
    agree(intref.add(c["l0.resid1.q"], *enc("l0.resid1"), c["l0.ffn_out.q"], *enc("l0.ffn_out"),
                     *enc("l0.resid2")), c["l0.resid2.q"])


def test_intref_accumulator_widths():
    """A16 x W8 at K = 4096 overflows int32 (the spec's table); intref's GEMM stays exact (int64 path,
    27-bit multiplier) against Python integers, at the extremes of the code ranges."""
    from edge_rt.quantize import intref

    k = 4096
    assert intref.gemm_bound(k, 16, 8) > 2 ** 31 > intref.gemm_bound(k, 8, 8)
    assert intref.precision_for(intref.gemm_bound(k, 16, 8)) == 27
    rng = np.random.default_rng(0)
    a = np.where(rng.random((3, k)) < 0.5, 65535, 0).astype(np.uint16)
    a[0] = 65535
    w = np.where(rng.random((2, k)) < 0.5, 127, -127).astype(np.int8)
    w[0] = 127
    acc = intref.accumulate(a, 0, w, intref.gemm_bound(k, 16, 8))
    exact = [[sum(int(x) * int(y) for x, y in zip(a[t], w[n])) for n in range(2)] for t in range(3)]
    assert acc.tolist() == exact and acc[0, 0] == 65535 * 127 * k
    s_y = 65535 * 127 * k * 1e-3 / 65535      # output range covers the largest accumulator
    y = intref.gemm(a, 1e-3, 0, 16, w, np.array([1.0, 1.0], np.float32), 8, s_y, 0, 16)
    want = np.clip(np.floor(np.array(exact, dtype=object) * 1e-3 / s_y + 0.5).astype(np.int64), 0, 65535)
    assert np.abs(y.astype(np.int64) - want).max() <= 1


@requires_qnn
def test_target_htp_writes_loadable_context_binaries(synthetic_model, tmp_path):
    """--target htp: each graph's ahead-of-time compiled HTP context (an EPContext model + .bin) is
    written, and it loads and runs on the emulator like the graph it came from."""
    from edge_rt.devices.qnn_htp import htp_session
    from edge_rt.quantize.onnx_export import export_onnx
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    out = tmp_path / "out"
    export_onnx(synthetic_model(**SMALL), out, chunk=CHUNK, ctx=CTX, max_calib_tokens=64, target="htp",
                range_method="minmax")
    m = json.loads((out / "manifest.json").read_text())
    f = ExportFolder(out)
    ids = f.sample_ids()[:2]
    for g in ("prefill", "decode"):
        ctx_model = out / m["graphs"][g]["context_binary"]
        assert ctx_model.is_file() and (out / f"{g}.sm8650_ctx_qnn.bin").is_file()
        if g == "decode":
            a = f.runner(htp_session(str(ctx_model)), g).window(ids)
            b = f.runner(htp_session(str(out / "decode.onnx")), g).window(ids)
            assert np.array_equal(a, b)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_residual_rotation_keeps_the_function(synthetic_model, arch):
    """Rotating the residual stream (norm weights folded, readers W Q, writers Q^T W, embeddings E Q,
    a tied lm_head split off first) leaves the float graph's logits those of the NumPy forward pass."""
    from edge_rt.quantize.onnx_export import model_dims, open_export_source
    from edge_rt.quantize.onnx_graph import SCHEMES, GraphBuilder
    from edge_rt.quantize.onnx_runner import GraphRunner, float_session
    from edge_rt.quantize.reference_forward import NumpyModel
    from edge_rt.quantize.residual_rotation import rotate_residual

    src, _ = open_export_source(synthetic_model(arch=arch, **SMALL))
    d = model_dims(src)
    w = {t.name: t.load() for t in src.tensors}
    emb = w["token_embd.weight"].copy()
    q = rotate_residual(w, d)
    assert np.abs(q @ q.T - np.eye(d.n_embd)).max() < 1e-5
    assert np.abs(w["token_embd.weight"] - emb @ q).max() < 1e-4
    assert all(np.all(w[n] == 1) for n in w if n.endswith("norm.weight") and "attn_q_norm" not in n
               and "attn_k_norm" not in n)
    ids = list(np.random.default_rng(2).integers(0, SMALL["n_vocab"], 2 * CHUNK))
    ref = NumpyModel(src).logits(ids)
    spec = GraphBuilder(d, w, SCHEMES["w8a8"], CHUNK, CTX).build("f")
    got = GraphRunner(float_session(spec.model.SerializeToString()), d, w["token_embd.weight"], CHUNK, CTX).window(ids)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max())), arch


def test_export_without_rotation_and_with_listed_islands(synthetic_model, tmp_path):
    """--no-rotate writes no rotation (embeddings.npy holds the model's rows); --islands LIST is taken as
    given, without a search."""
    from edge_rt.quantize.onnx_export import export_onnx
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    src = synthetic_model(**SMALL)
    export_onnx(src, tmp_path / "out", chunk=CHUNK, ctx=CTX, max_calib_tokens=64, rotate=False, islands="kv,l1.ffn_act")
    f = ExportFolder(tmp_path / "out")
    assert f.rotation is None and not (tmp_path / "out" / "residual_rotation.npy").exists()
    m = f.manifest
    assert m["islands"]["extra_16_bit"] == ["kv", "l1.ffn_act"] and m["islands"]["trace"] == []
    assert m["scheme"]["kv_cache"] == "uint16" and m["activations"]["l1.sig"]["dtype"] == "uint16"
    assert m["activations"]["l0.sig"]["dtype"] == "uint8"
    from edge_rt.quantize.onnx_export import open_export_source

    emb = {t.name: t for t in open_export_source(src)[0].tensors}["token_embd.weight"].load()
    assert np.abs(np.asarray(f.embeddings, np.float32) - emb).max() < 1e-2


def test_residual_rotation_spreads_a_massive_channel():
    """One channel 1000x the others (SmolLM2's residual stream) ends up spread: the largest entry of the
    rotated rows is at least 5x smaller (a random rotation: about 4 standard deviations of 1000 / 24),
    their norms unchanged."""
    from edge_rt.quantize.residual_rotation import random_orthogonal

    x = np.random.default_rng(0).standard_normal((64, 576))
    x[:, 7] = 1000.0
    q = random_orthogonal(576)
    y = x @ q
    assert np.abs(y).max() * 5 < np.abs(x).max()
    assert np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1))
    assert np.array_equal(q, random_orthogonal(576))           # deterministic: an export can be reproduced


def test_islands_promote_their_group_and_keep_qnn_widths(synthetic_model):
    """An island group makes its points 16-bit in every layer named, and a projection's input and output
    keep one width (QNN's per-channel MatMul rule); ``kv`` makes the cache uint16."""
    from edge_rt.quantize.onnx_export import model_dims, open_export_source
    from edge_rt.quantize.onnx_graph import SCHEMES, GraphBuilder
    from edge_rt.quantize.onnx_islands import parse_islands

    src, _ = open_export_source(synthetic_model(**SMALL))
    d = model_dims(src)
    w = {t.name: t.load() for t in src.tensors}
    isl = parse_islands("ffn_in,l1.rope,kv", d.n_layer)
    assert isl == {"l0.ffn_in", "l1.ffn_in", "l1.rope", "kv"}
    pts = GraphBuilder(d, w, SCHEMES["w8a8"], 4, 8, islands=isl).build("f").points
    for il in range(2):
        assert pts[f"l{il}.ffn_norm"] == pts[f"l{il}.gate"] == pts[f"l{il}.up"] == 16
        assert pts[f"l{il}.sig"] == pts[f"l{il}.silu"] == 8
        assert pts[f"l{il}.attn_norm"] == pts[f"l{il}.q"] == pts[f"l{il}.k"] == pts[f"l{il}.v"] == 8
        assert pts[f"l{il}.cache_k"] == pts[f"l{il}.cache_v"] == 16
    assert pts["l1.q_cos"] == pts["l1.q_rope"] == 16 and pts["l0.q_cos"] == pts["l0.q_rope"] == 8
    from edge_rt.errors import InvalidArgumentError

    for bad in ("ffn", "l2.ffn_in", "lx.rope"):
        with pytest.raises(InvalidArgumentError, match="unknown island"):
            parse_islands(bad, d.n_layer)


def test_island_search_keeps_groups_that_remove_error():
    """Groups are tried in the order of the error each removes alone; one is kept when it removes >= 10%
    of the current KL or >= MIN_GAIN_KL; the search stops at the KL target; groups that help nothing
    alone are skipped."""
    from edge_rt.quantize.onnx_graph import Dims
    from edge_rt.quantize.onnx_islands import KL_TARGET, search_islands

    d = Dims("llama", 2, 64, 4, 2, 16, 16, 384, 1e-5, 1e4, 1.0, False)
    # additive error per group, plus an error no group touches (weights)
    cost = {"attn_in": 0.004, "rope": 0.0005, "ffn_in": 0.03, "ffn_act": 0.01, "kv": 0.0}
    rest = 0.002
    seen = []

    def kl(islands):
        groups = {i.split(".")[-1] if i != "kv" else "kv" for i in islands}
        seen.append(frozenset(groups))
        return rest + sum(c for g, c in cost.items() if g not in groups)

    r = search_islands(d, kl)
    assert r.groups == ["ffn_in", "ffn_act"]                   # 0.0465 -> 0.0165 -> 0.0065 <= target
    assert r.trace[-1]["kl"] <= KL_TARGET
    assert r.chosen == {"l0.ffn_in", "l1.ffn_in", "l0.ffn_act", "l1.ffn_act"}
    assert seen[0] == frozenset() and len(seen) == 1 + 5 + 1   # base, each alone, one cumulative add
    assert [t["step"] for t in r.trace] == ["base"] + ["alone"] * 5 + ["add"]
    # the error is elsewhere (4-bit weights): no group removes 10% of it or MIN_GAIN_KL, none is kept
    cost, rest = {"attn_in": 0.001, "rope": 0.0, "ffn_in": 0.003, "ffn_act": 0.001, "kv": 0.0}, 0.05
    assert search_islands(d, kl).groups == []
    # SmolLM2 at W4A8, blocks of 16: the FFN groups remove 20% and 8% of the KL, both more than
    # MIN_GAIN_KL: both kept (the relative rule alone dropped the second)
    cost, rest = {"attn_in": -0.0004, "rope": 0.0015, "ffn_in": 0.018, "ffn_act": 0.0076, "kv": 0.0013}, 0.065
    assert search_islands(d, kl).groups == ["ffn_in", "ffn_act"]


def test_target_size_picks_int8_layers_under_the_size(synthetic_model, tmp_path):
    """--target-size between the all-int4 and all-int8 graphs: some layers int8, the rest int4, prefill.onnx
    within the size, the measurements in the manifest; below the all-int4 graph it names the minimum;
    with --ranges minmax it names --ranges search."""
    from edge_rt.errors import InvalidArgumentError
    from edge_rt.quantize.onnx_export import export_onnx

    src = synthetic_model(**{**SMALL, "n_layer": 3})
    sizes = {}
    for scheme in ("w4a8", "w8a8"):
        export_onnx(src, tmp_path / scheme, scheme=scheme, chunk=CHUNK, ctx=CTX, max_calib_tokens=64, islands="none")
        sizes[scheme] = (tmp_path / scheme / "prefill.onnx").stat().st_size
    target = (sizes["w4a8"] + sizes["w8a8"]) // 2 + 4096
    r = export_onnx(src, tmp_path / "mixed", scheme="w4a8", chunk=CHUNK, ctx=CTX, max_calib_tokens=64,
                    islands="none", target_size=target)
    m = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    wb = m["weight_bits"]
    assert sorted(set(wb["layers"].values())) == [4, 8], wb["layers"]
    size = (tmp_path / "mixed" / "prefill.onnx").stat().st_size
    assert sizes["w4a8"] < size <= target and abs(size - wb["graph_bytes_predicted"]) < 1024
    for il, bits in wb["layers"].items():
        assert m["weights"][f"blk.{il}.ffn_down.weight"]["dtype"] == f"int{bits}"
        assert m["weights"][f"blk.{il}.attn_q_rot.weight"]["dtype"] == f"int{bits}"
    assert set(wb["measured_kl"]) == {"all_int8"} | {f"{k}_int4" for k in
                                                       ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                                        "ffn_up", "ffn_down")}
    assert any("--target-size" in n for n in r.notes)
    # room for every layer at int8: all int8, nothing to measure
    export_onnx(src, tmp_path / "roomy", scheme="w4a8", chunk=CHUNK, ctx=CTX, max_calib_tokens=64, islands="none",
                target_size=sizes["w8a8"] + 10**6)
    roomy = json.loads((tmp_path / "roomy" / "manifest.json").read_text())["weight_bits"]
    assert set(roomy["layers"].values()) == {8} and roomy["measured_kl"] is None
    with pytest.raises(InvalidArgumentError, match=r"smallest graph, every layer int4: [0-9,]+ bytes") as e:
        export_onnx(src, tmp_path / "small", scheme="w4a8", chunk=CHUNK, ctx=CTX, max_calib_tokens=64,
                    target_size=sizes["w4a8"] // 2)
    minimum = int(str(e.value).split(": ")[-1].split()[0].replace(",", ""))
    assert 0 <= minimum - sizes["w4a8"] <= 8192
    with pytest.raises(InvalidArgumentError, match="--ranges search"):
        export_onnx(src, tmp_path / "mm", chunk=CHUNK, ctx=CTX, max_calib_tokens=64, target_size=target,
                    range_method="minmax")
    assert not (tmp_path / "small").exists() and not (tmp_path / "mm").exists()
