"""Prefill on an NPU backend, decode on the CPU (``load(npu=..., npu_model=...)``): the KV hand-off
against the all-CPU run on the trained dense model, the engine's write_kv/commit_kv bounds, every
error of a missing or mismatched export or backend, and the ``npu`` memory class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_rt
from edge_rt.errors import BackendUnavailableError, InvalidArgumentError, ModelIOError, OutOfMemoryError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_export import requires_qnn  # noqa: E402  (same skip rule as the export's HTP tests)

from helpers import hide_module  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DENSE = ROOT / "models" / "tiny-code-dense-f16.gguf"
CHUNK, CTX, THREADS = 32, 128, 2


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A W8A8 export of the trained dense model (min/max ranges: seconds, not minutes)."""
    from edge_rt.quantize.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("npu") / "dense-w8a8"
    export_onnx(DENSE, out, scheme="w8a8", chunk=CHUNK, ctx=CTX, max_calib_tokens=256, range_method="minmax")
    return out


@pytest.fixture(scope="module")
def cpu_model():
    with edge_rt.load(DENSE, threads=THREADS, n_ctx=CTX) as m:
        yield m


def _prompts(model, lengths):
    """Held-out prompts (not the calibration text) of the given lengths."""
    ids = model.tokenize((ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()[:20000], add_special=False)
    out, pos = [], 0
    for n in lengths:
        out.append(ids[pos:pos + n])
        pos += n
    return out


def _dequantized_cache(stage, il, n):
    """The graph's own cache codes of layer il, positions [0, n), in the engine's layout (float32)."""
    k = stage._rows(stage.cache[f"past_k.{il}"][:, :n], il, 0, n)
    v = stage._rows(stage.cache[f"past_v.{il}"][:, :n], il, 1, n)
    return k, v


def test_handoff_matches_all_cpu(export, cpu_model):
    """cpu-ep prefill (chunks of 32: a short prompt, exact chunks, padded last chunks) then CPU decode
    gives the all-CPU run's first token, and the engine's cache holds the graph's K/V (exactly, up to
    fp16) close to the K/V the CPU computes itself."""
    with edge_rt.load(DENSE, threads=THREADS, npu="cpu-ep", npu_model=export) as npu:
        assert npu.n_ctx == CTX                      # defaulted to the export's context
        first_equal = 0
        prompts = _prompts(cpu_model, [5, 33, 64, 70, 97, 12, 40, 81])
        for p in prompts:
            ref = list(cpu_model.generate_tokens(p, max_tokens=4, temperature=0))
            got = list(npu.generate_tokens(p, max_tokens=4, temperature=0))
            first_equal += got[0] == ref[0]
        assert first_equal >= len(prompts) - 1, first_equal
        p = prompts[4]
        npu.reset()
        npu._eval_chunks(p)                          # NPU: [0, n-1), CPU: the last token
        cpu_model.reset()
        cpu_model._eval_chunks(p)
        stage = npu.npu_stage
        for il in range(stage.d.n_layer):
            k, v = npu._engine.read_kv(il, 0, len(p) - 1)
            gk, gv = _dequantized_cache(stage, il, len(p) - 1)
            np.testing.assert_array_equal(k, gk.astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(v, gv.astype(np.float16).astype(np.float32))
            ck, cv = cpu_model._engine.read_kv(il, 0, len(p) - 1)
            for ours, theirs in ((k, ck), (v, cv)):
                assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99, il
                assert np.abs(ours - theirs).mean() < 0.05 * np.abs(theirs).mean(), il


def test_reference_prompt_kv_is_the_engines_cache(cpu_model):
    """NumpyModel.prompt_kv (the float floor of benchmarks/npu_tier.py --float-prompts) gives each
    layer's K/V in the engine's layout: RoPE'd K in llama's pair order, heads contiguous."""
    from edge_rt.quantize.gguf_io import read_gguf
    from edge_rt.quantize.reference_forward import NumpyModel

    p = _prompts(cpu_model, [37])[0]
    ref = NumpyModel(read_gguf(DENSE))
    kv = ref.prompt_kv(p)
    cpu_model.reset()
    cpu_model._eval_chunks(p)
    assert len(kv) == ref.n_layer
    for il, (k, v) in enumerate(kv):
        ck, cv = cpu_model._engine.read_kv(il, 0, len(p))
        for ours, theirs in ((k, ck), (v, cv)):
            assert ours.shape == theirs.shape == (len(p), cpu_model._engine.kv_dim)
            assert np.abs(ours - theirs).mean() < 0.005 * np.abs(theirs).mean(), il   # 2e-4 measured


def test_next_prompt_reuses_the_shared_prefix(export, cpu_model):
    """A chat-like second prompt runs only what the NPU graph's cache does not hold: the tokens
    after the first prompt's NPU part (the CPU-decoded reply included), never the shared prefix."""
    p, extra = _prompts(cpu_model, [40, 20])
    with edge_rt.load(DENSE, threads=THREADS, npu="cpu-ep", npu_model=export) as npu:
        t = npu.npu_stage.times
        reply = list(npu.generate_tokens(p, max_tokens=6, temperature=0))
        assert t.tokens == len(p) - 1
        full = p + reply + extra
        got = list(npu.generate_tokens(full, max_tokens=3, temperature=0))
        assert t.tokens == len(full) - 1            # (len(p) - 1) before + the rest now
        assert got[0] == list(cpu_model.generate_tokens(full, max_tokens=1, temperature=0))[0]
        info = npu.info()["npu"]
        assert info["backend"] == "cpu-ep" and info["stand_in"] and "stands in for an NPU" in info["note"]
        assert npu.logits(p).shape == (len(p), npu.n_vocab)   # logits() stays on the CPU


def test_engine_write_kv_bounds(tiny_model):
    eng = edge_rt.load(tiny_model, threads=1, n_ctx=16)._engine
    kv = eng.kv_dim
    rows = np.ones((4, kv), np.float32)
    with pytest.raises(InvalidArgumentError, match="layer 9 outside"):
        eng.write_kv(9, 0, rows, rows)
    with pytest.raises(InvalidArgumentError, match="start at or before the 0 rows"):
        eng.write_kv(0, 2, rows, rows)                 # a gap
    with pytest.raises(InvalidArgumentError, match="n_ctx 16"):
        eng.write_kv(0, 14, rows, rows)                # past n_ctx
    with pytest.raises(InvalidArgumentError, match=r"\(n, %d\)" % kv):
        eng.write_kv(0, 0, rows[:, :-1], rows)
    eng.write_kv(0, 0, rows, 2 * rows)
    with pytest.raises(InvalidArgumentError, match="layer 1 holds 0 rows"):
        eng.commit_kv(4)
    eng.write_kv(1, 0, rows, 2 * rows)
    eng.commit_kv(4)
    assert eng.n_past == 4
    k, v = eng.read_kv(1, 0, 4)
    assert np.all(k == 1) and np.all(v == 2)
    with pytest.raises(InvalidArgumentError, match="positions"):
        eng.read_kv(0, 2, 3)
    eng.eval(np.array([1], np.int32), False)       # decode continues after the handed-off rows
    assert eng.n_past == 5
    eng.truncate(2)
    with pytest.raises(InvalidArgumentError, match="start at or before the 2 rows"):
        eng.write_kv(0, 3, rows, rows)


def test_bad_backend_and_export(export, tmp_path, synthetic_model, monkeypatch):
    with pytest.raises(InvalidArgumentError,
                       match="unknown backend 'tpu'; available: qnn-htp, cpu-ep, cuda, tensorrt, int-ref"):
        edge_rt.load(DENSE, npu="tpu", npu_model=export)
    with pytest.raises(InvalidArgumentError, match="needs npu_model"):
        edge_rt.load(DENSE, npu="cpu-ep")
    with pytest.raises(InvalidArgumentError, match="npu_model= needs npu="):
        edge_rt.load(DENSE, npu_model=export)
    with pytest.raises(ModelIOError, match="does not exist"):
        edge_rt.load(DENSE, npu="cpu-ep", npu_model=tmp_path / "nowhere")
    with pytest.raises(ModelIOError, match="not an export folder"):
        edge_rt.load(DENSE, npu="cpu-ep", npu_model=tmp_path)
    with pytest.raises(InvalidArgumentError, match="hold 128 cache slots but n_ctx is 64"):
        edge_rt.load(DENSE, n_ctx=64, npu="cpu-ep", npu_model=export)
    with pytest.raises(InvalidArgumentError, match="its scheme is w8a8, w4a8 was asked for"):
        edge_rt.load(DENSE, npu="cpu-ep", npu_model=export, npu_scheme="w4a8")
    other = synthetic_model(n_layer=2, n_ctx_train=256)
    with pytest.raises(InvalidArgumentError, match="n_layer is 6 in the export, 2 in the model"):
        edge_rt.load(other, npu="cpu-ep", npu_model=export)
    twin = synthetic_model(n_vocab=4096, n_embd=256, n_layer=6, n_head=8, n_head_kv=4, n_ff=64, weight_type="F16")
    with pytest.raises(InvalidArgumentError, match="token embedding row .* another model with the same shapes"):
        edge_rt.load(twin, npu="cpu-ep", npu_model=export)

    hide_module(monkeypatch, "onnxruntime_qnn")
    with pytest.raises(BackendUnavailableError, match=r"'qnn-htp' cannot load.*pip install \"edge-rt\[qnn\]\""):
        edge_rt.load(DENSE, npu="qnn-htp", npu_model=export)


def test_int_ref_prefill_is_the_integer_reference(export, cpu_model):
    """int-ref runs the whole prefill graph on the C++ integer kernels (quantize/int_graph.py): every output
    of a chunk (logits, new K/V codes) equals the NumPy reference's (intref) bit for bit, stays within a few
    LSB of ONNX Runtime's CPU EP, and the hand-off then decodes as cpu-ep's does."""
    from edge_rt.quantize import intkernels, intref
    from edge_rt.quantize.int_graph import IntGraph
    from edge_rt.quantize.onnx_export_folder import ExportFolder
    from edge_rt.quantize.onnx_runner import float_session

    folder = ExportFolder(export)
    graph = folder.graph_path("prefill")
    p = _prompts(cpu_model, [CHUNK + 9])[0]
    feeds = []
    with edge_rt.load(DENSE, threads=THREADS, npu="cpu-ep", npu_model=export) as npu:
        stage = npu.npu_stage
        real_run = stage.backend._run
        stage.backend._run = lambda feed: (feeds.append({k: v.copy() for k, v in feed.items()}), real_run(feed))[1]
        list(npu.generate_tokens(p, max_tokens=1, temperature=0))
    assert len(feeds) == 2  # a whole chunk, then a padded one attending to it through the cache
    kernels, reference = IntGraph(graph, intkernels), IntGraph(graph, intref)
    ort = float_session(str(graph), THREADS, optimize=False)
    names = [o.name for o in ort.get_outputs()]
    for feed in feeds:
        got, want = kernels.run(feed), reference.run(feed)
        assert sorted(got) == sorted(names)
        for name in names:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
        theirs = dict(zip(names, ort.run(None, feed)))
        for name in names:
            if name.startswith("new_"):
                assert np.abs(got[name].astype(np.int64) - theirs[name].astype(np.int64)).max() <= 3, name
        lg, lt = got["logits"], theirs["logits"]
        assert np.abs(lg - lt).max() <= 0.05 * lt.std(), float(np.abs(lg - lt).max() / lt.std())
    with edge_rt.load(DENSE, threads=THREADS, npu="int-ref", npu_model=export) as npu:
        info = npu.info()["npu"]
        assert info["backend"] == "int-ref" and info["stand_in"]
        ref = list(cpu_model.generate_tokens(p, max_tokens=4, temperature=0))
        assert list(npu.generate_tokens(p, max_tokens=4, temperature=0))[0] == ref[0]


@pytest.mark.parametrize("backend, provider", [("cuda", "CUDAExecutionProvider"),
                                               ("tensorrt", "TensorrtExecutionProvider")])
def test_gpu_backend_without_its_provider_names_it(export, backend, provider):
    """The Jetson image's GPU backends: where the installed ONNX Runtime lacks the provider (a CPU build,
    as here), loading says which provider is missing and what this ONNX Runtime offers; never a silent
    CPU run."""
    import onnxruntime as ort

    if provider in ort.get_available_providers():
        pytest.skip(f"this ONNX Runtime has {provider}")
    with pytest.raises(BackendUnavailableError, match=rf"'{backend}' cannot load: .* has no {provider} \(it offers "):
        edge_rt.load(DENSE, npu=backend, npu_model=export)


def test_npu_memory_class_against_the_budget(export):
    """The stage is the npu class: in minimum_budget, counted against mem_budget (one byte short
    fails naming it), reported by memory_report."""
    from edge_rt.npu_stage import estimate_bytes
    from edge_rt.quantize.onnx_export_folder import ExportFolder

    est = estimate_bytes(ExportFolder(export))
    assert all(est[k] > 0 for k in ("weights", "embeddings", "kv", "activations", "dequantized"))
    floor = edge_rt.minimum_budget(DENSE, threads=THREADS, npu_model=export)
    plain = edge_rt.minimum_budget(DENSE, threads=THREADS, n_ctx=CTX)
    assert floor["npu"] == sum(est.values()) and floor["total"] == plain["total"] + floor["npu"]
    with pytest.raises(OutOfMemoryError, match=rf"below the minimum {floor['total']} bytes.*\+ npu \("):
        edge_rt.load(DENSE, threads=THREADS, mem_budget=floor["total"] - 1, npu="cpu-ep", npu_model=export)
    with edge_rt.load(DENSE, threads=THREADS, mem_budget=floor["total"], npu="cpu-ep", npu_model=export) as m:
        rep = m.memory_report()
        assert rep["classes"]["npu"] == floor["npu"] and rep["npu"] == est and rep["total"] <= floor["total"]
        assert rep["streaming"]                      # decode streams from the GGUF under the budget
        p = _prompts(m, [45])[0]
        with edge_rt.load(DENSE, threads=THREADS, n_ctx=CTX) as cpu:
            assert list(m.generate_tokens(p, 3, temperature=0))[0] == list(cpu.generate_tokens(p, 1, temperature=0))[0]


def test_cli_npu_options(export):
    from test_export import _cli

    r = _cli("run", str(DENSE), "-p", "def main():", "-n", "4", "--temp", "0", "--npu", "cpu-ep",
             "--npu-model", str(export), "--stats")
    assert r.returncode == 0, r.stderr
    assert "npu prefill on cpu-ep (ONNX Runtime CPU EP, standing in for an NPU" in r.stderr
    r = _cli("run", str(DENSE), "-p", "def main():", "-n", "4", "--temp", "0", "--npu", "int-ref",
             "--npu-model", str(export), "--stats")
    assert r.returncode == 0, r.stderr
    assert "npu prefill on int-ref (edge_rt's C++ integer kernels" in r.stderr


@requires_qnn
def test_qnn_htp_prefill(export, cpu_model):
    """The same hand-off with the prefill on the emulated HTP (CPU fallback disabled)."""
    p = _prompts(cpu_model, [30])[0]            # one chunk: the emulator is slow
    with edge_rt.load(DENSE, threads=THREADS, npu="qnn-htp", npu_model=export) as npu:
        info = npu.info()["npu"]
        assert info["backend"] == "qnn-htp" and not info["stand_in"] and "CPU fallback disabled" in info["device"]
        got = list(npu.generate_tokens(p, max_tokens=2, temperature=0))
        cpu_model.reset()
        cpu_model._eval_chunks(p)
        assert got[0] == list(cpu_model.generate_tokens(p, max_tokens=1, temperature=0))[0]
        for il in range(npu.npu_stage.d.n_layer):
            k, v = npu._engine.read_kv(il, 0, len(p) - 1)
            ck, cv = cpu_model._engine.read_kv(il, 0, len(p) - 1)
            assert np.corrcoef(k.ravel(), ck.ravel())[0, 1] > 0.99 and np.corrcoef(v.ravel(), cv.ravel())[0, 1] > 0.99
