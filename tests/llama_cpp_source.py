"""Read llama.cpp's pre-tokenizer tables out of its C++ source (the copy vendored in the llama-cpp-python
sdist, see vocab_data.llama_cpp_source), so tests can compare edge_rt's PRE_TYPES with them.

Three things are parsed:

- ``pre_tokenizer_names(vocab_cpp)``: every ``tokenizer.ggml.pre`` name ``llama_vocab::impl::load``
  accepts for a BPE vocabulary, with the pre-tokenizer type it selects and the settings it changes
  (ignore_merges, add_bos, clean_spaces, escape_whitespaces, add_sep, special_bos_id, ...);
- ``bpe_regexes(vocab_cpp)``: the regex list (and byte_encode) ``llm_tokenizer_bpe`` assigns to each type;
- ``custom_regexes(unicode_cpp)``: the regexes ``unicode_regex_split_custom`` runs as hand-written
  splitters instead of std::regex.

The parser is deliberately strict: a construct it does not recognise raises, so that a llama.cpp upgrade
that changes the shape of these tables fails the test instead of being read wrongly.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Tuple

__all__ = ["PreName", "pre_tokenizer_names", "bpe_regexes", "custom_regexes", "c_literals"]

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0", "?": "?",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _strip_comments(src: str) -> str:
    """``src`` with // and /* */ comments blanked out (string and char literals are kept intact)."""
    out: List[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _unescape(body: str) -> str:
    """The value of a C string literal's body (UTF-8 source text; \\xNN escapes are bytes)."""
    raw = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            raw += c.encode("utf-8")
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2:])
            assert m, body
            raw.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        elif e in _ESCAPES:
            raw += _ESCAPES[e].encode()
            i += 2
        else:
            raise ValueError(f"unsupported escape \\{e} in C string {body!r}")
    return raw.decode("utf-8")


def c_literals(code: str) -> List[str]:
    """The C string literals in ``code`` (comment-free), adjacent literals concatenated as C does."""
    values: List[str] = []
    prev_end = -1
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', code):
        value = _unescape(m.group(1))
        if prev_end >= 0 and not code[prev_end:m.start()].strip():
            values[-1] += value
        else:
            values.append(value)
        prev_end = m.end()
    return values


def _between(src: str, start: str, end: str) -> str:
    i = src.find(start)
    if i < 0:
        raise ValueError(f"llama.cpp source: {start!r} not found")
    j = src.find(end, i)
    if j < 0:
        raise ValueError(f"llama.cpp source: {end!r} not found after {start!r}")
    return src[i:j]


class PreName(NamedTuple):
    """What ``llama_vocab::impl::load`` does for one ``tokenizer.ggml.pre`` name of a BPE vocabulary."""

    pre_type: str  # LLAMA_VOCAB_PRE_TYPE_<pre_type>
    ignore_merges: bool
    add_bos: bool
    clean_spaces: bool
    escape_whitespaces: bool
    add_sep: bool
    bos_is_null: bool  # special_bos_id = LLAMA_TOKEN_NULL (no default BOS id)


_STATEMENTS = {
    "ignore_merges = true": ("ignore_merges", True),
    "add_bos = true": ("add_bos", True),
    "clean_spaces = false": ("clean_spaces", False),
    "escape_whitespaces = true": ("escape_whitespaces", True),
    "add_sep = true": ("add_sep", True),
    "special_bos_id = LLAMA_TOKEN_NULL": ("bos_is_null", True),
    # only the 'whitespace' tokenizer model's session reads the normalizer options
    "normalizer_opts.lowercase = false": (None, None),
}


