"""Tokenizer for GGUF vocabularies, matching llama.cpp token for token (pure Python).

Two tokenizer models are supported, selected by ``tokenizer.ggml.model``:

- ``llama``: SentencePiece-style BPE (llama.cpp ``llm_tokenizer_spm``). Spaces are escaped to U+2581,
  a space is prefixed to every text fragment that starts the input or follows a special token
  (``tokenizer.ggml.add_space_prefix``, default true), adjacent symbols are merged greedily by token
  score, and characters without a token fall back to ``<0xXX>`` byte tokens.
- ``gpt2``: byte-level BPE with ranked ``tokenizer.ggml.merges``. The text is first split into words
  by the pre-tokenizer named in ``tokenizer.ggml.pre`` (``default``, ``gpt-2``, ``llama-bpe``/llama3,
  ``qwen2`` and their llama.cpp aliases), each word is mapped through GPT-2's byte-to-unicode table and
  merged by rank. The gpt-2 and llama3 splitters are ports of llama.cpp's hand-written splitters; the
  others run the regex llama.cpp runs, on the same "collapsed" text (every non-ASCII code point replaced
  by one byte naming its Unicode category), so digit grouping and whitespace rules match exactly.
  An unknown pre-tokenizer falls back to the gpt-2 splitter with a warning.

Special tokens (control, user-defined, unknown) are cut out of the text first, longest first, as in
llama.cpp's ``tokenizer_st_partition``: user-defined tokens always, control/unknown ones only with
``parse_special=True``.

Detokenizing concatenates the pieces, as llama.cpp's streaming output does (``token_to_piece``), so
that ``detokenize(tokenize(s)) == s``. It differs from llama.cpp's ``llama_detokenize`` in two
documented ways: no ``clean_spaces`` pass for BPE vocabularies (``"a ?"`` stays as it is), and for SPM
the space that tokenizing prefixed is removed from the first text piece even after a leading BOS.

Unicode categories come from Python's ``unicodedata``; where its Unicode version differs from the tables
compiled into llama.cpp, code points new in one of them may be classified differently.

Chat templates: edge_rt never renders ``tokenizer.chat_template`` with an unsandboxed Jinja environment
(CVE-2024-34359 in llama-cpp-python was remote code execution through exactly that); this module does not
execute templates at all, it only reads the vocabulary.

Metadata is validated like any other input from a file: malformed keys raise
:class:`edge_rt.errors.ModelFormatError` naming the key.
"""

from __future__ import annotations

import codecs
import heapq
import re
import unicodedata
import warnings
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, ModelFormatError, UnsupportedArchitectureError
from .gguf_file import read_metadata as read_gguf_metadata

__all__ = ["Tokenizer", "StreamDecoder", "read_gguf_metadata"]

# ---- token types (GGUF tokenizer.ggml.token_type) and attributes (llama.cpp llama_token_attr) ----------

TOKEN_TYPE_UNDEFINED = 0
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8

_TYPE_TO_ATTR = {
    TOKEN_TYPE_UNKNOWN: ATTR_UNKNOWN,
    TOKEN_TYPE_UNUSED: ATTR_UNUSED,
    TOKEN_TYPE_NORMAL: ATTR_NORMAL,
    TOKEN_TYPE_CONTROL: ATTR_CONTROL,
    TOKEN_TYPE_USER_DEFINED: ATTR_USER_DEFINED,
    TOKEN_TYPE_BYTE: ATTR_BYTE,
}

_ESCAPED_SPACE = "\u2581"
_C_SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale

_KEY_PREFIX = "tokenizer.ggml."

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

# Unicode White_Space, the set llama.cpp's unicode_set_whitespace holds.
_WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
    + list(range(0x2000, 0x200B))
)

_CATEGORY_FLAG = {"N": _F_NUMBER, "L": _F_LETTER, "Z": _F_SEPARATOR, "M": _F_MARK, "P": _F_PUNCT,
                  "S": _F_SYMBOL, "C": _F_CONTROL}


class _FlagTable(dict):
    """char -> llama.cpp flags, filled on first sight of a character."""

    def __missing__(self, ch: str) -> int:
        cat = unicodedata.category(ch)
        flags = _F_UNDEFINED if cat == "Cn" else _CATEGORY_FLAG[cat[0]]
        if ord(ch) in _WHITESPACE:
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


