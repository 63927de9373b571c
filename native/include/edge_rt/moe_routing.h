// Expert selection for Mixture-of-Experts layers, with llama.cpp's semantics (build_moe_ffn, softmax
// gating): probabilities = softmax(logits) per token; the k most probable experts are selected in
// descending order (equal probabilities: lower expert id first); their weights are the selected
// probabilities, renormalized to sum 1 when `normalize` (the sum clamped below at 2^-14, as llama.cpp
// guards 0/0), then multiplied by `scale` unless it is 0 or 1.
#pragma once

#include <cstdint>

namespace edge_rt {

// logits: n rows of n_expert floats, replaced in place by the probabilities.
// selected: n rows of k expert ids; weights: n rows of k floats. Requires 1 <= k <= n_expert.
void route_tokens(float* logits, int64_t n, int64_t n_expert, int64_t k, bool normalize, float scale, int32_t* selected,
                  float* weights);

// The k most probable experts of one probability row, in the order route_tokens selects them.
void top_k_experts(const float* probs, int64_t n_expert, int64_t k, int32_t* selected);

}  // namespace edge_rt
