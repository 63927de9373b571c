// Weight providers: the only way the forward pass reaches weight bytes.
//
// The engine asks for one layer at a time (acquire_layer / release_layer) and never keeps a pointer
// past the matching release. That is what lets the same forward code run with every weight resident
// in RAM (ResidentWeights, here), streamed through a window of layer slots from flash, or split with
// an NPU: only the provider changes.
//
// Thread-safety: acquire/release are called from the engine's thread only; the views they return are
// read by the engine's worker threads until release.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edge_rt/ggml_types.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/kernels.h"
#include "edge_rt/model_config.h"

namespace edge_rt {

// A read-only view of one tensor's bytes. A 2-D weight of ne = [n_in, n_out] is n_out rows of
// n_in elements, row r at data + r * row_bytes (ggml order: ne[0] contiguous). A 3-D expert tensor of
// ne = [n_in, n_out, n_expert] is n_expert such matrices back to back; expert(e) views one of them.
struct TensorView {
    const GgufTensorInfo* info = nullptr;  // nullptr for an optional tensor that is absent
    const uint8_t* data = nullptr;
    GgmlType type = GgmlType::F32;
    int64_t ne0 = 0;  // elements per row
    int64_t ne1 = 1;  // rows (per expert)
    int64_t ne2 = 1;  // experts (1 for a 2-D weight)
    size_t row_bytes = 0;
    // How its dot products are summed (kernels.h): decided from the type and row count as llama.cpp
    // decides what to repack (a tied output head too: llama.cpp repacks its duplicate of the embedding);
    // Lanes for every matrix when the engine does not repack (ModelParams::repack, llama.cpp's
    // --no-repack).
    SumOrder sum_order = SumOrder::Lanes;
    // The bytes are groups of 8 rows in the type's x8 layout (kernels.h), rearranged in RAM by the
    // provider for the gemm_x8 kernels; row(r) is then meaningless. Only for Blockwise matrices.
    bool interleaved = false;

    // The view of tensor t whose bytes are at data (t's type, shape and row size); `repack`: the engine
    // sums as llama.cpp sums its repacked copies where it makes them (ModelConfig::repack).
    static TensorView of(const GgufTensorInfo& t, const uint8_t* data, bool repack) noexcept {
        TensorView v;
        v.info = &t;
        v.data = data;
        v.type = t.type;
        v.ne0 = t.ne[0];
        v.ne1 = t.ne[1];
        v.ne2 = t.ne[2];
        v.row_bytes = (size_t)t.row_bytes();
        v.sum_order = repack ? sum_order_for(t.type, t.ne[1]) : SumOrder::Lanes;
        return v;
    }

    bool present() const noexcept { return info != nullptr; }
    const uint8_t* row(int64_t r) const noexcept { return data + (size_t)r * row_bytes; }
    size_t matrix_bytes() const noexcept { return (size_t)ne1 * row_bytes; }
    // Rows first .. first + count - 1 of a 2-D weight, as a weight of its own (info still names the
    // whole tensor): one part of a fused tensor (phi3's attn_qkv, its gate-up ffn_up). It keeps the fused
    // tensor's sum order (llama.cpp multiplies the whole fused tensor). Not for interleaved tensors
    // (providers leave fused tensors in the file's layout: interleave.h).
    TensorView rows(int64_t first, int64_t count) const noexcept {
        TensorView v = *this;
        v.data = data ? data + (size_t)first * row_bytes : nullptr;
        v.ne1 = count;
        return v;
    }
    // The 2-D matrix of expert e (info still names the whole 3-D tensor).
    TensorView expert(int64_t e) const noexcept {
        TensorView v = *this;
        v.data = data ? data + (size_t)e * matrix_bytes() : nullptr;
        v.ne2 = 1;
        return v;
    }
};

struct LayerWeights {
    TensorView attn_norm;         // [n_embd]
    TensorView wq, wk, wv;        // [n_embd, q_dim], [n_embd, kv_dim], [n_embd, kv_dim]; absent in phi3
    TensorView wqkv;              // [n_embd, q_dim + 2 * kv_dim]: q, k, v rows fused (phi3 only)
    TensorView bq, bk, bv;        // [q_dim], [kv_dim], [kv_dim]; optional (qwen2)
    TensorView q_norm, k_norm;    // [head_dim]; optional (qwen3)
    TensorView wo;                // [q_dim, n_embd]
    TensorView attn_post_norm;    // [n_embd]; optional (gemma3: post_attention_norm)
    TensorView ffn_norm;          // [n_embd]
    TensorView ffn_post_norm;     // [n_embd]; optional (gemma3: post_ffw_norm)
    TensorView ffn_gate, ffn_up;  // [n_embd, n_ff]; absent in MoE layers. phi3: no ffn_gate, and ffn_up is
                                  // [n_embd, 2 * n_ff], the gate rows then the up rows
    TensorView ffn_down;          // [n_ff, n_embd]; absent in MoE layers
    // Mixture of experts (absent in dense layers). The expert tensors' data may be null when the
    // provider serves experts separately (acquire_experts); the router is always readable.
    TensorView ffn_gate_inp;                  // [n_embd, n_expert] router
    TensorView ffn_gate_exps, ffn_up_exps;    // [n_embd, n_ff_exp, n_expert]
    TensorView ffn_down_exps;                 // [n_ff_exp, n_embd, n_expert]
    TensorView ffn_gate_inp_shexp;            // [n_embd] shared-expert gate (qwen2moe); optional
    TensorView ffn_gate_shexp, ffn_up_shexp;  // [n_embd, n_ff_shexp]; optional
    TensorView ffn_down_shexp;                // [n_ff_shexp, n_embd]; optional
};

// One expert's matrices: gate, up [n_embd, n_ff_exp] and down [n_ff_exp, n_embd].
struct ExpertWeights {
    TensorView gate, up, down;
};

// Which expert predictors the engine runs for a provider that fetches experts ahead of the router
// (bit flags). SameLayer: layer i's router applied to the hidden state entering layer i, before its
// attention. NextLayer: layer i+1's router applied to layer i's attention output (the residual stream
// entering layer i's FFN), so the reads overlap layer i's experts and layer i+1's attention.
enum class ExpertPrefetch : int { Off = 0, SameLayer = 1, NextLayer = 2, Both = 3 };
enum class PredictionSource : int { SameLayer = 0, NextLayer = 1 };

struct HeadWeights {
    TensorView output_norm;  // [n_embd]
    TensorView output;       // [n_embd, n_vocab]; token_embd.weight when tied
};

// Where a tensor's bytes are in RAM right now (a buffer filled from the file).
using TensorLocator = std::function<const uint8_t*(const GgufTensorInfo&)>;

class WeightProvider {
public:
    virtual ~WeightProvider() = default;