def _bytes_to_unicode() -> Tuple[List[str], Dict[str, int]]:
    """GPT-2's reversible byte <-> printable-character table."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    enc: List[str] = [""] * 256
    for b in keep:
        enc[b] = chr(b)
    n = 0
    for b in range(256):
        if not enc[b]:
            enc[b] = chr(256 + n)
            n += 1
    return enc, {c: b for b, c in enumerate(enc)}


_BYTE_ENC, _BYTE_DEC = _bytes_to_unicode()

# ---- pre-tokenizers -----------------------------------------------------------------------------------

_RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_RE_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_LLAMA3_I = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RES_DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", _RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]

# pre-tokenizer name -> (regex list, ignore_merges, default add_bos); llama.cpp's llm_tokenizer_bpe table.
_PRE_DEFAULT = ("default", _RES_DEFAULT, False, False)
_PRE_GPT2 = ("gpt-2", [_RE_GPT2], False, False)
_PRE_LLAMA3 = ("llama3", [_RE_LLAMA3], True, True)
_PRE_DBRX = ("dbrx", [_RE_LLAMA3], False, False)
_PRE_QWEN2 = ("qwen2", [_RE_QWEN2], False, False)

_PRE_TYPES: Dict[str, Tuple[str, List[str], bool, bool]] = {"": _PRE_DEFAULT, "default": _PRE_DEFAULT}
for _name in ("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
              "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling"):
    _PRE_TYPES[_name] = _PRE_GPT2
for _name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
              "jina-v5-nano"):
    _PRE_TYPES[_name] = _PRE_LLAMA3
for _name in ("dbrx", "smaug-bpe"):
    _PRE_TYPES[_name] = _PRE_DBRX
for _name in ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
              "solar-open"):
    _PRE_TYPES[_name] = _PRE_QWEN2

# category escapes llama.cpp understands in regexes, and the ASCII members of each category
_UCAT = {r"\p{N}": _F_NUMBER, r"\p{L}": _F_LETTER, r"\p{P}": _F_PUNCT, r"\p{M}": _F_MARK,
         r"\p{S}": _F_SYMBOL, r"\p{Lu}": _F_LETTER, r"\p{Ll}": _F_LETTER, r"\p{Lt}": _F_LETTER,
         r"\p{Lm}": _F_LETTER, r"\p{Lo}": _F_LETTER}
_UCAT_ASCII = {_F_NUMBER: "0-9", _F_LETTER: "A-Za-z", _F_PUNCT: r"!-#%-*,-/:-;?-@\[-\]_\{\}", _F_MARK: "",
               _F_SYMBOL: r"\$\+<->^`\|"}


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


Segments = List[Tuple[int, int]]

# 're 've 'll in any letter case (llama3's (?i:...) group)
_CONTRACTIONS3 = frozenset(a + b for x in ("re", "ve", "ll")
                           for a in (x[0], x[0].upper()) for b in (x[1], x[1].upper()))


def _split_gpt2(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_gpt2."""
    out: Segments = []
    for ini, end in segments:
        def F(p: int) -> int:
            return fl[p] if p < end else 0

        pos = ini
        while pos < end:
            c = text[pos]
            f = fl[pos]
            if c == "'" and pos + 1 < end:
                c1 = text[pos + 1]
                if c1 in "stmd":
                    out.append((pos, pos + 2))
                    pos += 2
                    continue
                if pos + 2 < end and (c1 + text[pos + 2]) in ("re", "ve", "ll"):
                    out.append((pos, pos + 3))
                    pos += 3
                    continue
            start = pos
            f2 = F(pos + 1) if c == " " else f
            if f2 & _F_LETTER:
                pos += c == " "
                while F(pos) & _F_LETTER:
                    pos += 1
                out.append((start, pos))
                continue
            if f2 & _F_NUMBER:
                pos += c == " "
                while F(pos) & _F_NUMBER:
                    pos += 1
                out.append((start, pos))
                continue
            if f2 and not (f2 & _F_WLN):
                pos += c == " "
                while True:
                    g = F(pos)
                    if not g or g & _F_WLN:
                        break
                    pos += 1
                out.append((start, pos))
                continue
            nws = 0
            while F(pos + nws) & _F_WHITESPACE:
                nws += 1
            if nws > 1 and pos + nws < end:  # \s+(?!\S)
                pos += nws - 1
            elif nws > 0:
                pos += nws
            else:
                pos += 1
            out.append((start, pos))
    return out


