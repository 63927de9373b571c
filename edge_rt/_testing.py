"""Test support, not an API: a native engine from keyword options, with optional I/O fault injection.

``engine(path, threads, n_ctx, mem_budget=..., fault_after_bytes=N)`` builds ``_core.EngineOptions``
from the keywords (its property names) and, for the fault keywords, arms ``_core.testing``'s injected
I/O failure, which the public load path cannot reach. The metadata class counts what ``edge_rt.load``
would add for its tokenizer (``host_metadata_bytes``, unless given), so budgets derived from these
engines place weights as ``edge_rt.load`` does.
"""

from __future__ import annotations

from typing import Any


def engine(path: Any, threads: int = 1, n_ctx: int = 2048, *, fault_after_bytes: int = 0,
           fault_short_read: bool = False, **options: Any) -> Any:
    from . import _core
    from .loading import HOST_METADATA_FACTOR

    opts = _core.EngineOptions()
    opts.threads, opts.n_ctx = threads, n_ctx
    opts.host_metadata_bytes = HOST_METADATA_FACTOR * _core.GGUFFile(str(path)).metadata_bytes
    for name, value in options.items():
        if not hasattr(opts, name):
            raise TypeError(f"EngineOptions has no option {name!r}")
        setattr(opts, name, value)
    if fault_after_bytes:
        _core.testing.inject_io_fault(opts, fault_after_bytes, fault_short_read)
    return _core.Engine(str(path), opts)
