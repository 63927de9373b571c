"""Tokenizer for GGUF vocabularies, matching llama.cpp token for token (pure Python).

Two tokenizer models are supported, selected by ``tokenizer.ggml.model``:

- ``llama``: SentencePiece-style BPE (llama.cpp ``llm_tokenizer_spm``). Spaces are escaped to U+2581,
  a space is prefixed to every text fragment that starts the input or follows a special token
  (``tokenizer.ggml.add_space_prefix``, default true), adjacent symbols are merged greedily by token
  score, and characters without a token fall back to ``<0xXX>`` byte tokens.
- ``gpt2``: byte-level BPE with ranked ``tokenizer.ggml.merges``. The text is first split into words
  by the pre-tokenizer named in ``tokenizer.ggml.pre`` -- every name llama.cpp knows (``default``,
  ``gpt-2``, ``llama-bpe``, ``qwen2``, ``deepseek-llm``, ``gpt-4o``, ``tekken``, ``kimi-k2``, ...,
  ``pretokenize.PRE_TYPES``), with the regexes and settings llama.cpp gives it -- each word is mapped
  through GPT-2's byte-to-unicode table (raw UTF-8 with ``<0xXX>`` byte fallback for the SPM-style
  ``gemma4``, ``sarvam-moe`` and ``whitespace``) and merged by rank. Where llama.cpp runs a hand-written
  splitter (gpt-2, llama3, qwen2, qwen35, kimi-k2, digit grouping) edge_rt runs a port of it; other
  regexes run, translated from std::regex's ECMAScript to Python's ``re``, on the same "collapsed"
  text (every non-ASCII code point replaced by one character naming its Unicode category), so digit
  grouping and whitespace rules match exactly. An unknown pre-tokenizer is an
  UnsupportedArchitectureError naming it (llama.cpp refuses it too).

Special tokens (control, user-defined, unknown) are cut out of the text first, longest first, as in
llama.cpp's ``tokenizer_st_partition``: user-defined tokens always, control/unknown ones only with
``parse_special=True``.

Detokenizing concatenates the pieces, as llama.cpp's streaming output does (``token_to_piece``), so
that ``detokenize(tokenize(s)) == s``. It differs from llama.cpp's ``llama_detokenize`` in two
documented ways: no ``clean_spaces`` pass for BPE vocabularies (``"a ?"`` stays as it is), and for SPM
the space that tokenizing prefixed is removed from the first text piece even after a leading BOS.

Unicode categories are llama.cpp's own (``unicode_flags``, generated from its unicode-data.cpp), so a
code point is classified as llama.cpp classifies it whatever Unicode version Python's ``unicodedata`` has.

Chat templates: edge_rt never renders ``tokenizer.chat_template`` with an unsandboxed Jinja environment
(CVE-2024-34359 in llama-cpp-python was remote code execution through exactly that); this module does not
execute templates at all, it only reads the vocabulary.

Metadata is validated like any other input from a file: malformed keys raise
:class:`edge_rt.errors.ModelFormatError` naming the key.

Modules: ``vocab`` (token types and attributes, metadata checks, special tokens: :class:`Vocabulary`),
``pretokenize`` (Unicode classes, the pre-tokenizer table and the BPE word splitters; ``unicode_flags``
holds llama.cpp's Unicode table), ``spm`` and ``bpe`` (the two merge algorithms), ``decode`` (pieces and
:class:`StreamDecoder`), ``tokenizer`` (:class:`Tokenizer`, which ties them together).
"""

from __future__ import annotations

from ..gguf_file import read_metadata as read_gguf_metadata
from .decode import StreamDecoder
from .tokenizer import Tokenizer
from .vocab import (
    ATTR_BYTE,
    ATTR_CONTROL,
    ATTR_LSTRIP,
    ATTR_NORMAL,
    ATTR_RSTRIP,
    ATTR_UNDEFINED,
    ATTR_UNKNOWN,
    ATTR_UNUSED,
    ATTR_USER_DEFINED,
    TOKEN_TYPE_BYTE,
    TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_NORMAL,
    TOKEN_TYPE_UNDEFINED,
    TOKEN_TYPE_UNKNOWN,
    TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED,
    Vocabulary,
)

__all__ = [
    "Tokenizer", "StreamDecoder", "Vocabulary", "read_gguf_metadata",
    "TOKEN_TYPE_UNDEFINED", "TOKEN_TYPE_NORMAL", "TOKEN_TYPE_UNKNOWN", "TOKEN_TYPE_CONTROL",
    "TOKEN_TYPE_USER_DEFINED", "TOKEN_TYPE_UNUSED", "TOKEN_TYPE_BYTE",
    "ATTR_UNDEFINED", "ATTR_UNKNOWN", "ATTR_UNUSED", "ATTR_NORMAL", "ATTR_CONTROL", "ATTR_USER_DEFINED",
    "ATTR_BYTE", "ATTR_LSTRIP", "ATTR_RSTRIP",
]
