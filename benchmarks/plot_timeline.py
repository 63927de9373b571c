#!/usr/bin/env python3
"""Per-layer timeline of edge_rt's layer streaming: for each streamed layer use, its flash read
(I/O, ``io_start`` -> ``io_end``), the compute's wait for it (stall, ``wait_start`` -> ``acquired``)
and its compute (``acquired`` -> ``released``), from ``Model.stream_events()``.

    python benchmarks/plot_timeline.py EVENTS.json OUT.png [--tokens 3]   # EVENTS: a list of events,
                                                                          # or streaming.json
Needs matplotlib. The drawing lives in edge_rt.timeline (also behind `edge-rt bench --plot`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from edge_rt.timeline import plot_timeline


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
