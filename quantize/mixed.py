"""Mixed precision: one type per tensor, minimizing the predicted KL divergence under a byte budget.

The predicted KL of a mix is the sum of its tensors' sensitivities (``dKL(t, T_t)``: additive for
small, independent perturbations). The bytes are the exact stored sizes (block scales included).
Choosing one option per tensor under a budget is a multiple-choice knapsack; we solve its Lagrangian
relaxation exactly and then fill the remainder greedily:

1. per tensor, keep the options on the lower convex hull of (bytes, dKL) -- an option above the hull
   is never the best at any price per byte;
2. start every tensor at its smallest option, then repeatedly take the hull step with the largest KL
   reduction per extra byte that still fits the budget (steps along one tensor's hull have decreasing
   benefit per byte, so this is the greedy order of the Lagrangian solution);
3. spend what is left on the best-per-byte upgrades among all options (off-hull ones included).

Outputs: the recipe (JSON), llama-quantize ``--tensor-type`` rules that reproduce it, a sensitivity
table (TSV), and a Pareto plot (size vs KL divergence) with matplotlib.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..atomic_io import atomic_write, write_text_atomic
from ..errors import InvalidArgumentError
from .rules import llama_cpp_name
from .sensitivity import Sensitivity


def _hull(options: Dict[str, Tuple[int, float]]) -> List[Tuple[str, int, float]]:
    """Lower convex hull of (bytes, dkl), by increasing bytes (and decreasing dkl)."""
    pts = sorted(((b, k, t) for t, (b, k) in options.items()), key=lambda p: (p[0], p[1]))
    front: List[Tuple[int, float, str]] = []
    for b, k, t in pts:  # Pareto front: strictly decreasing dkl
        if front and (b == front[-1][0] or k >= front[-1][1]):
            continue
        front.append((b, k, t))
    hull: List[Tuple[int, float, str]] = []
    for p in front:
        while len(hull) >= 2:
            (b1, k1, _), (b2, k2, _) = hull[-2], hull[-1]
            # drop hull[-1] if it lies on or above the segment hull[-2] -> p
            if (k2 - k1) * (p[0] - b1) >= (p[1] - k1) * (b2 - b1):
                hull.pop()
            else:
                break
        hull.append(p)
    return [(t, b, k) for b, k, t in hull]


def search(sens: Sensitivity, budget_bytes: int) -> Dict[str, str]:
    """{tensor: type} for the searchable tensors, total bytes <= ``budget_bytes`` (their bytes only)."""
    opts = {n: {t: (sens.bytes[n][t], sens.dkl[n][t]) for t in sens.dkl[n]} for n in sens.dkl if sens.dkl[n]}
    hulls = {n: _hull(o) for n, o in opts.items()}
    choice = {n: 0 for n in hulls}  # index into the hull
    used = sum(h[0][1] for h in hulls.values())
    if used > budget_bytes:
        raise InvalidArgumentError(
            f"[quantize] the budget ({budget_bytes:,} bytes of quantized tensors) is below the smallest mix of the "
            f"candidate types ({used:,} bytes); raise --target-bpw or add a smaller candidate type")
    heap: List[Tuple[float, str]] = []

    def push(n: str) -> None:
        i = choice[n]
        h = hulls[n]
        if i + 1 < len(h):
            db = h[i + 1][1] - h[i][1]
            dk = h[i][2] - h[i + 1][2]
            heapq.heappush(heap, (-dk / max(db, 1), n))

    for n in hulls:
        push(n)
    while heap:
        _, n = heapq.heappop(heap)
        i = choice[n]
        db = hulls[n][i + 1][1] - hulls[n][i][1]
        if used + db <= budget_bytes:
            choice[n] = i + 1
            used += db
            push(n)
    result = {n: hulls[n][choice[n]][0] for n in hulls}
    # fill: best remaining upgrade per byte that fits, any option
    while True:
        best = None
        for n, o in opts.items():
            cb, ck = o[result[n]]
            for t, (b, k) in o.items():
                if b > cb and k < ck and used + b - cb <= budget_bytes:
                    gain = (ck - k) / (b - cb)
                    if best is None or gain > best[0]:
                        best = (gain, n, t, b - cb)
        if best is None:
            break
        _, n, t, db = best
        result[n] = t
        used += db
    return result


def predicted_kl(sens: Sensitivity, mix: Dict[str, str]) -> float:
    return float(sum(sens.dkl[n].get(t, 0.0) for n, t in mix.items() if n in sens.dkl))


def mix_bytes(sens: Sensitivity, mix: Dict[str, str]) -> int:
    return int(sum(sens.bytes[n][t] for n, t in mix.items() if n in sens.bytes))


def frontier(sens: Sensitivity, budgets: Iterable[int]) -> List[Tuple[int, float, Dict[str, str]]]:
    """(bytes, predicted KL, mix) of the searched mix at each budget (infeasible budgets skipped)."""
    out = []
    for b in budgets:
        try:
            m = search(sens, int(b))
        except InvalidArgumentError:
            continue
        out.append((mix_bytes(sens, m), predicted_kl(sens, m), m))
    return out


# ---- outputs -----------------------------------------------------------------------------------------

def write_recipe(path: Path, types: Dict[str, str], *, sens: Optional[Sensitivity], info: dict) -> Path:
    """The per-tensor types of the written file (every tensor), with the search's facts in ``info``."""
    d = dict(info)
    d["tensor_types"] = types
    if sens is not None:
        d["predicted_kl"] = predicted_kl(sens, {n: t for n, t in types.items() if n in sens.dkl})
        d["sensitivity_method"] = sens.method
        d["candidates"] = list(sens.candidates)
    path = Path(path)
    write_text_atomic(path, json.dumps(d, indent=1) + "\n")
    return path


