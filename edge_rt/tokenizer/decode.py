"""From token ids back to text: the piece each token stands for, and incremental (streaming) decoding.

Detokenizing concatenates the pieces, as llama.cpp's streaming output does (``token_to_piece``), so
that ``detokenize(tokenize(s)) == s``.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

from .bpe import BYTE_DEC
from .spm import ESCAPED_SPACE
from .vocab import ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_USER_DEFINED

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

__all__ = ["piece_bytes", "byte_decode", "StreamDecoder"]


def piece_bytes(attr: int, text: str, spm: bool, special: bool) -> bytes:
    """The bytes a token of attributes ``attr`` and vocabulary text ``text`` stands for (llama.cpp
    ``llama_token_to_piece`` with lstrip=0). Control and unknown tokens give b'' unless ``special``;
    user-defined ones give their text; normal ones their text with SPM's U+2581 as a space (``spm``)
    or GPT-2's byte characters decoded; byte tokens ``<0xXX>`` the byte."""
    if attr & (ATTR_UNKNOWN | ATTR_CONTROL) and not special:
        return b""
    if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
        return text.encode("utf-8")
    if attr & ATTR_NORMAL:
        if spm:
            return text.replace(ESCAPED_SPACE, " ").encode("utf-8")
        return byte_decode(text)
    if attr & ATTR_BYTE:
        return bytes([int(text[3:5], 16)])
    return b""


def byte_decode(text: str) -> bytes:
    """llama_decode_text: map GPT-2 byte characters back to bytes; others are flagged as llama.cpp does."""
    try:
        return bytes([BYTE_DEC[c] for c in text])
    except KeyError:
        out = bytearray()
        for c in text:
            b = BYTE_DEC.get(c)
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

    def __init__(self, tokenizer: "Tokenizer", special: bool = False) -> None:
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
