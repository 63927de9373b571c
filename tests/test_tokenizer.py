"""Tokenizer tests: llama.cpp's own expected tokenizations, parity with llama.cpp (through
llama-cpp-python) on tricky strings, malformed metadata, and streaming detokenization.

The vocabularies and expectations (``ggml-vocab-*.gguf`` with ``.inp``/``.out``) are llama.cpp's, from
the llama-cpp-python sdist (tests/vocab_data.py). llama.cpp's tests/test-tokenizer-0.cpp produced the
``.out`` files with ``common_tokenize(ctx, text, add_special=false, parse_special=false)``, so that is
what is compared.
"""

from __future__ import annotations

import ctypes
from typing import Dict, List, Optional, Sequence

import pytest

from edge_rt.errors import InvalidArgumentError, ModelFormatError, UnsupportedArchitectureError
from edge_rt.gguf_file import read_metadata_with_gguf_package
from edge_rt.tokenizer import StreamDecoder, Tokenizer, read_gguf_metadata
from edge_rt.tokenizer.pretokenize import PRE_TYPES

from vocab_data import has_cases, read_cases, unavailable_reason, vocab_dir, vocab_files

VOCAB_DIR = vocab_dir()
# The vocabularies the parity tests below run on (llama.cpp's expected tokenizations run on every one).
VOCABS = ["ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf", "ggml-vocab-gpt-2.gguf"]

needs_vocab = pytest.mark.skipif(VOCAB_DIR is None, reason=unavailable_reason())
_read_cases = read_cases


def _round_trips(tok: Tokenizer, text: str) -> bool:
    """SPM maps U+2581 in the input to a space on the way back (as llama.cpp does), so skip those."""
    return not (tok.model == "llama" and "\u2581" in text)


def _unsupported(name: str) -> str:
    """Why edge_rt cannot tokenize vocabulary ``name`` like llama.cpp ('' when it can)."""
    md = _metadata(name)
    model, pre = md.get("tokenizer.ggml.model"), md.get("tokenizer.ggml.pre") or ""
    if model not in ("llama", "gpt2"):
        return f"tokenizer model {model!r} is not implemented"
    if model == "gpt2" and pre not in PRE_TYPES:
        return f"pre-tokenizer {pre!r} is not implemented"
    return ""


def _case_params():
    """One test per expected tokenization of a supported vocabulary; one strict xfail per vocabulary
    whose tokenizer model or pre-tokenizer edge_rt does not implement (index None: all its cases)."""
    if VOCAB_DIR is None:
        return [pytest.param("none", 0, id="vocab-missing", marks=needs_vocab)]
    params = []
    for name in vocab_files():
        if not has_cases(name):
            continue
        short = name.replace("ggml-vocab-", "").replace(".gguf", "")
        why = _unsupported(name)
        if why:
            params.append(pytest.param(name, None, id=f"{short}-all", marks=pytest.mark.xfail(strict=True, reason=why)))
            continue
        for i in range(len(_read_cases(name))):
            params.append(pytest.param(name, i, id=f"{short}-{i}"))
    return params


_METADATA: Dict[str, dict] = {}
_TOKENIZERS: Dict[str, Tokenizer] = {}


def _metadata(name: str) -> dict:
    """GGUF metadata of a vocabulary, read once (the gguf-package fallback is slow on big vocabs)."""
    if name not in _METADATA:
        if VOCAB_DIR is None:
            pytest.skip(unavailable_reason())
        _METADATA[name] = read_gguf_metadata(VOCAB_DIR / name)
    return _METADATA[name]


def _tok(name: str) -> Tokenizer:
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = Tokenizer.from_metadata(_metadata(name))
    return _TOKENIZERS[name]


def test_vocab_data_is_the_test_extras_llama_cpp_python() -> None:
    """The vocabulary files come from the llama-cpp-python release the suite compares against."""
    from pathlib import Path

    import vocab_data

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"llama-cpp-python=={vocab_data.LLAMA_CPP_PYTHON}"' in pyproject


# ---- 1. llama.cpp's expected tokenizations --------------------------------------------------------------

@needs_vocab
@pytest.mark.parametrize("name,index", _case_params())
def test_llama_cpp_vocab_case(name: str, index: Optional[int]) -> None:
    cases = _read_cases(name)
    tok = _tok(name)
    for i in range(len(cases)) if index is None else [index]:
        text, expected = cases[i]
        got = tok.tokenize(text, add_special=False, parse_special=False)
        assert got == expected, f"{name} case {i} {text!r}"
        # lossless round trip for what was tokenized as plain text
        if _round_trips(tok, text):
            assert tok.detokenize(got) == text


