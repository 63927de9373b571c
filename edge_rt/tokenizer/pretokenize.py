r"""Pre-tokenization for byte-level BPE vocabularies: llama.cpp's Unicode classes and word splitters.

``PRE_TYPES`` maps every ``tokenizer.ggml.pre`` name llama.cpp knows to a :class:`PreType`: the regex
list llama.cpp's ``llm_tokenizer_bpe`` assigns it and the settings ``llama_vocab::load`` gives it
(ignore_merges, add_bos, byte encoding, whitespace escaping, ...). :class:`PreTokenizer` runs such a
list as llama.cpp's ``unicode_regex_split`` does: a regex llama.cpp recognises by its text runs as a port
of llama.cpp's hand-written splitter for it (``unicode_regex_split_custom_*``: gpt-2, llama3, qwen2,
qwen35, kimi-k2, the afmoe / tiny_aya digit grouping, lines); every other regex runs, translated from
std::regex's ECMAScript to Python's ``re``, on the text llama.cpp runs it on: with a ``\p{..}``
category, the "collapsed" text (every non-ASCII code point replaced by one character naming its
category), otherwise the code points (non-ASCII whitespace as a vertical tab), so that digit grouping and
whitespace rules match exactly.

Code point classes are llama.cpp's own table (``unicode_flags``, generated from its unicode-data.cpp),
not Python's ``unicodedata``, whose Unicode version differs between Python releases.
"""

from __future__ import annotations

import bisect
import functools
import re
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

from .unicode_flags import RANGES, WHITESPACE

__all__ = ["PRE_TYPES", "PreType", "PreTokenizer"]

# ---- Unicode code point classes, as llama.cpp's unicode_cpt_flags -----------------------------------

_F_UNDEFINED = 0x0001
_F_NUMBER = 0x0002
_F_LETTER = 0x0004
_F_SEPARATOR = 0x0008
_F_MARK = 0x0010
_F_PUNCT = 0x0020
_F_SYMBOL = 0x0040
_F_CONTROL = 0x0080
_F_WHITESPACE = 0x0100
_F_WLN = _F_WHITESPACE | _F_LETTER | _F_NUMBER

# llama.cpp's unicode_ranges_flags: code points from _STARTS[i] up to _STARTS[i + 1] have _RANGE_FLAGS[i]
_STARTS: List[int] = []
_RANGE_FLAGS: List[int] = []
for _item in "".join(RANGES).split():
    _start, _, _flags = _item.partition(":")
    _STARTS.append(int(_start, 16))
    _RANGE_FLAGS.append(int(_flags, 16))


class _FlagTable(dict):
    """char -> llama.cpp's unicode_cpt_flags (category bits, and WHITESPACE for unicode_set_whitespace),
    filled on first sight of a character."""

    def __missing__(self, ch: str) -> int:
        cp = ord(ch)
        flags = _RANGE_FLAGS[bisect.bisect_right(_STARTS, cp) - 1]
        if cp in WHITESPACE:
            flags |= _F_WHITESPACE
        self[ch] = flags
        return flags


class _CollapseTable(dict):
    """char -> the single character llama.cpp's collapsed text holds for it (see unicode_regex_split)."""

    _CODES = {_F_NUMBER: "\xd1", _F_LETTER: "\xd2", _F_PUNCT: "\xd3", _F_MARK: "\xd4", _F_SYMBOL: "\xd5"}

    def __missing__(self, ch: str) -> str:
        if ord(ch) < 128:
            out = ch
        else:
            flags = _FLAGS[ch]
            if flags & _F_WHITESPACE:
                out = "\x0b"  # std::regex \s does not know non-ASCII whitespace; vertical tab stands in
            else:
                out = self._CODES.get(flags & 0xFF, "\xd0")
        self[ch] = out
        return out


class _WideTable(dict):
    """char -> char for llama.cpp's std::wregex path: non-ASCII whitespace becomes a vertical tab."""

    def __missing__(self, ch: str) -> str:
        out = "\x0b" if ord(ch) > 0x7F and (_FLAGS[ch] & _F_WHITESPACE) else ch
        self[ch] = out
        return out


_FLAGS = _FlagTable()
_COLLAPSE = _CollapseTable()
_WIDE = _WideTable()


