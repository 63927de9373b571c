"""The fitted next-layer expert predictor (quantize/expert_predictor.py, native expert_predictor.h).

1. what it is fitted on: the engine's routing trace with inputs holds each layer's FFN input (its
   router applied to the traced state reproduces the traced probabilities);
2. the fit: analytic gradients match finite differences; a learnable target is learned; the recall
   metric counts as the engine does;
3. in the engine: logits bitwise identical with the fitted predictor, the router or everything
   resident; the shipped predictor of the trained MoE recalls >= 0.8 of next-layer experts on held-out
   text (the issue's target) where the router recalls much less; its bytes count in the budget;
4. loading: "auto" finds MODEL.predictor.gguf, explicit paths are checked, hostile files are refused
   with a message naming the key or tensor;
5. the CLI: fit-predictor writes a file that run --stats reports as the next-layer predictor.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pytest
from test_cli import invoke
from test_expert_cache import _assert_same, _budget, _preset, _sequence

import edge_rt
from edge_rt import InvalidArgumentError, ModelFormatError, ModelIOError, OutOfMemoryError
from edge_rt.quantize import expert_predictor as ep

ROOT = Path(__file__).resolve().parents[1]
TRAINED_MOE = ROOT / "models" / "tiny-code-moe-f16.gguf"
SHIPPED = ROOT / "models" / "tiny-code-moe-f16.gguf.predictor.gguf"
MIB = 1 << 20


@pytest.fixture(scope="module")
def moe_f32(synthetic_model) -> Path:
    return synthetic_model(**_preset("tiny-moe", weight_type="F32"))


@pytest.fixture(scope="module")
def moe_q8(synthetic_model) -> Path:
    return synthetic_model(**_preset("tiny-moe", weight_type="Q8_0"))


@pytest.fixture(scope="module")
def fitted(moe_q8: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predictor") / "moe.predictor.gguf"
    text = (ROOT / "quantize" / "data" / "calibration.txt").read_text()[:6000]
    r = ep.fit_expert_predictor(moe_q8, text, out, hidden=16, max_tokens=512, epochs=4)
    assert out.is_file() and len(r.layers) == 3 and r.n_validation > 0
    return out


# ---- 1. the traced states --------------------------------------------------------------------------

def test_routing_inputs_are_each_layers_ffn_input(moe_f32: Path) -> None:
    with edge_rt.load(moe_f32, n_ctx=64) as m:
        info = m.info()
        ids = list(range(5, 37))
        with m.observe(ep.RoutingTrace(4, 8, 256)) as trace:
            m.logits(ids)
        assert trace.probs().shape == (32, 4, 8) and trace.inputs().shape == (0, 4, 256)
        with m.observe(ep.RoutingTrace(4, 8, 256, inputs=True)) as trace:
            m.logits(ids[:20])
            m.logits(ids[20:])  # appends (a second call continues the trace)
        probs, x = trace.probs(), trace.inputs()
    assert probs.shape == (32, 4, 8) and x.shape == (32, 4, 256)
    # Under a budget (how fit-predictor traces models larger than RAM) the trace is the same, bit for bit.
    with edge_rt.load(moe_f32, n_ctx=64, mem_budget=_budget(moe_f32), expert_cache=MIB) as m:
        with m.observe(ep.RoutingTrace(4, 8, 256, inputs=True)) as trace:
            m.logits(ids[:20])
            m.logits(ids[20:])
        assert np.array_equal(trace.probs(), probs) and np.array_equal(trace.inputs(), x)
    norms, routers = ep._norms_and_routers(moe_f32, 4)
    for il in range(4):
        z = ep.rms_norm(x[:, il], norms[il], info["rms_eps"]) @ routers[il].T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True), probs[:, il], atol=2e-5)


# ---- 2. the fit ------------------------------------------------------------------------------------

def test_mlp_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    net = ep._Mlp(6, 5, 4, rng)
    assert not net.p["w2"].any()  # training starts from the router's logits alone
    net.p = {k: v.astype(np.float64) for k, v in net.p.items()}
    net.p["b1"] = rng.standard_normal(5)
    net.p["w2"] = rng.standard_normal((4, 5))
    x = rng.standard_normal((7, 6))
    base = rng.standard_normal((7, 4))  # the router's logits
    t = rng.random((7, 4))
    t /= t.sum(axis=1, keepdims=True)
    _, grads = net.loss_and_grads(x, t, base)
    for name, g in grads.items():
        num = np.zeros_like(g)
        for i in np.ndindex(g.shape):
            old = net.p[name][i]
            net.p[name][i] = old + 1e-6
            up, _ = net.loss_and_grads(x, t, base)
            net.p[name][i] = old - 1e-6
            down, _ = net.loss_and_grads(x, t, base)
            net.p[name][i] = old
            num[i] = (up - down) / 2e-6
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8, err_msg=name)


def test_fit_layer_learns_a_nonlinear_routing() -> None:
    # A teacher of the student's own form (8-unit SiLU MLP) routes 8 experts from 8-d inputs; a linear
    # map cannot recover its top-2 (0.71), the fitted student must (0.96 measured).
    rng = np.random.default_rng(1)
    w1, w2 = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
    x = rng.standard_normal((6000, 8)).astype(np.float32)
    pre = x @ w1.T
    z = 2.0 * ((pre / (1.0 + np.exp(-pre))) @ w2.T)
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    params, val_recall, best_epoch = ep.fit_layer(x, probs, 2, hidden=32, epochs=150, n_val=1000, seed=0)
    assert val_recall >= 0.9, val_recall
    assert 1 <= best_epoch <= 150 and params["w1"].shape == (32, 8) and params["w2"].shape == (8, 32)
    linear = np.linalg.lstsq(np.c_[x[:5000], np.ones(5000)], z[:5000], rcond=None)[0]
    assert val_recall > ep.recall(np.c_[x[5000:], np.ones(1000)] @ linear, probs[5000:], 2) + 0.1


def test_fit_never_loses_to_the_router_on_validation() -> None:
    # The router is already exact: whatever training does, the kept checkpoint must match it.
    rng = np.random.default_rng(2)
    router = rng.standard_normal((8, 16)).astype(np.float32)
    x = rng.standard_normal((1200, 16)).astype(np.float32)
    z = x @ router.T
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    params, val_recall, best_epoch = ep.fit_layer(x, probs, 2, hidden=8, epochs=20, n_val=200, seed=0, router=router)
    assert val_recall == 1.0
    scores = x[1000:] @ router.T + ep._silu(x[1000:] @ params["w1"].T + params["b1"]) @ params["w2"].T + params["b2"]
    assert ep.recall(scores, probs[1000:], 2) == 1.0


def test_recall_counts_like_the_engine() -> None:
    truth = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])
    pred = np.array([[9.0, 0.0, 8.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    assert ep.recall(pred, truth, 2) == pytest.approx((0.5 + 1.0) / 2)


def test_fit_rejects_bad_arguments(moe_q8: Path, synthetic_model, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="hidden size"):
        ep.fit_expert_predictor(moe_q8, "x", tmp_path / "p.gguf", hidden=0)
    with pytest.raises(InvalidArgumentError, match="epochs"):
        ep.fit_expert_predictor(moe_q8, "x", tmp_path / "p.gguf", epochs=0)
    # the output must not be the model itself (it used to be overwritten by the predictor) nor a folder
    model = tmp_path / "m.gguf"
    shutil.copyfile(moe_q8, model)
    os.link(model, tmp_path / "hard-link.gguf")
    for out in (model, tmp_path / "hard-link.gguf"):
        with pytest.raises(InvalidArgumentError, match="is the model itself"):
            ep.fit_expert_predictor(model, "some text to trace", out, max_tokens=16, epochs=1)
    assert model.read_bytes() == moe_q8.read_bytes()
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        ep.fit_expert_predictor(model, "some text to trace", tmp_path, max_tokens=16, epochs=1)
    dense = synthetic_model()
    with pytest.raises(edge_rt.UnsupportedArchitectureError, match="dense model"):
        ep.fit_expert_predictor(dense, "some text to trace", tmp_path / "p.gguf", max_tokens=16, epochs=1)


# ---- 3. in the engine ------------------------------------------------------------------------------

def test_logits_identical_with_fitted_predictor(moe_q8: Path, fitted: Path) -> None:
    with edge_rt.load(moe_q8, n_ctx=512, threads=2) as m:
        ref = _sequence(m)
    budget = _budget(moe_q8)
    for cache in (2 * MIB, 512 * 1024):
        for pred in (None, fitted):
            with edge_rt.load(moe_q8, n_ctx=512, threads=2, mem_budget=budget, expert_cache=cache,
                              expert_prefetch="both", expert_predictor=pred) as m:
                assert m.info()["expert_predictor"] == (str(fitted) if pred else None)
                _assert_same(ref, _sequence(m), f"cache {cache}, predictor {pred}")
                st = m.expert_stats()
                assert sum(x["next_layer"]["predicted"] for x in st["layers"]) > 0


def _decode_recall(predictor: Optional[Path], n_tokens: int = 384) -> Dict[str, Any]:
    text = (ROOT / "benchmarks" / "data" / "quant_eval.txt").read_text()
    with edge_rt.load(TRAINED_MOE, n_ctx=256, threads=2, mem_budget=os.path.getsize(TRAINED_MOE),
                      expert_cache="4MB", expert_predictor="auto" if predictor == SHIPPED else predictor) as m:
        name = m.info()["expert_predictor"]
        ids = m.tokenize(text)[:n_tokens]
        eng = m._engine
        for s in range(0, n_tokens, 128):
            eng.reset()
            for t in ids[s:s + 128]:
                eng.eval(np.array([t], dtype=np.int32), False)
        layers = m.expert_stats()["layers"]
    corr = sum(x["next_layer"]["correct"] for x in layers)
    need = sum(x["next_layer"]["needed"] for x in layers)
    return {"recall": corr / need, "predictor": name}


@pytest.mark.skipif(not SHIPPED.is_file(), reason="models/ holds no fitted predictor")
def test_shipped_predictor_meets_recall_target_on_held_out_text() -> None:
    # Fitted on quantize/data/calibration.txt; scored on the benchmark's held-out text, decode steps.
    fitted_run = _decode_recall(SHIPPED)
    router_run = _decode_recall(None)
    assert fitted_run["predictor"] == str(SHIPPED) and router_run["predictor"] is None
    assert fitted_run["recall"] >= 0.8, fitted_run
    assert fitted_run["recall"] >= router_run["recall"] + 0.1, (fitted_run, router_run)


def test_predictor_bytes_count_in_the_budget(moe_q8: Path, fitted: Path, tmp_path: Path) -> None:
    budget = _budget(moe_q8)
    kw = dict(n_ctx=64, mem_budget=budget, expert_cache=MIB)
    with edge_rt.load(moe_q8, expert_predictor=None, **kw) as m:
        base = m.memory_report()
    with edge_rt.load(moe_q8, expert_predictor=fitted, **kw) as m:
        rep = m.memory_report()
    n_floats = 3 * (256 * 16 + 16 + 16 * 8 + 8)
    assert rep["classes"]["pinned_weights"] - base["classes"]["pinned_weights"] == 4 * n_floats
    n_ubatch = 128  # micro-batch under a budget
    assert rep["classes"]["scratch"] - base["classes"]["scratch"] == n_ubatch * (16 + 8) * 4
    # A hidden layer wider than any activation the model converts (256 here) also widens that buffer.
    wide = _write(tmp_path / "wide.gguf", hidden=512)
    with edge_rt.load(moe_q8, expert_predictor=wide, **kw) as m:
        assert m.memory_report()["classes"]["scratch"] - base["classes"]["scratch"] == n_ubatch * (512 + 8 + 256) * 4
    with pytest.raises(OutOfMemoryError, match=r"expert predictor \(") as e:
        edge_rt.load(moe_q8, n_ctx=64, mem_budget=1, expert_predictor=fitted)
    minimum = int(re.search(r"below the minimum (\d+) bytes", str(e.value)).group(1))
    with edge_rt.load(moe_q8, n_ctx=64, mem_budget=minimum, expert_predictor=fitted) as m:
        assert m.memory_report()["total"] <= minimum
    # edge_rt.minimum_budget says the same without loading, the predictor's share included
    floor = edge_rt.minimum_budget(moe_q8, n_ctx=64, expert_predictor=fitted)
    assert floor["total"] == minimum and floor["expert_predictor"] == 4 * n_floats, floor
    assert edge_rt.minimum_budget(moe_q8, n_ctx=64, expert_predictor=None)["total"] < minimum


# ---- 4. loading ------------------------------------------------------------------------------------

def test_auto_finds_the_sidecar_only_when_next_layer_prefetch_runs(moe_q8: Path, fitted: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(moe_q8, model)
    budget = _budget(model)
    with edge_rt.load(model, n_ctx=64, mem_budget=budget) as m:
        assert m.info()["expert_predictor"] is None
    shutil.copy(fitted, edge_rt.loading.predictor_path_for(model))
    assert edge_rt.loading.predictor_path_for(model) == tmp_path / "m.gguf.predictor.gguf"
    with edge_rt.load(model, n_ctx=64, mem_budget=budget) as m:
        assert m.info()["expert_predictor"] == str(tmp_path / "m.gguf.predictor.gguf")
    for kw in ({}, {"mem_budget": budget, "expert_prefetch": "same"}, {"mem_budget": budget, "prefetch": False},
               {"mem_budget": budget, "expert_predictor": None}):
        with edge_rt.load(model, n_ctx=64, **kw) as m:
            assert m.info()["expert_predictor"] is None, kw
    # minimum_budget counts the sidecar exactly when load would use it, and its total is exact either way
    with_sidecar = edge_rt.minimum_budget(model, n_ctx=64)
    assert with_sidecar["expert_predictor"] > 0, with_sidecar
    for kw in ({"expert_prefetch": "same"}, {"prefetch": False}, {"expert_predictor": None}):
        floor = edge_rt.minimum_budget(model, n_ctx=64, **kw)
        assert floor["expert_predictor"] == 0 and floor["total"] < with_sidecar["total"], (kw, floor)
        with edge_rt.load(model, n_ctx=64, mem_budget=floor["total"], **kw) as m:
            assert m.info()["expert_predictor"] is None, kw
        with pytest.raises(OutOfMemoryError):
            edge_rt.load(model, n_ctx=64, mem_budget=floor["total"] - 1, **kw)
    with edge_rt.load(model, n_ctx=64, mem_budget=with_sidecar["total"]) as m:
        assert m.info()["expert_predictor"] == str(tmp_path / "m.gguf.predictor.gguf")
    with pytest.raises(OutOfMemoryError):
        edge_rt.load(model, n_ctx=64, mem_budget=with_sidecar["total"] - 1)


def test_auto_falls_back_to_the_router_on_an_unusable_sidecar(moe_q8: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(moe_q8, model)
    _write(edge_rt.loading.predictor_path_for(model), keys={"n_embd": 128})  # fitted for another model
    with pytest.warns(UserWarning, match=r"ignoring the expert predictor .*'expert_predictor.n_embd' is 128"):
        m = edge_rt.load(model, n_ctx=64, mem_budget=_budget(model))
    with m:
        assert m.info()["expert_predictor"] is None
    # minimum_budget ignores it too (without a warning: it loads nothing), and its total loads
    floor = edge_rt.minimum_budget(model, n_ctx=64)
    assert floor["expert_predictor"] == 0, floor
    with pytest.warns(UserWarning, match="ignoring the expert predictor"):
        edge_rt.load(model, n_ctx=64, mem_budget=floor["total"]).close()
    with pytest.raises(ModelFormatError, match="expert_predictor.n_embd"):  # named explicitly: an error
        edge_rt.load(model, n_ctx=64, mem_budget=_budget(model),
                     expert_predictor=edge_rt.loading.predictor_path_for(model))


def test_explicit_predictor_argument_errors(moe_q8: Path, fitted: Path, synthetic_model, tmp_path: Path) -> None:
    budget = _budget(moe_q8)
    with pytest.raises(ModelIOError, match="expert predictor file not found"):
        edge_rt.load(moe_q8, n_ctx=64, mem_budget=budget, expert_predictor=tmp_path / "missing.gguf")
    for kw in ({}, {"mem_budget": budget, "expert_prefetch": "same"}, {"mem_budget": budget, "prefetch": False}):
        with pytest.raises(InvalidArgumentError, match="next-layer expert prefetch"):
            edge_rt.load(moe_q8, n_ctx=64, expert_predictor=fitted, **kw)
    dense = synthetic_model()
    with pytest.raises(InvalidArgumentError, match="MoE model"):
        edge_rt.load(dense, n_ctx=64, mem_budget=_budget(dense), expert_predictor=fitted)


def _write(path: Path, *, arch: str = ep.ARCH, keys: Optional[Dict[str, Optional[int]]] = None, drop: str = "",
           dtype: Any = np.float32, bad_value: bool = False, shape_of: Optional[Dict[str, tuple]] = None,
           fill: float = 0.01, hidden: int = 4, arrays: Optional[Dict[str, np.ndarray]] = None) -> Path:
    """A predictor file for the tiny-moe shape (n_embd 256, 8 experts, 4 layers): every tensor ``fill``
    unless ``arrays`` names it; the other arguments break it on purpose (a key set to None is left out)."""
    import gguf

    kv = {"version": 1, "n_embd": 256, "n_expert": 8, "block_count": 4, "hidden_size": hidden, **(keys or {})}
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in kv.items():
        if v is not None:
            w.add_uint32(f"expert_predictor.{k}", v)
    for il in range(1, 4):
        shapes = {"expert_pred_hidden.weight": (hidden, 256), "expert_pred_hidden.bias": (hidden,),
                  "expert_pred_out.weight": (8, hidden), "expert_pred_out.bias": (8,), **(shape_of or {})}
        for suffix, shape in shapes.items():
            name = f"blk.{il}.{suffix}"
            if name == drop:
                continue
            arr = (arrays or {}).get(name)
            arr = np.full(shape, fill, dtype=dtype) if arr is None else arr.astype(dtype)
            if bad_value and il == 2 and suffix == "expert_pred_out.bias":
                arr[3] = np.nan
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("case, kwargs, message", [
    ("arch", {"arch": "llama"}, "general.architecture is 'llama'"),
    ("version", {"keys": {"version": 2}}, "'expert_predictor.version' is 2, this edge_rt reads version 1"),
    ("no key", {"keys": {"n_expert": None}}, "hostile: [gguf] key 'expert_predictor.n_expert'"),
    ("n_embd", {"keys": {"n_embd": 128}}, "'expert_predictor.n_embd' is 128 but the model has 256"),
    ("layers", {"keys": {"block_count": 3}}, "'expert_predictor.block_count' is 3"),
    ("hidden", {"keys": {"hidden_size": 0}}, "hidden_size' 0 outside"),
    ("missing", {"drop": "blk.2.expert_pred_out.weight"}, "has 11 tensors, expected 12"),
    ("huge", {"keys": {"hidden_size": 65536}}, "'blk.1.expert_pred_hidden.weight' must be F32 of shape [256, 65536]"),
    ("dtype", {"dtype": np.float16}, "must be F32 of shape"),
    ("shape", {"shape_of": {"expert_pred_out.weight": (7, 4)}}, "'blk.1.expert_pred_out.weight' must be F32 of shape"),
    ("nan", {"bad_value": True}, "'blk.2.expert_pred_out.bias' holds a non-finite value"),
])
def test_hostile_predictor_files_are_refused(moe_q8: Path, tmp_path: Path, case: str, kwargs: Dict[str, Any],
                                             message: str) -> None:
    bad = _write(tmp_path / f"{case}.gguf", **kwargs)
    # Every message names the predictor file first, then what is wrong with it.
    message = message.replace("hostile: ", "")
    with pytest.raises(ModelFormatError, match=re.escape(f"[expert predictor] {bad}: ") + ".*" + re.escape(message)):
        edge_rt.load(moe_q8, n_ctx=64, mem_budget=_budget(moe_q8), expert_predictor=bad)


def test_loading_a_predictor_as_a_model_says_what_it_is(fitted: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is an expert predictor .*not a model"):
        edge_rt.load(fitted)


def test_truncated_and_non_gguf_predictor_files(moe_q8: Path, fitted: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(fitted.read_bytes()[:-100])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    for f in (cut, junk):
        with pytest.raises(ModelFormatError):
            edge_rt.load(moe_q8, n_ctx=64, mem_budget=_budget(moe_q8), expert_predictor=f)
    good = _write(tmp_path / "good.gguf")  # the writer above makes a valid file when nothing is broken
    with edge_rt.load(moe_q8, n_ctx=64, mem_budget=_budget(moe_q8), expert_predictor=good) as m:
        assert m.info()["expert_predictor"] == str(good)


def test_engine_adds_the_files_correction_to_the_router(moe_q8: Path, tmp_path: Path) -> None:
    # A file whose correction is +100 for experts 5 and 6 whatever the input: every next-layer
    # prediction then names exactly {5, 6}, and its hits are the tokens whose routing used 5 or 6.
    bias = np.zeros(8)
    bias[[5, 6]] = 100.0
    pred = _write(tmp_path / "fixed.gguf", fill=0.0,
                  arrays={f"blk.{il}.expert_pred_out.bias": bias for il in range(1, 4)})
    with edge_rt.load(moe_q8, n_ctx=64, mem_budget=_budget(moe_q8), expert_cache=MIB, expert_prefetch="next",
                      expert_predictor=pred) as m:
        eng = m._engine
        with m.observe(ep.RoutingTrace(4, 8, 256)) as trace:
            for t in DECODE_TOKENS:
                eng.eval(np.array([t], dtype=np.int32), False)
        used = np.argsort(-trace.probs(), axis=2, kind="stable")[:, :, :2]  # (tokens, layers, k)
        layers = m.expert_stats()["layers"]
    assert layers[0]["next_layer"]["predicted"] == 0
    for il in range(1, 4):
        hits = int(np.isin(used[:, il], [5, 6]).sum())
        assert layers[il]["next_layer"]["predicted"] == 2 * len(DECODE_TOKENS), layers[il]
        assert layers[il]["next_layer"]["correct"] == hits, (il, layers[il], hits)


DECODE_TOKENS = [int(t) for t in np.random.default_rng(5).integers(3, 500, size=12)]


def test_engine_scores_match_numpy(moe_f32: Path, tmp_path: Path) -> None:
    # Random predictor weights: the engine's next-layer hits must be those of router + MLP in NumPy.
    rng = np.random.default_rng(0)
    params = {il: {"expert_pred_hidden.weight": 0.2 * rng.standard_normal((24, 256)),
                   "expert_pred_hidden.bias": rng.standard_normal(24),
                   "expert_pred_out.weight": rng.standard_normal((8, 24)),
                   "expert_pred_out.bias": rng.standard_normal(8)} for il in range(1, 4)}
    pred = _write(tmp_path / "random.gguf", hidden=24,
                  arrays={f"blk.{il}.{k}": v for il, p in params.items() for k, v in p.items()})
    tokens = [int(t) for t in rng.integers(3, 500, size=40)]
    with edge_rt.load(moe_f32, n_ctx=64, mem_budget=_budget(moe_f32), expert_cache=MIB, expert_prefetch="next",
                      expert_predictor=pred) as m:
        eps = m.info()["rms_eps"]
        with m.observe(ep.RoutingTrace(4, 8, 256, inputs=True)) as trace:
            for t in tokens:
                m._engine.eval(np.array([t], dtype=np.int32), False)
        probs, x = trace.probs(), trace.inputs()
        layers = m.expert_stats()["layers"]
    norms, routers = ep._norms_and_routers(moe_f32, 4)
    used = np.argsort(-probs, axis=2, kind="stable")[:, :, :2]
    differs = 0
    for il in range(1, 4):
        p = {k: v.astype(np.float32) for k, v in params[il].items()}
        u = ep.rms_norm(x[:, il - 1], norms[il], eps)
        base = u @ routers[il].T
        scores = base + ep._silu(u @ p["expert_pred_hidden.weight"].T + p["expert_pred_hidden.bias"]) @ \
            p["expert_pred_out.weight"].T + p["expert_pred_out.bias"]
        def hits(s: np.ndarray) -> int:
            top2 = np.argsort(-s, axis=1, kind="stable")[:, :2]
            return int(sum(len(set(a) & set(b)) for a, b in zip(top2, used[:, il])))
        assert layers[il]["next_layer"]["correct"] == hits(scores), il
        differs += hits(scores) != hits(base)
    assert differs, "the random correction should change some predictions (else this test proves nothing)"


def test_routing_trace_rolls_back_with_a_failed_eval(moe_f32: Path) -> None:
    from edge_rt import _testing

    probe = _testing.engine(str(moe_f32), 1, 64, mem_budget=_budget(moe_f32), expert_cache_bytes=MIB)
    rep = probe.memory_report()
    del probe
    tokens = np.random.default_rng(1).integers(3, 500, size=40).astype(np.int32)
    failures = 0
    for extra in (40, 90):
        eng = _testing.engine(str(moe_f32), 1, 64, mem_budget=_budget(moe_f32), expert_cache_bytes=MIB,
                           fault_after_bytes=rep["classes"]["pinned_weights"] + extra * rep["expert_slot_bytes"] + 1)
        trace = ep.RoutingTrace(4, 8, 256, inputs=True)
        eng.set_observer(trace)
        done = 0
        try:
            for i in range(len(tokens)):
                eng.eval(tokens[i:i + 1], False)
                done += 1
        except edge_rt.ModelIOError:
            failures += 1
        assert eng.n_past == done and trace.probs().shape[0] == done and trace.inputs().shape[0] == done
        del eng
    assert failures == 2, "the injected read failure never happened"


# ---- 5. the CLI ------------------------------------------------------------------------------------

def test_cli_fit_predictor_then_run(moe_q8: Path, synthetic_model, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(moe_q8, model)
    r = invoke("fit-predictor", model, "--tokens", 256, "--epochs", 2, "--hidden", 8)
    assert r.exit_code == 0, r.output
    assert re.search(r"mean\s+[\d.]+\s+[\d.]+", r.output) and "m.gguf.predictor.gguf" in r.output, r.output
    assert (tmp_path / "m.gguf.predictor.gguf").is_file()
    run = ("run", model, "-p", "hi", "-n", 4, "--seed", 0, "--ctx", 64, "--stats", "--mem-budget", str(_budget(model)),
           "--expert-cache", "1MB")
    r = invoke(*run)
    assert r.exit_code == 0 and "(predictor: fitted, m.gguf.predictor.gguf)" in r.output, r.output
    r = invoke(*run, "--expert-predictor", "none")
    assert r.exit_code == 0 and "next-layer prediction" in r.output and "(predictor: layer i's router)" in r.output
    r = invoke("fit-predictor", synthetic_model(), "-o", tmp_path / "d.gguf", "--tokens", 64, "--epochs", 1)
    assert r.exit_code == 1 and "dense model" in r.output, r.output