    // Blocks until layer il's weights are readable; the views stay valid until release_layer(il).
    // Layers are acquired in order 0..n_layer-1 and then the head, every micro-batch; a provider that
    // prefetches relies on that order but must accept any other (an interrupted pass restarts at 0).
    virtual const LayerWeights& acquire_layer(int il) = 0;
    virtual void release_layer(int il) = 0;

    // MoE layers: blocks until experts ids[0..n) of layer il are readable and writes their views to
    // out[0..n). `layer` is what acquire_layer(il) returned (still held); ids are distinct. The views
    // stay valid until release_experts(il), which comes before release_layer(il). The default serves
    // slices of the layer's own expert tensors (every weight of the layer in RAM).
    virtual void acquire_experts(int il, const LayerWeights& layer, const int32_t* ids, int n, ExpertWeights* out);
    virtual void release_experts(int /*il*/) {}
    // At most this many experts per acquire_experts call (the engine splits larger sets); 0 = any.
    virtual int max_experts_per_acquire() const { return 0; }
    // Called once per MoE layer and micro-batch, before the acquire_experts calls, with every expert
    // the router selected (distinct ids): lets a provider start all reads at once and score predictions.
    virtual void note_routing(int /*il*/, const int32_t* /*ids*/, int /*n*/) {}

    // Expert prediction. expert_prefetch(): the predictors the engine should run. router_weights(): the
    // FFN input norm and router of layer il, readable at any time (pinned), false if not available.
    // prefetch_experts(): experts ids[0..n) of layer il are predicted; reading them is a hint only.
    virtual ExpertPrefetch expert_prefetch() const { return ExpertPrefetch::Off; }
    virtual int expert_prediction_width() const { return 0; }  // experts predicted per token (top-w)
    virtual bool router_weights(int /*il*/, TensorView* /*ffn_norm*/, TensorView* /*router*/) { return false; }
    virtual void prefetch_experts(int /*il*/, const int32_t* /*ids*/, int /*n*/, PredictionSource /*source*/) {}

    // Final norm and output head, same discipline (the "unit" after the last layer).
    virtual const HeadWeights& acquire_head() = 0;
    virtual void release_head() = 0;

    // out[t * n_embd ..] <- dequantized token_embd rows of tokens[0..n): only those rows are read.
    virtual void read_embeddings(const int32_t* tokens, int64_t n, float* out) = 0;

    // Bytes of weight data this provider keeps in RAM (pinned weights plus window slots).
    virtual uint64_t resident_bytes() const = 0;
};

// Binds tensor names to views for layer il / the head, with data pointers from `locate`. Names and
// shapes were validated by ModelConfig::from_gguf; optional tensors that are absent stay empty views.
LayerWeights bind_layer_tensors(const GgufFile& file, const ModelConfig& cfg, int il, const TensorLocator& locate);
HeadWeights bind_head_tensors(const GgufFile& file, const ModelConfig& cfg, const TensorLocator& locate);

// The tensors of layer il (every blk.<il>.* tensor) and of the head (output_norm, output or, when
// tied, token_embd), for providers that move whole units.
std::vector<const GgufTensorInfo*> layer_tensor_infos(const GgufFile& file, int il);
std::vector<const GgufTensorInfo*> head_tensor_infos(const GgufFile& file, const ModelConfig& cfg);

// Every weight read into one aligned RAM buffer at load (pread, no mmap: a file truncated or
// replaced later cannot fault the process). acquire/release are no-ops.
class ResidentWeights final : public WeightProvider {
public:
    ResidentWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg);
    ~ResidentWeights() override;

    const LayerWeights& acquire_layer(int il) override { return layers_[(size_t)il]; }
    void release_layer(int) override {}
    const HeadWeights& acquire_head() override { return head_; }
    void release_head() override {}
    void read_embeddings(const int32_t* tokens, int64_t n, float* out) override;
    uint64_t resident_bytes() const override { return size_; }

    // Bytes ResidentWeights would hold for this file (the span of all tensor data).
    static uint64_t bytes_needed(const GgufFile& file);

private:
    std::shared_ptr<const GgufFile> file_;
    int64_t n_embd_ = 0;
    uint8_t* buffer_ = nullptr;
    uint64_t base_offset_ = 0;  // file offset of buffer_[0]
    uint64_t size_ = 0;
    std::vector<LayerWeights> layers_;
    HeadWeights head_;
    TensorView token_embd_;
};

}  // namespace edge_rt