def _split_llama3(text: str, fl: List[int], segments: Segments) -> Segments:
    """Port of llama.cpp unicode_regex_split_custom_llama3 (digits in groups of at most three)."""
    out: Segments = []
    for ini, end in segments:
        def F(p: int) -> int:
            return fl[p] if p < end else 0

        pos = ini
        while pos < end:
            c = text[pos]
            f = fl[pos]
            if c == "'" and pos + 1 < end:
                c1 = text[pos + 1]
                if c1 in "sStTmMdD":
                    out.append((pos, pos + 2))
                    pos += 2
                    continue
                if pos + 2 < end and (c1 + text[pos + 2]) in _CONTRACTIONS3:
                    out.append((pos, pos + 3))
                    pos += 3
                    continue
            start = pos
            # [^\r\n\p{L}\p{N}]?\p{L}+
            if not (c == "\r" or c == "\n" or f & _F_NUMBER):
                if f & _F_LETTER or F(pos + 1) & _F_LETTER:
                    pos += 1
                    while F(pos) & _F_LETTER:
                        pos += 1
                    out.append((start, pos))
                    continue
            # \p{N}{1,3}
            if f & _F_NUMBER:
                group = pos
                while F(pos) & _F_NUMBER:
                    pos += 1
                    if pos - group >= 3:
                        out.append((group, pos))
                        group = pos
                if pos > group:
                    out.append((group, pos))
                continue
            # ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            f2 = F(pos + 1) if c == " " else f
            if not (f2 & _F_WLN) and f:
                pos += c == " "
                while True:
                    g = F(pos)
                    if not g or g & _F_WLN:
                        break
                    pos += 1
                while pos < end and text[pos] in "\r\n":
                    pos += 1
                if pos > start:
                    out.append((start, pos))
                continue
            nws = 0
            last_rn = 0
            while F(pos + nws) & _F_WHITESPACE:
                if text[pos + nws] in "\r\n":
                    last_rn = pos + nws + 1
                nws += 1
            if last_rn > 0:  # \s*[\r\n]+
                pos = last_rn
            elif nws > 1 and pos + nws < end:  # \s+(?!\S)
                pos += nws - 1
            elif nws > 0:  # \s+
                pos += nws
            else:
                pos += 1
            out.append((start, pos))
    return out


def _split_regex(subject: str, pattern: "re.Pattern[str]", segments: Segments) -> Segments:
    """llama.cpp unicode_regex_split_stl: matches and the gaps between them both become words."""
    out: Segments = []
    for ini, end in segments:
        last = ini
        for m in pattern.finditer(subject, ini, end):
            s, e = m.span()
            if s == e:
                continue
            if s > last:
                out.append((last, s))
            out.append((s, e))
            last = e
        if last < end:
            out.append((last, end))
    return out


class _PreTokenizer:
    def __init__(self, exprs: Sequence[str]) -> None:
        self._steps: List[Tuple[str, Any]] = []
        self._need_flags = False
        self._need_collapse = False
        self._need_wide = False
        for expr in exprs:
            if expr == _RE_GPT2:
                self._steps.append(("gpt2", None))
                self._need_flags = True
            elif expr in (_RE_LLAMA3, _RE_LLAMA3_I):
                self._steps.append(("llama3", None))
                self._need_flags = True
            elif any(cat in expr for cat in _UCAT):
                self._steps.append(("collapsed", re.compile(_collapse_regex(expr), re.ASCII)))
                self._need_collapse = True
            else:
                self._steps.append(("wide", re.compile(expr, re.ASCII)))
                self._need_wide = True

    def split(self, text: str) -> List[str]:
        if not text:
            return []
        fl = list(map(_FLAGS.__getitem__, text)) if self._need_flags else []
        collapsed = "".join(map(_COLLAPSE.__getitem__, text)) if self._need_collapse else ""
        wide = "".join(map(_WIDE.__getitem__, text)) if self._need_wide else ""
        segments: Segments = [(0, len(text))]
        for kind, pattern in self._steps:
            if kind == "gpt2":
                segments = _split_gpt2(text, fl, segments)
            elif kind == "llama3":
                segments = _split_llama3(text, fl, segments)
            elif kind == "collapsed":
                segments = _split_regex(collapsed, pattern, segments)
            else:
                segments = _split_regex(wide, pattern, segments)
        return [text[s:e] for s, e in segments]


# ---- metadata validation ------------------------------------------------------------------------------

def _err(key: str, what: str) -> ModelFormatError:
    return ModelFormatError(f"[tokenizer] key '{key}': {what}")


def _as_list(md: Mapping[str, Any], key: str) -> Optional[list]:
    if key not in md:
        return None
    value = md[key]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise _err(key, f"expected an array, got {type(value).__name__}")
    return list(value)


def _as_str(md: Mapping[str, Any], key: str, default: Optional[str] = None) -> Optional[str]:
    if key not in md:
        return default
    value = md[key]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _err(key, "string is not valid UTF-8") from None
    if not isinstance(value, str):
        raise _err(key, f"expected a string, got {type(value).__name__}")
    return value


def _as_bool(md: Mapping[str, Any], key: str, default: bool) -> bool:
    if key not in md:
        return default
    value = md[key]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _err(key, f"expected a bool, got {type(value).__name__}")


