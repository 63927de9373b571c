"""Watching the forward pass: the engine's one observation hook (the role of llama.cpp's ``cb_eval``).

Calibration statistics (``edge_rt.quantize.calibrate.ActivationStatsObserver``), MoE routing traces
(``edge_rt.quantize.expert_predictor.RoutingTrace``) and debugging tools are observers; the engine
itself knows none of them::

    class Norms(EvalObserver):
        kinds = frozenset({"ffn_input"})
        def observe(self, kind, layer, weight, expert, values):
            print(layer, float(np.linalg.norm(values, axis=1).max()))

    with model.observe(Norms()):
        model.logits(ids)

Contract (the engine calls, from the thread that evaluates):
  * ``begin(n_past, n_tokens)`` once per evaluation (``logits``, a generation's prompt, each decoded
    token), then ``observe`` for every value of a kind in ``kinds``, then ``end(completed)``;
    ``completed`` is False when the evaluation failed or was interrupted (the engine rolled its cache
    back, so an accumulating observer should drop what it saw since ``begin``).
  * ``observe(kind, layer, weight, expert, values)``: ``values`` is a float32 ``(rows, cols)`` copy,
    row-major. Kinds:
      - ``"matmul_input"``: the rows multiplied by the weight tensor named ``weight`` (``expert``: the
        slice of a 3-D expert tensor, else 0): rows are tokens (for experts, the tokens routed to it).
      - ``"router_probs"``: MoE, each token's router probabilities (cols = n_expert).
      - ``"ffn_input"``: the residual stream entering the layer's FFN (after attention, before its
        norm), cols = n_embd.
    ``layer`` is the block index, n_layer for the output head. Within a micro-batch values come in
    forward order (layer 0 first); a prompt longer than the engine's micro-batch is several passes.
  * An exception raised by the observer aborts the evaluation and reaches the caller as itself.
  * Without an observer the forward pass does one pointer test per site (no measurable cost).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import FrozenSet, Optional

import numpy as np

KINDS: FrozenSet[str] = frozenset({"matmul_input", "router_probs", "ffn_input"})


class EvalObserver(ABC):
    """Base class of observers: subclasses set ``kinds`` and implement ``observe`` (and override
    ``begin`` / ``end`` when they accumulate)."""

    kinds: FrozenSet[str] = frozenset()

    def begin(self, n_past: int, n_tokens: int) -> None:  # noqa: B027 (an optional hook: a no-op by default)
        """An evaluation of ``n_tokens`` tokens at positions ``n_past ..`` starts."""

    @abstractmethod
    def observe(self, kind: str, layer: int, weight: Optional[str], expert: int, values: np.ndarray) -> None:
        """One observed value of a kind in ``kinds`` (see the module contract)."""

    def end(self, completed: bool) -> None:  # noqa: B027 (an optional hook: a no-op by default)
        """The evaluation finished (``completed``) or failed."""


class ObserverGroup(EvalObserver):
    """Several observers as one (the engine takes one): each sees the kinds it asked for, in the
    order given."""

    def __init__(self, *observers: EvalObserver) -> None:
        self.observers = observers
        self.kinds = frozenset().union(*(o.kinds for o in observers))

    def begin(self, n_past: int, n_tokens: int) -> None:  # noqa: B027 (an optional hook: a no-op by default)
        for o in self.observers:
            o.begin(n_past, n_tokens)

    def observe(self, kind: str, layer: int, weight: Optional[str], expert: int, values: np.ndarray) -> None:
        for o in self.observers:
            if kind in o.kinds:
                o.observe(kind, layer, weight, expert, values)

    def end(self, completed: bool) -> None:
        for o in self.observers:
            o.end(completed)
