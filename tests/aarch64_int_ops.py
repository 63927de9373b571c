"""The integer ops of exported graphs through the C++ integer kernels, for tests/test_aarch64.py: run under
the arm64 CPython in qemu-aarch64 on ops and input codes the x86 side took from real exports, each ISA's
output codes are compared with the NumPy reference's (intref, computed on x86) bit for bit.

    python tests/aarch64_int_ops.py IN.pickle OUT.json ISA [ISA ...]

IN.pickle: a list of (graph, [(IntOp, input codes, intref's output codes)]). OUT.json: {"ops": n, "isas":
[...], "differ": [[graph, op name, op kind, isa], ...]}.
"""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np


def main(src: str, dst: str, isas: list) -> None:
    from edge_rt import _core
    from edge_rt.quantize import intkernels
    from edge_rt.quantize.int_ops import run_op

    runnable = [i for i in isas if i in _core.compiled_isas() and _core.cpu_supports(i)]
    with open(src, "rb") as f:
        graphs = pickle.load(f)
    n, differ = 0, []
    for graph, ops in graphs:
        for isa in runnable:
            impl, tables = intkernels.on_isa(isa), {}
            for op, codes, want in ops:
                got = run_op(op, codes, impl, tables)
                n += 1
                if got.dtype != want.dtype or not np.array_equal(got, want):
                    differ.append([graph, op.name, op.kind, isa])
    with open(dst, "w") as f:
        json.dump({"ops": n, "isas": runnable, "differ": differ}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
