"""The aarch64 leg: the core cross-built with Debian's toolchain and run under qemu-aarch64
(tools/cross_aarch64.sh). The C++ tests run on three CPU models, each of which must get its own kernels
from run-time dispatch; and the arm64 CPython (Debian's, unpacked by tools/aarch64_sysroot.sh) runs the
package built for it, whose greedy run of the default model is compared with this x86 build's
(tests/aarch64_greedy.py). Nothing is timed: emulation says nothing about speed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

from helpers import edge_rt_env, python_child, requires_system_tool

REPO = Path(__file__).resolve().parents[1]
GREEDY = REPO / "tests" / "aarch64_greedy.py"
VEC_DOTS = REPO / "tests" / "aarch64_vec_dots.py"
ARM_PYTHON = REPO / "build" / "aarch64" / "python3"
# Best kernels on both: tokens must agree up to the first step whose top-2 logits are this close (beyond
# it, a last-bit difference may legitimately pick the other token).
NEAR_TIE = 1e-3

needs_cross_tools = requires_system_tool("aarch64-linux-gnu-g++", "qemu-aarch64")


def _run(cmd, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def arm_build() -> Path:
    """Cross-builds the core, its C++ tests and the aarch64 edge_rt._core (one build, both tests use it)."""
    _run(["bash", "tools/cross_aarch64.sh", "--python"], timeout=1800)
    return ARM_PYTHON


@needs_cross_tools
def test_cpp_tests_pass_under_qemu_on_three_cpu_models(arm_build):
    out = _run(["bash", "tools/cross_aarch64.sh", "--test"], timeout=900).stdout
    for cpu, isa in (("cortex-a53", "neon"), ("cortex-a76", "neon_dotprod"), ("max", "neon_i8mm")):
        section = out.split(f"== qemu-aarch64 -cpu {cpu}\n", 1)[1]
        assert section.startswith(f"best_isa={isa} active_isa={isa};"), section[:200]
        assert "test_kernels: all passed" in section.split("== qemu-aarch64")[0]


def _arm_env(cpu: str = "max", isa: str = "best") -> Dict[str, str]:
    """The environment of build/aarch64/python3 on an emulated ``cpu`` at ``isa`` ("best": its choice)."""
    env = edge_rt_env()
    env.pop("PYTHONPATH")  # the wrapper puts the aarch64 package first
    env["QEMU_CPU"] = cpu
    env.pop("EDGE_RT_ISA", None)
    if isa != "best":
        env["EDGE_RT_ISA"] = isa
    return env


def _run_arm(arm_python: Path, args, cwd: Path, isa: str = "best", cpu: str = "max") -> None:
    env = _arm_env(cpu, isa)
    # From a folder without an edge_rt/ in it: python puts the script's folder (tests/) first on sys.path.
    proc = subprocess.run([str(arm_python), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def _greedy_arm(arm_python: Path, out: Path, isa: str) -> Dict[str, np.ndarray]:
    _run_arm(arm_python, [GREEDY, out], out.parent, isa)
    return dict(np.load(out))


def _x86_isa_of_the_arm_bits(isa: str) -> Optional[str]:
    """The x86 ISA whose bits the ARM build's `isa` computes, given the AVX2 flavour of float vector ops
    (EDGE_RT_VEC_OPS=avx2, which the ARM build computes; an AVX-512 host defaults to the AVX-512 one,
    kernels.h GgmlVecOps): scalar for scalar, else avx2. None: this host runs no AVX2, use its default."""
    from edge_rt import _core

    if isa == "scalar":
        return "scalar"
    return "avx2" if _core.cpu_supports("avx2") and "avx2" in _core.compiled_isas() else None


def _x86_env_of_the_arm_bits() -> Dict[str, str]:
    """The environment of an x86 child at the ISA whose bits the ARM build's best kernels compute."""
    env = edge_rt_env()
    env.pop("EDGE_RT_ISA", None)
    env["EDGE_RT_VEC_OPS"] = "avx2"
    if _x86_isa_of_the_arm_bits("best"):
        env["EDGE_RT_ISA"] = _x86_isa_of_the_arm_bits("best")
    return env