def _as_id(md: Mapping[str, Any], key: str) -> Optional[int]:
    if key not in md:
        return None
    value = md[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _err(key, f"expected an integer token id, got {type(value).__name__}")
    return int(value)


def _strings(values: list, key: str) -> List[str]:
    out: List[str] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:  # the reader keeps undecodable bytes as surrogate escapes; the tokenizer needs text
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise _err(key, f"entry {i} is not valid UTF-8") from None
            out.append(v)
        elif isinstance(v, bytes):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise _err(key, f"entry {i} is not valid UTF-8") from None
        else:
            raise _err(key, f"entry {i} is {type(v).__name__}, expected str")
    return out


# ---- the tokenizer --------------------------------------------------------------------------------------

_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))

_BPE_CACHE_MAX = 1 << 17


class Tokenizer:
    """A GGUF vocabulary with llama.cpp's tokenize / detokenize behaviour.

    Thread-safety: tokenizing from several threads is safe (the caches are plain dicts under the GIL).
    """

    def __init__(self) -> None:  # use from_gguf / from_metadata
        self.model: str = ""
        self.pre: str = ""
        self._texts: List[str] = []
        self._scores: List[float] = []
        self._attrs: List[int] = []
        self._ids: Dict[str, int] = {}
        self._ranks: Dict[Tuple[str, str], int] = {}
        self._pre: Optional[_PreTokenizer] = None
        self._ignore_merges = False
        self.add_space_prefix = False
        self.add_bos = False
        self.add_eos = False
        self.bos_id: Optional[int] = None
        self.eos_id: Optional[int] = None
        self.eot_id: Optional[int] = None
        self.eom_id: Optional[int] = None
        self.unk_id: Optional[int] = None
        self.pad_id: Optional[int] = None
        self.eog_ids: FrozenSet[int] = frozenset()
        self.fim_ids: Dict[str, Optional[int]] = {}
        self._special_cache: List[int] = []
        self._pieces: Dict[Tuple[int, bool], bytes] = {}
        self._word_cache: Dict[str, Tuple[int, ...]] = {}

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path: Any) -> "Tokenizer":
        """Load the vocabulary of a GGUF file (tensor data is never read)."""
        return cls.from_metadata(read_gguf_metadata(path))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Tokenizer":
        """Build a tokenizer from GGUF metadata (key -> int/float/bool/str/list), validating every key."""
        md = metadata
        self = cls()
        k_model = _KEY_PREFIX + "model"
        model = _as_str(md, k_model)
        if model is None:
            raise _err(k_model, "missing")
        if model not in ("llama", "gpt2"):
            raise UnsupportedArchitectureError(
                f"[tokenizer] key '{k_model}': tokenizer model '{model}' is not supported "
                f"(edge_rt supports 'llama' and 'gpt2')")
        self.model = model
        is_spm = model == "llama"

        # tokens
        k_tokens = _KEY_PREFIX + "tokens"
        raw_tokens = _as_list(md, k_tokens)
        if raw_tokens is None:
            raise _err(k_tokens, "missing")
        if not raw_tokens:
            raise _err(k_tokens, "empty vocabulary")
        texts = _strings(raw_tokens, k_tokens)
        n = len(texts)
        ids: Dict[str, int] = {}
        for i, t in enumerate(texts):
            if not t:
                t = texts[i] = f"[EMPTY_{i}]"
            prev = ids.setdefault(t, i)
            if prev != i:
                raise _err(k_tokens, f"duplicate token {t!r} at ids {prev} and {i}")

        # scores
        k_scores = _KEY_PREFIX + "scores"
        raw_scores = _as_list(md, k_scores)
        if raw_scores is None:
            scores = [0.0] * n
        else:
            if len(raw_scores) != n:
                raise _err(k_scores, f"length {len(raw_scores)} != {n} tokens")
            for i, s in enumerate(raw_scores):
                if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.integer, np.floating)):
                    raise _err(k_scores, f"entry {i} is {type(s).__name__}, expected float")
            # llama.cpp keeps scores as float32; round so ties and orderings are the same
            scores = np.asarray(raw_scores, dtype=np.float64).astype(np.float32).tolist()

        # token types
        k_types = _KEY_PREFIX + "token_type"
        raw_types = _as_list(md, k_types)
        if raw_types is None:
            attrs = [ATTR_NORMAL] * n
        else:
            if len(raw_types) != n:
                raise _err(k_types, f"length {len(raw_types)} != {n} tokens")
            attrs = []
            for i, t in enumerate(raw_types):
                if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                    raise _err(k_types, f"entry {i} is {type(t).__name__}, expected int")
                attrs.append(_TYPE_TO_ATTR.get(int(t), ATTR_UNDEFINED))
        for i, a in enumerate(attrs):
            if a & ATTR_BYTE and not _is_byte_token_text(texts[i]):
                raise _err(k_types, f"token {i} ({texts[i]!r}) has type BYTE but is not of the form <0xXX>")

        # pre-tokenizer and merges
        pre = _as_str(md, _KEY_PREFIX + "pre", "") or ""
        self.pre = pre
        add_bos_default = is_spm
        if not is_spm:
            entry = _PRE_TYPES.get(pre)
            if entry is None:
                warnings.warn(f"edge_rt tokenizer: unknown pre-tokenizer '{pre}' "
                              f"(key '{_KEY_PREFIX}pre'); falling back to the gpt-2 pre-tokenizer, "
                              f"tokenization may differ from llama.cpp", stacklevel=2)
                entry = _PRE_GPT2
            elif pre == "":
                warnings.warn(f"edge_rt tokenizer: missing '{_KEY_PREFIX}pre', using 'default' "
                              f"(generation quality may be degraded)", stacklevel=2)
            _, exprs, self._ignore_merges, add_bos_default = entry
            self._pre = _PreTokenizer(exprs)

            k_merges = _KEY_PREFIX + "merges"
            raw_merges = _as_list(md, k_merges)
            if raw_merges is None:
                raise _err(k_merges, "missing (required by the gpt2 tokenizer model)")
            merges = _strings(raw_merges, k_merges)
            ranks: Dict[Tuple[str, str], int] = {}
            for i, m in enumerate(merges):
                sep = m.find(" ", 1)
                if sep <= 0 or sep == len(m) - 1 or m.find(" ", sep + 1) != -1:
                    raise _err(k_merges, f"entry {i} {m!r} is not two pieces separated by one space")
                ranks.setdefault((m[:sep], m[sep + 1:]), i)
            self._ranks = ranks

        self._texts, self._scores, self._attrs, self._ids = texts, scores, attrs, ids

        # special ids: defaults per model, then keys; out-of-range defaults are disabled
        def default(v: Optional[int]) -> Optional[int]:
            return v if v is not None and 0 <= v < n else None

        self.bos_id = default(1 if is_spm else 11)
        self.eos_id = default(2 if is_spm else 11)
        self.unk_id = default(0 if is_spm else None)
        special: Dict[str, Optional[int]] = {"eot": None, "eom": None, "pad": None,
                                             **{k: None for k in _FIM_TEXTS}}
        for name, strict in (("bos", True), ("eos", True)):
            key = f"{_KEY_PREFIX}{name}_token_id"
            v = _as_id(md, key)
            if v is not None:
                if not 0 <= v < n:
                    raise _err(key, f"token id {v} is outside the vocabulary (0..{n - 1})")
                setattr(self, f"{name}_id", v)
        optional_keys = {"unk": "unknown_token_id", "eot": "eot_token_id", "eom": "eom_token_id",
                         "pad": "padding_token_id", "fim_pre": "fim_pre_token_id",
                         "fim_suf": "fim_suf_token_id", "fim_mid": "fim_mid_token_id",
                         "fim_pad": "fim_pad_token_id", "fim_rep": "fim_rep_token_id",
                         "fim_sep": "fim_sep_token_id"}
        for name, suffix in optional_keys.items():
            key = _KEY_PREFIX + suffix
            v = _as_id(md, key)
            if v is None:
                continue
            if not 0 <= v < n:
                warnings.warn(f"edge_rt tokenizer: key '{key}' = {v} is outside the vocabulary; ignored",
                              stacklevel=2)
                continue
            if name == "unk":
                self.unk_id = v
            else:
                special[name] = v

        self.add_space_prefix = _as_bool(md, _KEY_PREFIX + "add_space_prefix", is_spm)
        self.add_bos = _as_bool(md, _KEY_PREFIX + "add_bos_token", add_bos_default)
        self.add_eos = _as_bool(md, _KEY_PREFIX + "add_eos_token", False)
        if self.add_bos and self.bos_id is None:
            raise _err(_KEY_PREFIX + "add_bos_token", f"true, but '{_KEY_PREFIX}bos_token_id' is not set")
        if self.add_eos and self.eos_id is None:
            raise _err(_KEY_PREFIX + "add_eos_token", f"true, but '{_KEY_PREFIX}eos_token_id' is not set")

        # llama.cpp recognises end-of-turn / FIM tokens by their text and forces them to CONTROL
        # (llama.cpp scans an unordered map; we take the first candidate in list order, so a vocabulary
        # with both '<|eot_id|>' and '<|end_of_text|>' gets '<|eot_id|>' as EOT)
        for name, cands in (("eot", _EOT_TEXTS), ("eom", _EOM_TEXTS), *_FIM_TEXTS.items()):
            if special[name] is not None:
                continue
            for t in cands:
                if t in ids:
                    special[name] = ids[t]
                    attrs[ids[t]] |= ATTR_CONTROL
                    break
        eot, eom = special["eot"], special["eom"]
        for i, t in enumerate(texts):
            if attrs[i] & ATTR_CONTROL and "unused" in t:
                attrs[i] |= ATTR_UNUSED
        eog = {special[k] for k in ("fim_pad", "fim_rep", "fim_sep") if special[k] is not None}
        for i, t in enumerate(texts):
            if t in _EOG_TEXTS:
                eog.add(i)
                attrs[i] |= ATTR_CONTROL
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss
            if t in ids:
                attrs[ids[t]] = ATTR_USER_DEFINED
        for v in (self.eos_id, eot, eom):
            if v is not None:
                eog.add(v)
        eog_texts = {texts[i]: i for i in eog}
        if "<|end|>" in eog_texts and (("<|return|>" in eog_texts and "<|call|>" in eog_texts)
                                       or ("<|calls|>" in eog_texts and "<|flush|>" in eog_texts)):
            eog.discard(eog_texts["<|end|>"])
            attrs[eog_texts["<|end|>"]] = ATTR_USER_DEFINED
        if "<|tool_response>" in eog_texts and "</s>" in eog_texts:
            eog.discard(eog_texts["</s>"])
            attrs[eog_texts["</s>"]] = ATTR_NORMAL
        self.eot_id, self.eom_id, self.pad_id = eot, eom, special["pad"]
        self.fim_ids = {k: special[k] for k in _FIM_TEXTS}
        self.eog_ids = frozenset(eog)

        cache = [i for i, a in enumerate(attrs) if a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        cache.sort(key=lambda i: -len(texts[i].encode("utf-8")))
        self._special_cache = cache

        # per-token strip attributes llama.cpp sets by model name (phi-3)
        name = _as_str(md, "general.name", "") or ""
        if "phi-3" in name.lower() or "phi3" in name.lower():
            for i in cache:
                attrs[i] |= ATTR_RSTRIP
            if "</s>" in ids:
                attrs[ids["</s>"]] |= ATTR_RSTRIP
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                if t in ids:
                    attrs[ids[t]] &= ~ATTR_RSTRIP
        return self

    # -- vocabulary queries --------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self.model!r}, pre={self.pre!r}, n_vocab={self.n_vocab}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id})")

    def _check_id(self, token_id: int) -> int:
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise InvalidArgumentError(f"[tokenizer] token id must be an int, got {type(token_id).__name__}")
        token_id = int(token_id)
        if not 0 <= token_id < len(self._texts):
            raise InvalidArgumentError(
                f"[tokenizer] token id {token_id} is outside the vocabulary (0..{len(self._texts) - 1})")
        return token_id

    def token_text(self, token_id: int) -> str:
        """The raw vocabulary entry (e.g. '▁Hello', 'Ġworld', '<0x0A>')."""
        return self._texts[self._check_id(token_id)]

    def token_score(self, token_id: int) -> float:
        return self._scores[self._check_id(token_id)]

    def token_attr(self, token_id: int) -> int:
        """llama.cpp token attribute bits (ATTR_* constants of this module)."""
        return self._attrs[self._check_id(token_id)]

    def token_to_id(self, text: str) -> Optional[int]:
        return self._ids.get(text)

    def is_control(self, token_id: int) -> bool:
        return bool(self._attrs[self._check_id(token_id)] & ATTR_CONTROL)

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (EOS, EOT, EOM and the like)."""
        return token_id in self.eog_ids

    # -- tokenize --------------------------------------------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], add_special: bool = True,
                 parse_special: bool = False) -> List[int]:
        """Token ids of ``text``, as llama.cpp's ``llama_tokenize(text, add_special, parse_special)``.

        add_special: add BOS / EOS where the vocabulary asks for them (tokenizer.ggml.add_bos_token /
        add_eos_token). parse_special: text of control tokens (e.g. '<|eot_id|>') becomes that token;
        user-defined tokens are always matched. Bytes are decoded as UTF-8 with replacement.
        """
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        elif not isinstance(text, str):
            raise InvalidArgumentError(f"[tokenizer] text must be str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: replace, as llama.cpp does with invalid UTF-8
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")

        fragments = self._partition(text, parse_special) if text else []
        out: List[int] = []
        if self.model == "llama":
            is_prev_special = True
            if add_special and self.add_bos:
                out.append(self.bos_id)  # type: ignore[arg-type]
            for frag in fragments:
                if isinstance(frag, str):
                    if self.add_space_prefix and is_prev_special:
                        frag = " " + frag
                    self._spm(frag.replace(" ", _ESCAPED_SPACE), out)
                    is_prev_special = False
                else:
                    out.append(frag)
                    is_prev_special = True
        else:
            if add_special and self.add_bos:
                out.append(self.bos_id)  # type: ignore[arg-type]
            for frag in fragments:
                if isinstance(frag, str):
                    self._bpe(frag, out)
                else:
                    out.append(frag)
        if add_special and self.add_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    def _partition(self, text: str, parse_special: bool) -> List[Union[str, int]]:
        """Cut special-token texts out of ``text``, longest token first (tokenizer_st_partition)."""
        frags: List[Union[str, int]] = [text]
        attrs, texts = self._attrs, self._texts
        for tid in self._special_cache:
            attr = attrs[tid]
            if not parse_special and attr & (ATTR_CONTROL | ATTR_UNKNOWN):
                continue
            tok = texts[tid]
            if not any(isinstance(f, str) and tok in f for f in frags):
                continue
            new: List[Union[str, int]] = []
            for frag in frags:
                if not isinstance(frag, str) or tok not in frag:
                    new.append(frag)
                    continue
                start = 0
                while True:
                    m = frag.find(tok, start)
                    if m < 0:
                        break
                    left = frag[start:m]
                    if attr & ATTR_LSTRIP:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        new.append(left)
                    new.append(tid)
                    start = m + len(tok)
                    if attr & ATTR_RSTRIP:
                        while start < len(frag) and frag[start] in _C_SPACE:
                            start += 1
                rest = frag[start:]
                if rest:
                    new.append(rest)
            frags = new
        return frags

    def _spm(self, text: str, out: List[int]) -> None:
        """llm_tokenizer_spm_session: merge the best-scoring adjacent pair until none is a token."""
        n = len(text)
        if n == 0:
            return
        ids, scores = self._ids, self._scores
        sym = list(text)  # current text of each symbol; '' once merged away
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap: List[Tuple[float, int, int, int]] = []

        def try_add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            tid = ids.get(sym[left] + sym[right])
            if tid is not None:
                heap.append((-scores[tid], left, right, len(sym[left]) + len(sym[right])))

        for i in range(n - 1):
            try_add(i, i + 1)
        heapq.heapify(heap)
        heappush, heappop = heapq.heappush, heapq.heappop

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            tid = ids.get(sym[left] + sym[right])
            if tid is not None:
                heappush(heap, (-scores[tid], left, right, len(sym[left]) + len(sym[right])))

        while heap:
            _, left, right, size = heappop(heap)
            ls, rs = sym[left], sym[right]
            if not ls or not rs or len(ls) + len(rs) != size:
                continue
            sym[left] = ls + rs
            sym[right] = ""
            r_next = nxt[right]
            nxt[left] = r_next
            if r_next >= 0:
                prv[r_next] = left
            push(prv[left], left)
            push(left, r_next)

        i = 0
        while i != -1:
            s = sym[i]
            tid = ids.get(s)
            if tid is not None:
                out.append(tid)
            else:  # byte fallback
                for b in s.encode("utf-8"):
                    out.append(self._byte_to_token(b))
            i = nxt[i]

    def _byte_to_token(self, b: int) -> int:
        tid = self._ids.get(f"<0x{b:02X}>")
        if tid is None:
            tid = self._ids.get(chr(b)) if b < 0x80 else None
            if tid is None:
                raise ModelFormatError(
                    f"[tokenizer] key '{_KEY_PREFIX}tokens': no byte token <0x{b:02X}> for byte fallback")
        return tid

    def _bpe(self, text: str, out: List[int]) -> None:
        assert self._pre is not None
        cache = self._word_cache
        for word in self._pre.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._bpe_word("".join([_BYTE_ENC[b] for b in word.encode("utf-8")]))
                if len(cache) >= _BPE_CACHE_MAX:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

    def _bpe_word(self, word: str) -> Tuple[int, ...]:
        """llm_tokenizer_bpe_session on one byte-encoded word: lowest-rank pair first, leftmost on ties."""
        vocab = self._ids
        if self._ignore_merges:
            tid = vocab.get(word)
            if tid is not None:
                return (tid,)
        ranks = self._ranks
        sym = list(word)
        n = len(sym)
        if n > 1:
            nxt = list(range(1, n + 1))
            nxt[-1] = -1
            prv = list(range(-1, n - 1))
            heap: List[Tuple[int, int, int, str]] = []
            for i in range(n - 1):
                r = ranks.get((sym[i], sym[i + 1]))
                if r is not None:
                    heap.append((r, i, i + 1, sym[i] + sym[i + 1]))
            heapq.heapify(heap)
            while heap:
                _, left, right, merged = heapq.heappop(heap)
                ls, rs = sym[left], sym[right]
                if not ls or not rs or ls + rs != merged:
                    continue
                sym[left] = merged
                sym[right] = ""
                r_next = nxt[right]
                nxt[left] = r_next
                if r_next >= 0:
                    prv[r_next] = left
                p = prv[left]
                if p >= 0:
                    r = ranks.get((sym[p], merged))
                    if r is not None:
                        heapq.heappush(heap, (r, p, left, sym[p] + merged))
                if r_next >= 0:
                    r = ranks.get((merged, sym[r_next]))
                    if r is not None:
                        heapq.heappush(heap, (r, left, r_next, merged + sym[r_next]))
        result: List[int] = []
        for s in sym:
            if not s:
                continue
            tid = vocab.get(s)
            if tid is not None:
                result.append(tid)
            else:
                # llama.cpp looks up each byte of the symbol as a one-byte token: only ASCII can match
                for ch in s:
                    if ch < "\x80":
                        t = vocab.get(ch)
                        if t is not None:
                            result.append(t)
        return tuple(result)

    # -- detokenize ------------------------------------------------------------------------------------------

    def token_to_piece_bytes(self, token_id: int, special: bool = False) -> bytes:
        """The bytes token ``token_id`` stands for (llama.cpp ``llama_token_to_piece``, lstrip=0).

        Control and unknown tokens give b'' unless ``special``; user-defined tokens give their text.
        """
        key = (token_id, special)
        piece = self._pieces.get(key)
        if piece is None:
            tid = self._check_id(token_id)
            piece = self._pieces[(tid, special)] = self._piece(tid, special)
        return piece

    def _piece(self, tid: int, special: bool) -> bytes:
        attr = self._attrs[tid]
        text = self._texts[tid]
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL) and not special:
            return b""
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            return text.encode("utf-8")
        if attr & ATTR_NORMAL:
            if self.model == "llama":
                return text.replace(_ESCAPED_SPACE, " ").encode("utf-8")
            return _byte_decode(text)
        if attr & ATTR_BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def token_to_piece(self, token_id: int, special: bool = False) -> str:
        """``token_to_piece_bytes`` decoded as UTF-8 (a lone byte token decodes to U+FFFD)."""
        return self.token_to_piece_bytes(token_id, special).decode("utf-8", errors="replace")

    def detokenize_bytes(self, ids: Iterable[int], special: bool = False) -> bytes:
        """Concatenated pieces; with add_space_prefix (SPM) the space the tokenizer prefixed to the text
        is removed from the first piece after an optional leading BOS, so detokenize(tokenize(s)) == s."""
        parts: List[bytes] = []
        strip = self.add_space_prefix
        for i, tid in enumerate(ids):
            piece = self.token_to_piece_bytes(tid, special)
            if strip and not (i == 0 and tid == self.bos_id):
                if piece[:1] == b" ":
                    piece = piece[1:]
                strip = False
            parts.append(piece)
        return b"".join(parts)

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 (e.g. a split multi-byte character) becomes U+FFFD."""
        return self.detokenize_bytes(ids, special).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, special=special)


