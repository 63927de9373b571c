"""Hostile GGUF inputs: every malformed file must raise a specific edge_rt exception naming the field.

Two sections:
  * reader level: byte-level files (tests/gguf_bytes.py) opened with edge_rt._core.GGUFFile;
  * model level: well-formed GGUFs (written with the ``gguf`` package) whose content contradicts
    itself, loaded with edge_rt.load().
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from edge_rt import _core as core  # a broken build must fail these tests, not skip them
from edge_rt.errors import (
    ModelFormatError,
    ModelIOError,
    UnsupportedArchitectureError,
    UnsupportedTypeError,
)

from gguf_bytes import (
    ARRAY,
    BOOL,
    F32,
    FLOAT32,
    KV,
    Q4_K,
    Q8_0,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    GGUFBytes,
    Tensor,
    gguf_string,
    minimal_valid,
)
from vocab_data import unavailable_reason, vocab_dir, vocab_files


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def open_gguf(path: str):
    return core.GGUFFile(path)


# ---------------------------------------------------------------------------------------------------
# Reader level: a valid file first, so the hostile cases below are known to differ only in the defect.
# ---------------------------------------------------------------------------------------------------


def test_valid_file_roundtrip(tmp_path):
    g = minimal_valid()
    data = g.build()
    f = open_gguf(write(tmp_path, data))
    assert f.version == 3
    assert f.file_size == len(data)
    assert f.alignment == 32
    assert f.data_offset == g.marks["data"]
    md = f.metadata
    assert md["general.architecture"] == "llama"
    assert md["llama.block_count"] == 1
    assert md["some.flag"] is True
    assert md["some.float"] == 0.5
    assert md["some.u64"] == 2**64 - 1
    assert md["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "</s>", "hello"]
    assert md["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0, -3.0]
    assert md["tokenizer.ggml.token_type"] == [2, 3, 3, 1]
    assert md["some.bools"] == [True, False] and all(type(b) is bool for b in md["some.bools"])
    assert list(md) == [kv.key for kv in g.kvs]  # file order
    assert f.metadata is md  # cached
    types = f.metadata_types
    assert types["general.alignment"] == "UINT32"
    assert types["tokenizer.ggml.tokens"] == "ARRAY[STRING]"
    assert types["tokenizer.ggml.token_type"] == "ARRAY[INT32]"
    assert types["some.u64"] == "UINT64"

    ts = f.tensors
    assert [t["name"] for t in ts] == ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"]
    emb = f.tensor("token_embd.weight")
    assert emb == ts[0]
    assert emb["type"] == "Q8_0" and emb["type_id"] == 8
    assert emb["shape"] == [64, 4]
    assert emb["n_elements"] == 256 and emb["n_bytes"] == 8 * 34
    assert emb["offset"] == f.data_offset
    q = f.tensor("blk.0.attn_q.weight")
    assert q["type"] == "Q4_K" and q["n_bytes"] == 2 * 144 and q["offset"] % 32 == 0
    assert q["offset"] + q["n_bytes"] <= f.file_size
    with pytest.raises(KeyError):
        f.tensor("nope")
    assert f.path.endswith("m.gguf")
    assert "GGUFFile" in repr(f)


def test_accepts_pathlike_and_v2(tmp_path):
    g = minimal_valid()
    g.version = 2
    p = Path(write(tmp_path, g.build()))
    f = core.GGUFFile(p)
    assert f.version == 2


def test_invalid_utf8_is_kept_not_fatal(tmp_path):
    g = GGUFBytes()
    g.add("tokenizer.ggml.tokens", ARRAY, [b"\xff\xfe", "ok"], STRING)
    f = open_gguf(write(tmp_path, g.build()))
    toks = f.metadata["tokenizer.ggml.tokens"]
    assert toks[0].encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert toks[1] == "ok"


@pytest.mark.skipif(vocab_dir() is None, reason=unavailable_reason())
@pytest.mark.parametrize("name", vocab_files() or ["none"])
def test_real_vocab_files_parse(name):
    """Every vocabulary llama.cpp ships (tests/vocab_data.py) parses."""
    f = open_gguf(str(vocab_dir() / name))
    tokens = f.metadata["tokenizer.ggml.tokens"]
    assert len(tokens) > 1000
    assert f.metadata_types["tokenizer.ggml.tokens"] == "ARRAY[STRING]"
    assert isinstance(f.metadata["tokenizer.ggml.model"], str)


# ------------------------------- hostile cases (one defect each) ---------------------------------


def _kv_file(*kvs: KV, **kw) -> GGUFBytes:
    g = GGUFBytes(**kw)
    g.kvs.extend(kvs)
    return g


def _tensor_file(*tensors: Tensor, extra_kvs=(), **kw) -> GGUFBytes:
    g = GGUFBytes(**kw)
    g.kvs.extend(extra_kvs)
    g.tensors.extend(tensors)
    return g


def _huge_string_element() -> GGUFBytes:
    # Array of 2 strings, the second one claims 2^60 bytes.
    raw = struct.pack("<IQ", STRING, 2) + gguf_string("a") + struct.pack("<Q", 2**60) + b"xyz"
    return _kv_file(KV("tokenizer.ggml.merges", ARRAY, raw=raw))


def _short_array() -> GGUFBytes:
    # Claims 100 UINT32 elements but holds 2; a later key makes the file long enough for the count
    # check, so the file runs out in the middle of the elements or of the next key.
    raw = struct.pack("<IQ", UINT32, 100) + struct.pack("<II", 1, 2)
    return _kv_file(KV("some.array", ARRAY, raw=raw))


def _overlap() -> GGUFBytes:
    return _tensor_file(Tensor("a.weight", [64], F32, offset=0), Tensor("b.weight", [64], F32, offset=128))


def _negative_dim() -> GGUFBytes:
    t = Tensor("neg.weight", [32, -1], F32, offset=0)
    t.ne_signed = True
    return _tensor_file(t)


HOSTILE = {
    # id: (builder, exception, regex the message must match)
    "empty_file": (lambda: b"", ModelFormatError, r"\[gguf\] header: .*empty"),
    "bad_magic": (lambda: GGUFBytes(magic=b"GGML"), ModelFormatError, r"header: bad magic 'GGML'"),
    "magic_binary": (lambda: GGUFBytes(magic=b"\x00\x01\x02\x03"), ModelFormatError, r"header: bad magic '\\x00"),
    "version_1": (lambda: GGUFBytes(version=1), ModelFormatError, r"header: unsupported version 1\b"),
    "version_4": (lambda: GGUFBytes(version=4), ModelFormatError, r"header: unsupported version 4\b"),
    "version_big_endian": (lambda: GGUFBytes(version=0x03000000), ModelFormatError, r"header: .*big-endian"),
    "huge_n_tensors": (lambda: GGUFBytes(n_tensors=2**62), ModelFormatError, r"header: tensor count \d+"),
    "huge_n_kv": (lambda: GGUFBytes(n_kv=2**63 + 5), ModelFormatError, r"header: metadata key/value count \d+"),
    "n_kv_more_than_present": (lambda: _kv_file(KV("a.b", UINT32, 1), KV("c.d", STRING, "x" * 64), n_kv=3),
                               ModelFormatError, r"key #2: (file truncated|empty key name)"),
    "huge_key_length": (lambda: b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40) + b"\0" * 40,
                        ModelFormatError, r"key #0: key name length 1099511627776 exceeds"),
    "huge_string_value": (lambda: _kv_file(KV("general.name", STRING, raw=struct.pack("<Q", 2**63) + b"abc")),
                          ModelFormatError, r"key 'general.name': value length \d+ exceeds the bytes left"),
    "huge_array_length": (lambda: _kv_file(KV("tokenizer.ggml.scores", ARRAY,
                                              raw=struct.pack("<IQ", FLOAT32, 2**61) + b"\0" * 32)),
                          ModelFormatError, r"key 'tokenizer.ggml.scores': array length \d+ of FLOAT32 exceeds"),
    "huge_string_element": (_huge_string_element, ModelFormatError,
                            r"key 'tokenizer.ggml.merges': array element 1: string length \d+ exceeds"),
    "short_array": (_short_array, ModelFormatError, r"key 'some.array': array length 100 of UINT32 exceeds"),
    "nested_array": (lambda: _kv_file(KV("nested", ARRAY, raw=struct.pack("<IQ", ARRAY, 1)
                                          + struct.pack("<IQ", UINT8, 1) + b"\x01")),
                     ModelFormatError, r"key 'nested': nested arrays"),
    "unknown_value_type": (lambda: _kv_file(KV("weird.key", 13, raw=b"\0" * 8)), ModelFormatError,
                           r"key 'weird.key': unknown value type 13"),
    "unknown_array_elem_type": (lambda: _kv_file(KV("weird.arr", ARRAY, raw=struct.pack("<IQ", 99, 1) + b"\0" * 8)),
                                ModelFormatError, r"key 'weird.arr': unknown array element type 99"),
    "duplicate_keys": (lambda: _kv_file(KV("llama.block_count", UINT32, 1), KV("llama.block_count", UINT32, 2)),
                       ModelFormatError, r"key 'llama.block_count': duplicate key"),
    "bool_not_0_or_1": (lambda: _kv_file(KV("some.flag", BOOL, raw=b"\x02")), ModelFormatError,
                        r"key 'some.flag': bool value 2"),
    "empty_key": (lambda: _kv_file(KV("", UINT32, 1)), ModelFormatError, r"key #0: empty key name"),
    "alignment_not_pow2": (lambda: _kv_file(KV("general.alignment", UINT32, 48)), ModelFormatError,
                           r"key 'general.alignment': alignment 48 is not a power of two"),
    "alignment_zero": (lambda: _kv_file(KV("general.alignment", UINT32, 0)), ModelFormatError,
                       r"key 'general.alignment': alignment 0 "),
    # below the spec's multiple of 8, F32 data could sit at addresses float loads may not use
    "alignment_four": (lambda: _kv_file(KV("general.alignment", UINT32, 4)), ModelFormatError,
                       r"key 'general.alignment': alignment 4 is not a power of two in \[8, "),
    "alignment_too_big": (lambda: _kv_file(KV("general.alignment", UINT32, 2 << 20)), ModelFormatError,
                          r"key 'general.alignment': alignment 2097152 "),
    "alignment_wrong_type": (lambda: _kv_file(KV("general.alignment", UINT64, 32)), ModelFormatError,
                             r"key 'general.alignment': alignment must be a UINT32, found UINT64"),
    "alignment_string": (lambda: _kv_file(KV("general.alignment", STRING, "32")), ModelFormatError,
                         r"key 'general.alignment': .*found STRING"),
    "n_dims_0": (lambda: _tensor_file(Tensor("blk.0.attn_q.weight", [], F32, offset=0)), ModelFormatError,
                 r"tensor 'blk.0.attn_q.weight': n_dims 0 outside 1..4"),
    "n_dims_5": (lambda: _tensor_file(Tensor("blk.0.attn_k.weight", [1, 1, 1, 1, 1], F32)), ModelFormatError,
                 r"tensor 'blk.0.attn_k.weight': n_dims 5 outside 1..4"),
    "zero_dim": (lambda: _tensor_file(Tensor("output.weight", [64, 0], F32, offset=0)), ModelFormatError,
                 r"tensor 'output.weight': dimension ne\[1\] = 0"),
    "negative_dim": (_negative_dim, ModelFormatError, r"tensor 'neg.weight': dimension ne\[1\] = -1"),
    "dims_overflow": (lambda: _tensor_file(Tensor("big.weight", [2**32, 2**32], F32, offset=0), data_size=64),
                      ModelFormatError, r"tensor 'big.weight': element count overflows"),
    "bytes_overflow": (lambda: _tensor_file(Tensor("big.weight", [2**62], F32, offset=0), data_size=64),
                       ModelFormatError, r"tensor 'big.weight': data size overflows"),
    "unknown_tensor_type": (lambda: _tensor_file(Tensor("x.weight", [32], 99, offset=0)), ModelFormatError,
                            r"tensor 'x.weight': unknown ggml type id 99"),
    "retired_tensor_type": (lambda: _tensor_file(Tensor("x.weight", [32], 4, offset=0)), ModelFormatError,
                            r"tensor 'x.weight': unknown ggml type id 4"),
    "ne0_not_block_multiple": (lambda: _tensor_file(Tensor("blk.0.ffn_up.weight", [100, 2], Q4_K, offset=0)),
                               ModelFormatError,
                               r"tensor 'blk.0.ffn_up.weight': ne\[0\] = 100 is not a multiple of the Q4_K block "
                               r"size 256"),
    "ne0_not_q8_multiple": (lambda: _tensor_file(Tensor("tok.weight", [48], Q8_0, offset=0)), ModelFormatError,
                            r"tensor 'tok.weight': ne\[0\] = 48 .* Q8_0 block size 32"),
    "offset_past_eof": (lambda: _tensor_file(Tensor("a.weight", [8], F32, offset=4096), data_size=64), ModelFormatError,
                        r"tensor 'a.weight': data range .* past end of file"),
    "offset_wraps_u64": (lambda: _tensor_file(Tensor("a.weight", [8], F32, offset=2**64 - 32), data_size=64),
                         ModelFormatError, r"tensor 'a.weight': data range .* past end of file"),
    "data_cut_short": (lambda: _tensor_file(Tensor("a.weight", [64], F32), Tensor("b.weight", [64], F32),
                                            data_extra=-8),
                       ModelFormatError, r"tensor 'b.weight': data range .* past end of file"),
    "overlapping_ranges": (_overlap, ModelFormatError, r"tensor 'b.weight': data range .* overlaps tensor 'a.weight'"),
    "misaligned_offset": (lambda: _tensor_file(Tensor("a.weight", [8], F32, offset=16)), ModelFormatError,
                          r"tensor 'a.weight': offset 16 is not a multiple of the alignment 32"),
    "misaligned_custom_alignment": (lambda: _tensor_file(Tensor("a.weight", [8], F32, offset=32),
                                                         extra_kvs=[KV("general.alignment", UINT32, 64)], alignment=64),
                                    ModelFormatError, r"tensor 'a.weight': offset 32 .* alignment 64"),
    "duplicate_tensor_names": (lambda: _tensor_file(Tensor("a.weight", [8], F32), Tensor("a.weight", [8], F32)),
                               ModelFormatError, r"tensor 'a.weight': duplicate tensor name"),
    "tensor_name_too_long": (lambda: _tensor_file(Tensor("w" * 300, [8], F32)), ModelFormatError,
                             r"tensor #0: tensor name length 300 exceeds the limit of 256"),
    "tensor_name_empty": (lambda: _tensor_file(Tensor("", [8], F32)), ModelFormatError,
                          r"tensor #0: empty tensor name"),
    "n_tensors_more_than_present": (lambda: _tensor_file(Tensor("a.weight", [8], F32), n_tensors=2, data_extra=64),
                                    ModelFormatError, r"tensor #1: "),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_reader(tmp_path, case):
    builder, exc, pattern = HOSTILE[case]
    built = builder()
    data = built.build() if isinstance(built, GGUFBytes) else built
    path = write(tmp_path, data)
    with pytest.raises(exc) as info:
        open_gguf(path)
    msg = str(info.value)
    assert msg.startswith("[gguf] "), msg
    assert re.search(pattern, msg), f"{case}: message {msg!r} does not match {pattern!r}"


def test_missing_file(tmp_path):
    path = str(tmp_path / "no-such-model.gguf")
    with pytest.raises(ModelIOError) as info:
        open_gguf(path)
    assert "no-such-model.gguf" in str(info.value)
    assert isinstance(info.value, OSError)


def test_directory_path(tmp_path):
    with pytest.raises(ModelIOError) as info:
        open_gguf(str(tmp_path))
    assert "directory" in str(info.value).lower()


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read mode-000 files")
    p = Path(write(tmp_path, minimal_valid().build()))
    p.chmod(0)
    with pytest.raises(ModelIOError, match="Permission denied"):
        open_gguf(str(p))


# ------------------------------- truncation at every section --------------------------------------


def _truncation_points():
    """(label, cut, regex naming the section) for cuts across a valid file.

    The header bounds n_kv and n_tensors by the bytes left, so an early cut is reported by the header
    check (the counts cannot fit) rather than inside the part that was cut; the regex follows that rule.
    """
    g = minimal_valid()
    data = g.build()
    m = g.marks
    n_kv, n_t = len(g.kvs), len(g.tensors)
    points = []

    def expect(cut: int, specific: str) -> str:
        left = cut - 24
        if cut < 24 or left < n_kv * 14 or left < n_t * 33:
            return r"header: "  # counts checked against the bytes left right after the header
        if cut >= m["ti0"] and cut - m["ti0"] < n_t * 33:
            return r"header: tensor count \d+ cannot fit .* after the metadata"
        return specific

    for cut in (1, 3, 4, 7, 8, 15, 16, 23):
        points.append((f"header@{cut}", cut, r"header: "))
    for k, kv in enumerate(g.kvs):
        start, vstart = m[f"kv{k}"], m[f"kv{k}_value"]
        points.append((f"kv{k}-keylen", start + 3, expect(start + 3, rf"key #{k}: ")))
        points.append((f"kv{k}-keyname", start + 9, expect(start + 9, rf"key #{k}: ")))
        points.append((f"kv{k}-type", vstart - 2, expect(vstart - 2, rf"key '{re.escape(kv.key)}': ")))
        points.append((f"kv{k}-value", vstart + 1, expect(vstart + 1, rf"key '{re.escape(kv.key)}': ")))
        end = m[f"kv{k + 1}"] if k + 1 < n_kv else m["ti0"]
        points.append((f"kv{k}-value-end", end - 1, expect(end - 1, rf"key '{re.escape(kv.key)}': ")))
    for k, t in enumerate(g.tensors):
        start = m[f"ti{k}"]
        end = m[f"ti{k + 1}"] if k + 1 < n_t else m["ti_end"]
        name_end = start + 8 + len(t.name)
        points.append((f"ti{k}-name", start + 10, expect(start + 10, rf"tensor #{k}: ")))
        points.append((f"ti{k}-ndims", name_end + 2, expect(name_end + 2, rf"tensor '{re.escape(t.name)}': ")))
        points.append((f"ti{k}-dims", name_end + 6, expect(name_end + 6, rf"tensor '{re.escape(t.name)}': ")))
        points.append((f"ti{k}-offset", end - 1, expect(end - 1, rf"tensor '{re.escape(t.name)}': ")))
    last = g.tensors[-1].name
    if m["data"] > m["ti_end"]:
        points.append(("padding", m["data"] - 1, r"tensor '.*': data range .* past end of file"))
    points.append(("data-start", m["data"], r"tensor '.*': data range .* past end of file"))
    points.append(("data-mid", (m["data"] + len(data)) // 2, r"tensor '.*': data range .* past end of file"))
    points.append(("data-last-byte", len(data) - 1, rf"tensor '{re.escape(last)}': data range .* past end of file"))
    return data, points


_TRUNC_DATA, _TRUNC_POINTS = _truncation_points()


@pytest.mark.parametrize("label,cut,pattern", _TRUNC_POINTS, ids=[p[0] for p in _TRUNC_POINTS])
def test_truncation(tmp_path, label, cut, pattern):
    assert 0 < cut < len(_TRUNC_DATA)
    path = write(tmp_path, _TRUNC_DATA[:cut])
    with pytest.raises(ModelFormatError) as info:
        open_gguf(path)
    msg = str(info.value)
    assert re.search(pattern, msg), f"cut {label}@{cut}: {msg!r} does not match {pattern!r}"
    assert re.search(r"truncated|exceeds|cannot fit|past end of file", msg), msg


def test_truncation_every_byte(tmp_path):
    """Every prefix of a valid file is rejected as ModelFormatError (no crash, no other exception)."""
    data = _TRUNC_DATA
    path = tmp_path / "cut.gguf"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match=r"^\[gguf\] (header|key|tensor)[ :]"):
            open_gguf(str(path))
    path.write_bytes(data)
    open_gguf(str(path))


# ---------------------------------------------------------------------------------------------------
# Model level: well-formed GGUF, contradictory content, loaded through edge_rt.load().
# These need the engine (edge_rt.load); they are written against its contract.
# ---------------------------------------------------------------------------------------------------

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_VOCAB, N_LAYER = 64, 2, 2, 128, 32, 1
DELETE = object()


_TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(16)] + [
    "\u2581", "\u2581a", "\u2581b", "a", "b", "c", "d", "e", "\u2581the", "t", "h", "\u2581t", "he"]


def _llama_metadata(arch: str = "llama") -> dict:
    from gguf import GGUFValueType as T

    tokens = list(_TOKENS)
    assert len(tokens) == N_VOCAB
    scores = [0.0, 0.0, 0.0] + [0.0] * 16 + [-float(i) for i in range(N_VOCAB - 19)]
    token_type = [2, 3, 3] + [6] * 16 + [1] * (N_VOCAB - 19)
    a = arch
    return {
        "general.architecture": (T.STRING, arch, None),
        "general.name": (T.STRING, "hostile-test", None),
        f"{a}.context_length": (T.UINT32, 128, None),
        f"{a}.embedding_length": (T.UINT32, N_EMBD, None),
        f"{a}.block_count": (T.UINT32, N_LAYER, None),
        f"{a}.feed_forward_length": (T.UINT32, N_FF, None),
        f"{a}.attention.head_count": (T.UINT32, N_HEAD, None),
        f"{a}.attention.head_count_kv": (T.UINT32, N_HEAD_KV, None),
        f"{a}.rope.dimension_count": (T.UINT32, N_EMBD // N_HEAD, None),
        f"{a}.rope.freq_base": (T.FLOAT32, 10000.0, None),
        f"{a}.attention.layer_norm_rms_epsilon": (T.FLOAT32, 1e-5, None),
        "tokenizer.ggml.model": (T.STRING, "llama", None),
        "tokenizer.ggml.tokens": (T.ARRAY, tokens, T.STRING),
        "tokenizer.ggml.scores": (T.ARRAY, scores, T.FLOAT32),
        "tokenizer.ggml.token_type": (T.ARRAY, token_type, T.INT32),
        "tokenizer.ggml.bos_token_id": (T.UINT32, 1, None),
        "tokenizer.ggml.eos_token_id": (T.UINT32, 2, None),
        "tokenizer.ggml.unknown_token_id": (T.UINT32, 0, None),
    }


def _llama_tensors() -> dict:
    """numpy arrays in numpy order (outermost first): ggml ne is the reverse."""
    import numpy as np

    rng = np.random.default_rng(0)
    kv_dim = N_EMBD // N_HEAD * N_HEAD_KV

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {
        "token_embd.weight": w(N_VOCAB, N_EMBD),
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "output.weight": w(N_VOCAB, N_EMBD),
    }
    for i in range(N_LAYER):
        t.update({
            f"blk.{i}.attn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"blk.{i}.attn_q.weight": w(N_EMBD, N_EMBD),
            f"blk.{i}.attn_k.weight": w(kv_dim, N_EMBD),
            f"blk.{i}.attn_v.weight": w(kv_dim, N_EMBD),
            f"blk.{i}.attn_output.weight": w(N_EMBD, N_EMBD),
            f"blk.{i}.ffn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": w(N_FF, N_EMBD),
            f"blk.{i}.ffn_up.weight": w(N_FF, N_EMBD),
            f"blk.{i}.ffn_down.weight": w(N_EMBD, N_FF),
        })
    return t


def _phi3_tensors(changes: dict | None = None) -> dict:
    """Overrides (for write_llama_gguf) that turn the tiny llama's tensors into phi3's: q, k, v rows
    fused in attn_qkv, gate then up rows in ffn_up, no attn_q/k/v or ffn_gate; then `changes`."""
    import numpy as np

    rng = np.random.default_rng(1)
    kv_dim = N_EMBD // N_HEAD * N_HEAD_KV
    t: dict = {}
    for i in range(N_LAYER):
        b = f"blk.{i}."
        t.update({b + "attn_q.weight": DELETE, b + "attn_k.weight": DELETE, b + "attn_v.weight": DELETE,
                  b + "ffn_gate.weight": DELETE,
                  b + "attn_qkv.weight": (rng.standard_normal((N_EMBD + 2 * kv_dim, N_EMBD)) * 0.02).astype(np.float32),
                  b + "ffn_up.weight": (rng.standard_normal((2 * N_FF, N_EMBD)) * 0.02).astype(np.float32)})
    t.update(changes or {})
    return t


def write_llama_gguf(path: Path, metadata: dict | None = None, tensors: dict | None = None,
                     arch: str = "llama", raw_dtypes: dict | None = None) -> str:
    """Writes a tiny llama GGUF; `metadata`/`tensors` override or (value DELETE) remove entries."""
    import gguf

    md = _llama_metadata(arch)
    for k, v in (metadata or {}).items():
        if v is DELETE:
            md.pop(k, None)
        else:
            md[k] = v
    ts = _llama_tensors()
    for k, v in (tensors or {}).items():
        if v is DELETE:
            ts.pop(k, None)
        else:
            ts[k] = v
    w = gguf.GGUFWriter(str(path), arch)
    for key, (vtype, value, sub) in md.items():
        if key == "general.architecture" and any(key in kv for kv in w.kv_data):
            continue  # the writer already recorded `arch` under this key
        w.add_key_value(key, value, vtype, sub_type=sub)
    for name, arr in ts.items():
        rd = (raw_dtypes or {}).get(name)
        w.add_tensor(name, arr, raw_dtype=rd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _load(path: str):
    import edge_rt

    return edge_rt.load(path)


def test_model_baseline_loads(tmp_path):
    """The unmodified tiny llama must load, so each case below fails only for its own defect."""
    path = write_llama_gguf(tmp_path / "ok.gguf")
    core.GGUFFile(path)  # reader accepts what the gguf package writes
    model = _load(path)
    assert model is not None


N_EXPERT = 2


def _moe_tensors() -> dict:
    """The tiny llama's FFN replaced by Mixtral-style experts (numpy order, ggml ne reversed)."""
    import numpy as np

    rng = np.random.default_rng(2)
    t: dict = {}
    for i in range(N_LAYER):
        t.update({f"blk.{i}.ffn_gate.weight": DELETE, f"blk.{i}.ffn_up.weight": DELETE,
                  f"blk.{i}.ffn_down.weight": DELETE,
                  f"blk.{i}.ffn_gate_inp.weight": rng.standard_normal((N_EXPERT, N_EMBD)).astype(np.float32),
                  f"blk.{i}.ffn_gate_exps.weight": rng.standard_normal((N_EXPERT, N_FF, N_EMBD)).astype(np.float32),
                  f"blk.{i}.ffn_up_exps.weight": rng.standard_normal((N_EXPERT, N_FF, N_EMBD)).astype(np.float32),
                  f"blk.{i}.ffn_down_exps.weight": rng.standard_normal((N_EXPERT, N_EMBD, N_FF)).astype(np.float32)})
    return t


