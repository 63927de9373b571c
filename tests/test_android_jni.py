"""The Android JNI bridge (apps/android/edgert) on a desktop JVM: the bridge compiled for x86-64 against OpenJDK's
jni.h, the Java wrapper dev.edgert.EdgeRtModel and apps/android/desktop/GenerateMain.java compiled with javac,
then run with java: the tokens it generates equal edge_rt's Python API's. The bridge is also cross-compiled for
aarch64 (object only: an aarch64 libedge_rt.so to link against comes from the aarch64 cross-build).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import edge_rt

from helpers import requires_system_tool

REPO = Path(__file__).resolve().parents[1]
ANDROID = REPO / "apps" / "android"
BRIDGE = ANDROID / "edgert" / "src" / "main" / "cpp" / "edge_rt_jni.c"
DEFAULT = Path(edge_rt.__file__).resolve().parent / "models" / "default.gguf"
THREADS = 2


def _java_home() -> Path:
    return Path(shutil.which("javac")).resolve().parents[1]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def jvm(tmp_path_factory):
    """(library dir, classes dir) with libedge_rt.so, libedge_rt_jni.so and the compiled Java classes."""
    pytest.importorskip("cffi")
    from edge_rt import capi

    out = tmp_path_factory.mktemp("jni")
    lib_dir, classes = out / "lib", out / "classes"
    lib_dir.mkdir()
    shutil.copy(capi.library_path(), lib_dir / "libedge_rt.so")
    jh = _java_home()
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", f"-I{jh / 'include'}",
                    f"-I{jh / 'include' / 'linux'}", f"-I{REPO / 'native' / 'include'}", str(BRIDGE),
                    f"-L{lib_dir}", "-ledge_rt", "-Wl,-rpath,$ORIGIN", "-o", str(lib_dir / "libedge_rt_jni.so")],
                   check=True)
    sources = sorted((ANDROID / "edgert" / "src" / "main" / "java").rglob("*.java"))
    subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(classes), *map(str, sources),
                    str(ANDROID / "desktop" / "GenerateMain.java")], check=True)
    return lib_dir, classes


def run_java(jvm, model: Path, max_tokens: int, prompt: str, *extra: str) -> dict:
    lib_dir, classes = jvm
    proc = subprocess.run(["java", f"-Djava.library.path={lib_dir}", "-cp", str(classes), "GenerateMain", str(model),
                           str(THREADS), str(max_tokens), prompt, *extra], capture_output=True, text=True, timeout=120)
    lines = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" ")
        lines[key] = rest
    lines["returncode"] = proc.returncode
    lines["stderr"] = proc.stderr
    return lines


def ids(text: str) -> list:
    return [int(t) for t in text.split()]


@requires_system_tool("javac", "java", "cc")
@pytest.mark.parametrize("which", ["default", "spm"])
def test_java_generates_the_python_tokens(jvm, synthetic_model, which):
    path = DEFAULT if which == "default" else synthetic_model(tokenizer="llama")
    prompt = "def main():\n    " if which == "default" else "hello world"
    model = edge_rt.load(path, threads=THREADS)
    prompt_ids = model.tokenize(prompt)
    expected = list(model.generate_tokens(prompt_ids, max_tokens=24, temperature=0))
    out = run_java(jvm, path, 24, prompt)
    assert out["returncode"] == 0, out
    assert ids(out["PROMPT_IDS"]) == prompt_ids
    assert ids(out["TOKENS"]) == expected
    text = model.tokenizer.detokenize_bytes(expected)
    assert bytes.fromhex(out["TEXT_HEX"]) == text and bytes.fromhex(out["PIECES_HEX"]) == text
    assert int(out["MEMORY"].split()[0]) == model.memory_report()["total"]
    assert out["AFTER_CLOSE"] == "EDGE_RT_ERR_INVALID_HANDLE"


@requires_system_tool("javac", "java", "cc")
def test_java_listener_cancels(jvm):
    model = edge_rt.load(DEFAULT, threads=THREADS)
    prompt_ids = model.tokenize("import os\n")
    expected = list(model.generate_tokens(prompt_ids, max_tokens=24, temperature=0))
    out = run_java(jvm, DEFAULT, 24, "import os\n", "3")
    assert out["returncode"] == 0, out
    assert out["CANCELLED"] == "EDGE_RT_ERR_CANCELLED 3"
    assert bytes.fromhex(out["PIECES_HEX"]) == model.tokenizer.detokenize_bytes(expected[:3])


@requires_system_tool("javac", "java", "cc")
def test_java_hostile_file_is_an_exception(jvm, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)  # v3, then counts past the end of the file
    out = run_java(jvm, bad, 4, "x")
    assert out["returncode"] == 3, out
    assert out["ERROR"].startswith("EDGE_RT_ERR_MODEL_FORMAT EDGE_RT_ERR_MODEL_FORMAT: [gguf] header: "), out
    out = run_java(jvm, tmp_path / "missing.gguf", 4, "x")
    assert out["ERROR"].startswith("EDGE_RT_ERR_IO "), out


@requires_system_tool("aarch64-linux-gnu-gcc", "javac")
def test_bridge_cross_compiles_for_aarch64(tmp_path):
    jh = _java_home()
    obj = tmp_path / "edge_rt_jni.o"
    subprocess.run(["aarch64-linux-gnu-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-c",
                    f"-I{jh / 'include'}", f"-I{jh / 'include' / 'linux'}", f"-I{REPO / 'native' / 'include'}",
                    str(BRIDGE), "-o", str(obj)], check=True)
    assert obj.read_bytes()[:4] == b"\x7fELF" and obj.read_bytes()[18] == 183  # e_machine EM_AARCH64
