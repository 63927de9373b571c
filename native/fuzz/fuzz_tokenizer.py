"""Atheris (libFuzzer for Python) harness: tokenizer construction from GGUF metadata, then tokenize and
detokenize of arbitrary bytes.

An input is one mode byte, then:

* mode < number of real vocabularies: the rest is text for that vocabulary (loaded once at start from
  ``EDGE_RT_FUZZ_VOCABS``, a ``:``-separated list of GGUF files, e.g. /work/shared/vocab/ggml-vocab-*.gguf);
* otherwise: ``u32 n`` (little-endian), ``n`` bytes of a GGUF file (written to a tmpfs file, parsed by
  ``edge_rt._core.GGUFFile``, handed to ``Tokenizer.from_metadata``), and the rest as the text.

Checked for every tokenizer: ``tokenize`` returns ids inside the vocabulary (with and without special
handling); ``detokenize`` of those ids and of the raw input bytes read as ids works, and ids outside the
vocabulary raise InvalidArgumentError; the stream decoder yields the same bytes as ``detokenize_bytes``.
A malformed file or metadata must raise an edge_rt error (EdgeRTError). A fuzzed vocabulary may also fail
``tokenize`` with ModelFormatError where the text needs a token the vocabulary lacks (an SPM byte-fallback
token, as llama.cpp's ``byte_to_token`` throws); the real vocabularies must tokenize everything. Any other
exception, a hang past libFuzzer's ``-timeout`` or memory past ``-rss_limit_mb`` is a finding.

Run through tools/fuzz.sh (``tools/fuzz.sh run fuzz_tokenizer 60``).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["edge_rt"]):  # our code only: numpy and the stdlib are not under test
    from edge_rt.errors import EdgeRTError, InvalidArgumentError, ModelFormatError
    from edge_rt.gguf_file import read_header
    from edge_rt.tokenizer import Tokenizer

_TMP_DIR = tempfile.mkdtemp(prefix="edge_rt_fuzz_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_GGUF = os.path.join(_TMP_DIR, "input.gguf")
_VOCABS = [Tokenizer.from_gguf(p) for p in os.environ.get("EDGE_RT_FUZZ_VOCABS", "").split(":") if p]


def _exercise(tok: Tokenizer, data: bytes) -> None:
    n = tok.n_vocab
    for special in (False, True):
        ids = tok.tokenize(data, add_special=special, parse_special=special)
        if any(not (0 <= i < n) for i in ids):
            raise AssertionError(f"tokenize returned an id outside [0, {n}): {ids}")
        text = tok.detokenize_bytes(ids, special=special)
        dec = tok.stream_decoder(special=special)
        streamed = "".join(dec.feed(i) for i in ids) + dec.flush()
        if streamed != text.decode("utf-8", "replace"):
            raise AssertionError("stream decoder and detokenize disagree")
    raw_ids = [b % (n + 2) - 1 for b in data[:64]]  # includes -1 and n: both must be rejected cleanly
    try:
        tok.detokenize(raw_ids, special=True)
    except InvalidArgumentError:
        if all(0 <= i < n for i in raw_ids):
            raise


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0], data[1:]
    if mode < len(_VOCABS):
        _exercise(_VOCABS[mode], rest)
        return
    if len(rest) < 4:
        return
    (n,) = struct.unpack_from("<I", rest)
    gguf, text = rest[4:4 + n], rest[4 + n:]
    with open(_GGUF, "wb") as f:
        f.write(gguf)
    try:
        md = dict(read_header(_GGUF).metadata)
        tok = Tokenizer.from_metadata(md)
    except EdgeRTError:
        return
    try:
        _exercise(tok, text)
    except ModelFormatError:
        return  # the fuzzed vocabulary cannot represent this text (a missing byte token): named, not a crash


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
