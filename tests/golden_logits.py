"""Golden logits: SHA-256 digests of the engine's exact float32 logits on fixed synthetic models.

The table (tests/data/golden_logits.json) was recorded before the engine's layer loop was split
into block recipes and ops (and re-recorded where a commit changed the math on purpose, saying so:
704e450, ggml's SiLU/softmax/RoPE/attention sums); every change meant to move code without changing math
must keep every digest. A digest covers, per model, the all-position logits of a 140-token prefill
(two micro-batches where the engine's is 128: MoE, and under a budget) followed by two single-token
decode steps, resident and, for the streamed cases, under a budget an eighth of the file above the
minimum.

The ISA is fixed per process (``EDGE_RT_ISA`` is read once), so the table has one column per ISA and
the test computes each in a child process. The avx512vnni column (recorded at 2026-12-07 on the first
AVX-512 machine, after its weight kernels were put in the AVX2 order) differs from avx2 only through the
AVX-512 flavour of ggml's float vector ops (kernels.h GgmlVecOps); tests/test_x86_isa_bits.py checks the
weight kernels alone are the AVX2 bits. The flavour is a choice of its own (EDGE_RT_VEC_OPS, by default
the CPU's): the scalar and avx2 columns are computed with the AVX2 one, the avx512vnni column with the
AVX-512 one (VEC_OPS_OF_COLUMN).

    python tests/golden_logits.py --isa scalar           # prints the digests as JSON
    python tests/golden_logits.py --update               # rewrites the table for every ISA this CPU has
    python tests/golden_logits.py --cases ID,ID          # those cases' digests under the active ISA (any)

Run against the edge_rt on ``sys.path`` (an installed package, or ``PYTHONPATH=.`` after
``tools/devbuild.sh``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

TABLE = Path(__file__).resolve().parent / "data" / "golden_logits.json"
ISAS = ("scalar", "avx2", "avx512vnni")
# The flavour of ggml's float vector ops (kernels.h GgmlVecOps, EDGE_RT_VEC_OPS) each column is computed with.
VEC_OPS_OF_COLUMN = {"scalar": "avx2", "avx2": "avx2", "avx512vnni": "avx512"}
PREFILL, DECODE = 140, 2

_BASE: Dict[str, Any] = dict(arch="llama", n_vocab=512, n_embd=256, n_ff=512, n_layer=2, n_head=8, n_head_kv=2,
                             weight_type="Q8_0", seed=0, tokenizer="gpt2")
_MHA = dict(n_head=4, n_head_kv=4)
_MQA = dict(n_head=8, n_head_kv=1)


def _moe(preset: str, **overrides: Any) -> Dict[str, Any]:
    from edge_rt.synthetic import PRESETS

    return {**PRESETS[preset], "tokenizer": "gpt2", "seed": 0, **overrides}


def cases() -> List[Tuple[str, Dict[str, Any], bool]]:
    """(id, synthetic-model parameters, also streamed under a budget) for every golden entry."""
    out: List[Tuple[str, Dict[str, Any], bool]] = []

    def add(id_: str, stream: bool = False, **params: Any) -> None:
        out.append((id_, {**_BASE, **params}, stream))

    for wt in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"):
        add(f"llama-gqa-{wt}", stream=wt in ("Q8_0", "Q4_K"), weight_type=wt)
    for arch in ("qwen2", "qwen3"):
        add(f"{arch}-mha-Q8_0", arch=arch, **_MHA)
        add(f"{arch}-mqa-Q4_0", arch=arch, weight_type="Q4_0", **_MQA)
    add("qwen3-hd128-Q4_K", arch="qwen3", n_head=4, n_head_kv=2, head_dim=128, weight_type="Q4_K")
    add("llama-tied-Q8_0", tie_embeddings=True)
    add("qwen2-tied-Q4_K", stream=True, arch="qwen2", tie_embeddings=True, weight_type="Q4_K")
    add("llama-mixed-Q4_K-Q6_K", weight_type="Q4_K", output_type="Q6_K", embed_type="Q4_K")
    add("llama-ropelinear4-F32", rope_scaling_linear=4.0, weight_type="F32")
    add("qwen2-ropelinear2-Q8_0", arch="qwen2", rope_scaling_linear=2.0, rope_theta=1e6, **_MQA)
    add("llama-4layer-Q6_K", n_layer=4, weight_type="Q6_K", stream=True)
    for preset, wt in (("tiny-moe", "Q8_0"), ("tiny-moe", "Q4_0"), ("tiny-qwen2moe", "Q8_0"),
                       ("tiny-qwen3moe", "Q4_K")):
        out.append((f"{preset}-{wt}", _moe(preset, weight_type=wt), True))
    return out


def _digest(model, ids: List[int]) -> str:
    import numpy as np

    h = hashlib.sha256()
    model.reset()
    h.update(np.ascontiguousarray(model.logits(ids[:PREFILL]), dtype=np.float32).tobytes())
    for tok in ids[PREFILL:]:
        h.update(np.ascontiguousarray(model.logits([tok]), dtype=np.float32).tobytes())
    return h.hexdigest()


def compute(folder: Path, only: Optional[List[str]] = None) -> Dict[str, str]:
    """Digest of every case (and '<id>@stream' for the streamed ones) under this process's ISA; with
    ``only``, of those case ids alone."""
    import numpy as np

    import edge_rt
    from edge_rt.synthetic import write_synthetic_gguf

    result: Dict[str, str] = {}
    for id_, params, stream in cases():
        if only is not None and id_ not in only:
            continue
        path = write_synthetic_gguf(folder / f"{id_}.gguf", **params)
        rng = np.random.default_rng(99)
        ids = rng.integers(259, params["n_vocab"] - 3, PREFILL + DECODE).tolist()
        opts = dict(threads=2, n_ctx=PREFILL + DECODE)
        with edge_rt.load(path, **opts) as model:
            result[id_] = _digest(model, ids)
        if stream:
            need = edge_rt.minimum_budget(path, threads=2, n_ctx=PREFILL + DECODE)["total"]
            budget = need + path.stat().st_size // 8
            with edge_rt.load(path, mem_budget=budget, **opts) as model:
                assert model.memory_report()["streamed_units"], f"{id_}: nothing streams at {budget} B"
                result[f"{id_}@stream"] = _digest(model, ids)
    return result


def run_isa(isa: str, vec_ops: Optional[str] = None, case_ids: Optional[List[str]] = None) -> Dict[str, str]:
    """compute() in a child process with EDGE_RT_ISA=isa and the float vector ops of the column's
    flavour (VEC_OPS_OF_COLUMN; the host's default would be the AVX-512 one at every ISA of an AVX-512
    CPU), or of ``vec_ops``; only the cases ``case_ids`` when given."""
    env = {**os.environ, "EDGE_RT_ISA": isa, "EDGE_RT_VEC_OPS": vec_ops or VEC_OPS_OF_COLUMN[isa]}
    args = ["--cases", ",".join(case_ids)] if case_ids else ["--isa", isa]
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"golden logits child for {isa} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def available_isas() -> List[str]:
    from edge_rt import _core

    compiled = _core.compiled_isas()
    return [isa for isa in ISAS if isa in compiled and _core.cpu_supports(isa)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", choices=ISAS, help="compute under this ISA (in this process; EDGE_RT_ISA must match)")
    ap.add_argument("--update", action="store_true", help="rewrite the table for every ISA this CPU has")
    ap.add_argument("--cases", help="comma-separated case ids: print their digests under the active ISA")
    args = ap.parse_args()
    if args.cases:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(compute(Path(d), args.cases.split(",")), indent=1, sort_keys=True))
    elif args.isa:
        from edge_rt import _core

        active = _core.isa()
        if active != args.isa:
            sys.exit(f"EDGE_RT_ISA={args.isa} requested but the active ISA is {active}")
        if _core.vec_ops_flavour() != VEC_OPS_OF_COLUMN[args.isa]:
            sys.exit(f"the {args.isa} column takes EDGE_RT_VEC_OPS={VEC_OPS_OF_COLUMN[args.isa]}, "
                     f"this process runs {_core.vec_ops_flavour()}")
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(compute(Path(d)), indent=1, sort_keys=True))
    elif args.update:
        table = json.loads(TABLE.read_text()) if TABLE.exists() else {}
        for isa in available_isas():
            table[isa] = run_isa(isa)
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}: {', '.join(f'{k} ({len(v)})' for k, v in table.items())}")
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
