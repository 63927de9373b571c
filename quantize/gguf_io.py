"""GGUF in and out for the toolchain.

* :class:`SourceModel` is what every input becomes (a GGUF master here, a Hugging Face directory in
  ``safetensors_io``): the architecture, the metadata records to carry over, and the tensors, each
  loaded on demand as float32 in numpy layout ``(n_expert?, n_rows, n_cols)`` (GGUF ``ne`` reversed).
* :func:`read_gguf` opens a GGUF master (F32/F16/BF16 matrices; quantized masters are refused, as
  llama-quantize refuses them without --allow-requantize).
* :func:`write_gguf` streams a model to disk: tensor infos first (every size is known from the plan),
  then one tensor at a time is encoded and written, so peak memory is one tensor, not the model. The
  file is written through ``edge_rt.gguf_file.atomic_write``: ``OUT`` appears only when complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelFormatError, UnsupportedArchitectureError, UnsupportedTypeError
from ..gguf_file import atomic_write, open_tensors, tensor_array
from .codec import block_info, tensor_bytes

#: Architectures whose GGUF masters the toolchain quantizes (the MoE ones run when the engine has MoE).
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe")

# Records the writer sets itself, or that describe the old encoding.
_SKIP_KEYS = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}


@dataclass
class SourceTensor:
    name: str
    shape: Tuple[int, ...]          # numpy order: (n_expert?, n_rows, n_cols)
    src_type: str                   # type in the source (F32, F16, BF16)
    load: Callable[[], np.ndarray]  # float32 array of ``shape``

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class SourceModel:
    path: Path
    arch: str
    kv: List[Tuple[str, Any, Any, Any]]       # (key, value, GGUFValueType, sub_type for arrays)
    tensors: List[SourceTensor]
    alignment: Optional[int] = None
    cleanup: List[Path] = field(default_factory=list)

    def tensor(self, name: str) -> SourceTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def metadata(self) -> Dict[str, Any]:
        return {k: v for k, v, _, _ in self.kv}

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {t.name: t.shape for t in self.tensors}


def read_gguf(path: Path, dequantize: bool = False) -> SourceModel:
    """Open a GGUF master. Raises ModelIOError / ModelFormatError / UnsupportedArchitectureError /
    UnsupportedTypeError with the path or tensor named. ``dequantize``: accept quantized tensors too,
    loaded dequantized to float32 (the ONNX export, whose integer grid is not GGUF's)."""
    import gguf

    path = Path(path)
    r = open_tensors(path, "[quantize]")
    arch_f = r.fields.get("general.architecture")
    arch = arch_f.contents() if arch_f is not None else None
    if not isinstance(arch, str):
        raise ModelFormatError(f"[quantize] {path}: metadata key 'general.architecture' is missing")
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedArchitectureError(
            f"[quantize] {path}: architecture '{arch}' is not supported; supported: {', '.join(SUPPORTED_ARCHS)}")
    kv = []
    alignment = None
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        if key == "general.alignment":
            alignment = int(f.contents())
            continue
        if key in _SKIP_KEYS:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        kv.append((key, f.contents(), vtype, sub))
    tensors = []
    for t in r.tensors:
        tname = t.tensor_type.name
        if tname not in ("F32", "F16", "BF16") and not dequantize:
            raise UnsupportedTypeError(
                f"[quantize] {path}: tensor '{t.name}' is already {tname}; quantize from an F32/F16/BF16 master "
                "(re-quantizing a quantized model compounds the error)")
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))

        tensors.append(SourceTensor(t.name, shape, tname, lambda t=t: tensor_array(t)))
    return SourceModel(path=path, arch=arch, kv=kv, tensors=tensors, alignment=alignment)


def write_gguf(src: SourceModel, out: Path, types: Dict[str, str],
               encode_tensor: Callable[[SourceTensor, str], np.ndarray], *, file_type: int,
               extra_kv: Optional[List[Tuple[str, Any, Any]]] = None,
               progress: Optional[Callable[[int, int, str], None]] = None) -> int:
    """Write ``src`` with ``types[name]`` per tensor; returns the file size.

    ``encode_tensor(t, type)`` returns the array to store (float32/float16 for F32/F16, else uint8
    ``(..., row_bytes)``). ``progress(done, total, name)`` is called after each tensor."""
    import gguf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), src.arch)
        try:
            sizes = _write_header(w, src, types, file_type, extra_kv)
            fout = w.fout[0]
            for i, (t, nbytes) in enumerate(zip(src.tensors, sizes)):
                w.write_padding(fout, fout.tell())
                data = np.ascontiguousarray(encode_tensor(t, types[t.name]))
                if data.nbytes != nbytes:
                    raise ModelFormatError(f"[quantize] tensor '{t.name}': encoder returned {data.nbytes} bytes, "
                                           f"expected {nbytes} for {types[t.name]}")
                data.tofile(fout)
                w.write_padding(fout, nbytes)
                if progress is not None:
                    progress(i + 1, len(src.tensors), t.name)
        finally:
            w.close()
    return out.stat().st_size


def _write_header(w: Any, src: SourceModel, types: Dict[str, str], file_type: int,
                  extra_kv: Optional[List[Tuple[str, Any, Any]]], quantized: Optional[bool] = None) -> List[int]:
    """Writes what precedes the tensor data (header, metadata, tensor infos, padding to the data
    section) through the GGUFWriter ``w``; returns each tensor's data bytes, in file order.
    ``quantized`` (default: whether ``types`` has a quantized type) adds the quantization-version key."""
    import gguf

    if src.alignment:
        w.add_custom_alignment(int(src.alignment))
    if quantized is None:
        quantized = any(t not in ("F32", "F16", "BF16") for t in types.values())
    for key, val, vtype, sub in src.kv:
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.add_file_type(int(file_type))
    if quantized:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, val, vtype in extra_kv or []:
        w.add_key_value(key, val, vtype)
    sizes = []
    for t in src.tensors:
        ty = types[t.name]
        nbytes = tensor_bytes(ty, t.shape)
        sizes.append(nbytes)
        if ty in ("F32", "F16"):
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32 if ty == "F32" else np.float16), nbytes)
        else:
            blk, bb = block_info(ty)
            byte_shape = (*t.shape[:-1], t.shape[-1] // blk * bb)
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes,
                              raw_dtype=gguf.GGMLQuantizationType[ty])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return sizes


def overhead_bytes(src: SourceModel, types: Dict[str, str]) -> int:
    """The most bytes a quantized file written by :func:`write_gguf` holds besides tensor data: its
    exact header (metadata and tensor infos do not depend on the tensor types, so ``types`` may be any
    valid assignment, e.g. the full-precision one) plus the worst-case padding after each tensor.
    Turns a file-size budget into a tensor-byte budget."""
    import tempfile

    import gguf

    with tempfile.TemporaryDirectory() as d:
        w = gguf.GGUFWriter(str(Path(d) / "header.gguf"), src.arch)
        try:
            _write_header(w, src, types, 0, None, quantized=True)
            w.fout[0].flush()
            header = w.fout[0].tell()
        finally:
            w.close()
    alignment = int(src.alignment or gguf.GGUF_DEFAULT_ALIGNMENT)
    return header + len(src.tensors) * (alignment - 1)