@needs_vocab
def test_vocab_properties() -> None:
    spm = _tok("ggml-vocab-llama-spm.gguf")
    assert (spm.model, spm.n_vocab, spm.bos_id, spm.eos_id, spm.unk_id) == ("llama", 32000, 1, 2, 0)
    assert spm.add_bos and not spm.add_eos and spm.add_space_prefix
    assert spm.tokenize("Hello world") == [1, 15043, 3186]
    assert spm.tokenize("") == [1] and spm.tokenize("", add_special=False) == []
    assert 2 in spm.eog_ids

    bpe = _tok("ggml-vocab-llama-bpe.gguf")
    assert (bpe.model, bpe.n_vocab, bpe.bos_id, bpe.eos_id) == ("gpt2", 128256, 128000, 128001)
    assert bpe.add_bos  # llama3 pre-tokenizer implies add_bos in llama.cpp
    assert bpe.tokenize("Hello world") == [128000, 9906, 1917]
    eot = bpe.token_to_id("<|eot_id|>")
    assert bpe.eot_id == eot and {eot, 128001} <= bpe.eog_ids
    assert bpe.tokenize("<|eot_id|>", add_special=False, parse_special=True) == [eot]
    assert bpe.token_to_piece(eot) == "" and bpe.token_to_piece(eot, special=True) == "<|eot_id|>"

    gpt2 = _tok("ggml-vocab-gpt-2.gguf")
    assert not gpt2.add_bos
    assert gpt2.tokenize("<|endoftext|>", parse_special=True) == [50256]
    assert len(gpt2.tokenize("<|endoftext|>", parse_special=False)) > 1
    assert 50256 in gpt2.eog_ids and gpt2.is_eog(50256)


# ---- 2. parity with llama.cpp through llama-cpp-python ------------------------------------------------

CORPUS = [
    "", " ", "  ", "\t", "\n", "\n\n\n", " \n \n", "\r\n", "\t\t x", "a\u00a0b", "x\u3000y", "\u2028", "\x0b\x0c",
    "Hello world", "  leading spaces", "trailing spaces   ", "   ", "mixed \t\n whitespace  \n\n  end",
    "1", "12", "123", "1234", "1234567", "3.14159265358979", "x=1234567890;", "٣٤٥٦ ௧௨௩", "１２３４５",
    "Ünïcödé àccénts: café naïve façade", "e\u0301 combining", "Ελληνικά Русский עברית العربية",
    "中文字符测试，你好世界！", "日本語のテキスト、カタカナ", "한국어 텍스트", "ภาษาไทย",
    "emoji 🦙🚀😀 and 👨‍👩‍👧‍👦 ZWJ family, 🏳️‍🌈 flag, 👍🏽 skin tone",
    "def f(x):\n    return x ** 2  # comment\n\tif x != 0: pass\n",
    "int main() { printf(\"%d\\n\", a[i]); return 0; }",
    "<html><body class='x'>&amp;</body></html>",
    "I'm you're we've they'll she'd it's I'M YOU'RE WE'VE 'S 'Ll",
    "<s>", "</s>", "<unk>", "<s> hi </s>", "a<s>b", "<|endoftext|>", "x<|endoftext|>y <|endoftext|>",
    "<|begin_of_text|>Hello<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<0x0A>", "▁already▁escaped", "\u0000nul", "\ufffd", "\U0001f9ea\U0001fae8 new emoji",
    "ﬁ ligature Å Ω K", "$$$ +++ <<< >>> ^^^ ~~~ ||| ``` ...", "!!!??? ;;; ::: ---",
    "a" * 300, " " * 70 + "x", "\n" * 40, "ab" * 50 + "1" * 31,
]


@pytest.fixture(scope="module")
def llama_cpp_mod():
    mod = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    yield mod
    # free the models while llama_cpp is still intact (its __del__ fails at interpreter exit)
    while _LLAMAS:
        _LLAMAS.popitem()[1].close()


_LLAMAS: Dict[str, object] = {}


def _llama(mod, name: str):
    if name not in _LLAMAS:
        _LLAMAS[name] = mod.Llama(model_path=str(VOCAB_DIR / name), vocab_only=True, verbose=False)
    return _LLAMAS[name]


def _ref_piece(mod, llm, tid: int, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(1024)
    n = mod.llama_token_to_piece(llm._model.vocab, tid, buf, len(buf), 0, special)
    assert 0 <= n <= len(buf)
    return buf.raw[:n]


@needs_vocab
@pytest.mark.parametrize("name", VOCABS)
def test_tokenize_parity_with_llama_cpp(llama_cpp_mod, name: str) -> None:
    tok = _tok(name)
    llm = _llama(llama_cpp_mod, name)
    mismatches = []
    for text in CORPUS + [s for s, _ in _read_cases(name)]:
        for add_special in (False, True):
            for parse_special in (False, True):
                ref = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
                got = tok.tokenize(text, add_special=add_special, parse_special=parse_special)
                if got != ref:
                    mismatches.append((text, add_special, parse_special, got, ref))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"


@needs_vocab
@pytest.mark.parametrize("name", VOCABS)
def test_pieces_parity_with_llama_cpp(llama_cpp_mod, name: str) -> None:
    """Every token's piece, with and without special, equals llama_token_to_piece."""
    tok = _tok(name)
    llm = _llama(llama_cpp_mod, name)
    assert tok.n_vocab == llm.n_vocab()
    assert tok.bos_id == llm.token_bos() and tok.eos_id == llm.token_eos()
    bad = [(tid, special) for special in (False, True) for tid in range(tok.n_vocab)
           if tok.token_to_piece_bytes(tid, special) != _ref_piece(llama_cpp_mod, llm, tid, special)]
    assert not bad, f"{len(bad)} pieces differ, first: {bad[:5]}"


@needs_vocab
@pytest.mark.parametrize("name", VOCABS)
def test_detokenize_parity_with_llama_cpp(llama_cpp_mod, name: str) -> None:
    tok = _tok(name)
    llm = _llama(llama_cpp_mod, name)
    for text in CORPUS:
        for parse_special in (False, True):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=parse_special)
            for special in (False, True):
                # llama-cpp-python's detokenize concatenates the pieces (its buffer holds 32 bytes a piece)
                # and drops one leading space when the first token is BOS
                ref = b"".join(_ref_piece(llama_cpp_mod, llm, t, special) for t in ids)
                if all(len(_ref_piece(llama_cpp_mod, llm, t, special)) <= 32 for t in ids):
                    bos_rule = bool(ids) and ids[0] == llm.token_bos() and ref[:1] == b" "
                    assert llm.detokenize(ids, special=special) == (ref[1:] if bos_rule else ref)
                ours = b"".join(tok.token_to_piece_bytes(t, special) for t in ids)
                assert ours == ref, (text, special)
            if not parse_special and _round_trips(tok, text):
                # our detokenize removes the space SPM prefixed, so plain text round-trips exactly
                assert tok.detokenize(ids) == text, text
        # with BOS: for SPM, llama-cpp-python drops the space prefixed after BOS, as we do (it also drops a
        # leading space after BOS for BPE vocabularies, which loses a real space; we keep it)
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if tok.add_space_prefix and ids and ids[0] == llm.token_bos() and \
                all(len(_ref_piece(llama_cpp_mod, llm, t, False)) <= 32 for t in ids):
            assert tok.detokenize_bytes(ids) == llm.detokenize(ids), text
        if _round_trips(tok, text):
            assert tok.detokenize(ids) == text


