#include "edge_rt/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace edge_rt {

namespace {

// ggml_soft_max on one row: max, exp(x - max) summed in double, then scaled by the float of 1/sum.
void softmax_row(float* x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace

void top_k_experts(const float* probs, int64_t n_expert, int64_t k, int32_t* selected) {
    // Expert counts are small (8-256): a partial sort of ids is cheaper than anything cleverer.
    thread_local std::vector<int32_t> ids;
    ids.resize((size_t)n_expert);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int32_t a, int32_t b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
    std::copy(ids.begin(), ids.begin() + k, selected);
}

void route_tokens(float* logits, int64_t n, int64_t n_expert, int64_t k, bool normalize, float scale, int32_t* selected,
                  float* weights) {
    for (int64_t t = 0; t < n; ++t) {
        float* p = logits + t * n_expert;
        int32_t* sel = selected + t * k;
        float* w = weights + t * k;
        softmax_row(p, n_expert);
        top_k_experts(p, n_expert, k, sel);
        for (int64_t j = 0; j < k; ++j) w[j] = p[sel[j]];
        if (normalize) {
            double sum = 0.0;  // ggml_sum_rows accumulates in double
            for (int64_t j = 0; j < k; ++j) sum += w[j];
            const float denom = std::max((float)sum, 6.103515625e-5f);
            for (int64_t j = 0; j < k; ++j) w[j] = w[j] / denom;
        }
        if (scale != 0.0f && scale != 1.0f)
            for (int64_t j = 0; j < k; ++j) w[j] *= scale;
    }
}

}  // namespace edge_rt
