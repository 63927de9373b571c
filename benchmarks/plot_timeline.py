#!/usr/bin/env python3
"""Per-layer timeline of edge_rt's layer streaming: for each streamed layer use, its flash read
(I/O, ``io_start`` -> ``io_end``), the compute's wait for it (stall, ``wait_start`` -> ``acquired``)
and its compute (``acquired`` -> ``released``), from ``Model.stream_events()``.

    python benchmarks/plot_timeline.py EVENTS.json OUT.png [--tokens 3]   # EVENTS: a list of events,
                                                                          # or streaming.json
Needs matplotlib (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


def split_passes(events: Sequence[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Group events into forward passes: a pass ends where the layer index goes back down."""
    evs = sorted(events, key=lambda e: e["acquired"])
    passes: List[List[Dict[str, Any]]] = []
    for e in evs:
        if not passes or e["unit"] <= passes[-1][-1]["unit"]:
            passes.append([])
        passes[-1].append(e)
    return passes


def plot_timeline(events: Sequence[Dict[str, Any]], out: Path, token_times: Optional[Sequence[float]] = None,
                  n_tokens: int = 3, first_pass: int = 1, title: str = "edge_rt streaming timeline") -> Path:
    """Draw passes ``first_pass`` .. ``first_pass + n_tokens - 1`` (pass 0 is the prompt) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    passes = split_passes(events)
    if not passes:
        raise ValueError("no streamed layer events (is every weight resident?)")
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
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("events", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokens", type=int, default=3)
    ap.add_argument("--first", type=int, default=1, help="first pass to draw (0 = the prompt)")
    a = ap.parse_args(argv)
    data = json.loads(a.events.read_text())
    if isinstance(data, dict):  # streaming.json
        tl = next(m["timeline"] for m in data["models"] if m.get("timeline"))
        data = tl["events"]
    plot_timeline(data, a.out, n_tokens=a.tokens, first_pass=a.first)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