def _fuzz_strings(seed: int, count: int, extra: Sequence[str] = (), max_len: int = 40) -> List[str]:
    """Deterministic random strings over the characters the pre-tokenizers treat differently (and
    ``extra`` pieces)."""
    import random
    alphabet = list(" \t\n\r\x0b\x0c\u00a0\u3000\u2028\u0085'sStTrReEvVlLmMdD0123456789aZ.,!?$+<=>^~|`_-()[]{}"
                    "\\/\"#%&*@:;")
    alphabet += list("éüßñçÅΩжЖ中文日本한국ภาษ٣௧１²½ⅷ") + [
        "\u0301", "\u200d", "\ufe0f", "🦙", "👨", "🏽", "\U000e0001", "\ue000", "\u0378", "<s>", "</s>",
        "<|endoftext|>", "<|eot_id|>", "\u2581", "\x00", "\x1c", "\x7f"]
    alphabet += list(extra)
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(count)]


# What the other pre-tokenizers' regexes single out: scripts and ranges (Han, kana, hangul, bopomofo, Thai,
# Devanagari with its marks), cased words, CJK and Indic punctuation, digit runs, chameleon's markers.
_PRE_FUZZ_EXTRA = (
    list("中文字龥㐀豈ひらがなカタカナｶﾀ한국어ㄱㅎㄅㄆภาษาไทยកខကခ…。，、！：；“”‘’—।۔،〃︰﹏") + [
        "कि", "क्ष", "\u0300", "\u0951", "ǅ", "ʰ", "ǀ", "Ⅻ", "\u1f7d", "µ", "ƻ", "Ab", "aB", "ABC", "abc",
        "Hello", "WORLD", "iPhone", "1234567", "12345", "1,234", "٣٤٥", "IMGIMG", "ABCDEFGHIZ", "Z",
        "<sentinel:12>", "    ", "  ", "\r\n", "\n\n", "'S", "'ll", "'VE", "\u2009", "\u00a0 ", "▁▁"])


def _assert_tokenize_parity(tok: Tokenizer, llm, texts: List[str], parse_special=(False, True)) -> None:
    mismatches = []
    for text in texts:
        for special in parse_special:
            ref = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            got = tok.tokenize(text, add_special=False, parse_special=special)
            if got != ref:
                mismatches.append((text, special, got, ref))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"


@needs_vocab
@pytest.mark.parametrize("name", VOCABS)
def test_fuzz_parity_with_llama_cpp(llama_cpp_mod, name: str) -> None:
    _assert_tokenize_parity(_tok(name), _llama(llama_cpp_mod, name), _fuzz_strings(1234, 400))


def _behaviour(pre: str) -> tuple:
    """What of a PRE_TYPES entry changes token ids or special ids (names sharing it tokenize alike)."""
    t = PRE_TYPES[pre]
    return (t.regexes, t.ignore_merges, t.add_bos, t.byte_encode, t.escape_whitespaces, t.bos_is_null,
            t.force_bos, t.newline_words)


def _parity_pres() -> List[str]:
    """One pre-tokenizer name per distinct behaviour in PRE_TYPES, except those of the vocabularies the
    full parity tests above run on (llama-bpe, gpt-2); the starcoder group is represented by smollm."""
    covered = {_behaviour("llama-bpe"), _behaviour("gpt-2")}
    names = ["qwen2", "default", "smollm"]
    covered |= {_behaviour(n) for n in names}
    for name in PRE_TYPES:
        b = _behaviour(name)
        if b not in covered:
            covered.add(b)
            names.append(name)
    return names


# the vocabulary the pre-tokenizer variants rewrite: the smallest of llama.cpp's (they load 4x faster
# than llama-bpe's, and the splitting under test does not depend on the vocabulary)
_VARIANT_BASE = "ggml-vocab-gpt-2.gguf"


