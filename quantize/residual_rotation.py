"""Rotate the residual stream of a dense decoder by an orthogonal matrix before integer export.

Why: real models carry "massive activations" on the residual stream, a few channels thousands of times
larger than the rest (SmolLM2-135M: 26,000 on one channel from layer 12 on, against values near 1). A
static per-tensor encoding spends its range on them: at 16 bits the step is 0.4, and every norm output
inherits the outlier channels too. Rotating the stream by an orthogonal Q spreads each outlier over all
channels (QuaRot, arXiv 2404.00456; SpinQuant, arXiv 2405.16406): the residual's range drops about 8x
and the norm outputs' per-tensor ranges become even across channels, while the model computes the same
function (exact in real arithmetic).

How (x is a row vector, weights (N, K) as in GGUF, y = x W^T):

* each RMSNorm weight g is folded into the projections it feeds (W <- W diag(g), g <- 1), because
  RMSNorm(x Q) = RMSNorm(x) Q holds only without an elementwise weight (||x Q|| = ||x||);
* readers of the stream (Q/K/V, gate/up, lm_head): W <- W Q, since (x Q)(W Q)^T = x W^T;
* writers to the stream (attention output, FFN down, the token embedding): W <- Q^T W (o_proj,
  down_proj and their biases: b <- b Q), the embedding rows E <- E Q;
* a tied lm_head becomes its own tensor (``output.weight``) before the embedding is rotated.

Q is a random orthogonal matrix (QR of a seeded Gaussian, signs fixed so it is unique): any n_embd,
and on SmolLM2 as good as a randomized Hadamard (measured: KL 0.0496 vs 0.0540 at W8A8 min/max). The
export keeps Q beside the graphs (``residual_rotation.npy``): the host gathers embeddings from the
rotated table, and a check against the GGUF's rows rotates them back.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .onnx_graph import Dims

#: File of the rotation in an export folder: float32 (n_embd, n_embd), x_graph = x_model @ Q.
ROTATION_FILE = "residual_rotation.npy"


def random_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    """A float64 (n, n) orthogonal matrix, the same for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def rotate_residual(weights: Dict[str, np.ndarray], d: Dims, seed: int = 0) -> np.ndarray:
    """Apply the rotation to ``weights`` (GGUF names, float32, in place); returns Q as float32."""
    q = random_orthogonal(d.n_embd, seed)

    def reads(name: str, g: np.ndarray) -> None:
        weights[name] = ((weights[name].astype(np.float64) * g[None, :]) @ q).astype(np.float32)

    def writes(name: str) -> None:
        weights[name] = (q.T @ weights[name].astype(np.float64)).astype(np.float32)
        bias = name.replace(".weight", ".bias")
        if bias in weights:
            weights[bias] = (weights[bias].astype(np.float64) @ q).astype(np.float32)

    emb = weights["token_embd.weight"]
    if "output.weight" not in weights:
        weights["output.weight"] = emb.astype(np.float32, copy=True)
    reads("output.weight", weights["output_norm.weight"].astype(np.float64))
    weights["output_norm.weight"] = np.ones_like(weights["output_norm.weight"])
    weights["token_embd.weight"] = (emb.astype(np.float64) @ q).astype(np.float32)
    for il in range(d.n_layer):
        p = f"blk.{il}."
        for norm, readers in (("attn_norm", ("attn_q", "attn_k", "attn_v")), ("ffn_norm", ("ffn_gate", "ffn_up"))):
            g = weights[p + norm + ".weight"].astype(np.float64)
            for r in readers:
                reads(p + r + ".weight", g)
            weights[p + norm + ".weight"] = np.ones_like(weights[p + norm + ".weight"])
        writes(p + "attn_output.weight")
        writes(p + "ffn_down.weight")
    return q.astype(np.float32)
