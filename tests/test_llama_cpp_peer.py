"""edge_rt/llama_cpp_peer.py: the llama.cpp reference opened so that it runs on every x86 CPU (on an AMX
build its AMX weight buffers segfault in the first decode; tests/test_chat_template.py's SmolLM2 test
crashed the whole CI run that way before the peer was opened without them)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_rt import synthetic
from edge_rt.llama_cpp_peer import amx_build, open_llama, peer_note

from helpers import requires_llama_cpp

pytestmark = requires_llama_cpp


def _system_info() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode() if isinstance(info, bytes) else str(info)


def test_amx_build_reads_the_system_info():
    assert amx_build() == ("AMX_INT8 = 1" in _system_info())
    assert ("AMX" in peer_note()) == amx_build()


@pytest.mark.parametrize("extra_buffers", [None, False, True])
def test_open_llama_leaves_llama_cpp_defaults_as_they_were(tmp_path, extra_buffers):
    import llama_cpp
    import llama_cpp.llama as llama_module

    if extra_buffers and amx_build():
        pytest.skip("llama.cpp's AMX buffers segfault on this build (edge_rt/llama_cpp_peer.py)")
    path = tmp_path / "m.gguf"
    synthetic.write_synthetic_gguf(path, n_layer=1, weight_type="Q4_1", embed_type="Q8_0")
    before = llama_module.llama_cpp.llama_model_default_params
    llm = open_llama(path, n_ctx=64, n_threads=1, logits_all=True, verbose=False, seed=0)
    try:
        llm.eval([1, 2, 3, 4])  # an AMX build crashed here with its extra buffers on
        assert np.isfinite(np.asarray(llm.scores[:4])).all()
    finally:
        llm.close()
    assert llama_module.llama_cpp.llama_model_default_params is before
    assert llama_cpp.llama_model_default_params().use_extra_bufts