@pytest.fixture(scope="module")
def pre_variant(tmp_path_factory):
    """pre -> (path, Tokenizer) of the gpt-2 vocabulary with tokenizer.ggml.pre rewritten to ``pre`` (and
    its BOS id removed, so each pre-tokenizer's default BOS applies), written on first use."""
    import struct

    import gguf_bytes as gb

    md = {k: v for k, v in _metadata(_VARIANT_BASE).items()
          if k not in ("tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id")}
    kvs = []
    for key, value in md.items():
        if isinstance(value, bool):
            kvs.append(gb.KV(key, gb.BOOL, value))
        elif isinstance(value, int):
            kvs.append(gb.KV(key, gb.UINT32, value))
        elif isinstance(value, float):
            kvs.append(gb.KV(key, gb.FLOAT32, value))
        elif isinstance(value, str):
            kvs.append(gb.KV(key, gb.STRING, value))
        else:
            elem = gb.STRING if isinstance(value[0], str) else gb.INT32
            kvs.append(gb.KV(key, gb.ARRAY, value, elem_type=elem))
    # encoded once; each variant appends its own tokenizer.ggml.pre (a vocabulary-only file has no tensors)
    body = b"".join(kv.encode() for kv in kvs)
    folder = tmp_path_factory.mktemp("vocab")
    made: Dict[str, tuple] = {}

    def get(pre: str):
        if pre not in made:
            data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs) + 1) + body + \
                gb.KV("tokenizer.ggml.pre", gb.STRING, pre).encode()
            path = folder / f"vocab-{pre}.gguf"
            path.write_bytes(data + b"\0" * (-len(data) % 32))
            made[pre] = (path, Tokenizer.from_metadata({**md, "tokenizer.ggml.pre": pre}))
        return made[pre]

    return get


@needs_vocab
@pytest.mark.parametrize("pre", _parity_pres())
def test_other_pre_tokenizers_parity_with_llama_cpp(llama_cpp_mod, pre_variant, pre: str) -> None:
    """Each pre-tokenizer behaviour against llama.cpp's own, on a vocabulary rewritten to use it: the
    words (regex steps), ignore_merges, byte encoding or raw UTF-8, whitespace escaping, BOS defaults."""
    path, tok = pre_variant(pre)
    assert tok.pre == pre
    texts = CORPUS + [s for s, _ in _read_cases("ggml-vocab-llama-bpe.gguf")]
    fuzz = _fuzz_strings(99, 150, _PRE_FUZZ_EXTRA, max_len=60)
    if not tok.pre_type.byte_encode and not tok.pre_type.escape_whitespaces:
        # 'whitespace' keeps runs of whitespace as words, unencoded: llama.cpp aborts the process
        # (GGML_ASSERT in find_bpe_rank) on one that holds a space and another character, so leave those out
        def aborts(text: str) -> bool:
            return any(a.isspace() and b.isspace() and " " in a + b for a, b in zip(text, text[1:]))
        texts, fuzz = [t for t in texts if not aborts(t)], [t for t in fuzz if not aborts(t)]
    llm = llama_cpp_mod.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        _assert_tokenize_parity(tok, llm, texts)
        # special-token partitioning does not depend on the pre-tokenizer: the long fuzz runs without it
        _assert_tokenize_parity(tok, llm, fuzz, (False,))
        # default BOS id and add_bos (the variants carry no BOS key; gemma4 forces add_bos on)
        assert (tok.bos_id if tok.bos_id is not None else -1) == llm.token_bos()
        assert tok.add_bos == bool(llama_cpp_mod.llama_vocab_get_add_bos(llm._model.vocab))
        if tok.add_bos:
            assert tok.tokenize("Hello world") == llm.tokenize(b"Hello world", add_bos=True)
        if tok.pre_type.escape_whitespaces:  # pieces: U+2581 is a space, no GPT-2 byte decoding
            bad = [t for t in range(tok.n_vocab)
                   if tok.token_to_piece_bytes(t) != _ref_piece(llama_cpp_mod, llm, t, False)]
            assert not bad, f"{len(bad)} pieces differ, first: {bad[:5]}"
    finally:
        llm.close()
    if pre in ("qwen2", "default", "smollm"):
        # qwen2 and smollm (llama.cpp's starcoder group) split digits one by one; default groups them by three
        digits = [tok.token_text(t) for t in tok.tokenize("1234567", add_special=False)]
        assert digits == (list("1234567") if pre in ("qwen2", "smollm") else ["123", "456", "7"])


# ---- pre-tokenizer tables against llama.cpp's source ---------------------------------------------------

def _llama_cpp_source(name: str) -> str:
    from vocab_data import llama_cpp_source

    path, why = llama_cpp_source(name)
    if path is None:
        pytest.skip(why)
    return path.read_text(encoding="utf-8")


