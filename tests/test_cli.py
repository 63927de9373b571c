"""Tests of the ``edge-rt`` command line (edge_rt.cli): help, version, error reporting, and the run,
inspect and bench commands on small synthetic models.

Most tests call the Typer app in-process (typer.testing.CliRunner); the ones about process-level
behaviour (exit status, stderr without a traceback, streaming to a pipe) run ``python -m edge_rt``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from typer.testing import CliRunner

import edge_rt
from edge_rt import cli

from helpers import python_child

runner = CliRunner()


def invoke(*args: object, env=None):
    return runner.invoke(cli.app, [str(a) for a in args], env=env)


def run_process(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return python_child(["-m", "edge_rt", *[str(a) for a in args]], capture_output=True, text=True,
                        timeout=timeout)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edge-rt: error: "), stderr
    assert "Traceback" not in stderr
    for f in fragments:
        assert f in lines[0], (f, stderr)


@pytest.fixture(scope="module")
def model_path(synthetic_model) -> Path:
    return synthetic_model(n_ctx_train=256)


# ---- help and version ------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [[], ["run"], ["inspect"], ["bench"]])
def test_help(cmd: List[str]) -> None:
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage" in r.stdout
    r = invoke(*cmd, "-h")
    assert r.exit_code == 0 and "Usage" in r.stdout


def test_help_lists_commands() -> None:
    out = invoke("--help").stdout
    for c in ("run", "inspect", "bench"):
        assert c in out


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"edge-rt {edge_rt.__version__}"


def test_version_process() -> None:
    p = run_process("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"edge-rt {edge_rt.__version__}"


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["run", "inspect", "bench"])
def test_missing_file_process(cmd: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing-model.gguf"
    p = run_process(cmd, missing)
    assert p.returncode == 1, p.stderr
    assert p.stdout == ""
    assert_one_line_error(p.stderr, str(missing))


@pytest.mark.parametrize("cmd", ["run", "inspect", "bench"])
def test_not_a_gguf(cmd: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are not the weights you are looking for\n" * 20)
    r = invoke(cmd, bad)
    assert r.exit_code == 1, r.output
    assert r.stdout == ""
    assert_one_line_error(r.stderr)


def test_not_a_gguf_process(tmp_path: Path) -> None:
    bad = tmp_path / "random.bin"
    bad.write_bytes(os.urandom(4096))
    p = run_process("run", bad)
    assert p.returncode == 1
    assert_one_line_error(p.stderr)


def test_stop_strings_are_unescaped_as_in_llama_cpp() -> None:
    """--stop '\\n' stops at a newline (it was taken as a backslash and an n)."""
    assert cli._unescape(r"a\nb\tc\\n\q") == "a\nb\tc\\n\\q"
    args = ("run", cli.DEFAULT_MODEL, "-p", "def fibonacci(n):", "-n", 48, "--temp", 0)
    free = invoke(*args)
    assert free.exit_code == 0 and free.stdout.count("\n") > 2, free.output  # the model writes lines
    r = invoke(*args, "--stop", r"\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 1 and free.stdout.startswith(r.stdout[:-1]), (r.stdout, free.stdout)


@pytest.mark.parametrize("cmd", ["run", "bench"])
def test_model_given_to_dash_m_is_explained(model_path: Path, cmd: str) -> None:
    """llama.cpp users type -m MODEL; here -m is the budget: the error says so."""
    r = invoke(cmd, "-m", model_path)
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "is the memory budget", "first argument")


@pytest.mark.parametrize("budget,fragment", [("100000000TB", "too large"), ("0", "must be > 0"), ("-1", ">= 0")])
def test_bad_mem_budget_is_one_line(model_path: Path, budget: str, fragment: str) -> None:
    """A budget past 64 bits printed a 46-line traceback; 0 silently meant no budget."""
    r = invoke("run", model_path, "-p", "hi", "-n", 1, "--mem-budget", budget)
    assert r.exit_code == 1, r.output
    assert_one_line_error(r.stderr, "mem_budget", fragment)


@pytest.mark.parametrize("cmd", ["run", "inspect", "bench"])
def test_directory_instead_of_file(cmd: str, tmp_path: Path) -> None:
    r = invoke(cmd, tmp_path)
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "directory")


def test_truncated_gguf(model_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path.read_bytes()[:1000])
    for cmd in ("run", "inspect"):
        r = invoke(cmd, cut)
        assert r.exit_code == 1, r.output
        assert_one_line_error(r.stderr)


@pytest.mark.parametrize("args", [
    ["run", "--top-k", "-1"], ["run", "--threads", "0"], ["run", "--max-tokens", "x"], ["bench"],
    ["inspect"], ["frobnicate"], ["run", "--no-such-option"],
])
def test_usage_errors_exit_2(args: List[str]) -> None:
    r = invoke(*args)
    assert r.exit_code == 2, r.output


def test_bad_sampling_value_is_one_line_error(model_path: Path) -> None:
    r = invoke("run", model_path, "--top-p", "0", "-t", "1")
    assert r.exit_code == 1
    assert r.stdout == ""  # nothing echoed before the arguments were checked
    assert_one_line_error(r.stderr, "top_p")


def test_ctx_smaller_than_prompt(model_path: Path) -> None:
    r = invoke("run", model_path, "-p", "the quick brown fox jumps over the lazy dog", "--ctx", "4", "-t", "1")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "n_ctx")


# ---- run -------------------------------------------------------------------------------------------

def _expected_text(path: Path, prompt: str, n: int, **kw) -> str:
    with edge_rt.load(path, threads=1) as m:
        return m.generate(prompt, max_tokens=n, temperature=0.0, **kw)


def _with_newline(s: str) -> str:
    return s if s.endswith("\n") else s + "\n"


def test_run_greedy_process(model_path: Path) -> None:
    prompt = "the quick brown"
    p = run_process("run", model_path, "-p", prompt, "-n", 12, "--temperature", 0, "-t", 1)
    assert p.returncode == 0, p.stderr
    assert p.stdout == _with_newline(prompt + _expected_text(model_path, prompt, 12))
    assert "Traceback" not in p.stderr and "synthetic" not in p.stderr


def test_run_no_repack_loads_without_repacking(model_path: Path, monkeypatch) -> None:
    import edge_rt.loading

    seen = []
    real_load = edge_rt.loading.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("repack"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(edge_rt.loading, "load", spy)
    for flag, want in (("--no-repack", False), ("--repack", True)):
        r = invoke("run", model_path, "-p", "the", "-n", 2, "--temperature", 0, "-t", 1, flag)
        assert r.exit_code == 0, r.output
        assert seen[-1] is want


def test_run_seeded_is_reproducible(model_path: Path) -> None:
    args = ["run", model_path, "-p", "once", "-n", 16, "--temperature", 3.0, "--top-p", 1.0, "--seed", 42, "-t", 1]
    a, b = invoke(*args), invoke(*args)
    assert a.exit_code == 0 and b.exit_code == 0
    assert a.stdout == b.stdout and a.stdout.startswith("once")


def test_run_stats(model_path: Path) -> None:
    r = invoke("run", model_path, "-p", "the", "-n", 6, "--temperature", 0, "-t", 1, "--stats")
    assert r.exit_code == 0, r.output
    assert "prompt tokens" in r.stderr and "prefill" in r.stderr and "decode" in r.stderr
    assert "tok/s" in r.stderr
    assert "prefill" not in r.stdout  # stats never mix into the generated text


def test_run_zero_tokens_echoes_prompt(model_path: Path) -> None:
    r = invoke("run", model_path, "-p", "hello there", "-n", 0, "-t", 1)
    assert r.exit_code == 0
    assert r.stdout == "hello there\n"


def test_run_stop_string(model_path: Path) -> None:
    prompt = "the quick"
    full = _expected_text(model_path, prompt, 20)
    assert len(full) >= 6
    stop = full[3:5]
    r = invoke("run", model_path, "-p", prompt, "-n", 20, "--temperature", 0, "-t", 1, "--stop", stop)
    assert r.exit_code == 0, r.output
    assert r.stdout == _with_newline(prompt + full[:full.find(stop)])


def test_run_without_model_uses_synthetic(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "DEFAULT_MODEL", tmp_path / "models" / "default.gguf")
    cache = tmp_path / "cache"
    r = invoke("run", "-p", "hi", "-n", 4, "-t", 1, env={"EDGE_RT_CACHE": str(cache)})
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("hi")
    assert "synthetic" in r.stderr and "random" in r.stderr
    assert list((cache / "synthetic").glob("*.gguf"))  # generated into the cache


def test_run_without_model_prefers_embedded(model_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "DEFAULT_MODEL", model_path)
    r = invoke("run", "-p", "hi", "-n", 3, "--temperature", 0, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "synthetic" not in r.stderr
    assert r.stdout == _with_newline("hi" + _expected_text(model_path, "hi", 3))


# ---- inspect ---------------------------------------------------------------------------------------

def _reference_tensors(path: Path):
    """Tensor facts from the gguf package, independent of edge_rt's C++ reader."""
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    return [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors]


