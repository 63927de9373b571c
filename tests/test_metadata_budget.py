"""Metadata inside the memory budget (issue 21): what the parsed GGUF key/values and the tokenizer hold
is a memory class (``metadata``) counted against ``mem_budget``, and a file whose metadata would need
more than the budget (or more than the reader's expansion ceiling, 8x the file size) is refused with
OutOfMemoryError stating what it needs, before that memory is allocated."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

import edge_rt
from edge_rt import _core
from edge_rt.errors import OutOfMemoryError

from helpers import python_child

MIB = 1 << 20


def test_memory_report_counts_metadata(tiny_model: Path) -> None:
    floor = edge_rt.minimum_budget(tiny_model)
    assert floor["metadata"] > 0
    assert floor["total"] == sum(v for k, v in floor.items() if k not in ("total", "threads", "n_ctx"))
    with edge_rt.load(tiny_model, mem_budget=floor["total"]) as m:  # the stated minimum loads
        rep = m.memory_report()
        assert rep["classes"]["metadata"] == floor["metadata"]
        assert rep["total"] <= rep["budget"] == floor["total"]
    with pytest.raises(OutOfMemoryError, match="metadata"):
        edge_rt.load(tiny_model, mem_budget=floor["total"] - 1)
    with edge_rt.load(tiny_model) as m:  # counted without a budget too
        assert m.memory_report()["classes"]["metadata"] > 0


def _strings_gguf(path: Path, n: int) -> Path:
    """A valid GGUF whose only key is an array of n empty strings: 8 bytes each in the file, a
    std::string (32 bytes) each once parsed."""
    kv = struct.pack("<Q", 5) + b"a.key" + struct.pack("<IIQ", 9, 8, n) + b"\0" * (8 * n)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    return path


def test_hostile_metadata_refused_before_allocation(tmp_path: Path) -> None:
    p = _strings_gguf(tmp_path / "strings.gguf", 200_000)  # 1.6 MB file, 6.4 MB of std::string once parsed
    assert _core.GGUFFile(str(p)).metadata_bytes >= 200_000 * 32
    with pytest.raises(OutOfMemoryError) as e:
        _core.GGUFFile(str(p), max_metadata_bytes=1 * MIB)
    msg = str(e.value)
    need = int(re.search(r"metadata needs (\d+) bytes", msg).group(1))
    assert need >= 200_000 * 32 and "key 'a.key'" in msg and "1048576 bytes" in msg
    # The refusal allocates none of it: peak RSS of a child that is refused stays near its baseline.
    code = ("import resource, edge_rt\nfrom edge_rt import _core\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    _core.GGUFFile({str(p)!r}, max_metadata_bytes=1 << 20)\nexcept MemoryError:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)")
    r = python_child(["-c", code], capture_output=True, text=True, check=True)
    assert int(r.stdout) * 1024 < 4 * MIB, r.stdout  # < the 6.4 MB the strings would take


def test_expansion_ceiling_without_a_budget(tmp_path: Path) -> None:
    """Without a limit the reader still holds at most 8x the file size (+1 MiB): a file of u8 arrays
    widens exactly 8x and is accepted; the ceiling is checked, not assumed."""
    n = 300_000
    kv = struct.pack("<Q", 5) + b"a.key" + struct.pack("<IIQ", 9, 0, n) + b"\1" * n
    p = tmp_path / "u8.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    f = _core.GGUFFile(str(p))
    assert 8 * n <= f.metadata_bytes <= 8 * p.stat().st_size + MIB


@pytest.fixture(scope="module")
def million_token_model(tmp_path_factory) -> Path:
    """The issue's model: one layer, a one-million-token gpt2 vocabulary, ~95 MB."""
    from edge_rt.synthetic import write_synthetic_gguf

    return write_synthetic_gguf(tmp_path_factory.mktemp("vocab1m") / "vocab1m.gguf", n_vocab=1_000_000, n_embd=64,
                                n_ff=64, n_layer=1, n_head=2, weight_type="Q8_0", tie_embeddings=True)


_GROWTH = """
import json, resource, sys, edge_rt
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {}
try:
    with edge_rt.load(sys.argv[1], mem_budget=int(sys.argv[2])) as m:
        out["report"] = m.memory_report()
except edge_rt.OutOfMemoryError as e:
    out["error"] = str(e)
out["growth"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps(out))
"""


def _load_in_child(model: Path, budget: int) -> dict:
    r = python_child(["-c", _GROWTH, str(model), str(budget)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_million_token_vocabulary_under_64mb(million_token_model: Path) -> None:
    budget = 64 * 10**6
    out = _load_in_child(million_token_model, budget)
    # Refused, stating the minimum, with the process grown by at most budget + 64 MiB.
    assert "error" in out, out
    m = re.search(r"below the minimum (\d+) bytes", out["error"]) or re.search(r"metadata needs (\d+) bytes",
                                                                               out["error"])
    assert m and int(m.group(1)) > budget, out["error"]
    assert out["growth"] <= budget + 64 * MIB, out
    floor = edge_rt.minimum_budget(million_token_model)
    assert floor["metadata"] > budget
    # The stated minimum (the whole floor) loads, and the engine's classes stay inside it.
    ok = _load_in_child(million_token_model, floor["total"])
    assert "report" in ok, ok
    assert ok["report"]["total"] <= floor["total"] and ok["report"]["classes"]["metadata"] == floor["metadata"]
    assert ok["growth"] <= floor["total"] + 64 * MIB, ok

