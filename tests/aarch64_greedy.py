"""Greedy run of the embedded default model, written to an .npz for tests/test_aarch64.py, which runs this
file under the x86 Python and under the arm64 CPython in qemu-aarch64 and compares the two:

    python tests/aarch64_greedy.py OUT.npz

OUT.npz holds ``tokens`` (the prompt's ids, then the greedy continuation from ``Model.generate_tokens``:
the engine's prefill and decode steps), ``logits`` (float32, one row per position of that whole sequence,
from ``Model.logits``: the batched prompt path), ``text`` (what ``edge-rt run --temp 0`` prints after the
prompt) and ``isa`` (the kernels that ran, ``EDGE_RT_ISA`` applied).
"""

from __future__ import annotations

import sys

import numpy as np

PROMPT = "def main():"
N_TOKENS = 32


def main(out: str) -> None:
    import edge_rt
    from edge_rt import _core
    from edge_rt.cli import DEFAULT_MODEL

    with edge_rt.load(DEFAULT_MODEL, threads=2) as model:
        prompt = model.tokenize(PROMPT)
        generated = list(model.generate_tokens(prompt, max_tokens=N_TOKENS, temperature=0.0))
        text = model.detokenize(generated)
        tokens = prompt + generated
        logits = model.logits(tokens)
    np.savez(out, tokens=np.array(tokens, dtype=np.int64), logits=logits, text=np.array(text),
             isa=np.array(_core.isa()), n_prompt=np.array(len(prompt)))


if __name__ == "__main__":
    main(sys.argv[1])