def test_pre_types_cover_every_llama_cpp_pre_tokenizer() -> None:
    """Every tokenizer.ggml.pre name the vendored llama.cpp accepts for a BPE vocabulary is in PRE_TYPES
    (and nothing else is): a llama.cpp upgrade that adds one fails here until it is implemented."""
    import llama_cpp_source as src

    names = src.pre_tokenizer_names(_llama_cpp_source("llama-vocab.cpp"))
    assert len(names) > 80  # the parser found the chain
    assert sorted(set(names) - set(PRE_TYPES)) == [], "llama.cpp pre-tokenizers missing from PRE_TYPES"
    assert sorted(set(PRE_TYPES) - set(names)) == [], "PRE_TYPES names llama.cpp does not know"
    # every pre-tokenizer type the header declares either has a name or is unused by llama.cpp too
    header = _llama_cpp_source("llama-vocab.h")
    import re
    declared = set(re.findall(r"LLAMA_VOCAB_PRE_TYPE_(\w+)\s*=", header))
    used = {p.pre_type for p in names.values()}
    assert used <= declared
    assert declared - used <= {"CHATGLM3", "LLAMA4", "PIXTRAL"}, "a new pre-tokenizer type"


def test_pre_types_match_llama_cpp_tables() -> None:
    """Each PRE_TYPES entry has the type, regexes (character for character), byte encoding and settings
    llama.cpp's llm_tokenizer_bpe and llama_vocab::load give that name."""
    import llama_cpp_source as src

    vocab_cpp = _llama_cpp_source("llama-vocab.cpp")
    names = src.pre_tokenizer_names(vocab_cpp)
    regexes = src.bpe_regexes(vocab_cpp)
    special = src.special_cases(vocab_cpp)
    assert special["force_bos"] and special["newline_word"] and special["merges_optional"]
    wrong = []
    for name, p in names.items():
        exprs, byte_encode = regexes.get(p.pre_type, regexes["DEFAULT"])
        expected = {"pre_type": p.pre_type, "regexes": tuple(exprs), "ignore_merges": p.ignore_merges,
                    "add_bos": p.add_bos, "byte_encode": byte_encode, "escape_whitespaces": p.escape_whitespaces,
                    "clean_spaces": p.clean_spaces, "add_sep": p.add_sep, "bos_is_null": p.bos_is_null,
                    "force_bos": p.pre_type in special["force_bos"],
                    "newline_words": p.pre_type in special["newline_word"],
                    "merges_optional": name in special["merges_optional"]}
        got = PRE_TYPES[name]._asdict()
        wrong += [(name, k, got[k], v) for k, v in expected.items() if got[k] != v]
    assert not wrong, f"{len(wrong)} differences (name, field, ours, llama.cpp), first: {wrong[0]!r}"


def test_hand_written_splitters_match_llama_cpp() -> None:
    """edge_rt runs a port of a hand-written splitter exactly where llama.cpp does
    (unicode_regex_split_custom), and a regex everywhere else."""
    from edge_rt.tokenizer.pretokenize import _CUSTOM

    import llama_cpp_source as src

    custom = src.custom_regexes(_llama_cpp_source("unicode.cpp"))
    assert len(custom) >= 9
    assert sorted(custom) == sorted(_CUSTOM)


def test_unicode_flags_are_llama_cpps() -> None:
    """edge_rt/tokenizer/unicode_flags.py is what tools/gen_unicode_flags.py makes of the vendored
    llama.cpp's unicode-data.cpp (regenerate it with that script after a llama.cpp upgrade)."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_unicode_flags", repo / "tools" / "gen_unicode_flags.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render(_llama_cpp_source("unicode-data.cpp"))
    assert (repo / "edge_rt" / "tokenizer" / "unicode_flags.py").read_text(encoding="utf-8") == expected


def test_code_point_classes_are_llama_cpps_not_pythons() -> None:
    """Code points are classified by llama.cpp's table: U+1FAE8 (an emoji of Unicode 15, unassigned for
    Python before 3.12) is a symbol, as llama.cpp has it, so \\p{S} takes it."""
    from edge_rt.tokenizer.pretokenize import _F_LETTER, _F_MARK, _F_SYMBOL, _F_WHITESPACE, _FLAGS, PreTokenizer

    assert _FLAGS["\U0001fae8"] == _F_SYMBOL and _FLAGS["a"] == _F_LETTER and _FLAGS["\u0301"] == _F_MARK
    assert _FLAGS["\u3000"] & _F_WHITESPACE and not _FLAGS["\x1c"] & _F_WHITESPACE
    assert PreTokenizer([r" ?[\p{P}\p{S}]+"]).split("a \U0001f9ea\U0001fae8") == ["a", " \U0001f9ea\U0001fae8"]


def test_every_pre_tokenizer_builds() -> None:
    """Every regex of every PRE_TYPES entry is run by a splitter port or compiles for Python's re (no
    FutureWarning either), and splits a mixed text into words that add up to it."""
    from edge_rt.tokenizer.pretokenize import PreTokenizer

    text = "Hello WORLD, it's 1234567 中文 ひらがな 한국어 कि …。 <sentinel:3> IMGIMGABZ \r\n\n  x\t"
    for name, entry in PRE_TYPES.items():
        words = PreTokenizer(entry.regexes).split(text)
        assert "".join(words) == text and all(words), name


@pytest.mark.parametrize("pre,text,words", [
    # std::regex's $ is the end of the input only: no match before a final newline (Python's $ would)
    ([r"a$"], "a\n", ["a\n"]),
    ([" ", r"x$"], "ax\n x", ["ax\n", " ", "x"]),
    # each word of the previous step is searched as an input of its own: ^ and \b see its start as the
    # input's start (llama.cpp's regex_iterator over the range), what precedes it in the text does not count
    (["a", r"\bx"], "axy", ["a", "x", "y"]),
    (["a", r"\Bx"], "axy", ["a", "xy"]),
    (["a", r"^x"], "axy xz", ["a", "x", "y xz"]),
    # superbpe: the empty matches of its lookahead cut digit runs in threes from the right
    ("superbpe", "x1234567 12", ["x", "1", "234", "567", " ", "12"]),
    # afmoe's digit splitter leaves the text before a run on the run's first group; its main regex then
    # splits the letters off
    ("afmoe", "ab1234", ["ab", "1", "234"]),
    ("tiny_aya", "ab 1234567", ["ab", " ", "1", "234", "567"]),
    # kimi-k2: Han runs on their own, letter runs take a contraction
    ("kimi-k2", "中文abc's 12345", ["中文", "abc's", " ", "123", "45"]),
    # qwen35: combining marks stay in the letter run
    ("qwen35", "e\u0301te\u0301 ok", ["e\u0301te\u0301", " ok"]),
    # laguna / gemma4: lines and runs of newlines first
    ("laguna", "a b\n\nc", ["a", " b", "\n\n", "c"]),
    ("gemma4", "a b\n\nc", ["a b", "\n\n", "c"]),
    ("whitespace", "ab  cd", ["ab", "  ", "cd"]),
    ("bloom", "hi, there. ok", ["hi", ",", " there", ".", " ok"]),
])
def test_pre_tokenizer_words(pre, text, words) -> None:
    """Words as llama.cpp's unicode_regex_split gives them (checked against it, built from the vendored
    source, with tools/pretokenize_vs_llamacpp.py's program)."""
    from edge_rt.tokenizer.pretokenize import PreTokenizer

    exprs = pre if isinstance(pre, list) else PRE_TYPES[pre].regexes
    assert PreTokenizer(exprs).split(text) == words