def _is_han(cp: int) -> bool:
    """llama.cpp unicode_cpt_is_han: the CJK ideograph blocks (kimi-k2's \\p{Han})."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2EBEF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


# ---- the regexes of llama.cpp's llm_tokenizer_bpe, character for character ---------------------------
#
# A regex llama.cpp recognises by its exact text runs as a hand-written splitter (_CUSTOM below), as in
# llama.cpp's unicode_regex_split_custom; every other one runs as std::regex would run it (see _compile).
# "\r" "\n" outside a raw string are the control characters themselves, as in llama.cpp's C strings.

_CONTRACTIONS_CI = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_RE_LLAMA3 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
# the original llama3 regex, which llama.cpp still recognises (std::regex has no (?i:...))
_RE_LLAMA3_I = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_QWEN2 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
_RE_QWEN35 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_KIMI_K2 = r"\p{Han}+"  # stands for kimi-k2's whole regex (its splitter does everything)
_RE_AFMOE_DIGITS = r"\p{AFMoE_digits}"
_RE_TINY_AYA_DIGITS = r"\d{1,3}(?=(?:\d{3})*\b)"  # llama.cpp runs the afmoe digit splitter for it
_RE_NEWLINES = r"[^\n]+|[\n]+"

_RE_DIGIT = r"\p{N}"
_RE_DIGITS3 = r"\p{N}{1,3}"
_RE_CJK_KANA = r"[一-龥" "\u3040" r"-ゟ゠-ヿ]+"
_RE_DEEPSEEK_CJK = r"[一-龥ࠀ-一가-" "\ud7ff" r"]+"
_RE_ASCII_PUNCT_WORD = r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"""
_RE_DEEPSEEK3 = (_RE_ASCII_PUNCT_WORD + "|[^\r\n" r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[" "\r\n"
                 r"]*|\s*[" "\r\n" r"]+|\s+(?!\S)|\s+")
_RE_SPARK2_5 = (_RE_ASCII_PUNCT_WORD + "|[^\r\n" r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[" "\r\n"
                r"]|\s+(?!\S)|\s+")
_RE_AFMOE = _RE_ASCII_PUNCT_WORD + (r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+"
                                    r"|\s+(?!\S)|\s+")
_RE_CASED_WORDS = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                   + _CONTRACTIONS_CI + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
                   r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS_CI + "?")
# gpt-4o's regex with llama.cpp's lookahead rewrite of its upper/lower-case letter classes
_UPPER, _LOWER = r"((?=[\p{L}])([^a-z]))", r"((?=[\p{L}])([^A-Z]))"
_RE_TEKKEN = (r"[^\r\n\p{L}\p{N}]?" + _UPPER + "*" + _LOWER + r"+|[^\r\n\p{L}\p{N}]?" + _UPPER + "+" + _LOWER
              + r"*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_GPT4O = (r"[^\r\n\p{L}\p{N}]?" + _UPPER + "*" + _LOWER + "+" + _CONTRACTIONS_CI + r"?|[^\r\n\p{L}\p{N}]?"
             + _UPPER + "+" + _LOWER + "*" + _CONTRACTIONS_CI
             + r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_UPPER_M, _LOWER_M = r"((?=[\p{L}\p{M}])([^a-z]))", r"((?=[\p{L}\p{M}])([^A-Z]))"
_RE_GRANITE_EMB_MULTI = (r"[^\r\n\p{L}\p{N}]?" + _UPPER_M + "*" + _LOWER_M + "+" + _CONTRACTIONS_CI
                         + r"?|[^\r\n\p{L}\p{N}]?" + _UPPER_M + "+" + _LOWER_M + "*" + _CONTRACTIONS_CI
                         + r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"
_RES_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", _RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")

# LLAMA_VOCAB_PRE_TYPE_<key> -> llm_tokenizer_bpe's regex_exprs
_REGEXES: Dict[str, Tuple[str, ...]] = {
    "DEFAULT": _RES_DEFAULT,
    "LLAMA3": (_RE_LLAMA3,),
    "JAIS2": (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)"
              r"|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",),
    "DBRX": (_RE_LLAMA3,),
    "SMAUG": (_RE_LLAMA3,),
    "DEEPSEEK_LLM": (
        "[\r\n]",
        # letters (the escaped ones are those NFC would rewrite: keep this file free of them)

        r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-"
        "\u1f7d" r"ᾀ-ᾴᾶ-ᾼ" "\u1fbe" r"ῂ-ῄῆ-ῌῐ-" "\u1fd3" r"ῖ-" "\u1fdb" r"ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ" "\u2126" r"ℨ"
        "\u212a" r"-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
        r"\s?[!-/:-~！-／：-～‘-‟" "\u3000" r"-。]+",
        r"\s+$",
        _RE_DEEPSEEK_CJK,
        r"\p{N}+",
    ),
    "DEEPSEEK3_LLM": (_RE_DIGITS3, _RE_CJK_KANA, _RE_DEEPSEEK3),
    "HUNYUAN_DENSE": (_RE_DIGITS3, _RE_CJK_KANA, _RE_DEEPSEEK3),
    "JOYAI_LLM": (_RE_DIGITS3, _RE_CJK_KANA, _RE_DEEPSEEK3),
    "HY_V4": (_RE_DIGITS3, _RE_CJK_KANA, _RE_DEEPSEEK3),
    "SPARK2_5": (_RE_DIGITS3, _RE_CJK_KANA, _RE_SPARK2_5, _RE_DIGIT),
    "YOUTU": (
        r"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|" + _RE_CJK_KANA,
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS_CI
        + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS_CI
        + r"?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    "DEEPSEEK_CODER": ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _RE_DEEPSEEK_CJK, _RE_DIGIT),
    "FALCON": (r"[\p{P}\$\+<=>\^~\|`]+", _RE_GPT2, r"[0-9][0-9][0-9]"),
    "GPT2": (_RE_GPT2,),
    "STABLELM2": (_RE_QWEN2,),
    "QWEN35": (_RE_QWEN35,),
    "BLOOM": (_RE_BLOOM,),
    "CHATGLM4": (_RE_LLAMA3,),
    "VIKING": (_RE_BLOOM, _RE_DIGIT),
    "TEKKEN": (_RE_TEKKEN,),
    "CHAMELEON": (r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )", _RE_DIGIT,
                  r"[\p{P}!-/:-@\[-`{-~]", _RE_GPT2),
    "GPT4O": (_RE_GPT4O,),
    "GRANITE_EMB_MULTI": (_RE_GRANITE_EMB_MULTI,),
    "TINY_AYA": (_RE_TINY_AYA_DIGITS, _RE_CASED_WORDS + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+"),
    "KIMI_K2": (_RE_KIMI_K2,),
    "SUPERBPE": (r"\p{N}+", r"(?=(\d{3})+(?!\d))"),
    "BAILINGMOE": (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",),
    "SEED_CODER": (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                   r"|\s+(?!\S)|\s+",),
    "UFAKZEKA": (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",),
    "AFMOE": (_RE_AFMOE_DIGITS,
              r"[一-鿿㐀-䶿豈-" "\ufaff\u3040" r"-ゟ゠-ヿ･-ﾟ⼀-" "\u2fdf" r"เ-" "\u0e7f\u0e80" r"-" "\u0eff" r"ក-"
              "\u17ff" r"က-႟ꩠ-ꩿꧠ-" "\ua9ff" r"가-" "\ud7af" r"ᄀ-ᇿ]+",
              _RE_AFMOE),
    "LAGUNA": (_RE_NEWLINES, _RE_QWEN2),
    "EXAONE_MOE": (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",),
    "GEMMA4": (_RE_NEWLINES,),
    "MINICPM5": (_RE_DIGITS3, _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "WHITESPACE": (r"\S+",),
}
for _key in ("STARCODER", "REFACT", "COMMAND_R", "SMOLLM", "CODESHELL", "EXAONE", "MINERVA", "MELLUM2"):
    _REGEXES[_key] = (_RE_DIGIT, _RE_GPT2)
for _key in ("MPT", "OLMO", "JAIS", "TRILLION", "GRANITE_DOCLING"):
    _REGEXES[_key] = _REGEXES["GPT2"]
for _key in ("QWEN2", "HUNYUAN", "SOLAR_OPEN", "GROK_2"):
    _REGEXES[_key] = _REGEXES["STABLELM2"]
_REGEXES["PORO"] = _REGEXES["GPT3_FINNISH"] = _REGEXES["BLOOM"]
_REGEXES["MINIMAX_M2"] = _REGEXES["GPT4O"]
_REGEXES["SARVAM_MOE"] = _REGEXES["GEMMA4"]
# SPM-style BPE vocabularies: words are merged as raw UTF-8, byte fallback is <0xXX> (byte_encode = false)
_RAW_UTF8 = frozenset(("GEMMA4", "SARVAM_MOE", "WHITESPACE"))


class PreType(NamedTuple):
    """What llama.cpp does for one ``tokenizer.ggml.pre`` name of a ``gpt2`` (BPE) vocabulary: the
    ``llm_tokenizer_bpe`` regex list of its LLAMA_VOCAB_PRE_TYPE_* and the settings ``llama_vocab::load``
    gives it. Only the fields marked (tokenize) change token ids; the others are recorded for
    completeness (edge_rt's detokenize has no clean-spaces pass, and nothing adds SEP for BPE).

    One input llama.cpp has no answer for: with 'whitespace' (raw UTF-8 words, whitespace runs kept as
    words) a run of two or more whitespace characters holding a space makes llama.cpp abort (GGML_ASSERT
    in find_bpe_rank: a merge piece cannot hold a space); edge_rt tokenizes it, no merge applying."""

    pre_type: str  # the LLAMA_VOCAB_PRE_TYPE_* suffix the name selects, e.g. "LLAMA3"
    regexes: Tuple[str, ...]  # (tokenize) run in order, each splitting the previous step's words
    ignore_merges: bool = False  # (tokenize) a word that is itself a token is that token
    add_bos: bool = False  # default of tokenizer.ggml.add_bos_token
    byte_encode: bool = True  # (tokenize) GPT-2 byte-to-unicode encoding; False: raw UTF-8, <0xXX> bytes
    escape_whitespaces: bool = False  # (tokenize) spaces become U+2581 before splitting, and back in pieces
    clean_spaces: bool = True  # llama_detokenize's clean_up_tokenization_spaces default
    add_sep: bool = False  # llama.cpp's add_sep default (embedding models; BPE tokenize never adds SEP)
    bos_is_null: bool = False  # no default BOS id (special_bos_id = LLAMA_TOKEN_NULL): only the GGUF key
    force_bos: bool = False  # add_bos is true whatever tokenizer.ggml.add_bos_token says
    newline_words: bool = False  # (tokenize) a word of only '\n' that is a token is that token
    merges_optional: bool = False  # tokenizer.ggml.merges may be absent (no merges then)


#: ``tokenizer.ggml.pre`` name -> :class:`PreType`, as llama.cpp's llama_vocab::load maps them ('' is a
#: vocabulary without the key: llama.cpp warns and uses 'default').
PRE_TYPES: Dict[str, PreType] = {}


def _names(pre_type: str, *names: str, **settings: bool) -> None:
    for name in names:
        PRE_TYPES[name] = PreType(pre_type, _REGEXES[pre_type], byte_encode=pre_type not in _RAW_UTF8,
                                  **settings)


_NO_CLEAN = {"clean_spaces": False}
_names("DEFAULT", "", "default")
_names("MINICPM5", "minicpm5", ignore_merges=True)
_names("LLAMA3", "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
       "jina-v5-nano", ignore_merges=True, add_bos=True)
_names("DEEPSEEK_LLM", "deepseek-llm", **_NO_CLEAN)
_names("DEEPSEEK_CODER", "deepseek-coder", **_NO_CLEAN)
_names("DEEPSEEK3_LLM", "deepseek-v3", **_NO_CLEAN)
_names("SPARK2_5", "spark2_5", **_NO_CLEAN)
_names("YOUTU", "youtu", ignore_merges=True, **_NO_CLEAN)
_names("FALCON", "falcon")
_names("MPT", "mpt")
_names("STARCODER", "starcoder")
_names("GPT2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
       "modern-bert", "exaone4")
_names("JAIS2", "jais-2")
_names("GEMMA4", "gemma4", "granite-embed-multi-311m", escape_whitespaces=True, force_bos=True,
       newline_words=True)
_names("SARVAM_MOE", "sarvam-moe", escape_whitespaces=True, **_NO_CLEAN)
_names("GPT2", "jina-v1-en", "jina-v2-code", "roberta-bpe", add_sep=True)
_names("WHITESPACE", "whitespace")
_names("REFACT", "refact")
_names("COMMAND_R", "command-r", **_NO_CLEAN)
_names("QWEN2", "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", **_NO_CLEAN)
_names("QWEN35", "qwen35", **_NO_CLEAN)
_names("STABLELM2", "stablelm2")
_names("OLMO", "olmo")
_names("DBRX", "dbrx")
_names("SMAUG", "smaug-bpe")
_names("PORO", "poro-chat", **_NO_CLEAN)
_names("CHATGLM4", "chatglm-bpe", bos_is_null=True)
_names("CHATGLM4", "glm4", "glm5", bos_is_null=True, ignore_merges=True)
_names("VIKING", "viking", **_NO_CLEAN)
_names("JAIS", "jais")
_names("TEKKEN", "tekken", ignore_merges=True, add_bos=True, **_NO_CLEAN)
_names("SMOLLM", "smollm", **_NO_CLEAN)
_names("CODESHELL", "codeshell")
_names("BLOOM", "bloom")
_names("GPT3_FINNISH", "gpt3-finnish")
_names("EXAONE", "exaone")
_names("EXAONE_MOE", "exaone-moe")
_names("CHAMELEON", "chameleon", add_bos=True, **_NO_CLEAN)
_names("MINERVA", "minerva-7b")
_names("QWEN2", "megrez")
_names("GPT4O", "gpt-4o", "llama4", "kanana2", "talkie", **_NO_CLEAN)
_names("GRANITE_EMB_MULTI", "granite-embed-multi-97m", ignore_merges=True, **_NO_CLEAN)
_names("TINY_AYA", "tiny_aya", "cohere2moe", **_NO_CLEAN)
_names("SUPERBPE", "superbpe", **_NO_CLEAN)
_names("TRILLION", "trillion", **_NO_CLEAN)
_names("GRANITE_DOCLING", "granite-docling", **_NO_CLEAN)
_names("BAILINGMOE", "bailingmoe", "bailingmoe2", "llada-moe", **_NO_CLEAN)
_names("SEED_CODER", "seed-coder", **_NO_CLEAN)
_names("HUNYUAN", "hunyuan", **_NO_CLEAN)
_names("HUNYUAN_DENSE", "hunyuan-dense", **_NO_CLEAN)
_names("HY_V4", "hy_v4", **_NO_CLEAN)
_names("JOYAI_LLM", "joyai-llm", **_NO_CLEAN)
_names("KIMI_K2", "kimi-k2", merges_optional=True, **_NO_CLEAN)
_names("UFAKZEKA", "ufakzeka", **_NO_CLEAN)
_names("GROK_2", "grok-2", **_NO_CLEAN)
_names("AFMOE", "afmoe", **_NO_CLEAN)
_names("LAGUNA", "laguna", **_NO_CLEAN)
_names("MINIMAX_M2", "minimax-m2", **_NO_CLEAN)
_names("SOLAR_OPEN", "solar-open", **_NO_CLEAN)
_names("MELLUM2", "mellum2")


# ---- regexes as llama.cpp runs them -------------------------------------------------------------------

# category escapes llama.cpp understands in regexes, and the ASCII members of each category
_UCAT = {r"\p{N}": _F_NUMBER, r"\p{L}": _F_LETTER, r"\p{P}": _F_PUNCT, r"\p{M}": _F_MARK,
         r"\p{S}": _F_SYMBOL, r"\p{Lu}": _F_LETTER, r"\p{Ll}": _F_LETTER, r"\p{Lt}": _F_LETTER,
         r"\p{Lm}": _F_LETTER, r"\p{Lo}": _F_LETTER}
_UCAT_ASCII = {_F_NUMBER: "0-9", _F_LETTER: "A-Za-z", _F_PUNCT: r"!-#%-*,-/:-;?-@\[-\]_\{\}", _F_MARK: "",
               _F_SYMBOL: r"\$\+<->^`\|\~"}


def _collapse_regex(expr: str) -> str:
    """Rewrite \\p{..} classes to the collapsed alphabet, as llama.cpp does before running std::regex."""
    out: List[str] = []
    inside = False
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            out.append("[")
            inside = True
            i += 1
            continue
        if inside and c == "]" and expr[i - 1] != "\\":
            out.append("]")
            inside = False
            i += 1
            continue
        if c == "\\" and i + 3 < n and expr[i + 1] == "p" and expr[i + 2] == "{":
            close = expr.find("}", i + 3)
            if close != -1 and close <= i + 10 and expr[i:close + 1] in _UCAT:
                cat = _UCAT[expr[i:close + 1]]
                body = _CollapseTable._CODES[cat] + _UCAT_ASCII[cat]
                out.append(body if inside else "[" + body + "]")
                i = close + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _ecmascript_to_re(expr: str) -> Tuple[str, bool]:
    """An ECMAScript regex (std::regex's default grammar) as a Python ``re`` pattern of the same meaning,
    for the constructs llama.cpp's regexes use; anything else is refused rather than guessed. Also
    whether it looks at what precedes a match (``^``, ``\\b``, ``\\B``), which makes the start of the
    searched range matter.

    With re.ASCII, \\s \\S \\d \\D \\w \\W \\b \\B mean what they mean to std::regex in the "C" locale.
    The differences handled: ``$`` is the end of the input only (Python's also matches before a final
    newline), so it becomes ``\\Z``; Python-only group syntax is rejected, since std::regex rejects it.
    """
    out: List[str] = []
    i, n = 0, len(expr)
    inside = False
    looks_back = False
    while i < n:
        c = expr[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"regex {expr!r}: trailing backslash")
            e = expr[i + 1]
            if not inside and e.isalpha() and e not in "sSdDwWbBtnrfv":
                raise ValueError(f"regex {expr!r}: escape \\{e} is not supported")
            looks_back |= not inside and e in "bB"
            out.append(expr[i:i + 2])
            i += 2
            continue
        if inside:
            if c == "]":
                inside = False
            elif c == "[" and expr.startswith("[:", i):
                raise ValueError(f"regex {expr!r}: POSIX classes are not supported")
            out.append(c)
            i += 1
            continue
        if c == "[":
            inside = True
            out.append(c)
            if expr.startswith("[^]", i) or expr.startswith("[]", i):
                raise ValueError(f"regex {expr!r}: an empty class is not supported")
            i += 1
            continue
        if c == "$":
            out.append(r"\Z")
            i += 1
            continue
        looks_back |= c == "^"
        if c == "(" and expr.startswith("(?", i) and not expr.startswith(("(?:", "(?=", "(?!"), i):
            raise ValueError(f"regex {expr!r}: group syntax {expr[i:i + 3]!r} is not ECMAScript")
        out.append(c)
        i += 1
    if inside:
        raise ValueError(f"regex {expr!r}: unterminated class")
    return "".join(out), looks_back


@functools.lru_cache(maxsize=None)
def _compile(expr: str) -> Tuple[bool, "re.Pattern[str]", bool]:
    """(runs on the collapsed text, compiled pattern, looks back) for a regex llama.cpp runs with
    std::regex: with a \\p{..} category on the collapsed text, otherwise with std::wregex on the code
    points (non-ASCII whitespace as a vertical tab). Raises ValueError for what llama.cpp's std::regex
    would reject."""
    collapsed = any(cat in expr for cat in _UCAT)
    if collapsed and any(ord(c) >= 128 for c in expr):
        raise ValueError(f"regex {expr!r}: unicode categories and non-ASCII characters together")
    source, looks_back = _ecmascript_to_re(_collapse_regex(expr) if collapsed else expr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning means Python might parse it differently later
        try:
            return collapsed, re.compile(source, re.ASCII), looks_back
        except (re.error, FutureWarning) as e:
            raise ValueError(f"regex {expr!r}: {e}") from None


# ---- llama.cpp's hand-written splitters (unicode_regex_split_custom_*) --------------------------------

Segments = List[Tuple[int, int]]

# 're 've 'll in any letter case (unicode_tolower maps no other character to these ASCII letters)
_CONTRACTIONS3 = frozenset(a + b for x in ("re", "ve", "ll")
                           for a in (x[0], x[0].upper()) for b in (x[1], x[1].upper()))


def _segment(text: str, fl: List[int], ini: int, end: int) -> Tuple[str, List[int]]:
    """One segment's text and flags, the flags with a 0 after the end (llama.cpp's out-of-range flags),
    so the splitters below index them without bounds checks (positions relative to ``ini``)."""
    f = fl[ini:end]
    f.append(0)
    return text[ini:end], f


def _split_gpt2(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_gpt2."""
    out: Segments = []
    add = out.append
    for ini, end in segments:
        t, F = _segment(text, fl, ini, end)
        n = end - ini
        pos = 0
        while pos < n:
            c = t[pos]
            # 's|'t|'re|'ve|'m|'ll|'d
            if c == "'" and pos + 1 < n:
                c1 = t[pos + 1]
                if c1 in "stmd":
                    add((ini + pos, ini + pos + 2))
                    pos += 2
                    continue
                if pos + 2 < n and t[pos + 1:pos + 3] in ("re", "ve", "ll"):
                    add((ini + pos, ini + pos + 3))
                    pos += 3
                    continue
            start = pos
            f2 = F[pos + 1] if c == " " else F[pos]
            if f2 & _F_LETTER:  # ' ?\p{L}+'
                pos += c == " "
                while F[pos] & _F_LETTER:
                    pos += 1
            elif f2 & _F_NUMBER:  # ' ?\p{N}+'
                pos += c == " "
                while F[pos] & _F_NUMBER:
                    pos += 1
            elif f2 and not (f2 & _F_WLN):  # ' ?[^\s\p{L}\p{N}]+'
                pos += c == " "
                while F[pos] and not (F[pos] & _F_WLN):
                    pos += 1
            else:
                nws = 0
                while F[pos + nws] & _F_WHITESPACE:
                    nws += 1
                if nws > 1 and pos + nws < n:  # \s+(?!\S)
                    pos += nws - 1
                elif nws > 0:  # \s+
                    pos += nws
                else:  # no match: one character
                    pos += 1
            add((ini + start, ini + pos))
    return out


def _whitespace_end(t: str, F: List[int], pos: int, n: int) -> int:
    r"""End of the llama3-family whitespace word at ``pos``: \s*[\r\n]+ | \s+(?!\S) | \s+ | one char."""
    nws = 0
    last_rn = 0
    while F[pos + nws] & _F_WHITESPACE:
        if t[pos + nws] in "\r\n":
            last_rn = pos + nws + 1
        nws += 1
    if last_rn > 0:  # \s*[\r\n]+
        return last_rn
    if nws > 1 and pos + nws < n:  # \s+(?!\S)
        return pos + nws - 1
    if nws > 0:  # \s+
        return pos + nws
    return pos + 1  # no match: one character


def _contraction_end(t: str, pos: int, n: int) -> int:
    """End of a case-insensitive 's 't 're 've 'm 'll 'd at ``pos`` (``t[pos]`` is "'"), else 0
    (llama.cpp compares unicode_tolower of the letters, which maps no other character to these)."""
    if pos + 1 < n:
        if t[pos + 1] in "sStTmMdD":
            return pos + 2
        if pos + 2 < n and t[pos + 1:pos + 3] in _CONTRACTIONS3:
            return pos + 3
    return 0


def _split_llama3(text: str, fl: List[int], segments: Segments, group: int = 3, marks: bool = False) -> Segments:
    r"""Port of llama.cpp unicode_regex_split_custom_llama3 (digits in groups of ``group``); with group=1
    unicode_regex_split_custom_qwen2, and with ``marks`` as well unicode_regex_split_custom_qwen35 (letter
    runs take in combining marks, \p{M})."""
    letter = _F_LETTER | (_F_MARK if marks else 0)
    not_punct = _F_WLN | (_F_MARK if marks else 0)
    out: Segments = []
    add = out.append
    for ini, end in segments:
        t, F = _segment(text, fl, ini, end)
        n = end - ini
        pos = 0
        while pos < n:
            c = t[pos]
            f = F[pos]
            if c == "'":  # (?i:'s|'t|'re|'ve|'m|'ll|'d)
                e = _contraction_end(t, pos, n)
                if e:
                    add((ini + pos, ini + e))
                    pos = e
                    continue
            start = pos
            # [^\r\n\p{L}\p{N}]?\p{L}+  (qwen35: [\p{L}\p{M}]+)
            if (f & letter or F[pos + 1] & letter) and not (c == "\r" or c == "\n" or f & _F_NUMBER):
                pos += 1
                while F[pos] & letter:
                    pos += 1
                add((ini + start, ini + pos))
                continue
            # \p{N}{1,3}  (qwen2, qwen35: \p{N})
            if f & _F_NUMBER:
                while F[pos] & _F_NUMBER:
                    pos += 1
                    if pos - start >= group:
                        add((ini + start, ini + pos))
                        start = pos
                if pos > start:
                    add((ini + start, ini + pos))
                continue
            # ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            f2 = F[pos + 1] if c == " " else f
            if f and not (f2 & not_punct):
                pos += c == " "
                while F[pos] and not (F[pos] & not_punct):
                    pos += 1
                while pos < n and t[pos] in "\r\n":
                    pos += 1
            else:
                pos = _whitespace_end(t, F, pos, n)
            add((ini + start, ini + pos))
    return out


def _split_qwen2(text: str, fl: List[int], segments: Segments) -> Segments:
    return _split_llama3(text, fl, segments, group=1)


def _split_qwen35(text: str, fl: List[int], segments: Segments) -> Segments:
    return _split_llama3(text, fl, segments, group=1, marks=True)


def _split_kimi_k2(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_kimi_k2 (which stands for K2's whole regex:
    Han runs, then llama3-like words whose letter runs exclude Han and may end in a contraction)."""
    out: Segments = []
    add = out.append
    for ini, end in segments:
        t, F = _segment(text, fl, ini, end)
        n = end - ini
        H = [_is_han(ord(c)) for c in t]
        H.append(False)
        pos = 0
        while pos < n:
            c = t[pos]
            f = F[pos]
            start = pos
            # [\p{Han}]+
            if H[pos]:
                while H[pos]:
                    pos += 1
                add((ini + start, ini + pos))
                continue
            # [^\r\n\p{L}\p{N}]?<letters but Han>+ with an optional contraction (the two cased alternatives
            # of K2's regex, which llama.cpp's splitter does not tell apart)
            lead = not (c == "\r" or c == "\n" or f & (_F_LETTER | _F_NUMBER))
            if f & _F_LETTER or (lead and F[pos + 1] & _F_LETTER and not H[pos + 1]):
                pos += lead
                while F[pos] & _F_LETTER and not H[pos]:
                    pos += 1
                if pos < n and t[pos] == "'":
                    pos = _contraction_end(t, pos, n) or pos
                add((ini + start, ini + pos))
                continue
            # \p{N}{1,3}
            if f & _F_NUMBER:
                while F[pos] & _F_NUMBER:
                    pos += 1
                    if pos - start >= 3:
                        add((ini + start, ini + pos))
                        start = pos
                if pos > start:
                    add((ini + start, ini + pos))
                continue
            # ' ?[^\s\p{L}\p{N}]+[\r\n]*' (unlike llama3's, a space at the segment's end is not taken here)
            f2 = F[pos + 1] if c == " " else f
            if f2 and not (f2 & _F_WLN):
                pos += c == " "
                while F[pos] and not (F[pos] & _F_WLN):
                    pos += 1
                while pos < n and t[pos] in "\r\n":
                    pos += 1
            else:
                pos = _whitespace_end(t, F, pos, n)
            add((ini + start, ini + pos))
    return out


def _split_afmoe_digits(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_afmoe: each digit run is cut into groups of three
    from the right (its first group has the 1-2 left over); as in llama.cpp, the text before a run
    stays joined to the run's first group, and later regexes split it off."""
    out: Segments = []
    for ini, end in segments:
        prev = pos = ini
        while pos < end:
            if fl[pos] & _F_NUMBER:
                first = pos
                while pos < end and fl[pos] & _F_NUMBER:
                    pos += 1
                cur = first + (pos - first) % 3
                if cur > first:
                    out.append((prev, cur))
                    prev = cur
                while cur < pos:
                    cur += 3
                    out.append((prev, cur))
                    prev = cur
                continue
            pos += 1
        if prev < end:
            out.append((prev, end))
    return out


def _split_newlines(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_newlines: runs of '\\n' and runs of anything else."""
    out: Segments = []
    for ini, end in segments:
        pos = ini
        while pos < end:
            start = pos
            nl = text[pos] == "\n"
            while pos < end and (text[pos] == "\n") == nl:
                pos += 1
            out.append((start, pos))
    return out


_Splitter = Callable[[str, List[int], Segments], Segments]

#: regex (exact text) -> the hand-written splitter llama.cpp runs for it instead of std::regex
_CUSTOM: Dict[str, _Splitter] = {
    _RE_GPT2: _split_gpt2,
    _RE_LLAMA3: _split_llama3,
    _RE_LLAMA3_I: _split_llama3,
    _RE_QWEN2: _split_qwen2,
    _RE_QWEN35: _split_qwen35,
    _RE_KIMI_K2: _split_kimi_k2,
    _RE_AFMOE_DIGITS: _split_afmoe_digits,
    _RE_NEWLINES: _split_newlines,
    _RE_TINY_AYA_DIGITS: _split_afmoe_digits,
}


def _split_regex(subject: str, pattern: "re.Pattern[str]", segments: Segments, looks_back: bool) -> Segments:
    """llama.cpp unicode_regex_split_stl: within each segment, matches and the gaps between them both
    become words. Each segment is searched as std::regex_iterator over that range sees it: its end is the
    input's end ($, lookaheads), and for a regex that ``looks_back`` its start is the input's start too
    (the segment is cut out; otherwise pos/endpos are the same and cheaper). An empty match still ends
    the gap before it (llama.cpp then adds an empty word, which has no tokens)."""
    out: Segments = []
    add = out.append
    whole = len(subject)
    for ini, end in segments:
        last = ini
        if looks_back and (ini, end) != (0, whole):
            matches = pattern.finditer(subject[ini:end])
            shift = ini
        else:
            matches = pattern.finditer(subject, ini, end)
            shift = 0
        for m in matches:
            s, e = m.span()
            s += shift
            e += shift
            if s > last:
                add((last, s))
            if e > s:
                add((s, e))
            last = e
        if last < end:
            add((last, end))
    return out


class PreTokenizer:
    """Splits text into words as the pre-tokenizer of one vocabulary does (its regex list, run in order:
    each step splits the words the previous step produced). Raises ValueError for a regex llama.cpp
    could not run either."""

    def __init__(self, exprs: Sequence[str]) -> None:
        self._steps: List[Tuple[str, Any]] = []
        self._need_flags = False
        self._need_collapse = False
        self._need_wide = False
        for expr in exprs:
            custom = _CUSTOM.get(expr)
            if custom is not None:
                self._steps.append(("custom", custom))
                self._need_flags = True
                continue
            collapsed, pattern, looks_back = _compile(expr)
            self._steps.append(("collapsed" if collapsed else "wide", (pattern, looks_back)))
            if collapsed:
                self._need_collapse = True
            else:
                self._need_wide = True

    def split(self, text: str) -> List[str]:
        """The words of ``text``, in order; their concatenation is ``text``."""
        if not text:
            return []
        fl = list(map(_FLAGS.__getitem__, text)) if self._need_flags else []
        collapsed = "".join(map(_COLLAPSE.__getitem__, text)) if self._need_collapse else ""
        wide = "".join(map(_WIDE.__getitem__, text)) if self._need_wide else ""
        segments: Segments = [(0, len(text))]
        for kind, step in self._steps:
            if kind == "custom":
                segments = step(text, fl, segments)
            elif kind == "collapsed":
                segments = _split_regex(collapsed, step[0], segments, step[1])
            else:
                segments = _split_regex(wide, step[0], segments, step[1])
        return [text[s:e] for s, e in segments]
