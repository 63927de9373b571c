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
//  * begin() .. commit() / rollback(): between them add() keeps the prior value of each (entry,
//    expert) row it first touches, so rollback() restores exactly the statistics of begin() (the
//    engine wraps each eval in one: a failed eval counts nothing). The undo copy is only the rows an
//    eval touches, not the whole table.
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
    void clear() { entries_.clear(); undo_.clear(); }
    const std::map<std::string, ActivationStatsEntry>& entries() const noexcept { return entries_; }

    void begin();     // start keeping undo data (drops any earlier, uncommitted)
    void commit();    // keep what was added since begin()
    void rollback();  // drop what was added since begin()

private:
    struct SavedRow {
        int64_t expert = 0;
        std::vector<double> sum_sq;  // the row before the transaction (width doubles)
        int64_t count = 0;
    };
    struct Undo {
        bool created = false;        // the entry did not exist at begin(): rollback erases it
        std::vector<SavedRow> rows;
        std::vector<uint8_t> saved;  // per expert: row already in `rows`
    };
    std::map<std::string, ActivationStatsEntry> entries_;
    bool in_transaction_ = false;
    std::map<std::string, Undo> undo_;
};

}  // namespace edge_rt
