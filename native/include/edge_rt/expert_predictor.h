// A fitted next-layer expert predictor for Mixture-of-Experts models: for each target layer il >= 1,
// a one-hidden-layer MLP that corrects layer il's router on the input the router-based next-layer
// predictor uses -- the residual stream entering layer il-1's FFN (after its attention), normalized
// with layer il's FFN norm. The router alone lacks layer il-1's FFN output; the correction is fitted
// offline on calibration text (edge_rt.quantize.expert_predictor, `edge-rt fit-predictor`) so that
// the top-w of the scores names the experts layer il will use. A prediction only decides what is read
// ahead, so a poor or mismatched predictor costs time, never correctness.
//
// File: a sidecar GGUF (not the model), general.architecture = "expert_predictor", keys
//   expert_predictor.version = 1, expert_predictor.{n_embd, n_expert, block_count} (the model's shape)
//   and expert_predictor.hidden_size (the MLP's width),
// and, for every layer il in 1..block_count-1, F32 tensors (ggml order, ne[0] innermost):
//   blk.<il>.expert_pred_hidden.weight  [n_embd, hidden]   (hidden rows of n_embd)
//   blk.<il>.expert_pred_hidden.bias    [hidden]
//   blk.<il>.expert_pred_out.weight     [hidden, n_expert] (n_expert rows of hidden)
//   blk.<il>.expert_pred_out.bias       [n_expert]
// scores = router_il . x + out.weight . silu(hidden.weight . x + hidden.bias) + out.bias.
//
// Contract: load() parses the file with the hostile GGUF reader, checks every key and tensor against
// the model's config and throws Error(ModelFormat) naming the key or tensor (Error(Io) if unreadable);
// every message starts with "[expert predictor] <path>: ".
// The loaded predictor is immutable; the views stay valid for its lifetime.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edge_rt/gguf_reader.h"
#include "edge_rt/model_config.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

class ExpertPredictor {
public:
    struct Layer {
        TensorView hidden_w, out_w;       // [n_embd, hidden], [hidden, n_expert] (F32)
        const float* hidden_b = nullptr;  // [hidden]
        const float* out_b = nullptr;     // [n_expert]
    };

    static std::unique_ptr<ExpertPredictor> load(const std::string& path, const ModelConfig& cfg);

    const std::string& path() const noexcept { return path_; }
    int64_t hidden_size() const noexcept { return hidden_; }
    // The MLP for target layer il, or nullptr (layer 0 has no previous layer).
    const Layer* layer(int il) const noexcept;
    uint64_t bytes() const noexcept { return (uint64_t)data_.size() * sizeof(float); }

private:
    static std::unique_ptr<ExpertPredictor> parse(const std::string& path, const ModelConfig& cfg);

    std::string path_;
    std::shared_ptr<const GgufFile> file_;  // owns the tensor infos the views point to
    int64_t hidden_ = 0;
    std::vector<float> data_;    // every tensor's values, back to back
    std::vector<Layer> layers_;  // index il; layers_[0] empty
};

}  // namespace edge_rt