def _greedy_x86(out: Path, isa: str, monkeypatch) -> Dict[str, np.ndarray]:
    x86_isa = _x86_isa_of_the_arm_bits(isa)
    monkeypatch.setenv("EDGE_RT_VEC_OPS", "avx2")
    if x86_isa:
        monkeypatch.setenv("EDGE_RT_ISA", x86_isa)
    else:
        monkeypatch.delenv("EDGE_RT_ISA", raising=False)
    proc = python_child([str(GREEDY), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return dict(np.load(out))


@needs_cross_tools
@pytest.mark.parametrize("isa", ["scalar", "best"])
def test_arm64_python_under_qemu_matches_x86(arm_build, isa, tmp_path, monkeypatch):
    arm = _greedy_arm(arm_build, tmp_path / "arm.npz", isa)
    x86 = _greedy_x86(tmp_path / "x86.npz", isa, monkeypatch)
    if isa == "scalar":
        assert str(arm["isa"]) == str(x86["isa"]) == "scalar"
        # One source for the scalar kernels, compiled without fp contraction on both: the same bits.
        assert arm["tokens"].tolist() == x86["tokens"].tolist()
        assert np.array_equal(arm["logits"].view(np.uint32), x86["logits"].view(np.uint32)), (
            f"logits differ by up to {np.abs(arm['logits'] - x86['logits']).max():.3g}")
        assert str(arm["text"]) == str(x86["text"])
        return
    assert str(arm["isa"]) == "neon_i8mm"
    n_prompt = int(x86["n_prompt"])
    top2 = np.sort(x86["logits"], axis=1)[:, -2:]
    ties = [i for i in range(n_prompt - 1, len(top2)) if top2[i, 1] - top2[i, 0] < NEAR_TIE]
    # Row i predicts token i + 1: tokens 0..i (and the logits computed from them) must agree, token i + 1
    # may differ.
    cut = ties[0] + 1 if ties else len(x86["tokens"])
    assert arm["tokens"][:cut].tolist() == x86["tokens"][:cut].tolist()
    assert np.abs(arm["logits"][:cut] - x86["logits"][:cut]).max() <= NEAR_TIE


# Elements and bytes per block, and the offsets of the fp16 scale fields, which get finite values (random
# bytes there could be inf or NaN).
_LAYOUTS = {"Q8_0": (32, 34, (0,)), "Q4_0": (32, 18, (0,)), "Q4_1": (32, 20, (0, 2)), "Q5_0": (32, 22, (0,)),
            "Q5_1": (32, 24, (0, 2)), "Q3_K": (256, 110, (108,)), "Q4_K": (256, 144, (0, 2)),
            "Q5_K": (256, 176, (0, 2)), "Q6_K": (256, 210, (208,))}


def _random_rows(rng: np.random.Generator, t: str, rows: int, n: int) -> np.ndarray:
    elems, nbytes, scales = _LAYOUTS[t]
    blocks = rng.integers(0, 256, (rows, n // elems, nbytes), dtype=np.uint8)
    for off in scales:
        d = (rng.random((rows, n // elems)) * 0.01).astype(np.float16)
        blocks[:, :, off:off + 2] = d[..., None].view(np.uint8).reshape(rows, n // elems, 2)
    if t == "Q8_0":
        blocks[:, :, 2:][blocks[:, :, 2:] == 0x80] = 0x81  # int8 weights in [-127, 127], as ggml writes them
    if t == "Q6_K":
        sc = blocks[:, :, 192:208]
        sc[sc == 0x80] = 0x81
    return blocks.reshape(rows, -1)


@needs_cross_tools
def test_neon_dots_equal_the_avx2_bits(arm_build, tmp_path):
    """The NEON kernels sum as llama.cpp's AVX2 build (the block formats', K-quants' and float types' lanes):
    on the same rows, neon_i8mm under qemu and the x86 build give the same floats. Skips the comparison
    where the x86 CPU has no AVX2."""
    from edge_rt import _core

    if _core.isa() == "scalar":
        pytest.skip("this x86 CPU runs no AVX2: nothing to compare the NEON bits with")
    rng = np.random.default_rng(7)
    rows, n = 16, 2048
    x = rng.standard_normal((rows, n)).astype(np.float32)
    x[:, 100] = 9.5  # an outlier, as real activations have
    data = {}
    for t in _LAYOUTS:
        data[f"{t}.w"], data[f"{t}.x"] = _random_rows(rng, t, rows, n), x
    # Float rows of 2045 elements: steps of 32, of 8, and a tail of 5.
    wf = rng.standard_normal((rows, 2045)).astype(np.float32)
    bf16 = (wf.view(np.uint32) >> 16).astype(np.uint16)  # truncated: any bf16 bits will do
    for t, w in (("F32", wf), ("F16", wf.astype(np.float16)), ("BF16", bf16)):
        data[f"{t}.w"], data[f"{t}.x"] = w.view(np.uint8).reshape(rows, -1), x[:, :2045].copy()
    np.savez(tmp_path / "in.npz", **data)
    _run_arm(arm_build, [VEC_DOTS, tmp_path / "in.npz", tmp_path / "arm.npz"], tmp_path)
    proc = python_child([str(VEC_DOTS), str(tmp_path / "in.npz"), str(tmp_path / "x86.npz")], capture_output=True,
                        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    arm, x86 = np.load(tmp_path / "arm.npz"), np.load(tmp_path / "x86.npz")
    assert str(arm["isa"]) == "neon_i8mm"
    types = [*_LAYOUTS, "F32", "F16", "BF16"]
    differ = [t for t in types if not np.array_equal(arm[t].view(np.uint32), x86[t].view(np.uint32))]
    assert not differ, {t: float(np.abs(arm[t] - x86[t]).max()) for t in differ}


INT_OPS = REPO / "tests" / "aarch64_int_ops.py"
DENSE = REPO / "models" / "tiny-code-dense-f16.gguf"


@needs_cross_tools
def test_integer_kernels_under_qemu_equal_intref(arm_build, tmp_path):
    """Every integer op of the trained dense model's w8a8, w4a8 and w8a16 exports (prefill and decode
    graphs), fed the input codes ORT's CPU EP computes, through the NEON integer kernels under qemu (max:
    neon, neon_dotprod and neon_i8mm's USDOT GEMM): each output equal to intref's bit for bit."""
    pytest.importorskip("onnxruntime")
    import pickle

    from edge_rt.quantize import intref
    from edge_rt.quantize.int_ops import input_codes, ort_op_values, run_op
    from edge_rt.quantize.onnx_export import export_onnx

    graphs, kinds = [], set()
    for scheme in ("w8a8", "w4a8", "w8a16"):
        out = tmp_path / scheme
        export_onnx(DENSE, out, scheme=scheme, chunk=8, ctx=32, max_calib_tokens=128, range_method="minmax")
        for graph, ops, vals in ort_op_values(out):
            triples = []
            for op in ops:
                codes = input_codes(op, vals)
                triples.append((op, codes, run_op(op, codes, intref)))
                kinds.add(op.kind)
            graphs.append((f"{scheme}/{graph}", triples))
    assert kinds >= {"gemm", "matmul", "add", "mul", "rmsnorm", "softmax", "sigmoid"}
    with open(tmp_path / "ops.pickle", "wb") as f:
        pickle.dump(graphs, f)
    isas = ["scalar", "neon", "neon_dotprod", "neon_i8mm"]
    _run_arm(arm_build, [INT_OPS, tmp_path / "ops.pickle", tmp_path / "arm.json", *isas], tmp_path)
    result = json.loads((tmp_path / "arm.json").read_text())
    assert result["isas"] == isas
    assert result["ops"] == len(isas) * sum(len(t) for _, t in graphs)
    assert not result["differ"], result["differ"][:20]


# Golden-logit cases (tests/golden_logits.py) whose matmuls take NEON kernels the default model (Q8_0) does
# not: float types, the repacked Q4_0 and Q4_K layouts, Q5_1, K-quants in the lanes and tiled orders.
GOLDEN_CASES = ["llama-gqa-F16", "llama-gqa-BF16", "llama-gqa-Q4_0", "llama-gqa-Q5_1", "llama-gqa-Q6_K",
                "llama-mixed-Q4_K-Q6_K", "qwen3-hd128-Q4_K"]


# With EDGE_RT_ISA=scalar: the MoE case runs code (routing weights, expert sums) whose a * b + c GCC fused on
# aarch64 until the build said -ffp-contract=off; its digests then differed from x86's scalar column.
SCALAR_GOLDEN_CASES = ["tiny-moe-Q8_0"]


@needs_cross_tools
@pytest.mark.parametrize("isa, column, cases", [("best", "avx2", GOLDEN_CASES),
                                                ("scalar", "scalar", SCALAR_GOLDEN_CASES)])
def test_golden_logits_under_qemu_equal_the_x86_column(arm_build, tmp_path, isa, column, cases):
    """Whole forward passes (140-token prefill, then decode steps) under qemu give the digests the golden
    table holds for x86: neon_i8mm those of avx2 (the ARM build computes llama.cpp's x86 bits), scalar
    those of scalar."""
    import json

    import golden_logits

    table = json.loads(golden_logits.TABLE.read_text())[column]
    env = _arm_env(isa=isa)
    proc = subprocess.run([str(arm_build), str(REPO / "tests" / "golden_logits.py"), "--cases", ",".join(cases)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout)
    assert sorted({k.split("@")[0] for k in got}) == sorted(cases)
    assert {k: v for k, v in got.items() if table[k] != v} == {}


@needs_cross_tools
def test_edge_rt_run_under_qemu_prints_the_x86_text(arm_build, tmp_path):
    args = ["-m", "edge_rt.cli", "run", "--temp", "0", "-n", "24", "-p", "def main():"]
    arm = subprocess.run([str(arm_build), *args], cwd=tmp_path, env=_arm_env(), capture_output=True, text=True,
                         timeout=600)
    assert arm.returncode == 0, arm.stderr[-4000:]
    x86 = python_child(args, capture_output=True, text=True, timeout=600, env=_x86_env_of_the_arm_bits())
    assert x86.returncode == 0, x86.stderr[-4000:]
    assert arm.stdout == x86.stdout and arm.stdout.startswith("def main():")


# The C ABI as an app on a board calls it: libedge_rt.so through cffi (edge_rt.capi), no _core involved.
_CAPI_CHILD = r"""
import json, sys
from edge_rt import capi
from edge_rt.errors import EdgeRTError
model, hostile = sys.argv[1], sys.argv[2]
texts = ["def fib(n):\n    ", "import sys\n\nclass Parser:\n", "x"]
out = {"tokens": [], "hostile": None}
with capi.CModel(model, threads=1) as c:
    for t in texts:
        out["tokens"].append(c.generate_tokens(c.tokenize(t, True, False), max_tokens=32))
try:
    capi.CModel(hostile, threads=1)
except EdgeRTError as e:
    out["hostile"] = [type(e).__name__, str(e)]
print(json.dumps(out))
"""


@needs_cross_tools
def test_c_abi_under_qemu_generates_the_x86_tokens(arm_build, tmp_path):
    """The aarch64 libedge_rt.so called through cffi by the arm64 CPython under qemu (a53, a76 and max: plain
    NEON, dotprod, i8mm): greedy tokens equal the x86 library's at avx2 (whose bits NEON computes), and a
    truncated GGUF is a named error through the ABI, never a crash."""
    import json

    from server_process import DEFAULT_MODEL

    hostile = tmp_path / "truncated.gguf"
    hostile.write_bytes(DEFAULT_MODEL.read_bytes()[:4096])
    args = ["-c", _CAPI_CHILD, str(DEFAULT_MODEL), str(hostile)]
    x86 = python_child(args, capture_output=True, text=True, timeout=600, env=_x86_env_of_the_arm_bits())
    assert x86.returncode == 0, x86.stderr[-4000:]
    want = json.loads(x86.stdout)
    assert want["hostile"] and want["hostile"][0] == "ModelFormatError", want["hostile"]
    for cpu in ("cortex-a53", "cortex-a76", "max"):
        env = _arm_env(cpu)
        env["EDGE_RT_LIB"] = str(REPO / "build" / "aarch64" / "libedge_rt.so")
        arm = subprocess.run([str(arm_build), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert arm.returncode == 0, f"{cpu}: {arm.stderr[-4000:]}"
        got = json.loads(arm.stdout)
        assert got["tokens"] == want["tokens"], cpu
        assert got["hostile"] == want["hostile"], cpu


@needs_cross_tools
@requires_system_tool("aarch64-linux-gnu-gcc", "javac")
def test_jni_bridge_links_against_the_aarch64_library(arm_build, tmp_path):
    """The Android app's JNI bridge as its CMakeLists builds it: a shared library linked against the
    aarch64 libedge_rt.so with every symbol resolved (-Wl,--no-undefined). No arm64 JVM here to run it;
    tests/test_android_jni.py runs the same bridge on x86."""
    import shutil

    jh = Path(shutil.which("javac")).resolve().parents[1]
    bridge = REPO / "apps" / "android" / "edgert" / "src" / "main" / "cpp" / "edge_rt_jni.c"
    out = tmp_path / "libedge_rt_jni.so"
    _run(["aarch64-linux-gnu-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
          f"-I{jh / 'include'}", f"-I{jh / 'include' / 'linux'}", f"-I{REPO / 'native' / 'include'}", str(bridge),
          "-o", str(out), f"-L{REPO / 'build' / 'aarch64'}", "-ledge_rt", "-Wl,--no-undefined"], timeout=300)
    elf = out.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[18] == 183  # e_machine EM_AARCH64


@needs_cross_tools
def test_jetson_device_test_under_qemu(arm_build, tmp_path):
    # apps/jetson/test.sh as the device runs it (its parity against the x86-64 reference.json: scalar bit
    # for bit, best kernels up to a near-tie), with the arm64 CPython; --no-bench: nothing timed under qemu.
    # On a Cortex-A76, qemu's nearest model of the Orin's Cortex-A78AE (Armv8.2 with dotprod, no i8mm), so
    # the best kernels are the ones an Orin picks (test_arm64_python_under_qemu_matches_x86 covers i8mm).
    import json

    env = _arm_env("cortex-a76")
    env["EDGE_RT_PYTHON"] = str(arm_build)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "apps" / "jetson" / "test.sh"), "--no-bench", "--no-npu", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    scalar = json.loads((out / "parity_scalar.json").read_text())
    best = json.loads((out / "parity_best.json").read_text())
    assert scalar["ok"] and scalar["isa"] == "scalar" and scalar["logits_equal"], scalar
    assert best["ok"] and best["isa"] == "neon_dotprod", best
    assert not (out / "bench.json").exists()
