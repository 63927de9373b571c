"""The :class:`Tokenizer`: a :class:`~edge_rt.tokenizer.vocab.Vocabulary` that tokenizes and detokenizes
as llama.cpp does (special tokens cut out first, then SPM or byte-level BPE on the text between them)."""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple, Union

from ..errors import InvalidArgumentError
from .bpe import BPE_CACHE_MAX, bpe_word, byte_encode
from .decode import StreamDecoder, piece_bytes
from .spm import ESCAPED_SPACE, spm_tokenize
from .vocab import ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN, Vocabulary

__all__ = ["Tokenizer"]

_C_SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale


class Tokenizer(Vocabulary):
    """A GGUF vocabulary with llama.cpp's tokenize / detokenize behaviour.

    Thread-safety: tokenizing from several threads is safe (the caches are plain dicts under the GIL).
    """

    def __init__(self) -> None:  # use from_gguf / from_metadata
        super().__init__()
        self._pieces: Dict[Tuple[int, bool], bytes] = {}
        self._word_cache: Dict[str, Tuple[int, ...]] = {}

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
                    spm_tokenize(frag.replace(" ", ESCAPED_SPACE), self._ids, self._scores, out, self._byte_to_token)
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

    def _bpe(self, text: str, out: List[int]) -> None:
        """Append the ids of ``text`` (no special tokens in it): pre-tokenized, each word merged."""
        assert self._pre is not None and self.pre_type is not None
        pre = self.pre_type
        if pre.escape_whitespaces:
            text = text.replace(" ", ESCAPED_SPACE)
        cache = self._word_cache
        for word in self._pre.split(text):
            ids = cache.get(word)
            if ids is None:
                # gemma4: a word of only newlines that is a token is that token, as with ignore_merges
                whole = self._ignore_merges or (pre.newline_words and not word.strip("\n"))
                if pre.byte_encode:
                    ids = bpe_word(byte_encode(word), self._ids, self._ranks, whole)
                else:
                    ids = bpe_word(word, self._ids, self._ranks, whole, raw_utf8=True)
                if len(cache) >= BPE_CACHE_MAX:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

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
        # U+2581 stands for a space in SPM vocabularies and in BPE ones that escape whitespace (gemma4)
        escaped = self.model == "llama" or (self.pre_type is not None and self.pre_type.escape_whitespaces)
        return piece_bytes(self._attrs[tid], self._texts[tid], escaped, special)

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
