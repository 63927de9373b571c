"""vec_dot of every quantized weight type on given rows, for tests/test_aarch64.py: run under the x86 Python
(AVX2) and under the arm64 CPython in qemu-aarch64 (NEON), on the same inputs, the results are compared
bit for bit.

    python tests/aarch64_vec_dots.py IN.npz OUT.npz

IN.npz: for each type T, ``T.w`` (rows x bytes, uint8: weight rows in T's layout) and ``T.x`` (rows x n float32
activations). OUT.npz: ``T`` (rows float32, edge_rt._core.vec_dot at the active ISA) and ``isa``.
"""

from __future__ import annotations

import sys

import numpy as np

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def main(src: str, dst: str) -> None:
    from edge_rt import _core

    data = np.load(src)
    out = {"isa": np.array(_core.isa())}
    for t in TYPES:
        w, x = data[f"{t}.w"], data[f"{t}.x"]
        out[t] = np.array([_core.vec_dot(t, w[r].tobytes(), x[r]) for r in range(len(x))], dtype=np.float32)
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
