"""Model inspection: :func:`inspect` describes a GGUF file (architecture, sizes, tensor types, bytes per
layer, hyperparameters, the smallest memory budget it runs in) from its header alone.

``edge-rt inspect`` prints this dict as tables or JSON.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import EdgeRTError
from .gguf_file import read_header

__all__ = ["inspect"]

PathLike = Union[str, "os.PathLike[str]"]

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


def inspect(path: PathLike, threads: Optional[int] = None, n_ctx: Optional[int] = None) -> Dict[str, Any]:
    """Describe the GGUF model at ``path`` from its header alone (no weights are read).

    Returns a dict (what ``edge-rt inspect --json`` prints): ``path``, ``gguf_version``, ``file_size``, ``architecture``
    (None when missing), ``name``, ``n_parameters``, ``n_tensors``, ``tensor_bytes``, ``tokenizer``
    (``model``, ``pre``, ``n_vocab``, ``bos_id``, ``eos_id``), ``hyperparameters`` (the
    ``<architecture>.*`` keys without the prefix; arrays summarized as ``"[N values]"``),
    ``tensor_types`` (per type: ``tensors``, ``parameters``, ``bytes``; largest first), ``layers`` (per
    ``blk.N`` and per global tensor group: ``tensors``, ``parameters``, ``bytes``, ``types``; token
    embedding first, then the blocks in order, then the rest), ``isa`` (the kernels this CPU runs) and
    ``memory``: ``{"minimum_budget": edge_rt.minimum_budget(path, threads, n_ctx)}``, or
    ``{"not_runnable": reason}`` for a valid GGUF that edge_rt cannot run.

    Raises ModelIOError (missing file, a directory) and ModelFormatError (not a valid GGUF).
    """
    from .loading import _core, minimum_budget

    path = Path(os.fspath(path))
    g = read_header(path, "[inspect]")
    core = _core()
    md: Dict[str, Any] = dict(g.metadata)
    tensors: List[Dict[str, Any]] = list(g.tensors)
    arch = md.get("general.architecture")
    arch_s = arch if isinstance(arch, str) else None

    hparams: Dict[str, Any] = {}
    if arch_s:
        prefix = arch_s + "."
        for k, v in md.items():
            if k.startswith(prefix):
                hparams[k[len(prefix):]] = v if not isinstance(v, (list, tuple)) else f"[{len(v)} values]"

    types: Dict[str, Dict[str, int]] = {}
    layers: Dict[str, Dict[str, Any]] = {}
    order: List[str] = []
    for t in tensors:
        ty = types.setdefault(str(t["type"]), {"tensors": 0, "parameters": 0, "bytes": 0})
        ty["tensors"] += 1
        ty["parameters"] += int(t["n_elements"])
        ty["bytes"] += int(t["n_bytes"])
        m = _LAYER_RE.match(t["name"])
        key = f"blk.{m.group(1)}" if m else str(t["name"]).rsplit(".", 1)[0]
        if key not in layers:
            layers[key] = {"tensors": 0, "parameters": 0, "bytes": 0, "types": {}}
            order.append(key)
        row = layers[key]
        row["tensors"] += 1
        row["parameters"] += int(t["n_elements"])
        row["bytes"] += int(t["n_bytes"])
        row["types"][str(t["type"])] = row["types"].get(str(t["type"]), 0) + 1

    def layer_sort(k: str) -> tuple:
        m = re.match(r"^blk\.(\d+)$", k)
        # token embedding first, then the blocks in order, then the rest (norm, output head)
        if k == "token_embd":
            return (0, 0, k)
        return (1, int(m.group(1)), k) if m else (2, order.index(k), k)

    tokens = md.get("tokenizer.ggml.tokens")
    tok_model = md.get("tokenizer.ggml.model")
    try:
        isa = core.isa()
    except Exception:  # diagnostic only
        isa = None
    # The least --mem-budget this model runs in; a file edge_rt cannot run says why instead.
    memory: Dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_ctx above the training context: the size is still right
            memory["minimum_budget"] = minimum_budget(path, threads=threads, n_ctx=n_ctx)
    except EdgeRTError as e:
        memory["not_runnable"] = str(e)
    return {
        "path": str(path),
        "gguf_version": int(g.version),
        "file_size": int(g.file_size),
        "architecture": arch_s,
        "name": md.get("general.name"),
        "n_parameters": sum(int(t["n_elements"]) for t in tensors),
        "n_tensors": len(tensors),
        "tensor_bytes": sum(int(t["n_bytes"]) for t in tensors),
        "tokenizer": {
            "model": tok_model if isinstance(tok_model, str) else None,
            "pre": md.get("tokenizer.ggml.pre"),
            "n_vocab": len(tokens) if isinstance(tokens, (list, tuple)) else None,
            "bos_id": md.get("tokenizer.ggml.bos_token_id"),
            "eos_id": md.get("tokenizer.ggml.eos_token_id"),
        },
        "hyperparameters": hparams,
        "tensor_types": dict(sorted(types.items(), key=lambda kv: -kv[1]["bytes"])),
        "layers": {k: layers[k] for k in sorted(order, key=layer_sort)},
        "isa": isa,
        "memory": memory,
    }
