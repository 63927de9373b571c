"""llama-cpp-python, the reference edge_rt is measured against, opened so that it runs on every x86 CPU.

llama-cpp-python builds llama.cpp from source for the machine it installs on (``-march=native``). On a CPU
with AMX (Intel Xeon Sapphire Rapids and later) that build puts Q4_0, Q4_1, Q8_0 and K-quant weights in
AMX buffers, and in llama-cpp-python 0.3.36 that path crashes: ``ggml_backend_amx_mul_mat`` segfaults in
the first ``llama_decode`` of SmolLM2-135M-Instruct (Q4_1), taking the whole test run with it (seen on
2026-12-07 on an AMX Xeon). There the peer is opened without llama.cpp's extra weight buffers
(``use_extra_bufts = false``, llama.cpp's ``--no-repack``): no AMX and no repacked Q4_0/Q4_K copies,
the plain ggml kernels instead. edge_rt computes that llama.cpp's bits when loaded with ``repack=False``
(the same sum orders; tests/test_parity_llamacpp.py peer_repacks), so no bitwise check is lost; speed
comparisons made this way say so (:func:`peer_note`).

llama-cpp-python does not expose ``use_extra_bufts``; :func:`open_llama` sets it by replacing
``llama_model_default_params`` while the model loads.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

__all__ = ["amx_build", "default_extra_buffers", "open_llama", "peer_note", "run_module"]

_patch_lock = threading.Lock()


def _system_info() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode() if isinstance(info, bytes) else str(info)


def amx_build() -> bool:
    """True when the installed llama.cpp was built with its AMX weight buffers (``AMX_INT8 = 1``)."""
    return "AMX_INT8 = 1" in _system_info()


@contextlib.contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    import llama_cpp.llama as llama_module

    if use_extra_bufts:
        yield
        return
    bindings = llama_module.llama_cpp
    with _patch_lock:
        default_params = bindings.llama_model_default_params

        def without_extra_buffers() -> Any:
            p = default_params()
            p.use_extra_bufts = False
            return p

        bindings.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            bindings.llama_model_default_params = default_params


def default_extra_buffers() -> bool:
    """Whether the peer keeps llama.cpp's extra weight buffers (its repacked Q4_0/Q4_K copies): yes, except
    on an AMX build, where they crash (see the module docstring). edge_rt mirrors the peer's sums when
    loaded with ``repack`` equal to this."""
    return not amx_build()


def open_llama(path: Union[str, Path], *, extra_buffers: Optional[bool] = None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path=path, **kwargs)``. ``extra_buffers`` (llama.cpp's repacked and AMX weight
    buffers): None is :func:`default_extra_buffers`; False is ``--no-repack``."""
    import llama_cpp

    if extra_buffers is None:
        extra_buffers = default_extra_buffers()
    with _model_params(extra_buffers):
        return llama_cpp.Llama(model_path=str(path), **kwargs)


def run_module(module: str, argv: List[str]) -> None:
    """``python -m module ARGV`` (e.g. ``llama_cpp.server``, the peer of benchmarks/serve.py) with the
    weight buffers :func:`open_llama` would choose: on an AMX build, none (for the whole process)."""
    import runpy
    import sys

    with _model_params(default_extra_buffers()):
        sys.argv = [module, *argv]
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def peer_note() -> str:
    """One line for benchmark output: how the peer's weights are laid out on this machine."""
    if amx_build():
        return ("llama.cpp built with AMX, opened without its extra weight buffers (no AMX, no repacking): "
                "its AMX path segfaults in llama-cpp-python 0.3.36")
    return "llama.cpp with its default weight buffers (repacked Q4_0/Q4_K where it repacks)"
