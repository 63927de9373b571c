"""Atheris (libFuzzer for Python) harness: the toolchain's Hugging Face reader (config.json,
*.safetensors, tokenizer.json -> a SourceModel), ``edge_rt.quantize.safetensors_io.read_hf_dir``.

An input is ``u32 a``, ``a`` bytes of config.json, ``u32 b``, ``b`` bytes of tokenizer.json, and the rest
as the one safetensors shard (``u32`` little-endian lengths). The three files are written to a tmpfs
folder; the reader builds the SourceModel, and every tensor the model names is then loaded (as the
quantizer would: memory-mapped, converted, permuted or stacked). A malformed checkpoint must raise an
edge_rt error (EdgeRTError); any other exception, a hang past libFuzzer's ``-timeout`` or memory past
``-rss_limit_mb`` is a finding.

Run through tools/fuzz.sh (``tools/fuzz.sh run fuzz_safetensors 60``).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["edge_rt"]):  # our code only: numpy and the stdlib are not under test
    from edge_rt.errors import EdgeRTError
    from edge_rt.quantize.safetensors_io import read_hf_dir

_DIR = Path(tempfile.mkdtemp(prefix="edge_rt_fuzz_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def split_input(data: bytes):
    """(config.json, tokenizer.json, shard) bytes, or None when the lengths run past the input."""
    if len(data) < 4:
        return None
    (a,) = struct.unpack_from("<I", data)
    cfg, rest = data[4:4 + a], data[4 + a:]
    if len(cfg) < a or len(rest) < 4:
        return None
    (b,) = struct.unpack_from("<I", rest)
    tok, shard = rest[4:4 + b], rest[4 + b:]
    if len(tok) < b:
        return None
    return cfg, tok, shard


def TestOneInput(data: bytes) -> None:
    parts = split_input(data)
    if parts is None:
        return
    for name, blob in zip(("config.json", "tokenizer.json", "model.safetensors"), parts):
        (_DIR / name).write_bytes(blob)
    try:
        src = read_hf_dir(_DIR)
        for t in src.tensors:
            a = t.load()
            if tuple(a.shape) != tuple(t.shape):
                raise AssertionError(f"tensor {t.name}: loaded shape {a.shape}, declared {t.shape}")
    except EdgeRTError:
        return


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
