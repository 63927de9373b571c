"""GGUF layout conversion: ``convert_gguf(src, dst, layout="streaming")``.

The *streaming* layout rewrites a GGUF so that the weights a streaming engine reads together lie
together on disk:

* every tensor of layer ``N`` (all tensors named ``blk.N.*``) is inside ONE contiguous byte range, and
  the ranges follow each other in layer order (``blk.0``, ``blk.1``, ...), so one layer is one large
  sequential read (one O_DIRECT request, or a few big ones) instead of reads scattered over the file;
* the global tensors come first, each in its own aligned range: ``token_embd.weight`` (read row by
  row, never streamed whole), then the other globals in their original order (``output_norm``,
  ``output``, ``rope_freqs``, ...), then the layers. With the head before ``blk.0`` a per-token sweep
  (``blk.0`` .. ``blk.N-1``, then the head) seeks once, from the last layer back to the head, which is
  as good as placing the head after the last layer; keeping the small globals at the front also puts
  everything a planner may pin next to the header;
* ``general.alignment`` is 4096 (UINT32), so the data section and *every* tensor start on a 4096-byte
  boundary: each layer's range starts aligned, as O_DIRECT needs, and the file stays a valid GGUF
  (GGUF requires every tensor offset to be a multiple of ``general.alignment``; llama.cpp additionally
  requires tensor infos in data order with minimal padding, which this writer follows);
* the key ``edge_rt.layout`` = ``"streaming"`` (STRING) marks the layout for the engine.

Everything else is unchanged: all other metadata records are copied byte for byte (every value type,
arrays included, in their original order), tensor names, types, shapes and data bytes are identical.
Tensors within a layer keep their original relative order.

**Cost.** Padding each tensor to 4096 bytes costs at most 4095 bytes per tensor (about 2 KiB on
average), plus up to 4095 bytes after the header: for a TinyLlama-shaped model (201 tensors) about
0.4 MiB, well under 0.1% of the file. ``padding_bytes`` in the result states the exact figure.

**Mixture-of-experts files.** Their experts are stored as 3-D tensors (``blk.N.ffn_gate_exps``,
``ffn_up_exps``, ``ffn_down_exps``; one slice per expert). Making each expert's gate/up/down one
contiguous range would need splitting those tensors into per-expert tensors, which changes tensor
names and shapes and so is no longer a GGUF that llama.cpp (or any other GGUF reader) understands.
This converter therefore does not split experts: MoE files get the same per-layer contiguity, with
the tensors of a layer in their original order, and an engine reads one expert as three strided
slices of the layer's range (``moe`` is True in the result).

The copy is streamed: the header is rewritten in memory (a few MB even for 128k-token vocabularies),
tensor data is copied in 16 MiB chunks, through ``edge_rt.gguf_file.atomic_write``: into a temporary
file beside ``dst``, which is fsynced and renamed onto ``dst`` only when complete; a failure removes the
temporary file and leaves an existing ``dst`` untouched.
"""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import InvalidArgumentError, ModelFormatError, ModelIOError
from .gguf_file import (
    HEADER_PREFIX_BYTES,
    atomic_write,
    encode_tensor_info,
    kv_string,
    kv_uint32,
    read_header,
    split_kv_records,
)

__all__ = ["convert_gguf", "STREAMING_ALIGNMENT", "LAYOUT_KEY", "LAYOUTS"]

#: Alignment of every tensor (and so of every layer's range) in the streaming layout.
STREAMING_ALIGNMENT = 4096
#: Metadata key that names the layout of a converted file.
LAYOUT_KEY = "edge_rt.layout"
LAYOUTS = ("streaming",)

_ALIGNMENT_KEY = "general.alignment"
_CHUNK = 16 << 20
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_MOE_SUFFIXES = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[int, int], None]


# ---- layout --------------------------------------------------------------------------------------

def _pad(n: int, align: int = STREAMING_ALIGNMENT) -> int:
    return (align - n % align) % align


def _streaming_order(tensors: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[int]]:
    """Tensors in streaming order: token_embd, the other globals (original order), then the layers in
    index order, each layer's tensors in their original order. Also returns the sorted layer ids."""
    globals_: List[Dict[str, Any]] = []
    layers: Dict[int, List[Dict[str, Any]]] = {}
    for t in tensors:
        m = _LAYER_RE.match(t["name"])
        if m:
            layers.setdefault(int(m.group(1)), []).append(t)
        else:
            globals_.append(t)
    globals_.sort(key=lambda t: 0 if t["name"] == "token_embd.weight" else 1)  # stable
    ids = sorted(layers)
    return globals_ + [t for i in ids for t in layers[i]], ids


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# ---- conversion ----------------------------------------------------------------------------------

