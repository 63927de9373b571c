// Calibration statistics: for every weight matrix, the per-input-column sum of squared activations the
// forward pass fed to it (llama.cpp's "imatrix"), used by the quantization toolchain to weight its
// scale search and to measure which experts a calibration text uses.
//
// Contract:
//  * add(weight, expert, rows, n, width, stride) accumulates n rows of `width` floats (row r at
//    rows + r * stride) into the entry of `weight` (a 2-D weight: expert must be 0; a 3-D expert tensor
//    of ne = [width, rows_out, n_expert]: the slice `expert`). width must equal the weight's ne[0].
//  * Entry layout: sum_sq is n_expert x width doubles (row-major, n_expert = 1 for a 2-D weight),
//    count is n_expert rows seen.
//  * Not thread-safe: called from the engine thread only (between parallel sections).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "edge_rt/gguf_reader.h"

namespace edge_rt {

struct ActivationStatsEntry {
    bool per_expert = false;      // the weight is a 3-D expert tensor
    int64_t n_expert = 1;
    int64_t width = 0;
    std::vector<double> sum_sq;   // n_expert x width
    std::vector<int64_t> count;   // n_expert
};

class ActivationStats {
public:
    void add(const GgufTensorInfo& weight, int64_t expert, const float* rows, int64_t n, int64_t width,
             int64_t stride);
    void clear() { entries_.clear(); }
    const std::map<std::string, ActivationStatsEntry>& entries() const noexcept { return entries_; }

private:
    std::map<std::string, ActivationStatsEntry> entries_;
};

}  // namespace edge_rt
