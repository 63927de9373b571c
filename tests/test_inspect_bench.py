"""The library functions behind ``edge-rt inspect`` and ``edge-rt bench``: edge_rt.inspect and
edge_rt.bench, called directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edge_rt
from edge_rt.errors import InvalidArgumentError, ModelFormatError, ModelIOError


@pytest.fixture(scope="module")
def model_path(synthetic_model) -> Path:
    return synthetic_model(n_ctx_train=256)


def _reference_tensors(path: Path):
    import gguf

    return [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in gguf.GGUFReader(str(path)).tensors]


def test_inspect(model_path: Path) -> None:
    d = edge_rt.inspect(model_path, threads=1, n_ctx=64)
    ref = _reference_tensors(model_path)
    assert d["path"] == str(model_path) and d["architecture"] == "llama"
    assert d["n_parameters"] == sum(t[2] for t in ref) and d["n_tensors"] == len(ref)
    assert d["tensor_bytes"] == sum(t[3] for t in ref) and d["file_size"] == model_path.stat().st_size
    assert d["tokenizer"]["model"] == "gpt2" and d["tokenizer"]["n_vocab"] == 512
    assert d["hyperparameters"]["context_length"] == 256
    assert d["memory"]["minimum_budget"] == edge_rt.minimum_budget(model_path, threads=1, n_ctx=64)
    assert list(d["layers"])[0] == "token_embd"
    assert sum(v["bytes"] for v in d["layers"].values()) == d["tensor_bytes"]
    json.dumps(d)  # what `edge-rt inspect --json` prints


def test_inspect_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match=r"^\[inspect\] model file not found"):
        edge_rt.inspect(tmp_path / "missing.gguf")
    with pytest.raises(ModelIOError, match="directory"):
        edge_rt.inspect(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 40)
    with pytest.raises(ModelFormatError):
        edge_rt.inspect(bad)


def test_bench(model_path: Path) -> None:
    r = edge_rt.bench(model_path, threads=1, prompt_tokens=8, gen_tokens=3, repetitions=2, seed=1)
    assert (r["n_prompt"], r["n_gen"], r["repetitions"], r["threads"], r["arch"]) == (8, 3, 2, 1, "llama")
    for k in ("prefill_tok_s", "decode_tok_s"):
        assert 0 < r[f"{k}_min"] <= r[k] <= r[f"{k}_max"]
    assert "telemetry" not in r and "plots" not in r


def test_bench_under_budget_reports_telemetry(model_path: Path) -> None:
    floor = edge_rt.minimum_budget(model_path, threads=1, n_ctx=8)["total"]
    r = edge_rt.bench(model_path, threads=1, prompt_tokens=4, gen_tokens=4, repetitions=1, mem_budget=floor)
    t = r["telemetry"]
    assert t["n_tokens"] == 5 and t["memory"]["budget"] == floor and t["experts"] is None
    assert t["streaming"]["bytes_per_token"] > 0


def test_bench_argument_errors(model_path: Path, tmp_path: Path) -> None:
    for kw in ({"prompt_tokens": 0}, {"gen_tokens": -1}, {"repetitions": 0}, {"repetitions": 1.5}):
        with pytest.raises(InvalidArgumentError, match=next(iter(kw))):
            edge_rt.bench(model_path, **kw)
    with pytest.raises(InvalidArgumentError, match="mem_budget"):
        edge_rt.bench(model_path, plot=tmp_path / "t.png")
    with pytest.raises(InvalidArgumentError, match="nothing streams"):
        edge_rt.bench(model_path, mem_budget="1GB", plot=tmp_path / "t.png", repetitions=1)
    assert not list(tmp_path.iterdir())