def test_inspect_text(model_path: Path) -> None:
    r = invoke("inspect", model_path)
    assert r.exit_code == 0, r.output
    out = r.stdout
    ref = _reference_tensors(model_path)
    n_params = sum(t[2] for t in ref)
    assert "llama" in out and "gpt2" in out
    assert f"{n_params:,}" in out
    for needle in ("Q8_0", "F32", "blk.0", "blk.1", "token_embd", "output", "embedding_length", "256"):
        assert needle in out, needle
    floor = edge_rt.minimum_budget(model_path, threads=1, n_ctx=64)
    r = invoke("inspect", model_path, "--ctx", "64", "--threads", "1")
    assert r.exit_code == 0, r.output
    assert f"min budget    {cli._fmt_bytes(floor['total'])} ({floor['total']:,} bytes) for --mem-budget at n_ctx 64, " \
           "1 thread:" in r.stdout, r.stdout


def test_inspect_a_file_edge_rt_cannot_run(tmp_path: Path) -> None:
    """inspect still describes it, and says why there is no minimum budget."""
    import gguf

    path = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = invoke("inspect", path)
    assert r.exit_code == 0, r.output
    assert "bert" in r.stdout and "min budget    n/a: " in r.stdout, r.stdout


def test_inspect_json(model_path: Path) -> None:
    r = invoke("inspect", model_path, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ref = _reference_tensors(model_path)
    assert d["architecture"] == "llama"
    assert d["n_parameters"] == sum(t[2] for t in ref)
    assert d["n_tensors"] == len(ref)
    assert d["tensor_bytes"] == sum(t[3] for t in ref)
    assert d["file_size"] == model_path.stat().st_size
    assert d["tokenizer"]["model"] == "gpt2" and d["tokenizer"]["n_vocab"] == 512
    assert d["hyperparameters"]["block_count"] == 2 and d["hyperparameters"]["context_length"] == 256
    counts: Dict[str, int] = {}
    for _, ty, _, _ in ref:
        counts[ty] = counts.get(ty, 0) + 1
    assert {k: v["tensors"] for k, v in d["tensor_types"].items()} == counts
    floor = d["memory"]["minimum_budget"]
    assert floor == edge_rt.minimum_budget(model_path), floor
    layers = d["layers"]
    assert list(layers)[0] == "token_embd"
    assert [k for k in layers if k.startswith("blk.")] == ["blk.0", "blk.1"]
    assert sum(v["bytes"] for v in layers.values()) == d["tensor_bytes"]
    assert layers["blk.0"]["bytes"] == sum(t[3] for t in ref if t[0].startswith("blk.0."))


# ---- bench -----------------------------------------------------------------------------------------

def test_bench_json(model_path: Path) -> None:
    r = invoke("bench", model_path, "-t", 1, "--prompt-tokens", 16, "--gen-tokens", 4, "--repetitions", 2, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n_prompt"] == 16 and d["n_gen"] == 4 and d["repetitions"] == 2 and d["threads"] == 1
    for k in ("prefill_tok_s", "decode_tok_s"):
        assert d[f"{k}_min"] <= d[k] <= d[f"{k}_max"] and d[k] > 0


def test_bench_text(model_path: Path) -> None:
    r = invoke("bench", model_path, "-t", 1, "--prompt-tokens", 8, "--gen-tokens", 2, "--repetitions", 1)
    assert r.exit_code == 0, r.output
    assert "prefill" in r.stdout and "decode" in r.stdout and "tok/s" in r.stdout


def _stated_minimum(*args: object) -> int:
    """The minimum budget the CLI states when the command runs with a 1 KB budget (it depends on n_ctx)."""
    r = invoke(*args, "--mem-budget", "1KB")
    assert r.exit_code == 1 and "minimum" in r.output, r.output
    return int(re.search(r"minimum (\d+) bytes", r.output).group(1))


def test_bench_under_budget_plots_timeline_and_run_stats(model_path: Path, tmp_path: Path) -> None:
    # The smallest budget that loads streams every layer: --plot must draw them and --stats report them.
    bench = ("bench", model_path, "-t", 1, "-p", 4, "-n", 3, "-r", 1)
    png = tmp_path / "timeline.png"
    r = invoke(*bench, "--mem-budget", str(_stated_minimum(*bench)), "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "streaming" in r.output and "per token: read" in r.output
    # --plot with nothing to stream says so before benchmarking (it ran every repetition, then failed)
    for extra, fragment in (((), "give a --mem-budget"), (("--mem-budget", "1GB"), "nothing streams")):
        r = invoke(*bench, *extra, "--plot", tmp_path / "none.png")
        assert r.exit_code == 1 and not r.stdout, r.output
        assert_one_line_error(r.stderr, fragment)
    run = ("run", model_path, "-p", "hi", "-n", 3, "--seed", 0, "--ctx", 64, "--stats")
    r = invoke(*run, "--mem-budget", str(_stated_minimum(*run)))
    assert r.exit_code == 0, r.output
    assert "window_slots" in r.output and "I/O hidden behind compute" in r.output


def test_moe_under_budget_stats_and_expert_timeline(synthetic_model, tmp_path: Path) -> None:
    # A budget a little above the minimum: every layer but the experts is pinned, a few experts cached.
    from edge_rt.synthetic import PRESETS

    moe = synthetic_model(**{**PRESETS["tiny-moe"], "tokenizer": "gpt2", "weight_type": "Q4_0"})
    run = ("run", moe, "-p", "hi", "-n", 6, "--seed", 0, "--ctx", 64, "--stats")
    budget = str(_stated_minimum(*run) + (1 << 20))
    r = invoke(*run, "--mem-budget", budget, "--expert-policy", "lru", "--expert-prefetch", "both")
    assert r.exit_code == 0, r.output
    assert re.search(r"expert cache \d+ of 32 experts .*hit rate [\d.]+%", r.output), r.output
    assert "same-layer prediction: precision" in r.output and "next-layer prediction: precision" in r.output
    assert "(predictor: layer i's router)" in r.output  # no fitted predictor next to a synthetic model
    r = invoke(*run, "--mem-budget", budget, "--expert-prefetch", "off")
    assert r.exit_code == 0 and "0 predicted" in r.output and "prediction: precision" not in r.output, r.output
    r = invoke(*run, "--mem-budget", budget, "--expert-policy", "mru")
    assert r.exit_code != 0 and "expert_policy must be 'lru' or 'lfu'" in r.output, r.output
    bench = ("bench", moe, "-t", 1, "-p", 4, "-n", 4, "-r", 1)
    png = tmp_path / "experts.png"
    r = invoke(*bench, "--mem-budget", str(_stated_minimum(*bench) + (1 << 20)), "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # every expert cached, no layer streamed: nothing to draw, said before benchmarking
    r = invoke(*bench, "--mem-budget", "1GB", "--plot", tmp_path / "none.png")
    assert r.exit_code == 1 and not r.stdout, r.output
    assert_one_line_error(r.stderr, "nothing streams")


def test_main_entry_point(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-rt {edge_rt.__version__}"


@pytest.mark.parametrize("module", ["edge_rt", "edge_rt.cli"])
def test_python_m_runs_every_command(module: str) -> None:
    # `python -m edge_rt.cli` once died in a circular import: the command modules (export, chat, serve)
    # import their helpers from edge_rt.cli, which then was the half-run __main__ copy.
    r = python_child(["-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for command in ("run", "quantize", "export", "chat", "serve"):
        assert re.search(rf"^\W*{command}\b", r.stdout, re.M), (command, r.stdout)
