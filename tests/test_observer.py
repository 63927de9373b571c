"""The engine's observation hook (edge_rt/observer.py): what an observer sees, in which order, and how
its failures and the engine's reach the caller."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import pytest

import edge_rt
from edge_rt import InvalidArgumentError
from edge_rt.observer import EvalObserver


class Recorder(EvalObserver):
    def __init__(self, kinds=("matmul_input", "router_probs", "ffn_input")) -> None:
        self.kinds = frozenset(kinds)
        self.events: List[Tuple] = []

    def begin(self, n_past: int, n_tokens: int) -> None:
        self.events.append(("begin", n_past, n_tokens))

    def observe(self, kind: str, layer: int, weight: Optional[str], expert: int, values: np.ndarray) -> None:
        assert values.dtype == np.float32 and values.ndim == 2
        self.events.append((kind, layer, weight, expert, values.shape))

    def end(self, completed: bool) -> None:
        self.events.append(("end", completed))


def test_dense_model_values_in_forward_order(tiny_model):
    with edge_rt.load(tiny_model, threads=2, n_ctx=64) as m:
        info = m.info()
        n_layer, E, F = info["n_layer"], info["n_embd"], info["n_ff"]
        with m.observe(Recorder()) as rec:
            m.logits([5, 6, 7])
        m.logits([8])  # outside the block: not observed
    ev = rec.events
    assert ev[0] == ("begin", 0, 3) and ev[-1] == ("end", True)
    expected = []
    for il in range(n_layer):
        b = f"blk.{il}."
        q_dim = info["n_head"] * info["head_dim"]
        expected += [("matmul_input", il, b + w, 0, (3, E)) for w in ("attn_q.weight", "attn_k.weight",
                                                                      "attn_v.weight")]
        expected += [("matmul_input", il, b + "attn_output.weight", 0, (3, q_dim)), ("ffn_input", il, None, 0, (3, E))]
        expected += [("matmul_input", il, b + w, 0, (3, E)) for w in ("ffn_gate.weight", "ffn_up.weight")]
        expected += [("matmul_input", il, b + "ffn_down.weight", 0, (3, F))]
    head = "token_embd.weight" if info["tied_output"] else "output.weight"
    expected.append(("matmul_input", n_layer, head, 0, (3, E)))
    assert ev[1:-1] == expected


def test_fused_tensors_observed_once(synthetic_model):
    """phi3 runs its q/k/v and gate/up as views into attn_qkv and ffn_up: each fused tensor's input is
    observed once, under the tensor's name (calibration statistics are per tensor)."""
    path = synthetic_model(arch="phi3", tokenizer="llama", n_head_kv=2)
    with edge_rt.load(path, threads=2, n_ctx=64) as m:
        info = m.info()
        n_layer, E, F = info["n_layer"], info["n_embd"], info["n_ff"]
        with m.observe(Recorder()) as rec:
            m.logits([300, 301, 302])
    expected = []
    for il in range(n_layer):
        b = f"blk.{il}."
        expected += [("matmul_input", il, b + "attn_qkv.weight", 0, (3, E)),
                     ("matmul_input", il, b + "attn_output.weight", 0, (3, E)), ("ffn_input", il, None, 0, (3, E)),
                     ("matmul_input", il, b + "ffn_up.weight", 0, (3, E)),
                     ("matmul_input", il, b + "ffn_down.weight", 0, (3, F))]
    expected.append(("matmul_input", n_layer, "output.weight", 0, (3, E)))
    assert rec.events[1:-1] == expected


def test_only_the_wanted_kinds_arrive(synthetic_model):
    from edge_rt.synthetic import PRESETS

    p = {**PRESETS["tiny-moe"], "tokenizer": "gpt2", "seed": 0, "weight_type": "Q8_0"}
    with edge_rt.load(synthetic_model(**p), threads=2, n_ctx=64) as m:
        with m.observe(Recorder(kinds=("router_probs",))) as rec:
            m.logits([5, 6, 7, 8])
    probs = [e for e in rec.events if e[0] not in ("begin", "end")]
    assert [e[1] for e in probs] == list(range(p["n_layer"]))
    assert all(e[0] == "router_probs" and e[4] == (4, p["n_expert"]) for e in probs)


def test_observer_exception_reaches_the_caller_and_the_eval_is_undone(tiny_model):
    class Boom(Exception):
        pass

    class Failing(Recorder):
        def observe(self, kind, layer, weight, expert, values):
            if layer == 1:
                raise Boom("from the observer")
            super().observe(kind, layer, weight, expert, values)

    with edge_rt.load(tiny_model, threads=2, n_ctx=64) as m:
        eng = m._engine
        obs = Failing()
        eng.set_observer(obs)
        with pytest.raises(Boom, match="from the observer"):
            eng.eval(np.array([5, 6, 7], np.int32), True)
        assert eng.n_past == 0 and obs.events[-1] == ("end", False)
        eng.set_observer(None)
        assert eng.eval(np.array([5], np.int32), False).shape == (1, m.n_vocab)


def test_bad_observers_are_refused(tiny_model):
    class Unknown(EvalObserver):
        kinds = frozenset({"attention_scores"})

        def observe(self, kind, layer, weight, expert, values):
            pass

    with edge_rt.load(tiny_model, threads=1, n_ctx=64) as m:
        with pytest.raises(InvalidArgumentError, match="attention_scores"):
            with m.observe(Unknown()):
                pass
        with m.observe(Recorder()):
            with pytest.raises(InvalidArgumentError, match="already installed"):
                with m.observe(Recorder()):
                    pass
