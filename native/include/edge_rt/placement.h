// Weight placement for streaming: which units live in RAM, which stream, and how large the window and
// the expert cache are, decided from the model file and a byte budget alone.
//
// Units are the layers 0..n_layer-1 and the head (output norm + output matrix) as unit n_layer; in an
// MoE model the expert tensors (ffn_{gate,up,down}_exps) are not part of the layer units but served
// per expert from an expert cache. Each unit's tensors are coalesced into as few 4096-aligned file runs
// as possible (a streaming-layout GGUF gives one run per layer); a unit's size is the sum of its runs.
//
// Contract: place_weights() is a pure function: it reads tensor metadata only (no file data), allocates
// no buffers, starts no threads and reserves nothing; the caller allocates and accounts what the
// returned Placement says. It throws Error(OutOfMemory) when the budget is below the floor, when an
// explicit window or expert cache does not fit. weight_floor() is the floor place_weights() checks, so
// Engine::minimum_budget (through StreamingWeights::min_weight_bytes) and a load agree by construction.
// Thread-safety: none needed (no shared state).
#pragma once

#include <cstdint>
#include <vector>

#include "edge_rt/gguf_reader.h"
#include "edge_rt/model_config.h"

namespace edge_rt {

// A 4096-aligned span of the file, and where it goes in the unit's buffer (runs are packed).
struct WeightRun {
    uint64_t file_begin = 0, length = 0, slot_offset = 0;
};

struct WeightUnit {
    std::vector<const GgufTensorInfo*> tensors;  // a layer without its expert tensors, or the head
    std::vector<WeightRun> runs;                 // ascending file offsets
    uint64_t packed_bytes = 0;                   // bytes the runs take in a buffer (sum of run lengths)
    bool pinned = false;                         // read once at load; else streamed through the window
};

// What the budget is asked to hold (the streaming options that shape the placement).
struct PlacementRequest {
    uint64_t budget = 0;              // total memory budget in bytes; 0 = unlimited
    uint64_t reserved = 0;            // bytes other classes (KV cache, scratch, predictor) already hold
    int window = 0;                   // slots; 0 = the largest that fits (MoE: at most 2)
    bool prefetch = true;             // false: window 1
    uint64_t expert_cache_bytes = 0;  // 0 = what the budget leaves after the layer placement
};

struct Placement {
    // ---- sizes (from the file alone) ----
    std::vector<WeightUnit> units;  // n_layer + 1: layers, then the head
    uint64_t embd_buf_bytes = 0;    // aligned buffer for one token_embd row read
    uint64_t floor = 0;             // weight_floor(): largest unit + embedding buffer (+ MoE below)
    // Mixture of experts (zero for a dense model).
    bool moe = false;
    std::vector<uint64_t> router_pin_bytes;     // per layer: aligned spans of ffn_norm + ffn_gate_inp
    uint64_t router_bytes = 0;                  // sum of router_pin_bytes
    uint64_t expert_part_bytes[3] = {0, 0, 0};  // room per matrix (gate, up, down) in one expert slot
    uint64_t expert_slot_bytes = 0;             // sum of expert_part_bytes
    uint64_t total_experts = 0;                 // n_layer * n_expert

    // ---- decisions (for the request's budget) ----
    std::vector<int> streamed;  // streamed unit ids in the order of one pass
    uint64_t pinned_bytes = 0;  // sum of pinned units' packed_bytes (without the routers)
    uint64_t slot_bytes = 0;    // one window slot: the largest streamed unit (0 if none)
    int window = 0;             // window slots (0 when every unit is pinned)
    uint64_t expert_slots = 0;  // expert cache slots (MoE)

    // Bytes per memory class, as the provider reserves them.
    uint64_t pinned_class_bytes() const noexcept { return pinned_bytes + router_bytes; }
    uint64_t window_class_bytes() const noexcept { return (uint64_t)window * slot_bytes + embd_buf_bytes; }
    uint64_t expert_class_bytes() const noexcept { return expert_slots * expert_slot_bytes; }
};

// Places the model's weights for `request`; see the contract above.
Placement place_weights(const GgufFile& file, const ModelConfig& cfg, const PlacementRequest& request);

// Smallest weight budget this model can stream with: one slot for its largest unit plus the embedding
// row buffer (MoE: plus the pinned routers and one expert slot).
uint64_t weight_floor(const GgufFile& file, const ModelConfig& cfg);

// The 3-D expert tensors of layer il: matrix m = 0 gate, 1 up, 2 down (nullptr if absent).
const GgufTensorInfo* expert_tensor(const GgufFile& file, int il, int m);
bool is_expert_tensor(const GgufTensorInfo& t);

}  // namespace edge_rt
