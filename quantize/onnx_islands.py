"""Choose the 16-bit islands of an 8-bit-activation export from the error they remove.

MobileQuant's layout fixes which activations are 16-bit (residual stream, norm inputs, QK^T, softmax,
lm_head). On some models the remaining 8-bit points still cost too much (SmolLM2-135M at W8A8 with
min/max ranges: +5.7% perplexity; its FFN input alone +2.3 of it), on others nothing (the trained dense
model: KL 0.0005). The search measures instead of guessing:

1. the KL divergence of the export's logits from the float graph's on calibration windows, with no extra
   island, and with each island group (onnx_graph.ISLAND_GROUPS in every layer, and the KV cache) promoted
   alone;
2. groups are then added in the order of the error each removed alone; a group is kept when it lowers
   the KL by at least ``MIN_GAIN`` of its current value or by ``MIN_GAIN_KL``, and the search stops once
   the KL is at most ``KL_TARGET`` (about +1% perplexity on SmolLM2, where perplexity rose about 1.1% per
   0.01 of KL). The absolute floor matters where 4-bit weights carry most of the KL, which no island
   removes: on SmolLM2 at W4A8 with blocks of 16, the SiLU output's group removed 0.0076 of 0.093 (8%,
   about +0.8% perplexity) and the relative rule alone dropped it.

Every kept group costs NPU time (an A16 x W8 product runs at about half the A8 x W8 rate on the HTP) and
activation memory; none costs weight bytes. The trace goes to the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import numpy as np

from ..errors import InvalidArgumentError
from .evaluate import log_softmax
from .onnx_graph import ISLAND_GROUPS, KV_ISLAND, Dims, valid_island

#: Stop promoting once the calibration KL (nats per token) is at most this.
KL_TARGET = 0.01
#: A group is kept only if it removes at least this fraction of the current KL, or MIN_GAIN_KL.
MIN_GAIN = 0.10
#: KL a group may remove instead (about +0.5% perplexity on SmolLM2: half the target's worth).
MIN_GAIN_KL = 0.005


def group_islands(group: str, n_layer: int) -> FrozenSet[str]:
    """The island names of one group in every layer (``kv`` is one island)."""
    return frozenset({KV_ISLAND}) if group == KV_ISLAND else frozenset(f"l{i}.{group}" for i in range(n_layer))


def parse_islands(spec: str, n_layer: int) -> FrozenSet[str]:
    """``--islands`` list: group names (every layer: ``ffn_in``), per-layer names (``l3.ffn_in``) or ``kv``."""
    out: set = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in ISLAND_GROUPS or part == KV_ISLAND:
            out |= group_islands(part, n_layer)
        elif valid_island(part, n_layer):
            out.add(part)
        else:
            raise InvalidArgumentError(
                f"[export] --islands: unknown island {part!r}; expected auto, none, or a comma list of "
                f"{', '.join(ISLAND_GROUPS)}, {KV_ISLAND} (every layer) or l<i>.<group> (i < {n_layer})")
    return frozenset(out)


@dataclass
class IslandSearch:
    chosen: FrozenSet[str]
    groups: List[str]
    trace: List[Dict[str, Any]] = field(default_factory=list)   # every measurement, in order


def mean_kl(ref_logp: List[np.ndarray], logits: List[np.ndarray]) -> float:
    """Mean KL(ref || model) per token over windows of logits."""
    tot, n = 0.0, 0
    for lr, lg in zip(ref_logp, logits):
        lp = log_softmax(lg)
        kl = (np.exp(lr) * (lr - lp)).sum(axis=1)
        tot += float(np.maximum(kl, 0.0).sum())
        n += len(kl)
    return tot / max(n, 1)


def search_islands(d: Dims, evaluate: Callable[[FrozenSet[str]], float],
                   progress: Optional[Callable[[str, int, int], None]] = None) -> IslandSearch:
    """``evaluate(islands)`` -> calibration KL of the export with those islands."""
    candidates = list(ISLAND_GROUPS) + [KV_ISLAND]
    total = 1 + 2 * len(candidates)
    done = 0

    def run(groups: Tuple[str, ...], what: str) -> float:
        nonlocal done
        islands = frozenset().union(*[group_islands(g, d.n_layer) for g in groups]) if groups else frozenset()
        kl = evaluate(islands)
        done += 1
        if progress:
            progress("islands", done, total)
        trace.append({"groups": list(groups), "kl": kl, "step": what})
        return kl

    trace: List[Dict[str, Any]] = []
    base = run((), "base")
    alone = {g: run((g,), "alone") for g in candidates}
    kept: List[str] = []
    current = base

    def needed(kl: float) -> float:
        return min(MIN_GAIN * kl, MIN_GAIN_KL)

    for g in sorted(candidates, key=lambda g: alone[g]):
        if current <= KL_TARGET or base - alone[g] < needed(base):
            continue
        kl = alone[g] if not kept else run(tuple(kept) + (g,), "add")
        if current - kl >= needed(current):
            kept.append(g)
            current = kl
    if progress:
        progress("islands", total, total)
    chosen = frozenset().union(*[group_islands(g, d.n_layer) for g in kept]) if kept else frozenset()
    return IslandSearch(chosen, kept, trace)
