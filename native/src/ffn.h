// Feed-forward blocks: the gated (SwiGLU) FFN, and the Mixture-of-Experts FFN with llama.cpp's
// routing (moe_routing.h) and the optional shared expert (qwen2moe).
#pragma once

#include <cstdint>

#include "forward.h"

namespace edge_rt {

// The activation of a gated FFN's gate: SiLU (SwiGLU, llama.cpp LLM_FFN_SILU) or the tanh GELU
// (GeGLU, LLM_FFN_GELU).
enum class GateActivation { Silu, GeluTanh };

// out (m x n_embd) <- down(act(gate . in) * (up . in)) for m rows of in (m x n_embd), the activation and
// product as ggml computes them; ff = rows of gate/up. expert: the slice the views belong to (0 for a dense FFN), for the observer.
void gated_ffn(ForwardPass& f, int il, const TensorView& gate, const TensorView& up, const TensorView& down,
               int64_t expert, const float* in, int64_t m, int64_t ff, float* out,
               GateActivation act = GateActivation::Silu);

// s.moe (n x n_embd) <- the mixture of experts of layer il on s.cur. Tokens are grouped by expert so
// each used expert runs one matrix-matrix product over its rows; the weighted outputs are summed per
// token in selection order, the order in which llama.cpp adds them (bitwise the same sums).
void moe_ffn(ForwardPass& f, int il, const LayerWeights& w);

// Called by a recipe when layer il's residual stream f.s.x is ready for its FFN (after attention,
// before the FFN norm): reports it to the observer (Observed::FfnInput) and, with next-layer expert
// prefetch, predicts layer il + 1's experts from it so their reads overlap this layer's FFN.
void ffn_boundary(ForwardPass& f, int il);

}  // namespace edge_rt
