"""Per-layer timeline of a streamed run: when each layer's weights were read, when compute waited for
them, and when it computed with them (``Model.stream_events()``), drawn as a PNG a person can read;
for MoE models under a budget, when each expert was read and whether on demand or on a prediction
(``Model.expert_events()``).

matplotlib is optional (``pip install "edge_rt[plot]"``); only drawing needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .atomic_io import atomic_write
from .errors import InvalidArgumentError


def _pyplot() -> Tuple[Any, Any]:
    """matplotlib's pyplot (headless backend) and Patch, or a clear error when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InvalidArgumentError("[plot] drawing a timeline needs matplotlib: pip install 'edge_rt[plot]'") from e
    return plt, Patch


def _save(plt: Any, fig: Any, out: Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=110, format=out.suffix[1:] or "png")
    plt.close(fig)
    return out


def summarize(events: Sequence[Dict[str, Any]], n_tokens: int) -> Dict[str, float]:
    """Per-token averages over ``events``: bytes read, I/O busy time (union of the read intervals),
    stall time, compute time and the overlap (share of I/O time hidden behind compute)."""
    if not events or n_tokens <= 0:
        return {"bytes_per_token": 0.0, "io_s_per_token": 0.0, "stall_s_per_token": 0.0,
                "compute_s_per_token": 0.0, "overlap": 0.0}
    spans = sorted((e["io_start"], e["io_end"]) for e in events if e["io_end"] > e["io_start"])
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:  # union of I/O intervals: several reads are in flight at once
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    stall = sum(e["acquired"] - e["wait_start"] for e in events)
    compute = sum(max(0.0, e["released"] - e["acquired"]) for e in events if e["released"] > 0)
    return {
        "bytes_per_token": sum(e["bytes"] for e in events) / n_tokens,
        "io_s_per_token": busy / n_tokens,
        "stall_s_per_token": stall / n_tokens,
        "compute_s_per_token": compute / n_tokens,
        "overlap": max(0.0, 1.0 - stall / busy) if busy > 0 else 0.0,
    }