def test_moe_baseline_generates(tmp_path):
    """The Mixtral-style variant the MoE cases below start from loads and runs."""
    model = _load(write_llama_gguf(tmp_path / "moe.gguf", metadata=_moe_metadata(), tensors=_moe_tensors()))
    assert model.info()["n_expert"] == N_EXPERT
    assert isinstance(model.generate("the cab", max_tokens=2), str)


def test_phi3_baseline_loads(tmp_path):
    """The tiny phi3 (the llama one with fused tensors) loads and runs, so each phi3 case below fails
    only for its own defect."""
    import numpy as np

    model = _load(write_llama_gguf(tmp_path / "phi3.gguf", arch="phi3", tensors=_phi3_tensors()))
    assert np.all(np.isfinite(np.asarray(model.logits([1, 20, 21]))))


def _gemma3(metadata: dict | None = None, tensors: dict | None = None) -> dict:
    """write_llama_gguf's arguments for a tiny gemma3 (the llama's tensors plus q/k norms and the
    post-attention / post-FFN norms, a sliding window of 4), with `metadata` / `tensors` applied on top."""
    import numpy as np

    hd = N_EMBD // N_HEAD
    ts: dict = {}
    for i in range(N_LAYER):
        ts.update({f"blk.{i}.attn_q_norm.weight": np.ones(hd, np.float32),
                   f"blk.{i}.attn_k_norm.weight": np.ones(hd, np.float32),
                   f"blk.{i}.post_attention_norm.weight": np.ones(N_EMBD, np.float32),
                   f"blk.{i}.post_ffw_norm.weight": np.ones(N_EMBD, np.float32)})
    md = {"gemma3.attention.sliding_window": _md("UINT32", 4), "gemma3.rope.freq_base_swa": _md("FLOAT32", 1e4)}
    return dict(arch="gemma3", metadata={**md, **(metadata or {})}, tensors={**ts, **(tensors or {})})


