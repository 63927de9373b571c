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
#include <memory>
#include <string>
#include <vector>

#include "edge_rt/ggml_types.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/model_config.h"

namespace edge_rt {

// A read-only view of one tensor's bytes. A 2-D weight of ne = [n_in, n_out] is n_out rows of
// n_in elements, row r at data + r * row_bytes (ggml order: ne[0] contiguous).
struct TensorView {
    const GgufTensorInfo* info = nullptr;  // nullptr for an optional tensor that is absent
    const uint8_t* data = nullptr;
    GgmlType type = GgmlType::F32;
    int64_t ne0 = 0;                       // elements per row
    int64_t ne1 = 1;                       // rows
    size_t row_bytes = 0;

    bool present() const noexcept { return info != nullptr; }
    const uint8_t* row(int64_t r) const noexcept { return data + (size_t)r * row_bytes; }
};

struct LayerWeights {
    TensorView attn_norm;              // [n_embd]
    TensorView wq, wk, wv;             // [n_embd, q_dim], [n_embd, kv_dim], [n_embd, kv_dim]
    TensorView bq, bk, bv;             // [q_dim], [kv_dim], [kv_dim]; optional (qwen2)
    TensorView q_norm, k_norm;         // [head_dim]; optional (qwen3)
    TensorView wo;                     // [q_dim, n_embd]
    TensorView ffn_norm;               // [n_embd]
    TensorView ffn_gate, ffn_up;       // [n_embd, n_ff]
    TensorView ffn_down;               // [n_ff, n_embd]
};

struct GlobalWeights {
    TensorView token_embd;             // [n_embd, n_vocab]
    TensorView output_norm;            // [n_embd]
    TensorView output;                 // [n_embd, n_vocab]; == token_embd when tied
};

class WeightProvider {
public:
    virtual ~WeightProvider() = default;

    // Blocks until layer il's weights are readable; the views stay valid until release_layer(il).
    virtual const LayerWeights& acquire_layer(int il) = 0;
    virtual void release_layer(int il) = 0;

    // Embedding, final norm and output head, with the same acquire/release discipline.
    virtual const GlobalWeights& acquire_globals() = 0;
    virtual void release_globals() = 0;

    // Bytes of weight data this provider keeps in RAM.
    virtual uint64_t resident_bytes() const = 0;
};

// Binds tensor names to views for layer il / the globals. `base` holds the file bytes starting at file
// offset `base_offset`, so a tensor's data is base + (info.offset - base_offset); the caller guarantees
// that range is in the buffer. Names and shapes were validated by ModelConfig::from_gguf.
LayerWeights bind_layer_tensors(const GgufFile& file, const ModelConfig& cfg, int il, const uint8_t* base,
                                uint64_t base_offset);
GlobalWeights bind_global_tensors(const GgufFile& file, const ModelConfig& cfg, const uint8_t* base,
                                  uint64_t base_offset);

// Every weight read into one aligned RAM buffer at load (pread, no mmap: a file truncated or
// replaced later cannot fault the process). acquire/release are no-ops.
class ResidentWeights final : public WeightProvider {
public:
    ResidentWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg);
    ~ResidentWeights() override;

    const LayerWeights& acquire_layer(int il) override { return layers_[(size_t)il]; }
    void release_layer(int) override {}
    const GlobalWeights& acquire_globals() override { return globals_; }
    void release_globals() override {}
    uint64_t resident_bytes() const override { return size_; }

private:
    std::shared_ptr<const GgufFile> file_;
    uint8_t* buffer_ = nullptr;
    uint64_t base_offset_ = 0;  // file offset of buffer_[0]
    uint64_t size_ = 0;
    std::vector<LayerWeights> layers_;
    GlobalWeights globals_;
};

}  // namespace edge_rt
