// Self-attention of one layer over the micro-batch: q/k/v projections (+ optional bias, optional
// per-head q/k RMSNorm), RoPE (the layer's base and scale), the KV cache write, causal
// softmax(q K^T / sqrt(head_dim)) V (phi3 and Gemma: q pre-scaled, by 1/sqrt(head_dim) or query_scale, as
// llama.cpp does, which rounds differently; sliding-window layers see only the last n_swa positions) with
// llama.cpp's fp16 rounding and summation order (flash attention off), and the output projection.
#pragma once

#include <cstdint>

#include "edge_rt/model_config.h"
#include "forward.h"

namespace edge_rt {

// Rotates x[0..n_rot) of one head in place for position pos. Angles follow ggml: theta_i =
// pos * freq_scale * base^(-2i/n_rot), the power built by repeated multiplication like ggml's rope
// cache so both engines land on the same float angles. The rotation is fused as ggml's rotate_pairs
// compiles on x86-64 with FMA (GCC contracts x0*c - x1*s into fma(x0, c, -(x1*s))): the unfused form
// differs in the last bit for about 1 element in 8.
// factors: n_rot/2 divisors of the pair frequencies (rope_freqs.weight, phi3's rope_factors_long/short,
// as ggml's freq_factors), or nullptr. attn_factor: cos and sin are multiplied by it (ggml's mscale).
void rope(float* x, int64_t n_rot, int64_t pos, float freq_base, float freq_scale, RopeKind kind,
          const float* factors = nullptr, float attn_factor = 1.0f);

// out (n x n_embd) <- attention of layer il on `in` (n x n_embd, already normalized); writes the
// layer's K/V rows for positions n_past .. n_past + n - 1. out may alias in.
void attention(ForwardPass& f, int il, const LayerWeights& w, const float* in, float* out);

}  // namespace edge_rt