def test_gemma3_baseline_generates(tmp_path):
    """The gemma3 variant the gemma3 cases below start from loads and runs."""
    model = _load(write_llama_gguf(tmp_path / "gemma3.gguf", **_gemma3()))
    assert isinstance(model.generate("the cab", max_tokens=2), str)


def _md(vtype_name: str, value, sub: str | None = None):
    from gguf import GGUFValueType as T

    return (getattr(T, vtype_name), value, getattr(T, sub) if sub else None)


def _moe_metadata() -> dict:
    return {"llama.expert_count": _md("UINT32", N_EXPERT), "llama.expert_used_count": _md("UINT32", 1)}


def _model_cases():
    import numpy as np

    rng = np.random.default_rng(1)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "zero_heads": (dict(metadata={"llama.attention.head_count": _md("UINT32", 0)}),
                       ModelFormatError, r"attention\.head_count"),
        "zero_kv_heads": (dict(metadata={"llama.attention.head_count_kv": _md("UINT32", 0)}),
                          ModelFormatError, r"attention\.head_count_kv"),
        "heads_not_divisible_by_kv_heads": (
            dict(metadata={"llama.attention.head_count": _md("UINT32", 4),
                           "llama.attention.head_count_kv": _md("UINT32", 3)}),
            ModelFormatError, r"attention\.head_count"),
        "embd_not_divisible_by_heads": (dict(metadata={"llama.attention.head_count": _md("UINT32", 3),
                                                       "llama.attention.head_count_kv": _md("UINT32", 3)}),
                                        ModelFormatError, r"attention\.head_count|embedding_length"),
        "zero_layers": (dict(metadata={"llama.block_count": _md("UINT32", 0)}), ModelFormatError, r"block_count"),
        "missing_embedding_length": (dict(metadata={"llama.embedding_length": DELETE}), ModelFormatError,
                                     r"embedding_length"),
        "head_count_wrong_type": (dict(metadata={"llama.attention.head_count": _md("STRING", "two")}),
                                  ModelFormatError, r"attention\.head_count"),
        "attn_q_shape_mismatch": (dict(tensors={"blk.0.attn_q.weight": w(32, N_EMBD)}), ModelFormatError,
                                  r"blk\.0\.attn_q\.weight"),
        "ffn_down_shape_mismatch": (dict(tensors={"blk.0.ffn_down.weight": w(N_FF, N_EMBD)}), ModelFormatError,
                                    r"blk\.0\.ffn_down\.weight"),
        "token_embd_vocab_mismatch": (dict(tensors={"token_embd.weight": w(N_VOCAB + 8, N_EMBD)}),
                                      ModelFormatError, r"token_embd\.weight|tokenizer\.ggml\.tokens"),
        "missing_ffn_gate": (dict(tensors={"blk.0.ffn_gate.weight": DELETE}), ModelFormatError,
                             r"blk\.0\.ffn_gate\.weight"),
        "missing_attn_norm": (dict(tensors={"blk.0.attn_norm.weight": DELETE}), ModelFormatError,
                              r"blk\.0\.attn_norm\.weight"),
        "block_count_exceeds_tensors": (dict(metadata={"llama.block_count": _md("UINT32", 2)}), ModelFormatError,
                                        r"blk\.1\."),
        "tokens_as_int32_array": (dict(metadata={"tokenizer.ggml.tokens": _md("ARRAY", list(range(N_VOCAB)), "INT32")}),
                                  ModelFormatError, r"tokenizer\.ggml\.tokens"),
        "tokens_as_string": (dict(metadata={"tokenizer.ggml.tokens": _md("STRING", "abc")}), ModelFormatError,
                             r"tokenizer\.ggml\.tokens"),
        "scores_as_strings": (dict(metadata={"tokenizer.ggml.scores": _md("ARRAY", ["x"] * N_VOCAB, "STRING")}),
                              ModelFormatError, r"tokenizer\.ggml\.scores"),
        "token_type_as_floats": (dict(metadata={"tokenizer.ggml.token_type": _md("ARRAY", [1.0] * N_VOCAB, "FLOAT32")}),
                                 ModelFormatError, r"tokenizer\.ggml\.token_type"),
        "scores_length_mismatch": (dict(metadata={"tokenizer.ggml.scores": _md("ARRAY", [0.0] * 5, "FLOAT32")}),
                                   ModelFormatError, r"tokenizer\.ggml\.scores"),
        "bos_out_of_range": (dict(metadata={"tokenizer.ggml.bos_token_id": _md("UINT32", 10_000)}),
                             ModelFormatError, r"tokenizer\.ggml\.bos_token_id"),
        "unknown_architecture": (dict(arch="mamba9000"), UnsupportedArchitectureError, r"mamba9000.*llama"),
        # token text that is not UTF-8: loaded, then raised UnicodeEncodeError while tokenizing/detokenizing
        "token_not_utf8": (dict(metadata={"tokenizer.ggml.tokens": _md("ARRAY", _TOKENS[:-1] + [b"h\xff\xfe"],
                                                                       "STRING")}),
                           ModelFormatError, r"tokenizer\.ggml\.tokens.*entry 31 is not valid UTF-8"),
        # A shared-expert router on a Mixtral-style model: never shape-checked before, while the
        # engine wrote its (file-given) rows into an n-float buffer: a heap overflow on the first eval.
        "shared_expert_without_width": (
            dict(metadata=_moe_metadata(),
                 tensors={**_moe_tensors(), "blk.0.ffn_gate_inp_shexp.weight": w(4096, N_EMBD)}),
            ModelFormatError, r"blk\.0\.ffn_gate_inp_shexp\.weight.*no shared expert"),
        # rope_freqs.weight (Llama 3.1+): n_rot/2 positive F32 divisors, read for llama only (as llama.cpp);
        # it used to be ignored, running every such file with different RoPE angles.
        "rope_freqs_wrong_shape": (dict(tensors={"rope_freqs.weight": w(8)}), ModelFormatError,
                                   r"rope_freqs\.weight.*F32 of shape \[16\]"),
        "rope_freqs_not_positive": (dict(tensors={"rope_freqs.weight": -np.ones(16, np.float32)}), ModelFormatError,
                                    r"rope_freqs\.weight.*positive finite"),
        # gemma3: what llama.cpp's gemma3 loader requires, and its sliding-window keys
        "gemma3_missing_rms_eps": (_gemma3(metadata={"gemma3.attention.layer_norm_rms_epsilon": DELETE}),
                                   ModelFormatError, r"required key 'gemma3\.attention\.layer_norm_rms_epsilon'"),
        "gemma3_missing_post_ffw_norm": (_gemma3(tensors={"blk.0.post_ffw_norm.weight": DELETE}),
                                         ModelFormatError, r"required tensor 'blk\.0\.post_ffw_norm\.weight'"),
        "gemma3_missing_post_attention_norm": (
            _gemma3(tensors={"blk.0.post_attention_norm.weight": DELETE}),
            ModelFormatError, r"required tensor 'blk\.0\.post_attention_norm\.weight'"),
        "gemma3_missing_k_norm": (_gemma3(tensors={"blk.0.attn_k_norm.weight": DELETE}), ModelFormatError,
                                  r"required tensor 'blk\.0\.attn_k_norm\.weight'"),
        "gemma3_swa_pattern_length": (
            _gemma3(metadata={"gemma3.attention.sliding_window_pattern": _md("ARRAY", [True, False], "BOOL")}),
            ModelFormatError, r"sliding_window_pattern': 2 flags for 1 layers"),
        "gemma3_with_experts": (_gemma3(metadata={"gemma3.expert_count": _md("UINT32", 2),
                                                  "gemma3.expert_used_count": _md("UINT32", 1)}),
                                ModelFormatError, r"gemma3\.expert_count': architecture gemma3 has no experts"),
        "gemma3_freq_base_swa_negative": (_gemma3(metadata={"gemma3.rope.freq_base_swa": _md("FLOAT32", -1.0)}),
                                          ModelFormatError, r"gemma3\.rope\.freq_base_swa"),
        "rope_freqs_on_qwen2": (dict(arch="qwen2", tensors={"rope_freqs.weight": np.ones(16, np.float32)}),
                                ModelFormatError, r"rope_freqs\.weight.*llama only, not 'qwen2'"),
        "unsupported_tensor_type": (dict(tensors={"blk.0.attn_q.weight": np.zeros((N_EMBD, N_EMBD), dtype=np.int32)}),
                                    UnsupportedTypeError, r"blk\.0\.attn_q\.weight"),
        # phi3: fused tensors of the wrong shape (q + k + v = 64 + 2 * 64 rows; gate + up = 2 * 128 rows)
        "phi3_qkv_wrong_shape": (dict(arch="phi3", tensors=_phi3_tensors({"blk.0.attn_qkv.weight": w(128, N_EMBD)})),
                                 ModelFormatError, r"'blk\.0\.attn_qkv\.weight': shape \[64, 128\].*\[64, 192\]"),
        "phi3_ffn_up_not_fused": (dict(arch="phi3", tensors=_phi3_tensors({"blk.0.ffn_up.weight": w(N_FF, N_EMBD)})),
                                  ModelFormatError, r"'blk\.0\.ffn_up\.weight': shape \[64, 128\].*\[64, 256\]"),
        "phi3_missing_qkv": (dict(arch="phi3", tensors=_phi3_tensors({"blk.0.attn_qkv.weight": DELETE})),
                             ModelFormatError, r"required tensor 'blk\.0\.attn_qkv\.weight' is missing"),
        "phi3_separate_q": (dict(arch="phi3", tensors=_phi3_tensors({"blk.0.attn_q.weight": w(N_EMBD, N_EMBD)})),
                            ModelFormatError, r"'blk\.0\.attn_q\.weight' is not supported for phi3"),
        "phi3_with_experts": (dict(arch="phi3", tensors=_phi3_tensors(),
                                   metadata={"phi3.expert_count": _md("UINT32", 4),
                                             "phi3.expert_used_count": _md("UINT32", 1)}),
                              ModelFormatError, r"phi3\.expert_count"),
        "phi3_key_length_not_n_embd": (dict(arch="phi3", tensors=_phi3_tensors(),
                                            metadata={"phi3.attention.key_length": _md("UINT32", 16),
                                                      "phi3.attention.value_length": _md("UINT32", 16),
                                                      "phi3.rope.dimension_count": _md("UINT32", 16)}),
                                       ModelFormatError, r"phi3\.attention\.key_length"),
        # RoPE scaling phi3 files may carry: YaRN is not supported; long/short factors come as a pair of
        # n_rot/2 positive F32 tensors; the attention factor must be positive
        "phi3_rope_scaling_yarn": (dict(arch="phi3", tensors=_phi3_tensors(),
                                        metadata={"phi3.rope.scaling.type": _md("STRING", "yarn")}),
                                   ModelFormatError, r"'phi3\.rope\.scaling\.type': 'yarn' is not supported"),
        "phi3_rope_long_without_short": (dict(arch="phi3", tensors=_phi3_tensors({"rope_factors_long.weight":
                                                                                  np.ones(16, np.float32)})),
                                         ModelFormatError, r"'rope_factors_short\.weight' is missing"),
        "phi3_rope_factors_wrong_shape": (
            dict(arch="phi3", tensors=_phi3_tensors({"rope_factors_long.weight": w(8),
                                                     "rope_factors_short.weight": np.ones(16, np.float32)})),
            ModelFormatError, r"'rope_factors_long\.weight' must be F32 of shape \[16\]"),
        # context_length 128 is the original context: any n_ctx selects the long factors
        "phi3_rope_factors_not_positive": (
            dict(arch="phi3", tensors=_phi3_tensors({"rope_factors_long.weight": -np.ones(16, np.float32),
                                                     "rope_factors_short.weight": np.ones(16, np.float32)})),
            ModelFormatError, r"'rope_factors_long\.weight' holds a factor that is not a positive finite"),
        "phi3_attn_factor_not_positive": (dict(arch="phi3", tensors=_phi3_tensors(),
                                               metadata={"phi3.rope.scaling.attn_factor": _md("FLOAT32", -1.0)}),
                                          ModelFormatError, r"phi3\.rope\.scaling\.attn_factor"),
        "rope_factors_on_llama": (dict(tensors={"rope_factors_long.weight": np.ones(16, np.float32),
                                                "rope_factors_short.weight": np.ones(16, np.float32)}),
                                  ModelFormatError, r"'rope_factors_long\.weight' is read for architecture phi3 only"),
    }


_MODEL_CASES = sorted(_model_cases())


def test_architecture_not_utf8(tmp_path):
    """An architecture name that is not UTF-8 is reported as unsupported (the message could not be
    decoded and UnicodeDecodeError replaced the error; the CLI printed a traceback)."""
    data = bytearray(Path(write_llama_gguf(tmp_path / "ok.gguf")).read_bytes())
    at = data.index(b"general.architecture") + len(b"general.architecture") + 4 + 8  # key, type, length
    assert data[at:at + 5] == b"llama"
    data[at:at + 5] = b"llam\xff"
    path = write(tmp_path, bytes(data), "arch.gguf")
    with pytest.raises(UnsupportedArchitectureError, match=r"llam\\xff"):
        _load(path)


@pytest.mark.parametrize("case", _MODEL_CASES)
def test_hostile_model(tmp_path, case):
    kwargs, exc, pattern = _model_cases()[case]
    path = write_llama_gguf(tmp_path / f"{case}.gguf", **kwargs)
    with pytest.raises(exc) as info:
        _load(path)
    msg = str(info.value)
    assert re.search(pattern, msg, re.S), f"{case}: message {msg!r} does not match {pattern!r}"
