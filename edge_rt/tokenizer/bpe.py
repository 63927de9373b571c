"""Byte-level BPE (``tokenizer.ggml.model`` = ``gpt2``): GPT-2's byte <-> character table and the merge
loop of llama.cpp's ``llm_tokenizer_bpe_session``, applied to one pre-tokenized word at a time.
"""

from __future__ import annotations

import heapq
from typing import Dict, List, Mapping, Tuple

__all__ = ["BYTE_ENC", "BYTE_DEC", "BPE_CACHE_MAX", "byte_encode", "bpe_word"]

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


#: BYTE_ENC[b] is the printable character standing for byte b; BYTE_DEC is its inverse.
BYTE_ENC, BYTE_DEC = _bytes_to_unicode()

#: Words whose token ids a tokenizer caches before it starts the cache afresh.
BPE_CACHE_MAX = 1 << 17


def byte_encode(word: str) -> str:
    """``word``'s UTF-8 bytes as GPT-2 byte characters (what the merges are written in)."""
    return "".join([BYTE_ENC[b] for b in word.encode("utf-8")])


def bpe_word(word: str, vocab: Mapping[str, int], ranks: Mapping[Tuple[str, str], int],
             ignore_merges: bool, raw_utf8: bool = False) -> Tuple[int, ...]:
    """Token ids of one byte-encoded ``word`` (llm_tokenizer_bpe_session): the adjacent pair of lowest
    merge rank in ``ranks`` is merged first, the leftmost on ties, until no pair has a rank; each
    resulting symbol is looked up in ``vocab``. With ``ignore_merges`` a word that is itself a token is
    that one token (llama3). With ``raw_utf8`` the word is plain text (pre-tokenizers without GPT-2
    byte encoding, e.g. gemma4) and a symbol without a token falls back to its bytes' <0xXX> tokens."""
    if ignore_merges:
        tid = vocab.get(word)
        if tid is not None:
            return (tid,)
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
        elif raw_utf8:
            for b in s.encode("utf-8"):
                t = vocab.get(f"<0x{b:02X}>")
                if t is not None:
                    result.append(t)
        else:
            # llama.cpp looks up each byte of the symbol as a one-byte token: only ASCII can match
            for ch in s:
                if ch < "\x80":
                    t = vocab.get(ch)
                    if t is not None:
                        result.append(t)
    return tuple(result)
