"""edge_rt.gguf_file: atomic writes, header reading and the raw header records."""

from __future__ import annotations

import os
import stat
import struct

import pytest

from edge_rt.errors import ModelFormatError, ModelIOError
from edge_rt.gguf_file import (
    atomic_write,
    encode_string,
    kv_string,
    kv_uint32,
    read_header,
    read_metadata,
    save_writer,
    split_kv_records,
)


def _names(folder) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_and_leaves_nothing_else(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with atomic_write(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        assert dest.read_bytes() == b"old"  # readers see the old file until the rename
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert dest.read_bytes() == b"new"
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_write_names_are_unpredictable(tmp_path):
    dest = tmp_path / "x.gguf"
    with atomic_write(dest) as a, atomic_write(dest) as b:
        assert a != b and a.exists() and b.exists()
    assert _names(tmp_path) == ["x.gguf"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_write_failure_keeps_destination(tmp_path, exc):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(type(exc)):
        with atomic_write(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise exc
    assert dest.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_write_permissions_as_open(tmp_path):
    """mkstemp creates 0600 files; the result gets what open() would have given it."""
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_write(tmp_path / "f") as tmp:
        tmp.write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~umask


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "nowhere" / "f"):
            pass
    assert _names(tmp_path) == []


def test_read_header_errors(tmp_path):
    with pytest.raises(ModelIOError, match=r"^\[inspect\] model file not found"):
        read_header(tmp_path / "missing.gguf", "[inspect]")
    with pytest.raises(ModelIOError, match="is a directory"):
        read_header(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf" * 10)
    with pytest.raises(ModelFormatError):
        read_header(bad)


def test_read_header_and_metadata(tiny_model):
    g = read_header(tiny_model)
    assert g.metadata["general.architecture"] == "llama"
    assert read_metadata(tiny_model) == dict(g.metadata)


def test_kv_records_round_trip():
    records = [kv_uint32("general.alignment", 4096), kv_string("edge_rt.layout", "streaming"),
               encode_string("a.list") + struct.pack("<IIQ", 9, 8, 2) + encode_string("x") + encode_string("yz")]
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(records)) + b"".join(records)
    out = split_kv_records(header, len(records), "mem")
    assert [k for k, _ in out] == ["general.alignment", "edge_rt.layout", "a.list"]
    assert [raw for _, raw in out] == records
    with pytest.raises(ModelFormatError, match="runs past the header"):
        split_kv_records(header[:-1], len(records), "mem")


def test_save_writer(tmp_path):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(None, "llama")
    w.add_uint32("test.value", 7)
    w.add_tensor("t.weight", np.arange(8, dtype=np.float32))
    save_writer(w, tmp_path / "w.gguf")
    g = read_header(tmp_path / "w.gguf")
    assert g.metadata["test.value"] == 7 and [t["name"] for t in g.tensors] == ["t.weight"]
    assert _names(tmp_path) == ["w.gguf"]
