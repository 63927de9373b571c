"""GGUF files from Python: the one place that opens, reads and writes them.

Reading
    * :func:`read_header` -- the header (metadata, tensor infos, data offset) through the C++ parser
      (``edge_rt._core.GGUFFile``), which treats every count, size and offset as hostile. Tensor data
      is never read. Use it wherever a file comes from a user.
    * :func:`read_metadata` -- the metadata alone as a plain dict; the C++ parser when the extension
      is built, else the ``gguf`` package, converted to the same shape.
    * :func:`open_tensors` / :func:`tensor_array` -- the ``gguf`` package's memory-mapped reader, for
      the toolchain and tools that need tensor *data* (quantizing a master, reading a router).

Header bytes
    :func:`split_kv_records`, :func:`encode_string`, :func:`kv_uint32`, :func:`kv_string` and
    :func:`encode_tensor_info` read and write the raw records of a GGUF header (little-endian GGUF v2/v3
    layout), for writers that copy metadata records byte for byte (``edge_rt.convert``).

Writing
    :func:`atomic_write` (from ``edge_rt.atomic_io``, the one helper for every output file) -- a
    temporary file with an unpredictable name in the destination's folder, created exclusively without
    following symlinks, fsynced, then renamed onto the destination; on any failure (ENOSPC,
    KeyboardInterrupt included) the temporary file is removed and an existing destination is left
    untouched. :func:`save_writer` does that for a ``gguf.GGUFWriter`` filled in memory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

from .atomic_io import atomic_write
from .errors import ModelFormatError, ModelIOError

__all__ = [
    "PathLike",
    "existing_file",
    "read_header",
    "read_metadata",
    "read_metadata_with_gguf_package",
    "open_tensors",
    "tensor_array",
    "split_kv_records",
    "encode_string",
    "kv_uint32",
    "kv_string",
    "encode_tensor_info",
    "atomic_write",
    "save_writer",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Bytes before the metadata: magic "GGUF", uint32 version, uint64 tensor count, uint64 metadata count.
HEADER_PREFIX_BYTES = 24

# GGUF value type ids and the encoded size of the fixed-size ones.
_T_UINT32, _T_STRING, _T_ARRAY = 4, 8, 9
_FIXED_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


# ---- reading -------------------------------------------------------------------------------------

def existing_file(path: PathLike, op: str) -> Path:
    """``path`` as a Path (``~`` expanded); ModelIOError (prefixed with ``op``) when it is missing or a
    directory."""
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise ModelIOError(f"{op} model file not found: {p}")
    if p.is_dir():
        raise ModelIOError(f"{op} model path is a directory, not a GGUF file: {p}")
    return p


def read_header(path: PathLike, op: str = "[gguf]") -> Any:
    """The parsed header of the GGUF ``path`` (an ``edge_rt._core.GGUFFile``: ``metadata``,
    ``metadata_types``, ``tensors``, ``version``, ``alignment``, ``data_offset``, ``file_size``).

    Raises ModelIOError (missing file, a directory, unreadable; the message starts with ``op``),
    ModelFormatError naming the defect when the header is not valid GGUF, ImportError when the
    extension is not built.
    """
    from .loading import _core

    p = existing_file(path, op)
    return _core().GGUFFile(str(p))


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Metadata of a GGUF file as a plain dict (key -> int/float/bool/str/list), in file order.

    Uses the C++ reader (``edge_rt._core.GGUFFile``) when the extension is built, else the ``gguf``
    package's GGUFReader (:func:`read_metadata_with_gguf_package`).
    """
    try:
        from . import _core  # type: ignore[attr-defined]
    except ImportError:
        _core = None
    if _core is not None and hasattr(_core, "GGUFFile"):
        return dict(_core.GGUFFile(str(path)).metadata)
    return read_metadata_with_gguf_package(path)


