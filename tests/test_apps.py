"""The packaged demos that can run here: apps/jetson/test.sh on x86-64 (parity against the committed x86-64
reference, then edge-rt bench --json), the Jetson Dockerfile's sources, and the Termux installer's guard.
The JNI bridge has its own tests (test_android_jni.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import edge_rt_env

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / "apps" / "jetson"


def test_jetson_test_sh_runs_on_x86(tmp_path):
    env = {**edge_rt_env(), "EDGE_RT_PYTHON": sys.executable, "EDGE_RT_THREADS": "2",
           "EDGE_RT_BENCH_ARGS": "-p 16 -n 8 -r 1"}
    env.pop("EDGE_RT_ISA", None)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(JETSON / "test.sh"), str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scalar = json.loads((out / "parity_scalar.json").read_text())
    best = json.loads((out / "parity_best.json").read_text())
    assert scalar["ok"] and scalar["isa"] == "scalar" and scalar["logits_equal"], scalar
    assert best["ok"], best
    bench = json.loads((out / "bench.json").read_text())
    assert bench["decode_tok_s"] > 0 and bench["n_gen"] == 8 and bench["threads"] == 2
    assert "onnxruntime" in json.loads((out / "onnxruntime.json").read_text())
    npu = json.loads((out / "npu.json").read_text())  # no GPU here: ONNX Runtime's CPU EP stands in
    assert npu["backend"] == "cpu-ep" and "standing in" in npu["device"], npu
    assert npu["prompts"] == 20 and npu["first_token_equal"] >= 16, npu


def test_jetson_parity_fails_on_a_wrong_reference(tmp_path):
    """The check is not vacuous: a reference with one token changed fails it."""
    sys.path.insert(0, str(JETSON))
    try:
        import parity
    finally:
        sys.path.pop(0)
    ref = json.loads((JETSON / "reference.json").read_text())
    got = {**ref, "isa": "scalar", "tokens": list(ref["tokens"])}
    assert parity.check("scalar", got, ref)["ok"]
    got["tokens"][3] += 1
    assert not parity.check("scalar", got, ref)["ok"]
    assert not parity.check("best", got, ref)["ok"] or min(ref["margins"][:4]) < parity.NEAR_TIE
    assert not parity.check("scalar", {**got, "tokens": ref["tokens"], "logits_sha256": "0"}, ref)["ok"]


def test_jetson_dockerfile_copies_what_exists():
    text = (JETSON / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", text, flags=re.M)
    assert copies
    for sources in copies:
        for src in sources.split():
            assert (REPO / src).exists(), src
    assert re.search(r"^ARG BASE_IMAGE=", text, flags=re.M) and "FROM ${BASE_IMAGE}" in text


def test_termux_installer_refuses_outside_termux(tmp_path):
    script = REPO / "apps" / "android" / "termux" / "install.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFIX"}
    proc = subprocess.run(["bash", str(script), "--no-run"], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 2 and "Termux" in proc.stderr