@pytest.mark.parametrize("expr", [r"(?i:'s)", r"(?P<x>a)", r"\p{Han}+x", r"[[:alpha:]]", r"\p{L}é"])
def test_regexes_std_regex_would_reject_are_refused(expr) -> None:
    """A regex llama.cpp's std::regex would not run (Python-only syntax, an unknown category, categories
    together with non-ASCII) is an error, never a guess."""
    from edge_rt.tokenizer.pretokenize import PreTokenizer

    with pytest.raises(ValueError):
        PreTokenizer([expr])


# ---- 3. malformed metadata, synthetic vocabularies, streaming ------------------------------------------

def _spm_md(**over) -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
             ["▁", "a", "b", "c", "ab", "▁a", "▁ab", "abc", "▁abc", "<ctl>", "<ud>"]
    types = [2, 3, 3] + [6] * 256 + [1] * 9 + [3, 4]
    scores = [0.0] * 259 + [-1.0, -2.0, -2.0, -2.0, -3.0, -3.0, -4.0, -5.0, -6.0, 0.0, 0.0]
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    md.update(over)
    return md


def _bpe_md(**over) -> dict:
    from edge_rt.tokenizer.bpe import BYTE_ENC
    tokens = list(BYTE_ENC) + ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "<|end|>"]
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
          "tokenizer.ggml.merges": ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"],
          "tokenizer.ggml.bos_token_id": len(tokens) - 1, "tokenizer.ggml.eos_token_id": len(tokens) - 1}
    md.update(over)
    return md


def test_synthetic_spm() -> None:
    tok = Tokenizer.from_metadata(_spm_md())
    ids = {t: i for i, t in enumerate(_spm_md()["tokenizer.ggml.tokens"])}
    assert tok.tokenize("abc", add_special=False) == [ids["▁abc"]]
    assert tok.tokenize("abc") == [1, ids["▁abc"]]
    # 'é' has no token: byte fallback to its UTF-8 bytes
    assert tok.tokenize("é", add_special=False) == [ids["▁"], 3 + 0xC3, 3 + 0xA9]
    assert tok.detokenize(tok.tokenize("é abc")) == "é abc"
    # control tokens only with parse_special; user-defined always; space prefix after a special token
    assert ids["<ctl>"] not in tok.tokenize("a<ctl>b", parse_special=False)
    assert tok.tokenize("a<ctl>b", add_special=False, parse_special=True) == \
        [ids["▁a"], ids["<ctl>"], ids["▁"], ids["b"]]
    assert ids["<ud>"] in tok.tokenize("a<ud>b", parse_special=False)


def test_spm_without_byte_tokens_loads_and_names_the_missing_byte() -> None:
    """A vocabulary without some <0xNN> tokens loads (llama.cpp too); text needing one fails with a named
    ModelFormatError, not a KeyError (fuzz_tokenizer regression spm-missing-byte-token)."""
    md = _spm_md()
    keep = [i for i, t in enumerate(md["tokenizer.ggml.tokens"]) if t != "<0xC3>"]
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        md[key] = [md[key][i] for i in keep]
    tok = Tokenizer.from_metadata(md)
    assert tok.detokenize(tok.tokenize("abc")) == "abc"
    with pytest.raises(ModelFormatError, match="no byte token <0xC3>"):
        tok.tokenize("é", add_special=False)


