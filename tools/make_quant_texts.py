#!/usr/bin/env python3
"""Write the quantization toolchain's texts from held-out files of the tiny models' corpus split.

Both lists below are files from the held-out part of edge_rt/models/SPLIT.md (never trained on), and
the two lists are disjoint, so the benchmark never evaluates on text used for calibration:

  quantize/data/calibration.txt     default calibration text of `edge-rt quantize` (shipped in the wheel)
  benchmarks/data/quant_eval.txt    evaluation text of benchmarks/quant_quality.py

Files are read from this Python's standard library (the split was made on Python 3.11.7), joined in
the order listed, separated by a blank line. Usage: python3 tools/make_quant_texts.py
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_FILES = ["textwrap.py", "contextlib.py", "json/__init__.py"]
EVAL_FILES = ["pdb.py", "modulefinder.py", "multiprocessing/connection.py", "telnetlib.py",
              "tomllib/_parser.py", "unittest/result.py", "mailcap.py", "lib2to3/pgen2/pgen.py",
              "idlelib/tree.py"]


def heldout_files() -> set:
    lines = (ROOT / "edge_rt" / "models" / "SPLIT.md").read_text().splitlines()
    start = lines.index("## Held-out files")
    return {ln.strip()[3:-1] for ln in lines[start + 1:] if ln.startswith("- `")}


def main() -> None:
    held = heldout_files()
    assert not set(CALIBRATION_FILES) & set(EVAL_FILES)
    for f in CALIBRATION_FILES + EVAL_FILES:
        assert f in held, f"{f} is not a held-out file of SPLIT.md"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for files, out in ((CALIBRATION_FILES, ROOT / "quantize" / "data" / "calibration.txt"),
                       (EVAL_FILES, ROOT / "benchmarks" / "data" / "quant_eval.txt")):
        text = "\n\n".join((stdlib / f).read_bytes().decode("utf-8", errors="replace") for f in files)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"{out.relative_to(ROOT)}: {len(files)} files, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