def read_metadata_with_gguf_package(path: PathLike) -> Dict[str, Any]:
    """:func:`read_metadata` through the ``gguf`` package, converted to the shape ``_core`` returns
    (numpy scalars become Python ones). Raises ModelIOError when the file cannot be opened and
    ModelFormatError when it is not valid GGUF or a string is not UTF-8 (naming the key)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path), "r")
    except OSError as e:
        raise ModelIOError(f"[gguf] cannot open '{path}': {e}") from e
    except Exception as e:  # the gguf package raises ValueError & co. on malformed files
        raise ModelFormatError(f"[gguf] '{path}' is not a valid GGUF file: {e}") from e
    md: Dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            value = field.contents()
        except UnicodeDecodeError as e:
            raise ModelFormatError(f"[gguf] key '{key}': string is not valid UTF-8 ({e})") from None
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, list):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        md[key] = value
    return md


def open_tensors(path: PathLike, op: str = "[gguf]") -> Any:
    """A ``gguf.GGUFReader`` over ``path`` (memory-mapped, read-only): ``fields`` and ``tensors`` with
    their data. Raises ModelIOError when the file is missing and ModelFormatError when the ``gguf``
    package cannot parse it; both messages start with ``op``."""
    import gguf

    p = Path(os.fspath(path))
    if not p.exists():
        raise ModelIOError(f"{op} input not found: {p}")
    try:
        return gguf.GGUFReader(str(p), "r")
    except Exception as e:  # the gguf package raises ValueError/struct errors on garbage
        raise ModelFormatError(f"{op} {p} is not a readable GGUF file: {e}") from e


def tensor_array(t: Any, dtype: Any = np.float32) -> np.ndarray:
    """The values of a ``GGUFReader`` tensor ``t``, dequantized, as ``dtype`` in numpy layout (GGUF
    ``ne`` reversed: ``(n_expert?, n_rows, n_cols)``)."""
    import gguf.quants

    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=dtype).reshape(shape)


# ---- header bytes --------------------------------------------------------------------------------

def encode_string(s: str) -> bytes:
    """A GGUF string: uint64 byte length, then the UTF-8 bytes (surrogate escapes restored)."""
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b


def kv_uint32(key: str, value: int) -> bytes:
    """One metadata record ``key`` = UINT32 ``value``."""
    return encode_string(key) + struct.pack("<II", _T_UINT32, value)


def kv_string(key: str, value: str) -> bytes:
    """One metadata record ``key`` = STRING ``value``."""
    return encode_string(key) + struct.pack("<I", _T_STRING) + encode_string(value)


def encode_tensor_info(t: Mapping[str, Any], rel_offset: int) -> bytes:
    """One tensor info record: name, dims, ``shape`` (GGUF ``ne``), ``type_id``, and the offset of the
    tensor's data relative to the data section."""
    shape = [int(d) for d in t["shape"]]
    return (encode_string(t["name"]) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
            + struct.pack("<IQ", int(t["type_id"]), rel_offset))


def split_kv_records(header: bytes, n_kv: int, where: str, op: str = "[convert]") -> List[Tuple[str, bytes]]:
    """Split the metadata section of ``header`` (the file's first bytes, metadata from byte 24 on) into
    ``(key, raw record)`` pairs, each raw record being the exact bytes of key + type + value.

    Raises ModelFormatError (``op`` and ``where`` in the message) when a record runs past ``header``
    or has an unknown value type; nested arrays are refused as by the C++ parser.
    """
    pos = HEADER_PREFIX_BYTES

    def need(n: int) -> None:
        if pos + n > len(header):
            raise ModelFormatError(f"{op} {where}: metadata runs past the header")

    def skip_value(t: int, depth: int = 0) -> None:
        nonlocal pos
        if t in _FIXED_SIZE:
            need(_FIXED_SIZE[t])
            pos += _FIXED_SIZE[t]
        elif t == _T_STRING:
            need(8)
            (n,) = struct.unpack_from("<Q", header, pos)
            need(8 + n)
            pos += 8 + n
        elif t == _T_ARRAY and depth == 0:
            need(12)
            et, n = struct.unpack_from("<IQ", header, pos)
            pos += 12
            if et in _FIXED_SIZE:
                need(n * _FIXED_SIZE[et])
                pos += n * _FIXED_SIZE[et]
            else:
                for _ in range(n):
                    skip_value(et, depth + 1)
        else:
            raise ModelFormatError(f"{op} {where}: unsupported metadata value type {t}")

    out: List[Tuple[str, bytes]] = []
    for _ in range(n_kv):
        start = pos
        need(8)
        (klen,) = struct.unpack_from("<Q", header, pos)
        need(8 + klen + 4)
        key = header[pos + 8:pos + 8 + klen].decode("utf-8", "surrogateescape")
        (t,) = struct.unpack_from("<I", header, pos + 8 + klen)
        pos += 8 + klen + 4
        skip_value(t)
        out.append((key, header[start:pos]))
    return out


# ---- writing -------------------------------------------------------------------------------------

def save_writer(writer: Any, dest: PathLike) -> None:
    """Write a ``gguf.GGUFWriter`` made without a path (``GGUFWriter(None, arch)``) and filled in memory
    (metadata, ``add_tensor``) to ``dest`` through :func:`atomic_write`; the writer is closed either way."""
    with atomic_write(dest) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
