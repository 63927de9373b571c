"""Per-layer timeline of a streamed run: when each layer's weights were read, when compute waited for
them, and when it computed with them (``Model.stream_events()``), drawn as a PNG a person can read.

matplotlib is optional (``pip install "edge_rt[plot]"``); only drawing needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .errors import InvalidArgumentError


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


def plot_timeline(events: Sequence[Dict[str, Any]], path: Path, *, title: str = "",
                  head_unit: Optional[int] = None, max_events: Optional[int] = 120) -> Path:
    """Draws one row per layer (unit): I/O read bars, stall bars and compute bars on a shared time axis
    in milliseconds, for the last ``max_events`` events. ``head_unit`` (the model's n_layer) labels the
    output head's row. Returns ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InvalidArgumentError("[plot] drawing a timeline needs matplotlib: pip install 'edge_rt[plot]'") from e
    evs: List[Dict[str, Any]] = list(events)[-max_events:] if max_events else list(events)
    if not evs:
        raise InvalidArgumentError("[plot] no streamed layers to draw: was the model loaded with a memory budget "
                                   "small enough to stream?")
    t0 = min(min(e["io_start"] or e["wait_start"], e["wait_start"]) for e in evs)
    units = sorted({e["unit"] for e in evs})
    row = {u: i for i, u in enumerate(units)}
    fig, ax = plt.subplots(figsize=(12, max(3.0, 0.32 * len(units) + 1.5)), dpi=110)
    ms = lambda t: (t - t0) * 1e3  # noqa: E731
    for e in evs:
        y = row[e["unit"]]
        if e["io_end"] > e["io_start"]:
            ax.barh(y - 0.2, ms(e["io_end"]) - ms(e["io_start"]), left=ms(e["io_start"]), height=0.35,
                    color="#4c72b0")
        if e["acquired"] > e["wait_start"]:
            ax.barh(y + 0.2, ms(e["acquired"]) - ms(e["wait_start"]), left=ms(e["wait_start"]), height=0.35,
                    color="#c44e52")
        if e["released"] > e["acquired"]:
            ax.barh(y + 0.2, ms(e["released"]) - ms(e["acquired"]), left=ms(e["acquired"]), height=0.35,
                    color="#55a868")
    ax.set_yticks(range(len(units)))
    ax.set_yticklabels(["output head" if u == head_unit else f"layer {u}" for u in units])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title or "edge_rt streaming timeline", pad=24)
    ax.legend(handles=[Patch(color="#4c72b0", label="flash read (I/O threads)"),
                       Patch(color="#c44e52", label="compute waiting for its layer (stall)"),
                       Patch(color="#55a868", label="compute")],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=9, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