def pre_tokenizer_names(vocab_cpp: str) -> Dict[str, PreName]:
    """name -> PreName for every pre-tokenizer name of a BPE vocabulary ('' is the missing key)."""
    src = _strip_comments(vocab_cpp)
    region = _between(src, "if (type == LLAMA_VOCAB_TYPE_BPE) {", "unknown pre-tokenizer type")
    head, _, chain = region.partition("if (tokenizer_pre.empty())")
    if not chain:
        raise ValueError("llama.cpp source: the tokenizer_pre chain was not found")
    base = {"ignore_merges": False, "add_bos": False, "clean_spaces": True, "escape_whitespaces": False,
            "add_sep": False, "bos_is_null": False}
    for stmt in re.findall(r"(\w+(?:\.\w+)? = [\w\"]+);", head):
        key = stmt.split(" = ")[0]
        if key in ("add_space_prefix",):
            continue
        if key == "escape_whitespaces":
            base[key] = stmt.endswith("true")
        elif key == "clean_spaces":
            base[key] = stmt.endswith("true")
        else:
            raise ValueError(f"llama.cpp source: unexpected statement {stmt!r} before the pre-tokenizer chain")
    out: Dict[str, PreName] = {}
    # each branch: the condition (names compared, or .empty()) and its body up to the next '} else'
    branches = re.split(r"\}\s*else\s+if\s*\(", "tokenizer_pre.empty()" + chain)
    for branch in branches:
        cond, sep, body = branch.partition(") {")
        if not sep:
            raise ValueError(f"llama.cpp source: cannot parse branch {branch[:80]!r}")
        names = re.findall(r'tokenizer_pre\s*==\s*"([^"]*)"', cond)
        if cond.strip().startswith("tokenizer_pre.empty("):
            names.append("")
        if not names:
            raise ValueError(f"llama.cpp source: branch without names: {cond!r}")
        body = body.split("} else")[0]
        settings = dict(base)
        pre_type = None
        for stmt in (s.strip() for s in body.split(";")):
            if not stmt or stmt.startswith("LLAMA_LOG_"):
                continue
            m = re.fullmatch(r"pre_type = LLAMA_VOCAB_PRE_TYPE_(\w+)", stmt)
            if m:
                pre_type = m.group(1)
                continue
            if stmt not in _STATEMENTS:
                raise ValueError(f"llama.cpp source: unexpected statement {stmt!r} for {names}")
            key, value = _STATEMENTS[stmt]
            if key is not None:
                settings[key] = value
        if pre_type is None:
            raise ValueError(f"llama.cpp source: no pre_type for {names}")
        for name in names:
            out[name] = PreName(pre_type=pre_type, **settings)
    return out


def bpe_regexes(vocab_cpp: str) -> Dict[str, Tuple[List[str], bool]]:
    """LLAMA_VOCAB_PRE_TYPE_<type> suffix ('DEFAULT' for the default branch) -> (regex list, byte_encode),
    as llm_tokenizer_bpe's constructor assigns them."""
    src = _strip_comments(vocab_cpp)
    body = _between(src, "struct llm_tokenizer_bpe : llm_tokenizer {", "std::vector<std::string> regex_exprs;")
    body = body.split("switch (vocab.get_pre_type()) {", 1)[1]
    out: Dict[str, Tuple[List[str], bool]] = {}
    labels: List[str] = []
    exprs: List[str] = []
    byte_encode = True
    pos = 0
    token = re.compile(r"case LLAMA_VOCAB_PRE_TYPE_(\w+):|default:|regex_exprs = \{(.*?)\};|"
                       r"byte_encode = (true|false);|break;|\}", re.S)
    while True:
        m = token.search(body, pos)
        if m is None:
            break
        skipped = body[pos:m.start()].strip()
        if skipped:
            raise ValueError(f"llama.cpp source: unexpected code in llm_tokenizer_bpe: {skipped[:80]!r}")
        pos = m.end()
        text = m.group(0)
        if text.startswith("case"):
            labels.append(m.group(1))
        elif text == "default:":
            labels.append("DEFAULT")
        elif text.startswith("regex_exprs"):
            exprs = c_literals(m.group(2))
            if re.sub(r'"(?:[^"\\\n]|\\.)*"', "", m.group(2)).replace(",", "").strip():
                raise ValueError(f"llama.cpp source: regex_exprs holds more than literals: {m.group(2)[:80]!r}")
        elif text.startswith("byte_encode"):
            byte_encode = m.group(3) == "true"
        elif text == "break;":
            if not labels:
                raise ValueError("llama.cpp source: break without case labels")
            for label in labels:
                out[label] = (exprs, byte_encode)
            labels, exprs, byte_encode = [], [], True
        else:  # the switch's closing brace
            break
    return out


def custom_regexes(unicode_cpp: str) -> List[str]:
    """The regexes unicode_regex_split_custom runs with a hand-written splitter."""
    src = _strip_comments(unicode_cpp)
    body = _between(src, "static std::vector<size_t> unicode_regex_split_custom(", "return bpe_offsets;")
    return [lit for cond in re.findall(r"regex_expr\s*==\s*((?:\"(?:[^\"\\\n]|\\.)*\"\s*)+)", body)
            for lit in c_literals(cond)]


def special_cases(vocab_cpp: str) -> Dict[str, List[str]]:
    """Pre-tokenizer types and names the tokenizer treats specially outside the tables above."""
    src = _strip_comments(vocab_cpp)
    return {
        # add_bos forced on after the GGUF key was read
        "force_bos": re.findall(r"pre_type == LLAMA_VOCAB_PRE_TYPE_(\w+) && !add_bos", src),
        # a word of only '\n' that is a token stays one token
        "newline_word": re.findall(r"tok_pre == LLAMA_VOCAB_PRE_TYPE_(\w+) && word\.find_first_not_of", src),
        # names whose vocabulary may lack tokenizer.ggml.merges
        "merges_optional": re.findall(r'is_kimi_k2 = \(tokenizer_pre == "([^"]+)"\)', src),
    }
