"""Pre-tokenization for byte-level BPE vocabularies: llama.cpp's Unicode classes and word splitters.

``PRE_TYPES`` maps a ``tokenizer.ggml.pre`` name to ``(name, regex list, ignore_merges, default
add_bos)`` as llama.cpp's ``llm_tokenizer_bpe`` table does; :class:`PreTokenizer` runs such a list.
The gpt-2 and llama3 regexes run as ports of llama.cpp's hand-written splitters
(``unicode_regex_split_custom_*``); the others run the regex llama.cpp runs, on the same "collapsed"
text (every non-ASCII code point replaced by one byte naming its Unicode category), so digit grouping
and whitespace rules match exactly.

Unicode categories come from Python's ``unicodedata``; where its Unicode version differs from the tables
compiled into llama.cpp, code points new in one of them may be classified differently.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ["PRE_TYPES", "PreTokenizer"]

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
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_STARCODER group: every digit on its own, then the gpt-2 splitter
_PRE_STARCODER = ("starcoder", [r"\p{N}", _RE_GPT2], False, False)

PRE_TYPES: Dict[str, Tuple[str, List[str], bool, bool]] = {"": _PRE_DEFAULT, "default": _PRE_DEFAULT}
for _name in ("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
              "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling"):
    PRE_TYPES[_name] = _PRE_GPT2
for _name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
              "jina-v5-nano"):
    PRE_TYPES[_name] = _PRE_LLAMA3
for _name in ("starcoder", "refact", "command-r", "smollm", "codeshell"):
    PRE_TYPES[_name] = _PRE_STARCODER
for _name in ("dbrx", "smaug-bpe"):
    PRE_TYPES[_name] = _PRE_DBRX
for _name in ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
              "solar-open"):
    PRE_TYPES[_name] = _PRE_QWEN2

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


class PreTokenizer:
    """Splits text into words as the pre-tokenizer of one vocabulary does (its regex list, run in order:
    each step splits the words the previous step produced)."""

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
        """The words of ``text``, in order; their concatenation is ``text``."""
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