def _is_byte_token_text(text: str) -> bool:
    return (len(text) == 6 and text.startswith("<0x") and text.endswith(">")
            and all(c in "0123456789abcdefABCDEF" for c in text[3:5]))


def _byte_decode(text: str) -> bytes:
    """llama_decode_text: map GPT-2 byte characters back to bytes; others are flagged as llama.cpp does."""
    try:
        return bytes([_BYTE_DEC[c] for c in text])
    except KeyError:
        out = bytearray()
        for c in text:
            b = _BYTE_DEC.get(c)
            if b is not None:
                out.append(b)
            else:
                out += b"[UNK_BYTE_0x" + c.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
        return bytes(out)


class StreamDecoder:
    """Incremental detokenizer for streaming: ``feed(id)`` returns only complete UTF-8 text.

    Bytes of a character split across tokens are held back until the character is complete; the
    concatenation of all ``feed`` results and ``flush()`` equals ``Tokenizer.detokenize(ids)``.
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self._tok = tokenizer
        self._special = special
        self.reset()

    def reset(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = self._tok.add_space_prefix
        self._index = 0

    def feed(self, token_id: int) -> str:
        tok = self._tok
        piece = tok.token_to_piece_bytes(token_id, self._special)
        if self._strip and not (self._index == 0 and token_id == tok.bos_id):
            if piece[:1] == b" ":
                piece = piece[1:]
            self._strip = False
        self._index += 1
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """End of stream: any incomplete character left is emitted as U+FFFD."""
        out = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return out