def test_synthetic_bpe() -> None:
    md = _bpe_md()
    tok = Tokenizer.from_metadata(md)
    ids = {t: i for i, t in enumerate(md["tokenizer.ggml.tokens"])}
    assert tok.tokenize("hello world", add_special=False)[:2] == [ids["hello"], ids["Ġwo"]]
    assert tok.detokenize(tok.tokenize("hello world, 123 ünï")) == "hello world, 123 ünï"
    assert tok.tokenize("<|end|>", parse_special=True) == [ids["<|end|>"]]
    assert tok.eot_id == ids["<|end|>"] and tok.is_eog(ids["<|end|>"])


def test_pre_type_settings_synthetic() -> None:
    """The llama_vocab::load settings that are not regexes, on a synthetic vocabulary (the llama.cpp
    parity of each runs in test_other_pre_tokenizers_parity_with_llama_cpp)."""
    base = _bpe_md()
    ids = {t: i for i, t in enumerate(base["tokenizer.ggml.tokens"])}
    # kimi-k2 vocabularies may come without merges (llama.cpp then merges nothing); others may not
    md = _bpe_md(**{"tokenizer.ggml.pre": "kimi-k2"})
    del md["tokenizer.ggml.merges"]
    assert Tokenizer.from_metadata(md).tokenize("hello", add_special=False) == [ids[c] for c in "hello"]
    md["tokenizer.ggml.pre"] = "qwen2"
    with pytest.raises(ModelFormatError, match="merges"):
        Tokenizer.from_metadata(md)
    # chatglm-bpe / glm4: no default BOS id, only the key's
    md = _bpe_md(**{"tokenizer.ggml.pre": "chatglm-bpe"})
    del md["tokenizer.ggml.bos_token_id"]
    assert Tokenizer.from_metadata(md).bos_id is None
    md["tokenizer.ggml.pre"] = "qwen2"
    assert Tokenizer.from_metadata(md).bos_id == 11
    # gemma4: add_bos whatever the key says; spaces become U+2581, words stay raw UTF-8 with <0xXX> fallback
    tokens = ["<pad>", "<bos>", "▁", "a", "b", "▁a", "\n\n", "\n"] + [f"<0x{b:02X}>" for b in range(256)]
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gemma4", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": [3, 3] + [1] * 6 + [6] * 256, "tokenizer.ggml.merges": ["▁ a"],
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.add_bos_token": False}
    tok = Tokenizer.from_metadata(md)
    t = {x: i for i, x in enumerate(tokens)}
    assert tok.add_bos
    assert tok.tokenize("a a\n\nb é") == [1, t["a"], t["▁a"], t["\n\n"], t["b"], t["▁"], t["<0xC3>"], t["<0xA9>"]]
    assert tok.detokenize(tok.tokenize("a a\n\nb é")) == "a a\n\nb é"


def test_unknown_pre_tokenizer_is_refused() -> None:
    """As llama.cpp: a pre-tokenizer we do not implement is an error naming it (it used to fall back to
    gpt-2's splitter with a warning and tokenize differently from llama.cpp)."""
    from edge_rt import UnsupportedArchitectureError

    with pytest.raises(UnsupportedArchitectureError, match=r"unknown pre-tokenizer 'made-up'.*supported: .*smollm"):
        Tokenizer.from_metadata(_bpe_md(**{"tokenizer.ggml.pre": "made-up"}))


@pytest.mark.parametrize("key,value,match", [
    ("tokenizer.ggml.tokens", None, "'tokenizer.ggml.tokens': missing"),
    ("tokenizer.ggml.tokens", "abc", "'tokenizer.ggml.tokens': expected an array"),
    ("tokenizer.ggml.tokens", [], "empty vocabulary"),
    ("tokenizer.ggml.tokens", ["<unk>", 5, "b"], "'tokenizer.ggml.tokens': entry 1 is int"),
    ("tokenizer.ggml.scores", [0.0] * 10, r"'tokenizer.ggml.scores': length 10 != 270 tokens"),
    ("tokenizer.ggml.scores", ["x"] * 270, "'tokenizer.ggml.scores': entry 0 is str"),
    ("tokenizer.ggml.token_type", [1] * 269, "'tokenizer.ggml.token_type': length 269 != 270"),
    ("tokenizer.ggml.token_type", [1.5] * 270, "'tokenizer.ggml.token_type': entry 0 is float"),
    ("tokenizer.ggml.bos_token_id", 270, "'tokenizer.ggml.bos_token_id': token id 270 is outside"),
    ("tokenizer.ggml.eos_token_id", -1, "'tokenizer.ggml.eos_token_id': token id -1 is outside"),
    ("tokenizer.ggml.eos_token_id", "2", "'tokenizer.ggml.eos_token_id': expected an integer"),
    ("tokenizer.ggml.add_bos_token", "yes", "'tokenizer.ggml.add_bos_token': expected a bool"),
    ("tokenizer.ggml.model", None, "'tokenizer.ggml.model': missing"),
    ("tokenizer.ggml.model", 3, "'tokenizer.ggml.model': expected a string"),
])
def test_malformed_spm_metadata(key, value, match) -> None:
    md = _spm_md()
    if value is None:
        del md[key]
    else:
        md[key] = value
    with pytest.raises(ModelFormatError, match=match) as info:
        Tokenizer.from_metadata(md)
    assert str(info.value).startswith("[tokenizer] key ")


