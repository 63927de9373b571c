"""The C ABI (native/include/edge_rt/edge_rt.h, libedge_rt.so) through cffi in ABI mode (edge_rt.capi).

Parity: the C tokenizer and greedy generation give the ids edge_rt's Python API gives (Tokenizer.tokenize,
Model.generate_tokens with temperature=0) on the embedded default model, the MoE master and synthetic models
of both tokenizer kinds. Safety: hostile GGUFs (the cases of test_gguf_hostile.py), NULL pointers, freed or
forged handles, small buffers, a callback that cancels, raises or re-enters, and edge_rt_cancel from another
thread each give a status and a message, never a crash.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import edge_rt
from edge_rt.errors import (
    InvalidArgumentError,
    ModelFormatError,
    ModelIOError,
    UnsupportedArchitectureError,
    UnsupportedTypeError,
)

pytest.importorskip("cffi")  # the test extra installs it; a missing one skips here only outside CI
from edge_rt import capi  # noqa: E402

from gguf_bytes import minimal_valid  # noqa: E402
from helpers import edge_rt_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = Path(edge_rt.__file__).resolve().parent / "models" / "default.gguf"
MOE = REPO / "models" / "tiny-code-moe-f16.gguf"
THREADS = 2

TEXTS = [
    "import os\ndef main():\n    print('hello world')  \n\n",
    "héllo wörld ✓ 12345 ６７ 'll 've 're 's   \t\n\n  x",
    "<|endoftext|>class A:\n    pass<|endoftext|>",
    "日本語のテキスト and emoji 🙂🙃 mixed\r\n",
    "",
    " ",
    "a" * 300,
]

lib = capi.library()
ffi = capi.ffi
STATUS = {cls: name for cls, name in ((ModelFormatError, "EDGE_RT_ERR_MODEL_FORMAT"),
                                      (UnsupportedArchitectureError, "EDGE_RT_ERR_UNSUPPORTED"),
                                      (UnsupportedTypeError, "EDGE_RT_ERR_UNSUPPORTED_TYPE"),
                                      (ModelIOError, "EDGE_RT_ERR_IO"))}


def status_name(status: int) -> str:
    return ffi.string(lib.edge_rt_status_name(status)).decode()


def last_error(handle=ffi.NULL) -> str:
    return ffi.string(lib.edge_rt_last_error(handle)).decode("utf-8", "backslashreplace")


def create(path, **fields):
    """(status name, handle or NULL, thread-local error) of edge_rt_model_create on path."""
    opts = ffi.new("edge_rt_options*")
    lib.edge_rt_options_init(opts)
    keep = ffi.new("char[]", str(path).encode())
    opts.model_path = keep
    opts.n_threads = THREADS
    for k, v in fields.items():
        setattr(opts, k, v)
    out = ffi.new("edge_rt_model**")
    status = lib.edge_rt_model_create(opts, out)
    return status_name(status), out[0], last_error()


# ---- the header and the generated table --------------------------------------------------------------

def _declarations(text: str) -> str:
    """C declarations of a header/cdef: comments, preprocessor lines (but the ABI version), extern "C"
    braces and the export macro removed, whitespace normalised."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") and not s.startswith("#define EDGE_RT_ABI_VERSION"):
            continue
        if s in ('extern "C" {', "}"):
            continue
        lines.append(line.replace("EDGE_RT_API ", ""))
    text = " ".join(" ".join(lines).split())
    return re.sub(r"\s*([(),;{}*\[\]])\s*", r"\1", text)


def test_cdef_matches_header():
    header = (REPO / "native" / "include" / "edge_rt" / "edge_rt.h").read_text()
    assert _declarations(capi.CDEF) == _declarations(header)


