// StreamingWeights: a weight provider for models larger than the memory budget.
//
// Units are the layers 0..n_layer-1 and the head (output norm + output matrix) as unit n_layer. The
// placement (placement.h, a pure function of the file and the budget) pins the largest units that fit
// in RAM and streams the rest through a ring of W equal window slots (each as large as the largest
// streamed unit). While layer i computes, I/O threads fill the slots for the next streamed units;
// acquire() blocks only when its unit has not arrived yet, and that stall is counted. The token
// embedding is never streamed whole: read_embeddings() reads just the rows it needs.
//
// The provider composes three parts, each in its own files:
//   Placement    (placement.h)    what is pinned, streamed and cached, and the budget floor;
//   IoQueue      (io_queue.h)     the I/O threads: chunked 4096-aligned reads (direct I/O when the
//                                 filesystem allows it, else buffered), fault injection, completion
//                                 callbacks; reads for the unit the engine waits on go first;
//   ExpertCache  (expert_cache.h) MoE experts cached one by one, eviction policy, speculative reads,
//                                 prediction telemetry. Routers and their input norms are pinned so
//                                 the engine can predict any layer's experts at any time.
// and itself implements WeightProvider: the pinned units, the layer window and the embedding rows.
//
// Errors (EIO, a short read from a truncated file) are raised by the acquire() of the unit they hit,
// as Error(Io) / Error(ModelFormat); the provider then restarts its pipeline on the next acquire.
//
// Thread-safety: the WeightProvider methods are called from the engine thread only; the I/O threads
// are internal; the telemetry methods may be called from any thread. Locks: one, the streaming lock
// (IoQueue::mutex()), shared by the window, the expert cache and the I/O threads; see the members.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/expert_cache.h"
#include "edge_rt/file_reader.h"
#include "edge_rt/io_queue.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/placement.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

struct StreamingOptions {
    int window = 0;  // slots; 0 = the largest that fits the budget (at least 1)
    IoMode io_mode = IoMode::Auto;
    bool prefetch = true;            // false: window 1, each streamed unit read when acquired, no overlap
    int io_threads = 4;              // requests in flight
    uint64_t fault_after_bytes = 0;  // test hook: inject a failure after this much traffic (0 = off)
    bool fault_short_read = false;   // injected failure is a short read (else EIO)
    // Mixture of experts (ignored for dense models).
    // Expert weight bytes to cache (0 = what the budget leaves after the layer placement), rounded to
    // whole experts of the model's largest expert; each slot also pads its three reads to 4096 bytes.
    uint64_t expert_cache_bytes = 0;
    ExpertPolicy expert_policy = ExpertPolicy::Lfu;  // higher hit rate in every measured case (benchmarks/moe.py)
    // Off unless `prefetch` too. NextLayer measured fastest or level with Both, with fewer reads, on
    // the Mixtral-shaped benchmark (benchmarks/moe.py): same-layer reads arrive too late to help.
    ExpertPrefetch expert_prefetch = ExpertPrefetch::NextLayer;
    uint64_t speculative_cap_bytes = 0;  // speculative expert bytes in flight; 0 = 2 * n_expert_used experts
    int prediction_width = 0;            // experts predicted per token and layer; 0 = n_expert_used
};

// One timeline record per streamed unit use, seconds since the provider was created.
struct StreamEvent {
    int unit = 0;
    double io_start = 0, io_end = 0;      // the slot fill
    double wait_start = 0, acquired = 0;  // acquire() entered / returned (acquired - wait_start = stall)
    double released = 0;
    uint64_t bytes = 0;
};

struct StreamStats {
    uint64_t bytes_read = 0;   // weight bytes read from the file (window fills, experts, embedding rows)
    double io_seconds = 0;     // sum of slot fill and expert read durations
    double stall_seconds = 0;  // time acquire() and acquire_experts() waited for I/O
    uint64_t acquires = 0;     // streamed unit acquisitions
    uint64_t stalls = 0;       // acquisitions (units, expert sets) that had to wait
};

