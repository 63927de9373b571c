"""Device profiles and the planner (docs/device_profile.md).

1. the schema: the shipped profiles and one measured here validate; each kind of bad field is refused
   with an error that names it; the docs list every field of the schema;
2. the planner on synthetic GGUFs: the placement and memory classes it predicts are what load() then
   reserves at the same budget (dense and MoE, resident and streamed at several budgets); plan="auto";
3. the kernel rate binding and the predicted speeds' shape (no timed assertion: speeds are benchmarks');
4. the CLI: profile (with small buffers), plan (text and JSON), help text and errors, and the predicted
   speeds beside the measured ones in run --stats and bench --json.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Dict

import pytest
from typer.testing import CliRunner

import edge_rt
from edge_rt import cli
from edge_rt.devices import profile_schema, profiler
from edge_rt.devices.profile_schema import SCHEMA, ProfileError, load_profile, shipped_profiles, validate
from edge_rt.planner import choose, plan

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SHIPPED = ("raspberry-pi-5", "jetson-orin-nano-8gb", "snapdragon-8-gen-3")
QUICK = dict(memory_bytes=8 << 20, flash_bytes=8 << 20, kernel_seconds=0.002, ram_matrix_bytes=2 << 20)


@pytest.fixture(scope="module")
def measured_profile() -> Dict[str, Any]:
    """A profile measured here with small buffers (the numbers are not meaningful; the shape is)."""
    return profiler.measure_profile(name="test-machine", threads=1, **QUICK)


@pytest.fixture(scope="module")
def dense(synthetic_model) -> Path:
    return synthetic_model(n_layer=6)


@pytest.fixture(scope="module")
def moe(synthetic_model) -> Path:
    return synthetic_model(**{k: v for k, v in edge_rt.synthetic.PRESETS["tiny-moe"].items() if k != "arch"})


# ---- 1. the schema -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_validate_and_name_sources(name: str) -> None:
    assert name in shipped_profiles()
    p = load_profile(name)
    assert p["origin"] == "published" and p["sources"]
    assert all(s["url"].startswith("https://") for s in p["sources"])
    assert p["estimated"]  # what the specifications do not give is marked, with the reason
    raw = json.loads(shipped_profiles()[name].read_text())
    assert validate(raw) is raw


def test_measured_profile_validates(measured_profile: Dict[str, Any], tmp_path: Path) -> None:
    p = measured_profile
    assert p["origin"] == "measured" and p["cpu"]["cores"] == 1
    isa = edge_rt._core.isa()
    assert p["cpu"]["isa"] == isa
    assert set(p["dot"][isa]) == set(profile_schema.WEIGHT_TYPES)
    assert all("decode_ram" in r for r in p["dot"][isa].values())  # the active ISA streams from RAM too
    assert p["flash"]["request_bytes"] == edge_rt._core.IO_CHUNK_BYTES
    f = tmp_path / "here.json"
    f.write_text(json.dumps(p))
    assert load_profile(f) == p


def _set(d: Dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        d = d[k]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()

BAD_FIELDS = [
    ("schema", "edge_rt.device_profile/0", "schema: must be one of"),
    ("name", "", "name: must be a non-empty string"),
    ("origin", "guessed", "origin: must be one of measured, published"),
    ("cpu.isa", _DELETE, "cpu.isa: is missing"),
    ("cpu.cores", 0, "cpu.cores: must be a positive integer"),
    ("cpu.arch", "riscv64", "cpu.arch: must be one of"),
    ("cpu.speed", 3, "cpu.speed: is not a field of the schema"),
    ("memory.read_bandwidth.all_threads", -1, "memory.read_bandwidth.all_threads: must be a positive number"),
    ("memory.read_bandwidth.single_thread", "fast", "memory.read_bandwidth.single_thread: must be a positive"),
    ("memory.usable_bytes", 1 << 60, "memory.usable_bytes: is larger than memory.ram_bytes"),
    ("flash.queue_depth", 0, "flash.queue_depth: must be a positive integer"),
    ("flash", _DELETE, "flash: is missing"),
    ("dot.neon_dotprod.Q4_0.decode", float("nan"), "dot.neon_dotprod.Q4_0.decode: must be a positive number"),
    ("dot.neon_dotprod.Q9_9", {"decode": 1, "prefill": 1}, "dot.neon_dotprod.Q9_9: is not a weight type"),
    ("dot.neon_dotprod.Q8_0.prefill", _DELETE, "dot.neon_dotprod.Q8_0.prefill: is missing"),
    ("dot.tpu", {}, "dot.tpu: is not an ISA"),
    ("cpu.isa", "avx2", "dot: has no table for cpu.isa 'avx2'"),
    ("npu.backends", ["tpu"], "npu.backends: [0] must be one of"),
    ("npu.shares_ram", "yes", "npu.shares_ram: must be true or false"),
    ("sources", _DELETE, "sources: is missing (a published profile"),
    ("sources", [{"what": "x"}], "sources[0].url: is missing"),
    ("estimated.memory.bogus", "why", "estimated.memory.bogus: names a field the profile does not have"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS, ids=[b[0] + "-" + b[2].split(":")[1][:20]
                                                                 for b in BAD_FIELDS])
def test_bad_field_is_named(field: str, value: Any, message: str) -> None:
    p = copy.deepcopy(load_profile("raspberry-pi-5"))
    if field == "estimated.memory.bogus":
        p["estimated"]["memory.bogus"] = value
    else:
        _set(p, field, value)
    with pytest.raises(ProfileError, match=None) as e:
        validate(p)
    assert str(e.value).startswith("[profile] "), e.value
    assert message in str(e.value), (message, str(e.value))
    assert isinstance(e.value, edge_rt.InvalidArgumentError)


def test_profile_files_and_names_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="cannot read .*bad.json"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="raspberry-pi-5"):  # an unknown name lists the shipped ones
        load_profile("raspberry-pi-9")
    p = json.loads(shipped_profiles()["raspberry-pi-5"].read_text())
    del p["memory"]["ram_bytes"]
    f = tmp_path / "nofield.json"
    f.write_text(json.dumps(p))
    with pytest.raises(ProfileError, match=r"memory.ram_bytes: is missing \(in .*nofield.json\)"):
        load_profile(f)


def test_docs_list_every_schema_field() -> None:
    doc = (REPO / "docs" / "device_profile.md").read_text()

    def walk(fields: Dict[str, Any], prefix: str) -> None:
        for key, (kind, _required, _doc) in fields.items():
            if isinstance(kind, dict):  # an object: its fields are the rows
                walk(kind, f"{prefix}{key}.")
            else:
                assert f"`{prefix}{key}`" in doc, f"docs/device_profile.md does not document {prefix}{key}"
    walk(SCHEMA, "")
    for rate in profile_schema._DOT_RATE:
        assert f"`dot.<isa>.<type>.{rate}`" in doc
    for name in SHIPPED:
        assert f"`{name}`" in doc


# ---- 2. the planner agrees with load() --------------------------------------------------------------------


def _load_view(path: Path, budget: Any, **kw: Any) -> Dict[str, Any]:
    with edge_rt.load(path, threads=1, n_ctx=64, mem_budget=budget, **kw) as m:
        rep = m.memory_report()
    # Classes that hold nothing are left out of both views (a class added later, e.g. npu, reads 0 here).
    return {"memory": {k: v for k, v in {**rep["classes"], "total": rep["total"]}.items() if v},
            "pinned": sorted(rep["pinned_units"]),
            "window": rep["window"], "expert_slots": rep["expert_cache_slots"]}


def _plan_view(path: Path, budget: Any, **kw: Any) -> Dict[str, Any]:
    r = plan(path, "raspberry-pi-5", threads=1, n_ctx=64, mem_budget=budget, **kw)
    pl = r["placement"]
    return {"memory": {k: v for k, v in pl["memory"].items() if v},
            "pinned": [i for i, u in enumerate(pl["units"]) if u["place"] == "pinned"],
            "window": pl["window"], "expert_slots": (pl["expert_cache"] or {}).get("slots", 0)}


@pytest.mark.parametrize("which", ["dense", "moe"])
@pytest.mark.parametrize("scale", [None, 1.0, 1.15, 2.0, 4.0])
def test_placement_agrees_with_load(which: str, scale: Any, request) -> None:
    path = request.getfixturevalue(which)
    budget = None if scale is None else int(edge_rt.minimum_budget(path, threads=1, n_ctx=64)["total"] * scale)
    assert _plan_view(path, budget) == _load_view(path, budget)


def test_placement_agrees_with_load_explicit_options(dense: Path, moe: Path) -> None:
    floor = edge_rt.minimum_budget(dense, threads=1, n_ctx=64)["total"]
    for kw in ({"window": 1}, {"prefetch": False}, {"window": 2}):
        assert _plan_view(dense, floor * 3, **kw) == _load_view(dense, floor * 3, **kw), kw
    mfloor = edge_rt.minimum_budget(moe, threads=1, n_ctx=64)["total"]
    kw = {"expert_cache": 600_000}
    assert _plan_view(moe, mfloor * 3, **kw) == _load_view(moe, mfloor * 3, **kw)


def test_plan_errors(dense: Path, moe: Path) -> None:
    floor = edge_rt.minimum_budget(dense, threads=1, n_ctx=64)["total"]
    with pytest.raises(edge_rt.OutOfMemoryError, match=f"below the minimum {floor} bytes"):
        plan(dense, "raspberry-pi-5", threads=1, n_ctx=64, mem_budget=floor - 1)
    with pytest.raises(edge_rt.OutOfMemoryError, match="window of 50 slots"):
        plan(dense, "raspberry-pi-5", threads=1, n_ctx=64, mem_budget=floor, window=50)
    with pytest.raises(edge_rt.InvalidArgumentError, match="Mixture-of-Experts"):
        plan(dense, "raspberry-pi-5", threads=1, n_ctx=64, mem_budget=floor * 2, expert_cache="1MB")
    with pytest.raises(edge_rt.ModelIOError):
        plan(dense.with_name("missing.gguf"), "raspberry-pi-5")


def test_prediction_shape_and_terms(moe: Path, dense: Path) -> None:
    floor = edge_rt.minimum_budget(moe, threads=1, n_ctx=64)["total"]
    r = plan(moe, "snapdragon-8-gen-3", threads=2, n_ctx=64, mem_budget=floor * 2, n_prompt=32)
    pr = r["predicted"]
    for k in ("decode_tok_s", "prefill_tok_s", "ttft_s", "ttft_cold_s", "load_s"):
        assert pr[k] > 0, k
    assert pr["n_prompt"] == 32 and r["threads"] == 2
    ec = r["placement"]["expert_cache"]
    assert pr["expert_miss_rate"] == pytest.approx(1 - ec["slots"] / ec["total"])
    assert r["flash_bytes_per_token"] == pr["decode"]["flash_bytes"] > 0
    assert pr["decode"]["bound"] in ("compute", "memory", "flash")
    # Resident: nothing read from flash per token, and decode is the weights' roofline alone.
    res = plan(dense, "raspberry-pi-5", threads=1, n_ctx=64)
    assert res["placement"]["mode"] == "resident" and res["flash_bytes_per_token"] == 0
    d = res["predicted"]["decode"]
    assert d["flash_s"] == 0 and d["compute_s"] >= max(d["kernels_s"], d["memory_s"])
    # Fewer streamed bytes can only be faster: a larger budget never predicts slower decode.
    dfloor = edge_rt.minimum_budget(dense, threads=1, n_ctx=64)["total"]
    speeds = [plan(dense, "raspberry-pi-5", threads=1, n_ctx=64, mem_budget=dfloor * s)["predicted"]["decode_tok_s"]
              for s in (1, 2, 4)]
    assert speeds == sorted(speeds)


def test_plan_auto_applies_the_choice(dense: Path) -> None:
    floor = edge_rt.minimum_budget(dense, threads=1, n_ctx=64)["total"]
    prof = copy.deepcopy(load_profile("raspberry-pi-5"))
    r = choose(dense, prof, threads=1, n_ctx=64)  # fits: resident
    assert r["choice"] == {"mem_budget": None, "window": None, "threads": 1}
    prof["memory"]["usable_bytes"] = floor * 2  # does not fit: streamed under the usable memory
    with edge_rt.load(dense, n_ctx=64, plan="auto", profile=prof) as m:
        assert m.plan is not None and m.plan["choice"]["mem_budget"] == floor * 2
        assert m.threads == prof["cpu"]["cores"]
        rep = m.memory_report()
        assert rep["budget"] == floor * 2
        assert rep["window"] == m.plan["placement"]["window"]
        assert sorted(rep["pinned_units"]) == [i for i, u in enumerate(m.plan["placement"]["units"])
                                               if u["place"] == "pinned"]
    with pytest.raises(edge_rt.InvalidArgumentError, match="plan must be 'auto'"):
        edge_rt.load(dense, plan="fast")
    with pytest.raises(edge_rt.InvalidArgumentError, match="pass plan='auto'"):
        edge_rt.load(dense, profile="raspberry-pi-5")


def test_repack_runs_beside_the_reads_when_prefetching(synthetic_model) -> None:
    """A streamed Q4_0 layer is repacked by one I/O worker while the others read the next slot: with a
    window of 2 a token costs the slowest of compute, flash and repack; with a window of 1 (no read ahead)
    their sum. (The model once added the repack to the flash time in both cases, and predicted the
    Llama-3.2-3B streamed cases 30-47% slow on a quiet machine.)"""
    import copy

    from edge_rt.devices.profile_schema import load_profile

    q4 = synthetic_model(n_layer=6, weight_type="Q4_0")
    prof = copy.deepcopy(load_profile("raspberry-pi-5"))
    isa = prof["cpu"]["isa"]
    for repack in (1e6, 1e12):        # repack the slowest stage, then the fastest
        prof["dot"][isa]["Q4_0"]["repack"] = repack
        for window in (2, 1):
            floor = edge_rt.minimum_budget(q4, threads=1, n_ctx=64)["total"]   # (room for one slot)
            r = plan(q4, prof, threads=1, n_ctx=64, mem_budget=floor + (1 << 20), window=window)
            assert r["placement"]["mode"] == "streaming" and r["placement"]["window"] == window
            d = r["predicted"]["decode"]
            assert d["repack_s"] > 0 and d["flash_s"] > 0
            want = (max(d["compute_s"], d["flash_s"], d["repack_s"]) if window == 2
                    else d["compute_s"] + d["flash_s"] + d["repack_s"])
            assert d["seconds"] == pytest.approx(want), (repack, window)


def test_kernel_rate_binding() -> None:
    core = edge_rt._core
    r = core.kernel_rate("Q4_0", "scalar", 0.001)
    assert r["decode_per_s"] > 0 and r["prefill_per_s"] > 0 and r["cols"] == 2048
    big = core.kernel_rate("Q8_0", core.isa(), 0.001, 4 << 20)
    assert big["decode_per_s"] > 0 and big["prefill_per_s"] == 0  # prefill only in cache
    with pytest.raises(edge_rt.InvalidArgumentError, match="unknown type name"):
        core.kernel_rate("Q9_9", "scalar")
    with pytest.raises(edge_rt.InvalidArgumentError, match="matrix_bytes"):
        core.kernel_rate("Q4_0", "scalar", 0.001, 1 << 40)
    with pytest.raises(edge_rt.InvalidArgumentError, match="min_seconds"):
        core.kernel_rate("Q4_0", "scalar", 0.0)


# ---- 4. the CLI -------------------------------------------------------------------------------------------


def invoke(*args: object):
    return runner.invoke(cli.app, [str(a) for a in args])


def test_cli_help() -> None:
    for cmd, words in (("profile", ["O_DIRECT", "--flash-dir", "-o"]), ("plan", ["--profile", "raspberry-pi-5",
                                                                            "--mem-budget", "--json"])):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0, r.output
        text = " ".join(r.output.split())
        for w in words:
            assert w in text, (cmd, w)


def test_cli_profile_writes_a_valid_profile(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(profiler, "measure_profile", functools.partial(profiler.measure_profile, **QUICK))
    out = tmp_path / "me.json"
    r = runner.invoke(cli.app, ["profile", "-o", str(out), "--name", "box", "-t", "1", "--flash-dir",
                                str(tmp_path)])
    assert r.exit_code == 0, r.output
    p = load_profile(out)
    assert p["name"] == "box"
    assert "profile written to" in r.stderr and "flash read" in r.stderr
    assert [f.name for f in tmp_path.iterdir()] == ["me.json"]  # the flash test file is gone
    r = invoke("profile", "--flash-file", tmp_path / "nope.bin", "-o", out)
    assert r.exit_code == 1 and "nope.bin" in r.stderr


def test_cli_plan_text_and_json(dense: Path, moe: Path) -> None:
    floor = edge_rt.minimum_budget(dense, threads=1, n_ctx=64)["total"]
    r = invoke("plan", dense, "--profile", "raspberry-pi-5", "-m", floor * 2, "-c", 64, "-t", 1)
    assert r.exit_code == 0, r.output
    for w in ("pinned", "streamed", "window of", "read per decoded token", "decode", "prefill", "TTFT"):
        assert w in r.stdout, w
    r = invoke("plan", moe, "--profile", "jetson-orin-nano-8gb", "-m", floor * 2, "-c", 64, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d) >= {"model", "profile", "threads", "n_ctx", "mem_budget", "window", "placement",
                      "flash_bytes_per_token", "predicted"}
    assert set(d["placement"]) >= {"mode", "units", "window", "slot_bytes", "expert_cache", "memory"}
    assert {u["place"] for u in d["placement"]["units"]} <= {"pinned", "streamed"}
    assert set(d["placement"]["expert_cache"]) == {"slots", "total", "slot_bytes", "bytes"}
    assert set(d["predicted"]) >= {"decode_tok_s", "prefill_tok_s", "ttft_s", "decode", "prefill"}
    r = invoke("plan", dense, "--profile", "raspberry-pi-5", "--auto", "--json", "-c", 64)
    assert r.exit_code == 0 and json.loads(r.stdout)["choice"]["mem_budget"] is None


def test_cli_plan_errors(dense: Path, tmp_path: Path) -> None:
    r = invoke("plan", dense, "--profile", "pi-zero")
    assert r.exit_code == 1 and "raspberry-pi-5" in r.stderr and "Traceback" not in r.stderr
    p = json.loads(shipped_profiles()["raspberry-pi-5"].read_text())
    p["flash"]["read_bandwidth"] = 0
    f = tmp_path / "p.json"
    f.write_text(json.dumps(p))
    r = invoke("plan", dense, "--profile", f)
    assert r.exit_code == 1 and "flash.read_bandwidth: must be a positive number" in r.stderr
    r = invoke("plan", dense, "--profile", "raspberry-pi-5", "-m", "1000")
    assert r.exit_code == 1 and "below the minimum" in r.stderr
    r = invoke("plan", tmp_path / "none.gguf", "--profile", "raspberry-pi-5")
    assert r.exit_code == 1 and "none.gguf" in r.stderr


def test_predicted_beside_measured(dense: Path) -> None:
    r = invoke("run", dense, "-p", "hi", "-n", 3, "--seed", 0, "-c", 64, "-t", 1, "--stats",
               "--profile", "raspberry-pi-5")
    assert r.exit_code == 0, r.output
    assert "predicted decode" in r.stderr and "measured" in r.stderr
    r = invoke("bench", dense, "-p", 4, "-n", 3, "-r", 1, "-t", 1, "--json", "--profile", "raspberry-pi-5")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["predicted"]["profile"] == "raspberry-pi-5" and d["predicted"]["decode_tok_s"] > 0
    r = invoke("bench", dense, "-p", 4, "-n", 3, "-r", 1, "-t", 1, "--json", "--profile", "none")
    assert "predicted" not in json.loads(r.stdout)
