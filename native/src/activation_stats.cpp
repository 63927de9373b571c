#include "edge_rt/activation_stats.h"

#include <algorithm>
#include <cstddef>

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
    const bool created = e.sum_sq.empty();
    if (created) {
        e.per_expert = weight.n_dims >= 3;
        e.n_expert = n_expert;
        e.width = width;
        e.sum_sq.assign((size_t)(n_expert * width), 0.0);
        e.count.assign((size_t)n_expert, 0);
    }
    if (in_transaction_) {
        Undo& u = undo_[weight.name];
        if (u.saved.empty()) {
            u.created = created;
            u.saved.assign((size_t)n_expert, 0);
        }
        if (!u.created && !u.saved[(size_t)expert]) {
            const double* row = e.sum_sq.data() + (size_t)(expert * width);
            u.rows.push_back(SavedRow{expert, std::vector<double>(row, row + width), e.count[(size_t)expert]});
            u.saved[(size_t)expert] = 1;
        }
    }
    double* acc = e.sum_sq.data() + (size_t)(expert * width);
    for (int64_t r = 0; r < n; ++r) {
        const float* x = rows + r * stride;
        for (int64_t i = 0; i < width; ++i) acc[i] += (double)x[i] * (double)x[i];
    }
    e.count[(size_t)expert] += n;
}

void ActivationStats::begin() {
    undo_.clear();
    in_transaction_ = true;
}

void ActivationStats::commit() {
    undo_.clear();
    in_transaction_ = false;
}

void ActivationStats::rollback() {
    for (auto& [name, u] : undo_) {
        if (u.created) {
            entries_.erase(name);
            continue;
        }
        ActivationStatsEntry& e = entries_.at(name);
        for (const SavedRow& r : u.rows) {
            std::copy(r.sum_sq.begin(), r.sum_sq.end(), e.sum_sq.begin() + (ptrdiff_t)(r.expert * e.width));
            e.count[(size_t)r.expert] = r.count;
        }
    }
    undo_.clear();
    in_transaction_ = false;
}

}  // namespace edge_rt
