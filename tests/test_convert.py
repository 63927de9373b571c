"""Tests of the streaming layout converter (edge_rt.convert.convert_gguf and ``edge-rt convert``).

A converted file must stay a GGUF that llama.cpp loads with bitwise identical logits, give edge_rt
bitwise identical logits, keep metadata and tensor bytes unchanged (except ``general.alignment`` and
``edge_rt.layout``), and put each layer's tensors in one contiguous 4096-aligned range, layers in order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_rt import _core as core
from edge_rt import cli
from edge_rt.convert import LAYOUT_KEY, STREAMING_ALIGNMENT, convert_gguf
from edge_rt.errors import InvalidArgumentError, ModelFormatError, ModelIOError

from helpers import open_llama_cpp, requires_llama_cpp

PROMPT_IDS = [1, 17, 42, 5, 99, 300, 7, 256, 13]

# arch x weight type: every arch and every requested type at least once, plus a tied-embedding model
# (no output.weight) and K-quant embeddings.
CASES: Dict[str, Dict] = {
    "llama-Q8_0": dict(arch="llama", weight_type="Q8_0"),
    "qwen2-Q4_K": dict(arch="qwen2", weight_type="Q4_K"),
    "qwen3-F16": dict(arch="qwen3", weight_type="F16", n_layer=3),
    "llama-Q4_K-tied": dict(arch="llama", weight_type="Q4_K", tie_embeddings=True, n_head_kv=2),
}

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, synthetic_model, tmp_path_factory) -> Tuple[Path, Path, Dict]:
    src = synthetic_model(**CASES[request.param])
    dst = tmp_path_factory.mktemp("converted") / f"{request.param}.gguf"
    res = convert_gguf(src, dst)
    return src, dst, res


def _tensor_bytes(path: Path) -> Dict[str, bytes]:
    out = {}
    with open(path, "rb") as f:
        for t in core.GGUFFile(str(path)).tensors:
            f.seek(t["offset"])
            out[t["name"]] = f.read(t["n_bytes"])
    return out


# ---- (a) llama.cpp loads the output with identical logits -------------------------------------------

@requires_llama_cpp
def test_llama_cpp_identical_logits(pair):
    src, dst, _ = pair

    def logits(path: Path) -> np.ndarray:
        llm = open_llama_cpp(path, n_ctx=64)
        try:
            llm.eval(PROMPT_IDS)
            return np.array(llm.scores[: len(PROMPT_IDS)], dtype=np.float32)
        finally:
            llm.close()

    a, b = logits(src), logits(dst)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)


# ---- (b) edge_rt gives identical logits --------------------------------------------------------------

def test_edge_rt_identical_logits(pair):
    import edge_rt

    src, dst, _ = pair
    with edge_rt.load(src, threads=1, n_ctx=64) as m:
        a = m.logits(PROMPT_IDS)
    with edge_rt.load(dst, threads=1, n_ctx=64) as m:
        b = m.logits(PROMPT_IDS)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)


# ---- (c) layout: contiguous, aligned, ordered layers ------------------------------------------------

def test_layers_contiguous_aligned_in_order(pair):
    src, dst, res = pair
    g = core.GGUFFile(str(dst))
    assert g.alignment == STREAMING_ALIGNMENT
    assert g.data_offset % STREAMING_ALIGNMENT == 0
    tensors = sorted(g.tensors, key=lambda t: t["offset"])
    # header order is data order (llama.cpp requires it)
    assert [t["name"] for t in g.tensors] == [t["name"] for t in tensors]
    assert all(t["offset"] % STREAMING_ALIGNMENT == 0 for t in tensors)

    spans: Dict[int, List[int]] = {}
    for t in tensors:
        m = _LAYER_RE.match(t["name"])
        if m:
            s = spans.setdefault(int(m.group(1)), [t["offset"], t["offset"] + t["n_bytes"]])
            s[0] = min(s[0], t["offset"])
            s[1] = max(s[1], t["offset"] + t["n_bytes"])
    n_layer = _n_layer(src)
    assert sorted(spans) == list(range(n_layer))
    for i, (a, e) in spans.items():
        assert a % STREAMING_ALIGNMENT == 0
        for t in tensors:  # no other tensor inside the layer's span
            m = _LAYER_RE.match(t["name"])
            if m is None or int(m.group(1)) != i:
                assert t["offset"] + t["n_bytes"] <= a or t["offset"] >= e, (i, t["name"])
    starts = [spans[i][0] for i in range(n_layer)]
    assert starts == sorted(starts)  # layers in order

    # globals first: token_embd, then the rest, then the layers
    names = [t["name"] for t in tensors]
    assert names[0] == "token_embd.weight"
    first_layer = next(k for k, n in enumerate(names) if n.startswith("blk."))
    assert all(not n.startswith("blk.") for n in names[:first_layer])
    assert all(n.startswith("blk.") for n in names[first_layer:])

    # the result dict describes the same file
    assert res["layer_ranges"] == [(i, spans[i][0], spans[i][1] - spans[i][0]) for i in range(n_layer)]
    assert res["n_layers"] == n_layer
    assert res["n_tensors"] == len(tensors)
    assert res["bytes_out"] == dst.stat().st_size == g.file_size
    assert res["bytes_in"] == src.stat().st_size
    tensor_total = sum(t["n_bytes"] for t in tensors)
    assert 0 <= res["padding_bytes"] < STREAMING_ALIGNMENT * (len(tensors) + 1)
    assert res["padding_bytes"] + tensor_total <= res["bytes_out"]
    assert res["moe"] is False and res["seconds"] >= 0


def _n_layer(src: Path) -> int:
    md = core.GGUFFile(str(src)).metadata
    return int(md[f"{md['general.architecture']}.block_count"])


# ---- (d) metadata and tensors unchanged --------------------------------------------------------------

def test_metadata_and_tensors_unchanged(pair):
    src, dst, _ = pair
    a, b = core.GGUFFile(str(src)), core.GGUFFile(str(dst))
    assert b.version == a.version
    changed = {"general.alignment", LAYOUT_KEY}
    md_a = {k: v for k, v in a.metadata.items() if k not in changed}
    md_b = {k: v for k, v in b.metadata.items() if k not in changed}
    assert list(md_a) == list(md_b)  # same keys, same order
    assert md_a == md_b
    assert {k: v for k, v in a.metadata_types.items() if k not in changed} == \
           {k: v for k, v in b.metadata_types.items() if k not in changed}
    assert b.metadata["general.alignment"] == STREAMING_ALIGNMENT
    assert b.metadata_types["general.alignment"] == "UINT32"
    assert b.metadata[LAYOUT_KEY] == "streaming"
    assert b.metadata_types[LAYOUT_KEY] == "STRING"

    ta = {t["name"]: (t["type"], list(t["shape"]), t["n_bytes"]) for t in a.tensors}
    tb = {t["name"]: (t["type"], list(t["shape"]), t["n_bytes"]) for t in b.tensors}
    assert ta == tb
    assert _tensor_bytes(src) == _tensor_bytes(dst)


def test_reconvert_is_idempotent(pair, tmp_path):
    _, dst, res = pair
    again = tmp_path / "again.gguf"
    r2 = convert_gguf(dst, again)
    assert again.read_bytes() == dst.read_bytes()
    assert r2["layer_ranges"] == res["layer_ranges"]


# ---- overwrite, progress, errors ---------------------------------------------------------------------

def test_overwrite_and_progress(tiny_model, tmp_path):
    dst = tmp_path / "out.gguf"
    dst.write_bytes(b"old contents")
    calls: List[Tuple[int, int]] = []
    res = convert_gguf(tiny_model, dst, progress=lambda d, t: calls.append((d, t)))
    assert core.GGUFFile(str(dst)).metadata[LAYOUT_KEY] == "streaming"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf"]  # no temporary file left
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert res["bytes_out"] == dst.stat().st_size


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(ModelFormatError, match="bad.gguf"):
        convert_gguf(bad, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # no output, no temporary file


def test_truncated_gguf(tiny_model, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = tiny_model.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError):
        convert_gguf(cut, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


def test_dst_is_src(tiny_model, tmp_path):
    copy = tmp_path / "m.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    before = copy.read_bytes()
    with pytest.raises(InvalidArgumentError):
        convert_gguf(copy, copy)
    with pytest.raises(InvalidArgumentError):
        convert_gguf(copy, tmp_path / "sub" / ".." / "m.gguf")
    os.link(copy, tmp_path / "hard.gguf")
    with pytest.raises(InvalidArgumentError):
        convert_gguf(copy, tmp_path / "hard.gguf")
    assert copy.read_bytes() == before


def test_bad_layout_and_missing(tiny_model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="layout"):
        convert_gguf(tiny_model, tmp_path / "o.gguf", layout="columnar")
    with pytest.raises(ModelIOError, match="not found"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "o.gguf")
    # the error would otherwise name the temporary file
    with pytest.raises(ModelIOError, match=r"output's folder does not exist: .*nowhere$"):
        convert_gguf(tiny_model, tmp_path / "nowhere" / "o.gguf")


# ---- CLI ---------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_missing_file(tmp_path):
    r = runner.invoke(cli.app, ["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf")])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-rt: error: "), r.stderr
    assert "not found" in lines[0] and "Traceback" not in r.stderr


def test_cli_happy_path(tiny_model, tmp_path):
    out = tmp_path / "o.gguf"
    r = runner.invoke(cli.app, ["convert", str(tiny_model), str(out), "--layout", "streaming"])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    summary = r.stderr.strip().splitlines()[-1]
    assert summary.startswith("edge-rt: converted ") and "padding" in summary and " s" in summary, r.stderr
    assert core.GGUFFile(str(out)).metadata[LAYOUT_KEY] == "streaming"


def test_cli_bad_layout(tiny_model, tmp_path):
    r = runner.invoke(cli.app, ["convert", str(tiny_model), str(tmp_path / "o.gguf"), "--layout", "x"])
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("edge-rt: error: ") and "layout" in r.stderr