def tensor_type_rules(types: Dict[str, str], searchable: Iterable[str]) -> List[str]:
    """llama-quantize arguments reproducing the mix: one ``--tensor-type REGEX=type`` per tensor."""
    out = []
    for n in searchable:
        if n in types:
            pattern = "^" + n.replace(".", r"\.") + "$"
            out.append(f"--tensor-type {pattern}={llama_cpp_name(types[n])}")
    return out


def write_rules(path: Path, types: Dict[str, str], searchable: Sequence[str]) -> Path:
    lines = ["# llama-quantize arguments that reproduce this mix, e.g.:",
             "#   llama-quantize $(grep -v '^#' THIS_FILE) MASTER.gguf OUT.gguf Q8_0",
             "# (every matrix is named, so the final ftype argument only sets general.file_type)"]
    lines += tensor_type_rules(types, searchable)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)


def write_sensitivity_table(path: Path, sens: Sensitivity, chosen: Optional[Dict[str, str]] = None) -> Path:
    """TSV: tensor, parameters, then per candidate type the predicted dKL (measured ones marked *),
    bytes, and the chosen type."""
    cands = list(sens.candidates)
    head = ["tensor", "params"] + [f"dKL_{c}" for c in cands] + [f"bytes_{c}" for c in cands] + ["chosen"]
    rows = ["\t".join(head)]
    for n in sens.dkl:
        cells = [n, str(sens.n_params.get(n, ""))]
        for c in cands:
            v = sens.dkl[n].get(c)
            mark = "*" if c in sens.measured.get(n, {}) else ""
            cells.append("" if v is None else f"{v:.3e}{mark}")
        for c in cands:
            b = sens.bytes[n].get(c)
            cells.append("" if b is None else str(b))
        cells.append((chosen or {}).get(n, ""))
        rows.append("\t".join(cells))
    write_text_atomic(path, "\n".join(rows) + "\n")
    return Path(path)


def pareto_plot(path: Path, *, searched: Sequence[Tuple[float, float]], presets: Dict[str, Tuple[float, float]],
                title: str, xlabel: str = "file size (MiB)", ylabel: str = "mean KL divergence vs reference (nats)",
                chosen: Optional[Sequence[Tuple[str, float, float]]] = None) -> Path:
    """Size vs KL: a line through the searched mixes, labelled points for the presets."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("[quantize] the Pareto plot needs matplotlib (pip install matplotlib, or "
                          "pip install 'edge_rt[plot]')") from e
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if searched:
        xs, ys = zip(*sorted(searched))
        ax.plot(xs, ys, "o-", color="tab:blue", ms=4, label="edge_rt searched mixes")
    for name, (x, y) in presets.items():
        ax.plot([x], [y], "s", color="tab:red", ms=6)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color="tab:red")
    for name, x, y in chosen or ():
        ax.plot([x], [y], "*", color="tab:green", ms=11)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8, color="tab:green")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix[1:] or "png")
    plt.close(fig)
    return Path(path)