class StreamingWeights final : public WeightProvider, private IoSink {
public:
    // ---- engine thread: lifetime ----
    // Places the weights (place_weights), reserves pinned weights, window slots and the expert cache in
    // `accountant`, reads the pinned units and starts the I/O threads; throws Error(OutOfMemory)
    // stating the minimum budget when not even one slot fits.
    StreamingWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg, MemoryAccountant& accountant,
                     const StreamingOptions& options);
    ~StreamingWeights() override;

    // ---- engine thread: WeightProvider ----
    const LayerWeights& acquire_layer(int il) override;
    void release_layer(int il) override;
    const HeadWeights& acquire_head() override;
    void release_head() override;
    void read_embeddings(const int32_t* tokens, int64_t n, float* out) override;
    uint64_t resident_bytes() const override;

    void acquire_experts(int il, const LayerWeights& layer, const int32_t* ids, int n, ExpertWeights* out) override;
    void release_experts(int il) override;
    int max_experts_per_acquire() const override { return experts_ ? experts_->slots() : 0; }
    void note_routing(int il, const int32_t* ids, int n) override;
    ExpertPrefetch expert_prefetch() const override;
    bool router_weights(int il, TensorView* ffn_norm, TensorView* router) override;
    void prefetch_experts(int il, const int32_t* ids, int n, PredictionSource source) override;
    int expert_prediction_width() const override { return experts_ ? experts_->prediction_width() : 0; }

    // ---- any thread: the placement (constant after load) ----
    // Smallest weight budget this model can stream with (weight_floor(): one slot for its largest unit
    // plus the embedding row buffer; MoE: plus the pinned routers and one expert slot).
    static uint64_t min_weight_bytes(const GgufFile& file, const ModelConfig& cfg);

    int window() const noexcept { return placement_.window; }
    uint64_t slot_bytes() const noexcept { return placement_.slot_bytes; }
    std::vector<int> pinned_units() const;
    std::vector<int> streamed_units() const { return placement_.streamed; }
    uint64_t streamed_bytes_per_pass() const noexcept;  // bytes read per token when every unit streams once
    const char* io_kind() const noexcept { return io_->reader_kind(); }

    // ---- any thread: telemetry (each takes the streaming lock) ----
    StreamStats stats() const;
    std::vector<StreamEvent> events() const;
    ExpertStats expert_stats() const;
    std::vector<ExpertReadEvent> expert_events() const;
    void clear_telemetry();

private:
    enum class SlotState { Free, Loading, Ready, InUse, Failed };
    struct Slot {
        IoBuffer buffer;  // slot_bytes, fixed at load
        SlotState state = SlotState::Free;
        int unit = -1;
        IoProgress io;       // the current fill
        LayerWeights layer;  // views into buffer, bound when the fill completes
        HeadWeights head;
    };

    // ---- engine thread: load and teardown ----
    void build(MemoryAccountant& accountant);  // the constructor's work
    void load_pinned();                        // read and bind the pinned units
    void load_routers();                       // MoE: read every layer's router and its input norm
    void shutdown() noexcept;  // stop the I/O threads; the destructor, or a failed build() (buffers are RAII)
    const uint8_t* locate(const WeightUnit& u, const uint8_t* base, const GgufTensorInfo& t) const;
    void bind_views(int unit, const uint8_t* base, LayerWeights& layer, HeadWeights& head) const;
    void interleave_unit(int unit, LayerWeights& layer, HeadWeights& head) const;

    // ---- engine thread: the layer window ----
    Slot& acquire_unit(int unit);
    void release_unit(int unit);
    void issue(uint64_t seq);  // lock held: queue the fill of the slot for streamed use `seq`
    void resync(uint64_t seq, std::unique_lock<std::mutex>& lock);  // drop the pipeline, restart at seq

    // ---- I/O threads, lock held: window slot fills (IoSink) ----
    void on_read_start(int slot, double t) override;
    void on_read_done(int slot, uint64_t bytes, ErrorKind kind, const std::string& error, double t) override;

    // Constant after load (read from any thread).
    std::shared_ptr<const GgufFile> file_;
    ModelConfig cfg_;
    StreamingOptions options_;
    Placement placement_;
    std::vector<int> stream_pos_;   // unit id -> index in placement_.streamed (-1 if pinned)
    std::vector<IoBuffer> pinned_;  // per unit: its packed runs when pinned
    std::vector<LayerWeights> pinned_layers_;
    HeadWeights pinned_head_;
    TensorView token_embd_;                 // info only; rows are read on demand unless pinned
    const uint8_t* pinned_embd_ = nullptr;  // the tied output head, when pinned
    std::vector<IoBuffer> router_pins_;     // MoE, per layer: ffn_norm + ffn_gate_inp
    std::vector<TensorView> router_norms_, routers_;
    // The destructor stops the I/O threads before any member goes; io_ is declared before experts_ so
    // that the cache, which refers to the queue, is destroyed first.
    std::unique_ptr<IoQueue> io_;           // owns the streaming lock
    std::unique_ptr<ExpertCache> experts_;  // MoE only

    // Engine thread only.
    IoBuffer embd_buf_;  // aligned scratch for one embedding row read (raw bytes)

    // Guarded by the streaming lock (io_->mutex()); slots_ itself (size, buffers) is fixed at load.
    std::vector<Slot> slots_;
    uint64_t next_acquire_ = 0;  // sequence number of the next streamed use
    bool needs_resync_ = false;
    StreamStats stats_;  // window fills and embedding rows (the expert cache adds its part)
    std::vector<StreamEvent> events_;
};

}  // namespace edge_rt