def test_malformed_vocab_details() -> None:
    md = _spm_md()
    md["tokenizer.ggml.tokens"] = list(md["tokenizer.ggml.tokens"])
    md["tokenizer.ggml.tokens"][5] = "<unk>"
    with pytest.raises(ModelFormatError, match="duplicate token '<unk>' at ids 0 and 5"):
        Tokenizer.from_metadata(md)
    md = _spm_md()
    md["tokenizer.ggml.tokens"] = list(md["tokenizer.ggml.tokens"])
    md["tokenizer.ggml.tokens"][3] = "<0xZZ>"
    with pytest.raises(ModelFormatError, match="'tokenizer.ggml.token_type': token 3 .* BYTE"):
        Tokenizer.from_metadata(md)
    with pytest.raises(ModelFormatError, match="'tokenizer.ggml.add_bos_token': true, but"):
        md = _spm_md(**{"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.scores": [0.0],
                        "tokenizer.ggml.token_type": [1]})
        del md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]
        Tokenizer.from_metadata(md)
    with pytest.raises(UnsupportedArchitectureError, match="'bert' is not supported"):
        Tokenizer.from_metadata(_spm_md(**{"tokenizer.ggml.model": "bert"}))


@pytest.mark.parametrize("merges,match", [
    (None, "'tokenizer.ggml.merges': missing"),
    (["h e", "ll"], "'tokenizer.ggml.merges': entry 1 'll' is not two pieces"),
    (["h e", "a b c"], "entry 1 'a b c'"),
    (["h "], "entry 0 'h '"),
    (["h e", 7], "'tokenizer.ggml.merges': entry 1 is int"),
])
def test_malformed_merges(merges, match) -> None:
    md = _bpe_md()
    if merges is None:
        del md["tokenizer.ggml.merges"]
    else:
        md["tokenizer.ggml.merges"] = merges
    with pytest.raises(ModelFormatError, match=match):
        Tokenizer.from_metadata(md)


def test_bad_token_ids_at_runtime() -> None:
    tok = Tokenizer.from_metadata(_spm_md())
    with pytest.raises(InvalidArgumentError):
        tok.token_to_piece(10_000)
    with pytest.raises(InvalidArgumentError):
        tok.detokenize([1, -1])


def test_stream_decoder_holds_incomplete_utf8() -> None:
    tok = Tokenizer.from_metadata(_spm_md())
    text = "ab 🦙é abc"
    ids = tok.tokenize(text)
    dec = StreamDecoder(tok)
    outs = [dec.feed(t) for t in ids]
    assert "".join(outs) + dec.flush() == text == tok.detokenize(ids)
    assert all("\ufffd" not in o for o in outs)
    # the llama emoji is four byte tokens: nothing comes out until the fourth
    start = ids.index(3 + 0xF0)
    assert outs[start:start + 3] == ["", "", ""] and outs[start + 3] == "🦙"
    # a stream that stops inside a character: flush gives a replacement character
    dec.reset()
    assert dec.feed(1) == "" and dec.feed(3 + 0xF0) == ""
    assert dec.flush() == "\ufffd"


@needs_vocab
def test_stream_decoder_real_vocab() -> None:
    for name in VOCABS:
        tok = _tok(name)
        for text in filter(lambda t: _round_trips(tok, t), CORPUS):
            ids = tok.tokenize(text, add_special=True)
            dec = tok.stream_decoder()
            assert "".join(dec.feed(t) for t in ids) + dec.flush() == tok.detokenize(ids) == text, (name, text)


def test_from_gguf_fallback_reader(tmp_path) -> None:
    """A vocabulary-only GGUF written by the gguf package loads through read_gguf_metadata."""
    gguf = pytest.importorskip("gguf")
    md = _spm_md()
    path = tmp_path / "v.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_scores(md["tokenizer.ggml.scores"])
    w.add_token_types(md["tokenizer.ggml.token_type"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for meta in (read_gguf_metadata(path), read_metadata_with_gguf_package(path)):
        assert meta["tokenizer.ggml.tokens"] == md["tokenizer.ggml.tokens"]
        assert meta["tokenizer.ggml.model"] == "llama"
        assert isinstance(meta["tokenizer.ggml.bos_token_id"], int)
        assert all(type(x) is float for x in meta["tokenizer.ggml.scores"])
        assert all(type(x) is int for x in meta["tokenizer.ggml.token_type"])
        tok = Tokenizer.from_metadata(meta)
        assert tok.tokenize("abc é") == Tokenizer.from_metadata(md).tokenize("abc é")
    assert Tokenizer.from_gguf(path).tokenize("abc") == Tokenizer.from_metadata(md).tokenize("abc")


def test_fallback_reader_errors(tmp_path) -> None:
    pytest.importorskip("gguf")
    from edge_rt.errors import ModelIOError
    with pytest.raises(ModelIOError):
        read_metadata_with_gguf_package(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 30)
    with pytest.raises(ModelFormatError):
        read_metadata_with_gguf_package(bad)


@needs_vocab
def test_core_reader_matches_gguf_package() -> None:
    """When the C++ reader is built, the tokenizer keys it returns equal the gguf package's."""
    try:
        from edge_rt import _core
    except ImportError:
        pytest.skip("edge_rt._core is not built")
    pytest.importorskip("gguf")
    path = VOCAB_DIR / "ggml-vocab-llama-spm.gguf"
    ours = dict(_core.GGUFFile(str(path)).metadata)
    ref = read_metadata_with_gguf_package(path)
    for key, value in ref.items():
        if key.startswith("tokenizer."):
            assert ours[key] == value, key