def test_header_compiles_as_c99(tmp_path):
    """edge_rt.h is C99 (no C++ in it): a C program including it compiles and links with -std=c99."""
    src = tmp_path / "use.c"
    src.write_text('#include "edge_rt/edge_rt.h"\n#include <stdio.h>\n'
                   "int main(void) {\n"
                   '    printf("%d %s\\n", (int)edge_rt_abi_version(), edge_rt_version());\n'
                   "    return 0;\n}\n")
    lib_path = capi.library_path()
    exe = tmp_path / "use"
    include = str(REPO / "native" / "include")
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", include, str(src),
                    str(lib_path), f"-Wl,-rpath,{lib_path.parent}", "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(lib.EDGE_RT_ABI_VERSION), edge_rt.__version__]


def test_only_the_c_abi_is_exported():
    out = subprocess.run(["nm", "-D", "--defined-only", str(capi.library_path())], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names and all(n.startswith("edge_rt_") for n in names), sorted(n for n in names if "edge_rt_" not in n)


def test_unicode_table_in_sync():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gen_unicode_flags_cpp
    finally:
        sys.path.pop(0)
    assert gen_unicode_flags_cpp.formatted() == gen_unicode_flags_cpp.OUT.read_text(), (
        "run python tools/gen_unicode_flags_cpp.py")


# ---- parity with the Python API ----------------------------------------------------------------------

def _parity(path: Path, prompts, max_tokens: int = 24, **load_kw):
    model = edge_rt.load(path, threads=THREADS, **load_kw)
    with capi.CModel(path, threads=THREADS, **{k: v for k, v in load_kw.items() if k != "threads"}) as c:
        assert c.n_vocab == model.n_vocab and c.n_ctx == model.n_ctx
        for text in TEXTS:
            for add_special, parse_special in ((True, False), (False, True)):
                ids = model.tokenize(text, add_special=add_special, parse_special=parse_special)
                assert c.tokenize(text, add_special, parse_special) == ids, text
                for special in (False, True):
                    assert c.detokenize_bytes(ids, special) == model.tokenizer.detokenize_bytes(ids, special)
        for prompt in prompts:
            ids = model.tokenize(prompt) or [0]
            model.reset()
            expected = list(model.generate_tokens(ids, max_tokens=max_tokens, temperature=0))
            assert c.generate_tokens(ids, max_tokens=max_tokens) == expected, prompt
            assert c.last_result["finish_reason"] == model.last_result.finish_reason
        eogs = [t for t in range(model.n_vocab) if model.tokenizer.is_eog(t)]
        assert [t for t in range(c.n_vocab) if c.is_eog(t)] == eogs
    model.close()


def test_default_model_parity():
    _parity(DEFAULT, ["def fib(n):\n    ", "import sys\n\nclass Parser:\n", "x"], max_tokens=40)


def test_default_model_runs_to_eog_and_context():
    """Generation without a token limit ends as the Python API's does (EOG or a full context)."""
    model = edge_rt.load(DEFAULT, threads=THREADS, n_ctx=64)
    ids = model.tokenize("    return")
    expected = list(model.generate_tokens(ids, max_tokens=None, temperature=0))
    with capi.CModel(DEFAULT, threads=THREADS, n_ctx=64) as c:
        assert c.generate_tokens(ids, max_tokens=None) == expected
        assert c.last_result["finish_reason"] == model.last_result.finish_reason


def test_moe_model_parity():
    _parity(MOE, ["def read(path):\n"], max_tokens=16)


def test_streaming_under_budget_parity():
    """mem_budget reaches the engine: weights stream through a window, the tokens stay the same."""
    floor = edge_rt.minimum_budget(DEFAULT, threads=THREADS)["total"]
    model = edge_rt.load(DEFAULT, threads=THREADS, mem_budget=floor)
    ids = model.tokenize("def main():\n")
    expected = list(model.generate_tokens(ids, max_tokens=12, temperature=0))
    with capi.CModel(DEFAULT, threads=THREADS, mem_budget=floor) as c:
        report = c.memory_report()
        assert report["streaming"] and report["budget"] == floor and report["total"] <= floor
        classes = model.memory_report()["classes"]
        assert classes.pop("npu") == 0  # the C ABI has no NPU stage
        assert report == {**report, "classes": classes}
        assert c.generate_tokens(ids, max_tokens=12) == expected


@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_synthetic_model_parity(synthetic_model, tokenizer):
    _parity(synthetic_model(tokenizer=tokenizer), ["hello there", "12 + 34 ="], max_tokens=12)


def test_unsupported_pre_tokenizer_is_an_error_not_a_guess(tmp_path):
    """A BPE vocabulary whose pre-tokenizer only the Python tokenizer has loads, generates from ids and
    detokenizes, but tokenize says UNSUPPORTED."""
    from edge_rt.synthetic import write_synthetic_gguf

    path = write_synthetic_gguf(tmp_path / "gpt2.gguf", n_vocab=512, n_embd=256, n_ff=512, n_layer=1, n_head=4,
                                tokenizer="gpt2")
    data = path.read_bytes()
    key = b"tokenizer.ggml.pre"
    at = data.index(key) + len(key) + 4 + 8  # key, value type, string length
    assert data[at:at + 5] == b"gpt-2"
    patched = tmp_path / "bloom.gguf"
    patched.write_bytes(data[:at] + b"bloom" + data[at + 5:])  # same length: offsets stay valid
    with capi.CModel(patched, threads=THREADS) as c:
        assert c.info()["can_tokenize"] is False
        with pytest.raises(UnsupportedArchitectureError, match=r"pre-tokenizer 'bloom'") as info:
            c.tokenize("hello")
        assert info.value.status == "EDGE_RT_ERR_UNSUPPORTED"
        assert len(c.generate_tokens([1, 2, 3], max_tokens=3)) <= 3
        assert c.detokenize([5, 6]) == edge_rt.load(patched, threads=1).detokenize([5, 6])


# ---- hostile files -----------------------------------------------------------------------------------

def _hostile_reader_cases():
    from test_gguf_hostile import HOSTILE

    return HOSTILE


def _hostile_model_cases():
    from test_gguf_hostile import _model_cases

    return _model_cases()


@pytest.mark.parametrize("case", sorted(_hostile_reader_cases()))
def test_hostile_reader_through_abi(tmp_path, case):
    from gguf_bytes import GGUFBytes

    builder, exc, pattern = _hostile_reader_cases()[case]
    built = builder()
    path = tmp_path / "m.gguf"
    path.write_bytes(built.build() if isinstance(built, GGUFBytes) else built)
    status, handle, message = create(path)
    assert handle == ffi.NULL
    assert status == STATUS[exc], (status, message)
    assert message.startswith("[gguf] ") and re.search(pattern, message), message


@pytest.mark.parametrize("case", sorted(_hostile_model_cases()))
def test_hostile_model_through_abi(tmp_path, case):
    from test_gguf_hostile import write_llama_gguf

    kwargs, exc, pattern = _hostile_model_cases()[case]
    path = write_llama_gguf(tmp_path / f"{case}.gguf", **kwargs)
    status, handle, message = create(path)
    assert handle == ffi.NULL
    assert status == STATUS[exc], (status, message)
    assert re.search(pattern, message, re.S), message


def test_truncated_files_through_abi(tmp_path):
    """Every 7th prefix of a valid GGUF (and the header bytes one by one) fails cleanly."""
    data = minimal_valid().build()
    path = tmp_path / "cut.gguf"
    for cut in sorted(set(range(0, 40)) | set(range(0, len(data), 7))):
        path.write_bytes(data[:cut])
        status, handle, message = create(path)
        assert handle == ffi.NULL and status == "EDGE_RT_ERR_MODEL_FORMAT", (cut, status, message)
        assert message.startswith("[gguf] "), message


def test_missing_file_and_directory(tmp_path):
    status, handle, message = create(tmp_path / "nope.gguf")
    assert (status, handle) == ("EDGE_RT_ERR_IO", ffi.NULL) and "nope.gguf" in message
    status, _, message = create(tmp_path)
    assert status == "EDGE_RT_ERR_IO" and "directory" in message.lower()


# ---- bad calls ---------------------------------------------------------------------------------------

def test_create_rejects_null_and_bad_options():
    out = ffi.new("edge_rt_model**")
    assert status_name(lib.edge_rt_model_create(ffi.NULL, out)) == "EDGE_RT_ERR_INVALID_ARGUMENT"
    assert "options is NULL" in last_error()
    opts = ffi.new("edge_rt_options*")
    lib.edge_rt_options_init(opts)
    assert status_name(lib.edge_rt_model_create(opts, ffi.NULL)) == "EDGE_RT_ERR_INVALID_ARGUMENT"
    assert status_name(lib.edge_rt_model_create(opts, out)) == "EDGE_RT_ERR_INVALID_ARGUMENT"
    assert "model_path is NULL" in last_error() and out[0] == ffi.NULL
    opts.struct_size = 8  # a caller built against a smaller (future-incompatible) struct
    assert status_name(lib.edge_rt_model_create(opts, out)) == "EDGE_RT_ERR_INVALID_ARGUMENT"
    assert "struct_size" in last_error()
    status, handle, message = create(DEFAULT, n_threads=-1)
    assert status == "EDGE_RT_ERR_INVALID_ARGUMENT" and handle == ffi.NULL
    status, handle, message = create(DEFAULT, n_ctx=1 << 40)
    assert status == "EDGE_RT_ERR_INVALID_ARGUMENT" and "n_ctx" in message
    status, handle, message = create(DEFAULT, mem_budget=1 << 16)
    assert status == "EDGE_RT_ERR_OUT_OF_MEMORY" and handle == ffi.NULL, message
    lib.edge_rt_options_init(ffi.NULL)  # documented no-op


def test_null_pointers_on_a_live_model():
    status, h, _ = create(DEFAULT)
    assert status == "EDGE_RT_OK"
    n = ffi.new("size_t*")
    toks = ffi.new("int32_t[]", 8)
    try:
        cases = {
            "tokenize text": lib.edge_rt_tokenize(h, ffi.NULL, 5, 1, 0, toks, 8, n),
            "tokenize n_out": lib.edge_rt_tokenize(h, b"abc", 3, 1, 0, toks, 8, ffi.NULL),
            "tokenize out": lib.edge_rt_tokenize(h, b"abc", 3, 1, 0, ffi.NULL, 8, n),
            "detokenize ids": lib.edge_rt_detokenize(h, ffi.NULL, 2, 0, ffi.new("char[]", 8), 8, n),
            "eval tokens": lib.edge_rt_eval(h, ffi.NULL, 3, ffi.NULL, 0),
            "eval empty": lib.edge_rt_eval(h, toks, 0, ffi.NULL, 0),
            "generate prompt": lib.edge_rt_generate(h, ffi.NULL, 3, 4, ffi.NULL, ffi.NULL, ffi.NULL),
            "info": lib.edge_rt_model_info_get(h, ffi.NULL),
            "memory report": lib.edge_rt_memory_report_get(h, ffi.NULL),
        }
        for what, status in cases.items():
            assert status_name(status) == "EDGE_RT_ERR_INVALID_ARGUMENT", what
            assert last_error(h) == last_error() and last_error(h).startswith("["), what
        # empty text with a NULL pointer is fine; a zero-capacity query reports the size
        assert lib.edge_rt_tokenize(h, ffi.NULL, 0, 0, 0, ffi.NULL, 0, n) == lib.EDGE_RT_OK and n[0] == 0
        status = lib.edge_rt_tokenize(h, b"hello world", 11, 0, 0, ffi.NULL, 0, n)
        assert status_name(status) == "EDGE_RT_ERR_BUFFER_TOO_SMALL" and n[0] > 0
        small = ffi.new("float[]", 10)
        toks[0] = 5
        assert status_name(lib.edge_rt_eval(h, toks, 1, small, 10)) == "EDGE_RT_ERR_BUFFER_TOO_SMALL"
    finally:
        assert lib.edge_rt_model_free(h) == lib.EDGE_RT_OK


def test_freed_and_forged_handles():
    status, h, _ = create(DEFAULT)
    assert status == "EDGE_RT_OK"
    assert lib.edge_rt_model_free(h) == lib.EDGE_RT_OK
    forged = ffi.cast("edge_rt_model*", 0xDEADBEEF)
    n = ffi.new("size_t*")
    for handle in (h, forged, ffi.NULL):
        calls = [lib.edge_rt_model_free(handle), lib.edge_rt_reset(handle), lib.edge_rt_cancel(handle),
                 lib.edge_rt_tokenize(handle, b"x", 1, 0, 0, ffi.NULL, 0, n),
                 lib.edge_rt_generate(handle, ffi.new("int32_t[]", [1]), 1, 2, ffi.NULL, ffi.NULL, ffi.NULL)]
        assert [status_name(s) for s in calls] == ["EDGE_RT_ERR_INVALID_HANDLE"] * len(calls)
        assert "invalid model handle" in last_error(handle)
        assert lib.edge_rt_n_past(handle) == -1 and lib.edge_rt_token_is_eog(handle, 0) == -1
    # handles are not reused: a new model never answers to the freed one's handle
    status, h2, _ = create(DEFAULT)
    assert h2 != h and status_name(lib.edge_rt_reset(h)) == "EDGE_RT_ERR_INVALID_HANDLE"
    lib.edge_rt_model_free(h2)
    m = capi.CModel(DEFAULT, threads=THREADS)
    m.close()
    with pytest.raises(InvalidArgumentError, match="invalid model handle"):
        m.tokenize("x")


def test_bad_tokens_and_context():
    with capi.CModel(DEFAULT, threads=THREADS, n_ctx=16) as c:
        for bad in ([-1], [c.n_vocab], [1, 2, 2**31 - 1]):
            with pytest.raises(InvalidArgumentError, match=r"outside \[0, 4096\)"):
                c.generate_tokens(bad)
            with pytest.raises(InvalidArgumentError, match=r"outside \[0, 4096\)"):
                c.eval(bad)
        with pytest.raises(InvalidArgumentError, match="outside the vocabulary"):
            c.detokenize([c.n_vocab])
        with pytest.raises(InvalidArgumentError, match="n_ctx=16") as info:
            c.generate_tokens(list(range(17)))
        assert info.value.status == "EDGE_RT_ERR_CONTEXT_FULL"
        c.eval(list(range(10)))
        assert c.n_past == 10
        with pytest.raises(InvalidArgumentError, match="exceed n_ctx=16"):
            c.eval(list(range(7)))
        assert c.n_past == 10  # the check comes first: the cache is kept
        c.eval([1] * 6)
        assert c.n_past == 16
        c.reset()
        assert c.n_past == 0
        assert c.generate_tokens([1, 2], max_tokens=0) == [] and c.last_result["finish_reason"] == "length"


def test_eval_logits_equal_python():
    """edge_rt_eval returns the last position's logits, computed as Python's generation computes them:
    the last layer's FFN on that row only (as llama.cpp does when only the last logits are wanted), so
    they are the bits of the logits Model.generate samples from, and within float rounding of
    Model.logits' last row (which runs that FFN batched over every row)."""
    model = edge_rt.load(DEFAULT, threads=THREADS)
    ids = model.tokenize("def f(x):\n    return x")
    all_rows = model.logits(ids)[-1]
    model.reset()
    expected = model._eval_chunks(ids)
    with capi.CModel(DEFAULT, threads=THREADS) as c:
        got = c.eval(ids)
    assert got == [float(v) for v in expected]
    np.testing.assert_allclose(got, all_rows, rtol=0, atol=1e-4 * float(np.std(all_rows)))


# ---- cancellation and callbacks ----------------------------------------------------------------------

def test_callback_cancels_and_sees_pieces():
    model = edge_rt.load(DEFAULT, threads=THREADS)
    ids = model.tokenize("def main():\n")
    expected = list(model.generate_tokens(ids, max_tokens=30, temperature=0))
    pieces = []

    def on_token(token, piece):
        pieces.append(piece)
        return len(pieces) == 5

    with capi.CModel(DEFAULT, threads=THREADS) as c:
        with pytest.raises(capi.CancelledError, match="cancelled by the token callback after 5 tokens") as info:
            c.generate_tokens(ids, max_tokens=30, on_token=on_token)
        assert info.value.status == "EDGE_RT_ERR_CANCELLED"
        assert c.last_result["token_ids"] == expected[:5] and c.last_result["finish_reason"] == "cancelled"
        assert b"".join(pieces) == model.tokenizer.detokenize_bytes(expected[:5])
        # the model is usable afterwards, and a callback that raises cancels and re-raises
        assert c.generate_tokens(ids, max_tokens=30) == expected

        def boom(token, piece):
            raise RuntimeError("callback failed")

        with pytest.raises(RuntimeError, match="callback failed"):
            c.generate_tokens(ids, max_tokens=30, on_token=boom)
        assert c.last_result["token_ids"] == expected[:1]
        assert c.generate_tokens(ids, max_tokens=30) == expected


def test_callback_reentry_is_refused():
    with capi.CModel(DEFAULT, threads=THREADS) as c:
        seen = []

        def reenter(token, piece):
            status = c._lib.edge_rt_reset(c._handle())
            seen.append((status_name(status), last_error(c._handle())))
            return True

        with pytest.raises(capi.CancelledError):
            c.generate_tokens([1, 2, 3], max_tokens=5, on_token=reenter)
        assert seen[0][0] == "EDGE_RT_ERR_INVALID_ARGUMENT" and "busy on this thread" in seen[0][1]


def test_free_from_callback_is_safe():
    status, h, _ = create(DEFAULT)
    calls = []

    @ffi.callback("edge_rt_token_callback")
    def free_it(token, piece, n, user):
        calls.append(status_name(lib.edge_rt_model_free(h)))
        return 0

    result = ffi.new("edge_rt_generate_result*")
    result.struct_size = ffi.sizeof("edge_rt_generate_result")
    status = lib.edge_rt_generate(h, ffi.new("int32_t[]", [1, 2, 3]), 3, 50, free_it, ffi.NULL, result)
    assert calls == ["EDGE_RT_OK"] and status_name(status) == "EDGE_RT_ERR_CANCELLED"
    assert status_name(lib.edge_rt_reset(h)) == "EDGE_RT_ERR_INVALID_HANDLE"


def test_cancel_from_another_thread():
    with capi.CModel(DEFAULT, threads=THREADS, n_ctx=256) as c:
        started = threading.Event()

        def on_token(token, piece):
            started.set()
            return False

        t = threading.Thread(target=lambda: (started.wait(30), c.cancel()))
        t.start()
        with pytest.raises(capi.CancelledError, match="cancelled"):
            c.generate_tokens([1, 2, 3], max_tokens=None, on_token=on_token)
        t.join()
        assert c.last_result["finish_reason"] == "cancelled" and 0 < len(c.last_result["token_ids"]) < 253
        # a cancel with nothing running stops the next call at once, then is consumed
        c.cancel()
        with pytest.raises(capi.CancelledError):
            c.eval([1, 2, 3])
        assert c.n_past == 0
        assert len(c.eval([1, 2, 3])) == c.n_vocab


def test_capi_works_without_the_extension(tmp_path):
    """edge_rt.capi never imports edge_rt._core: with the extension hidden, it still generates."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'edge_rt._core': raise ImportError('extension hidden for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge_rt.capi import CModel\n"
        f"with CModel({str(DEFAULT)!r}, threads=1) as m:\n"
        "    print(m.generate_tokens(m.tokenize('def f():'), max_tokens=5))\n"
        "assert 'edge_rt._core' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=edge_rt_env(),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    model = edge_rt.load(DEFAULT, threads=1)
    ids = model.tokenize("def f():")
    assert out.stdout.strip() == str(list(model.generate_tokens(ids, max_tokens=5, temperature=0)))


def test_threads_share_a_model():
    """Calls from several threads on one model are serialized: each generation is the single-threaded one."""
    model = edge_rt.load(DEFAULT, threads=THREADS)
    prompts = [model.tokenize(p) for p in ("def a():\n", "class B:\n", "import re\n", "x = [")]
    expected = [list(model.generate_tokens(p, max_tokens=12, temperature=0)) for p in prompts]
    with capi.CModel(DEFAULT, threads=1) as c:
        got = [None] * len(prompts)

        def work(i):
            got[i] = c.generate_tokens(prompts[i], max_tokens=12)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == expected


def _random_texts(seed: int, specials, n: int = 300):
    """Byte strings mixing ASCII words, spaces and digits, multi-byte characters (whole and cut), invalid bytes
    (overlong, surrogate, past U+10FFFF, stray continuations) and special-token texts."""
    import random

    rng = random.Random(seed)
    pieces = [b"a", b"Zq", b"def", b" ", b"  ", b"\t", b"\n", b"\r\n", b"'s", b"'ll", b"'", b"12", b"345", b"_",
              b"(", b")", b":", b"!?", "é".encode(), "日本".encode(), "🙂".encode(), "\u2581".encode(),
              "\u00a0".encode(), "\u3000".encode(), "６".encode(), "ß".encode(), b"\x80", b"\xc0\xaf", b"\xed\xa0\x80",
              b"\xf4\x90\x80\x80", b"\xff", b"\xe2\x82", b"\xf0\x9f", b"\xf0\x9f\x99", *specials]
    for _ in range(n):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 24)))
        cut = rng.random()
        if cut < 0.2 and text:  # cut anywhere, splitting characters
            text = text[: rng.randrange(len(text))]
        yield text


@pytest.mark.parametrize("tokenizer", ["default", "llama"])
def test_tokenize_random_bytes_parity(synthetic_model, tokenizer):
    """Random byte strings, invalid UTF-8 included, tokenize as the Python tokenizer does them (it decodes with
    errors="replace"; the C tokenizer replaces the same maximal invalid subparts)."""
    path = DEFAULT if tokenizer == "default" else synthetic_model(tokenizer="llama")
    model = edge_rt.load(path, threads=1)
    tok = model.tokenizer
    specials = [t.encode() for t in ("<|endoftext|>", "<s>", "</s>", "<unk>") if tok.token_to_id(t) is not None]
    with capi.CModel(path, threads=1) as c:
        for i, text in enumerate(_random_texts(7 + len(tokenizer), specials)):
            add, parse = bool(i & 1), bool(i & 2)
            ids = tok.tokenize(text, add_special=add, parse_special=parse)
            assert c.tokenize(text, add, parse) == ids, text
            assert c.detokenize_bytes(ids, bool(i & 4)) == tok.detokenize_bytes(ids, bool(i & 4)), text


# ---- the C tokenizer on llama.cpp's vocabulary files --------------------------------------------------

def _vocab_names():
    from vocab_data import has_cases, vocab_files

    return [n for n in vocab_files() if has_cases(n)] or ["none"]


@pytest.mark.parametrize("name", _vocab_names())
def test_c_tokenizer_on_llama_cpp_vocabularies(name):
    """Every llama.cpp test vocabulary the Python tokenizer loads, loads in C with the same EOG set and
    detokenizes the same; those the C tokenizer covers give llama.cpp's expected ids on every test input
    (as the Python tokenizer does), the others refuse to tokenize (UnsupportedArchitectureError)."""
    from edge_rt import _core
    from edge_rt.tokenizer import Tokenizer

    from vocab_data import read_cases, unavailable_reason, vocab_dir

    if vocab_dir() is None:
        pytest.skip(unavailable_reason())
    path = vocab_dir() / name
    try:
        py_tok = Tokenizer.from_gguf(path)
    except (UnsupportedArchitectureError, ModelFormatError) as e:
        with pytest.raises(type(e)):
            _core.testing.CTokenizer(str(path))
        return
    c_tok = _core.testing.CTokenizer(str(path))
    assert [t for t in range(py_tok.n_vocab) if c_tok.is_eog(t)] == sorted(py_tok.eog_ids)
    cases = read_cases(name)
    for text, expected in cases:
        for special in (False, True):
            assert c_tok.detokenize(expected, special) == py_tok.detokenize_bytes(expected, special), text
    if not c_tok.can_tokenize:
        with pytest.raises(UnsupportedArchitectureError, match=r"pre-tokenizer '"):
            c_tok.tokenize(b"hello")
        return
    for text, expected in cases:
        assert c_tok.tokenize(text.encode(), add_special=False, parse_special=False) == expected, text


def test_c_pre_tokenizer_table_matches_python():
    """The C tokenizer runs exactly the pre-tokenizers whose Python entry is one of the splitters it ports,
    with the same settings; every other entry is one it refuses (tested above on the vocabulary files)."""
    from edge_rt import _core
    from edge_rt.tokenizer import pretokenize as p

    splits = {(p._RE_GPT2,): "gpt2", (p._RE_DIGIT, p._RE_GPT2): "digits+gpt2", (p._RE_LLAMA3,): "llama3",
              (p._RE_QWEN2,): "qwen2", (p._RE_QWEN35,): "qwen35"}
    expected = {}
    for name, e in p.PRE_TYPES.items():
        split = splits.get(tuple(e.regexes))
        plain = e.byte_encode and not (e.escape_whitespaces or e.newline_words or e.force_bos or e.merges_optional)
        if split and plain:
            expected[name] = {"name": name, "split": split, "ignore_merges": e.ignore_merges, "add_bos": e.add_bos,
                              "bos_is_null": e.bos_is_null}
    got = {d["name"]: d for d in _core.testing.c_pre_tokenizers()}
    assert got == expected


def test_real_model_smollm2_parity():
    """SmolLM2-135M-Instruct (a real model, pre-tokenizer 'smollm': digits, then GPT-2's splitter) through the
    C ABI: a chat prompt with special tokens tokenizes and generates as the Python API does."""
    import real_models

    path = real_models.model_path("smollm2-135m-instruct-q4_1")
    if path is None:
        pytest.skip(real_models.unavailable_reason("smollm2-135m-instruct-q4_1"))
    prompt = "<|im_start|>user\nWhat is 12 + 345? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
    model = edge_rt.load(path, threads=THREADS, n_ctx=256)
    ids = model.tokenize(prompt, parse_special=True)
    expected = list(model.generate_tokens(ids, max_tokens=16, temperature=0))
    with capi.CModel(path, threads=THREADS, n_ctx=256) as c:
        assert c.info()["can_tokenize"]
        assert c.tokenize(prompt, parse_special=True) == ids
        assert c.generate_tokens(ids, max_tokens=16) == expected
        assert c.last_result["finish_reason"] == model.last_result.finish_reason


def test_free_from_another_thread_during_generation():
    status, h, _ = create(DEFAULT, n_ctx=256)
    first = threading.Event()
    done = threading.Event()

    @ffi.callback("edge_rt_token_callback")
    def on_token(token, piece, n, user):
        first.set()
        return 0

    out = {}

    def generate():
        result = ffi.new("edge_rt_generate_result*")
        result.struct_size = ffi.sizeof("edge_rt_generate_result")
        out["status"] = status_name(lib.edge_rt_generate(h, ffi.new("int32_t[]", [1, 2, 3]), 3, -1, on_token,
                                                         ffi.NULL, result))
        out["n"] = result.n_tokens
        done.set()

    t = threading.Thread(target=generate)
    t.start()
    assert first.wait(30)
    assert status_name(lib.edge_rt_model_free(h)) == "EDGE_RT_OK"
    assert done.wait(30)
    t.join()
    assert out["status"] == "EDGE_RT_ERR_CANCELLED" and 0 < out["n"] < 253
    assert status_name(lib.edge_rt_reset(h)) == "EDGE_RT_ERR_INVALID_HANDLE"
