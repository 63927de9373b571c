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
  An unknown pre-tokenizer is an UnsupportedArchitectureError naming it (llama.cpp refuses it too).

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

Modules: ``vocab`` (token types and attributes, metadata checks, special tokens: :class:`Vocabulary`),
``pretokenize`` (Unicode classes and the BPE word splitters), ``spm`` and ``bpe`` (the two merge
algorithms), ``decode`` (pieces and :class:`StreamDecoder`), ``tokenizer`` (:class:`Tokenizer`, which
ties them together).
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
