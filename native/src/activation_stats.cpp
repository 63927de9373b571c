#include "edge_rt/activation_stats.h"

#include "edge_rt/error.h"

namespace edge_rt {

void ActivationStats::add(const GgufTensorInfo& weight, int64_t expert, const float* rows, int64_t n, int64_t width,
                          int64_t stride) {
    const int64_t n_expert = weight.n_dims >= 3 ? weight.ne[2] : 1;
    if (width != weight.ne[0] || expert < 0 || expert >= n_expert) {
        fail(ErrorKind::Internal, "[stats] tensor '" + weight.name + "': input of width " + std::to_string(width) +
                                      " for expert " + std::to_string(expert) + " does not fit the weight");
    }
    ActivationStatsEntry& e = entries_[weight.name];
    if (e.sum_sq.empty()) {
        e.per_expert = weight.n_dims >= 3;
        e.n_expert = n_expert;
        e.width = width;
        e.sum_sq.assign((size_t)(n_expert * width), 0.0);
        e.count.assign((size_t)n_expert, 0);
    }
    double* acc = e.sum_sq.data() + (size_t)(expert * width);
    for (int64_t r = 0; r < n; ++r) {
        const float* x = rows + r * stride;
        for (int64_t i = 0; i < width; ++i) acc[i] += (double)x[i] * (double)x[i];
    }
    e.count[(size_t)expert] += n;
}

}  // namespace edge_rt