def split_passes(events: Sequence[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Group events into forward passes: a pass ends where the layer index goes back down."""
    evs = sorted(events, key=lambda e: e["acquired"])
    passes: List[List[Dict[str, Any]]] = []
    for e in evs:
        if not passes or e["unit"] <= passes[-1][-1]["unit"]:
            passes.append([])
        passes[-1].append(e)
    return passes


def plot_timeline(events: Sequence[Dict[str, Any]], out: Path, n_tokens: int = 3, first_pass: int = 1,
                  title: str = "edge_rt streaming timeline") -> Path:
    """Draw passes ``first_pass`` .. ``first_pass + n_tokens - 1`` (pass 0 is the prompt) to ``out``:
    one row per streamed layer, its read in the upper half, stall and compute in the lower half, token
    boundaries dashed, totals in the title. Returns ``out``."""
    plt, Patch = _pyplot()

    passes = split_passes(events)
    if not passes:
        raise InvalidArgumentError("[plot] no streamed layers to draw: was the model loaded with a memory budget "
                                   "small enough to stream?")
    first_pass = min(first_pass, len(passes) - 1)
    sel = passes[first_pass:first_pass + n_tokens]
    evs = [e for p in sel for e in p]
    t0 = min(min(e["io_start"], e["wait_start"]) for e in evs)
    t1 = max(e["released"] for e in evs)
    ms = lambda t: (t - t0) * 1e3  # noqa: E731
    units = sorted({e["unit"] for e in evs})
    ypos = {u: i for i, u in enumerate(units)}

    fig, ax = plt.subplots(figsize=(14, 0.42 * len(units) + 2.4))
    c_io, c_wait, c_cmp = "#4C72B0", "#DD4444", "#55A868"
    for e in evs:
        y = ypos[e["unit"]]
        # I/O in the upper half of the layer's row, compute (and the stall before it) in the lower half
        ax.broken_barh([(ms(e["io_start"]), (e["io_end"] - e["io_start"]) * 1e3)], (y + 0.02, 0.4),
                       facecolors=c_io)
        if e["acquired"] - e["wait_start"] > 2e-5:
            ax.broken_barh([(ms(e["wait_start"]), (e["acquired"] - e["wait_start"]) * 1e3)], (y - 0.42, 0.4),
                           facecolors=c_wait)
        ax.broken_barh([(ms(e["acquired"]), (e["released"] - e["acquired"]) * 1e3)], (y - 0.42, 0.4),
                       facecolors=c_cmp)
    for k, p in enumerate(sel):  # token boundaries
        x = ms(min(e["wait_start"] for e in p))
        ax.axvline(x, color="0.4", lw=0.8, ls="--")
        ax.text(x, len(units) - 0.35, f" token {first_pass + k}", va="bottom", ha="left", fontsize=9, color="0.25")
    ax.set_yticks(range(len(units)))
    ax.set_yticklabels([f"layer {u}" for u in units], fontsize=8)
    ax.set_ylim(-0.6, len(units) + 0.3)
    ax.set_xlim(0, ms(t1) * 1.01)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("streamed layer")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    io_s = sum(e["io_end"] - e["io_start"] for e in evs)
    st_s = sum(e["acquired"] - e["wait_start"] for e in evs)
    cm_s = sum(e["released"] - e["acquired"] for e in evs)
    mb = sum(e.get("bytes", 0) for e in evs) / 1e6
    ax.set_title(f"{title}\n{len(sel)} decode tokens: {mb:.0f} MB read, I/O busy {io_s * 1e3:.0f} ms, "
                 f"streamed-layer compute {cm_s * 1e3:.0f} ms, stalls {st_s * 1e3:.0f} ms; gaps in the "
                 f"compute rows = pinned (resident) layers and the output head", fontsize=10)
    ax.legend(handles=[Patch(color=c_io, label="I/O: layer read from flash (O_DIRECT), upper half"),
                       Patch(color=c_wait, label="stall: compute waiting for the read, lower half"),
                       Patch(color=c_cmp, label="compute on the streamed layer, lower half")],
              loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=9, frameon=False)
    return _save(plt, fig, out)


def plot_expert_timeline(expert_events: Sequence[Dict[str, Any]], out: Path, max_reads: int = 400,
                         title: str = "edge_rt expert reads") -> Path:
    """Draw the last ``max_reads`` expert reads to ``out``: one row per layer, each read a bar from its
    first to its last byte, blue when the router was waiting for it (on demand), orange when a
    prediction issued it ahead of the router. Returns ``out``."""
    plt, Patch = _pyplot()
    evs = sorted((e for e in expert_events if e["io_end"] >= e["io_start"] > 0), key=lambda e: e["io_start"])
    if not evs:
        raise InvalidArgumentError("[plot] no expert reads to draw: is this an MoE model under a memory budget "
                                   "whose expert cache is smaller than its experts?")
    evs = evs[-max_reads:]
    t0 = evs[0]["io_start"]
    ms = lambda t: (t - t0) * 1e3  # noqa: E731
    layers = sorted({e["layer"] for e in evs})
    ypos = {layer: i for i, layer in enumerate(layers)}
    fig, ax = plt.subplots(figsize=(14, 0.3 * len(layers) + 2.4))
    c_demand, c_pred = "#4C72B0", "#DD8452"
    for e in evs:
        ax.broken_barh([(ms(e["io_start"]), max(0.05, (e["io_end"] - e["io_start"]) * 1e3))],
                       (ypos[e["layer"]] - 0.35, 0.7), facecolors=c_pred if e["speculative"] else c_demand,
                       edgecolors="white", linewidth=0.3)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels([f"layer {layer}" for layer in layers], fontsize=7)
    ax.set_xlabel("time (ms)")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    n_pred = sum(1 for e in evs if e["speculative"])
    ax.set_title(f"{title}\nlast {len(evs)} expert reads: {n_pred} issued by a prediction, {len(evs) - n_pred} "
                 f"on demand (the router was waiting)", fontsize=10)
    ax.legend(handles=[Patch(color=c_demand, label="on-demand read (compute waits)"),
                       Patch(color=c_pred, label="predicted read (ahead of the router)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    return _save(plt, fig, out)
