"""SentencePiece-style BPE (``tokenizer.ggml.model`` = ``llama``): llama.cpp's ``llm_tokenizer_spm``.

The text arrives with spaces already escaped to U+2581 (:data:`ESCAPED_SPACE`). Adjacent symbols are
merged greedily by the score of the token they form; symbols left without a token fall back to
``<0xXX>`` byte tokens.
"""

from __future__ import annotations

import heapq
from typing import Callable, List, Mapping, Sequence, Tuple

__all__ = ["ESCAPED_SPACE", "spm_tokenize"]

#: SentencePiece's stand-in for a space in token texts.
ESCAPED_SPACE = "\u2581"


def spm_tokenize(text: str, ids: Mapping[str, int], scores: Sequence[float], out: List[int],
                 byte_token: Callable[[int], int]) -> None:
    """Append the token ids of ``text`` to ``out`` (llm_tokenizer_spm_session): merge the adjacent pair
    whose concatenation is the best-scoring token (``ids`` text -> id, ``scores`` by id; leftmost on
    ties) until no pair forms a token; a symbol that is no token becomes the byte tokens
    ``byte_token(b)`` of its UTF-8 bytes."""
    n = len(text)
    if n == 0:
        return
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
                out.append(byte_token(b))
        i = nxt[i]