def convert_gguf(src: PathLike, dst: PathLike, layout: str = "streaming",
                 progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Rewrite the GGUF ``src`` into ``dst`` in the given ``layout`` (only ``"streaming"``; see the
    module documentation for what it guarantees and costs, and for MoE files).

    ``progress(done_bytes, total_bytes)``, when given, is called as tensor data is copied.

    Returns a dict: ``n_tensors``, ``n_layers``, ``bytes_in`` and ``bytes_out`` (file sizes),
    ``padding_bytes`` (alignment padding in the output: after the header and after each tensor),
    ``overhead_bytes`` (``bytes_out - bytes_in``), ``seconds``, ``layer_ranges``
    (``[(layer, absolute offset, nbytes)]`` in file order; each range starts 4096-aligned and runs
    from the layer's first tensor to the end of its last), ``global_ranges`` (``[(name, offset,
    nbytes)]``), ``moe``, ``layout``, ``alignment``.

    Raises:
        InvalidArgumentError: unknown ``layout``, or ``dst`` is ``src``.
        ModelIOError: ``src`` is missing, a directory or unreadable.
        ModelFormatError: ``src`` is not a valid GGUF (the message names the defect).
        OSError: ``dst`` cannot be written (its folder is missing, the disk is full, ...).
    """
    t0 = time.perf_counter()
    if layout not in LAYOUTS:
        raise InvalidArgumentError(f"[convert] unknown layout {layout!r}; expected one of {list(LAYOUTS)}")
    src_p, dst_p = Path(os.fspath(src)), Path(os.fspath(dst))
    if not src_p.exists():
        raise ModelIOError(f"[convert] model file not found: {src_p}")
    if src_p.is_dir():
        raise ModelIOError(f"[convert] model path is a directory, not a GGUF file: {src_p}")
    if _same_file(src_p, dst_p):
        raise InvalidArgumentError(f"[convert] output {dst_p} is the input file; write to another path")
    if dst_p.is_dir():
        raise InvalidArgumentError(f"[convert] output {dst_p} is a directory")
    if not dst_p.parent.is_dir():  # else the error would name the temporary file
        raise ModelIOError(f"[convert] the output's folder does not exist: {dst_p.parent}")

    try:
        g = read_header(src_p, "[convert]")  # validates the whole header, naming the defect
    except ModelFormatError as e:
        raise ModelFormatError(f"[convert] {src_p}: {e}") from e
    tensors = list(g.tensors)
    data_offset = int(g.data_offset)
    bytes_in = int(g.file_size)

    with open(src_p, "rb") as fin:
        header = fin.read(data_offset)
        if len(header) < HEADER_PREFIX_BYTES or header[:4] != b"GGUF":
            raise ModelFormatError(f"[convert] {src_p}: not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", header, 4)
        if n_tensors != len(tensors):
            raise ModelFormatError(f"[convert] {src_p}: tensor count changed while reading")
        records = split_kv_records(header, n_kv, str(src_p))
        del header

        # Metadata: every record copied verbatim, alignment and layout set (in place if present).
        kv: List[bytes] = []
        seen = set()
        for key, raw in records:
            if key == _ALIGNMENT_KEY:
                raw = kv_uint32(_ALIGNMENT_KEY, STREAMING_ALIGNMENT)
            elif key == LAYOUT_KEY:
                raw = kv_string(LAYOUT_KEY, layout)
            seen.add(key)
            kv.append(raw)
        if _ALIGNMENT_KEY not in seen:
            kv.append(kv_uint32(_ALIGNMENT_KEY, STREAMING_ALIGNMENT))
        if LAYOUT_KEY not in seen:
            kv.append(kv_string(LAYOUT_KEY, layout))

        order, layer_ids = _streaming_order(tensors)
        rel: List[int] = []
        pos = 0
        for t in order:
            rel.append(pos)
            pos += int(t["n_bytes"]) + _pad(int(t["n_bytes"]))
        data_bytes = pos

        head = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(order), len(kv)))
        for raw in kv:
            head += raw
        for t, off in zip(order, rel):
            head += encode_tensor_info(t, off)
        head_pad = _pad(len(head))
        new_data_offset = len(head) + head_pad
        head += bytes(head_pad)

        tensor_bytes = sum(int(t["n_bytes"]) for t in order)
        total = tensor_bytes
        done = 0
        buf = bytearray(min(_CHUNK, max((int(t["n_bytes"]) for t in order), default=1)) or 1)
        view = memoryview(buf)
        try:
            with atomic_write(dst_p) as tmp_p, open(tmp_p, "wb") as fout:
                fout.write(head)
                if progress:
                    progress(0, total)
                for t in order:
                    n = int(t["n_bytes"])
                    fin.seek(int(t["offset"]))
                    left = n
                    while left:
                        k = fin.readinto(view[:min(left, len(buf))])
                        if not k:
                            raise ModelIOError(f"[convert] {src_p}: file ended inside tensor {t['name']!r} "
                                               f"(was it truncated while converting?)")
                        fout.write(view[:k])
                        left -= k
                        done += k
                        if progress:
                            progress(done, total)
                    p = _pad(n)
                    if p:
                        fout.write(bytes(p))
                fout.flush()
                bytes_out = fout.tell()
                if bytes_out != new_data_offset + data_bytes:  # pragma: no cover - internal invariant
                    raise ModelFormatError(f"[convert] wrote {bytes_out} bytes, expected "
                                           f"{new_data_offset + data_bytes}")
        finally:
            view.release()

    layer_ranges: List[Tuple[int, int, int]] = []
    global_ranges: List[Tuple[str, int, int]] = []
    spans: Dict[int, List[int]] = {}
    for t, off in zip(order, rel):
        a = new_data_offset + off
        m = _LAYER_RE.match(t["name"])
        if m:
            s = spans.setdefault(int(m.group(1)), [a, a])
            s[1] = a + int(t["n_bytes"])
        else:
            global_ranges.append((t["name"], a, int(t["n_bytes"])))
    for i in layer_ids:
        a, e = spans[i]
        layer_ranges.append((i, a, e - a))

    return {
        "layout": layout,
        "alignment": STREAMING_ALIGNMENT,
        "n_tensors": len(order),
        "n_layers": len(layer_ids),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "padding_bytes": bytes_out - (new_data_offset - head_pad) - tensor_bytes,
        "overhead_bytes": bytes_out - bytes_in,
        "seconds": time.perf_counter() - t0,
        "layer_ranges": layer_ranges,
        "global_ranges": global_ranges,
        "moe": any(str(t["name"]).split(".")[-2] in _MOE_SUFFIXES for t in order
                   if str(t["name"]).count(".") >= 2),
    }
