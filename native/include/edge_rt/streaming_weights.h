// StreamingWeights: a weight provider for models larger than the memory budget.
//
// Units are the layers 0..n_layer-1 and the head (output norm + output matrix) as unit n_layer. Given
// the bytes the budget leaves for weights, a greedy placement pins the largest units that fit in RAM
// and streams the rest through a ring of W equal window slots (each as large as the largest streamed
// unit). While layer i computes, I/O threads fill the slots for the next streamed units; acquire()
// blocks only when its unit has not arrived yet, and that stall is counted. The token embedding is
// never streamed whole: read_embeddings() reads just the rows it needs.
//
// I/O: each unit's tensors are coalesced into as few file runs as possible (a streaming-layout GGUF
// gives one run per layer), read in 4096-aligned chunks by several I/O threads (direct I/O when the
// filesystem allows it, else buffered reads that drop the page cache behind them). Reads for the unit
// the engine waits on are queued ahead of later ones.
//
// Mixture of experts: the expert tensors (ffn_{gate,up,down}_exps) are not part of the layer units.
// Each (layer, expert) is cached on its own in an expert cache of equal slots (one expert's gate, up
// and down matrices, three reads), sized by what the budget leaves after the layer placement, or
// set explicitly. Misses are read when the engine needs them (ahead of every other read); predicted
// experts are read speculatively (behind layer reads, at most speculative_cap_bytes in flight) into
// slots chosen by the eviction policy. Routers and their input norms are pinned so the engine can
// predict any layer's experts at any time. A wrong prediction costs reads and cache room, never
// correctness: the engine computes with exactly the experts its router selected.
//
// Errors (EIO, a short read from a truncated file) are raised by the acquire() of the unit they hit,
// as Error(Io) / Error(ModelFormat); the provider then restarts its pipeline on the next acquire.
//
// Thread-safety: acquire/release/read_embeddings from the engine thread only; I/O threads are internal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/expert_cache.h"
#include "edge_rt/file_reader.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

struct StreamingOptions {
    int window = 0;              // slots; 0 = the largest that fits the budget (at least 1)
    IoMode io_mode = IoMode::Auto;
    bool prefetch = true;        // false: window 1, each streamed unit read when acquired, no overlap
    int io_threads = 4;          // requests in flight
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
    int prediction_width = 0;    // experts predicted per token and layer; 0 = n_expert_used
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
    uint64_t bytes_read = 0;     // weight bytes read from the file (window fills, experts, embedding rows)
    double io_seconds = 0;       // sum of slot fill and expert read durations
    double stall_seconds = 0;    // time acquire() and acquire_experts() waited for I/O
    uint64_t acquires = 0;       // streamed unit acquisitions
    uint64_t stalls = 0;         // acquisitions (units, expert sets) that had to wait
};

class StreamingWeights final : public WeightProvider {
public:
    // Reserves pinned weights and window slots in `accountant`; throws Error(OutOfMemory) stating the
    // minimum budget when not even one slot fits.
    StreamingWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg, MemoryAccountant& accountant,
                     const StreamingOptions& options);
    ~StreamingWeights() override;

    const LayerWeights& acquire_layer(int il) override;
    void release_layer(int il) override;
    const HeadWeights& acquire_head() override;
    void release_head() override;
    void read_embeddings(const int32_t* tokens, int64_t n, float* out) override;
    uint64_t resident_bytes() const override;

    void acquire_experts(int il, const LayerWeights& layer, const int32_t* ids, int n, ExpertWeights* out) override;
    void release_experts(int il) override;
    int max_experts_per_acquire() const override { return moe_ ? (int)expert_slots_.size() : 0; }
    void note_routing(int il, const int32_t* ids, int n) override;
    ExpertPrefetch expert_prefetch() const override;
    bool router_weights(int il, TensorView* ffn_norm, TensorView* router) override;
    void prefetch_experts(int il, const int32_t* ids, int n, PredictionSource source) override;
    int expert_prediction_width() const override { return prediction_width_; }

    // Smallest weight budget this model can stream with: one slot for its largest unit plus the
    // embedding row buffer (MoE: plus the pinned routers and one expert slot).
    static uint64_t min_weight_bytes(const GgufFile& file, const ModelConfig& cfg);

    int window() const noexcept { return (int)slots_.size(); }
    uint64_t slot_bytes() const noexcept { return slot_bytes_; }
    std::vector<int> pinned_units() const;
    std::vector<int> streamed_units() const { return streamed_; }
    uint64_t streamed_bytes_per_pass() const noexcept;  // bytes read per token when every unit streams once
    const char* io_kind() const noexcept { return reader_->kind(); }
    StreamStats stats() const;
    std::vector<StreamEvent> events() const;
    ExpertStats expert_stats() const;
    std::vector<ExpertReadEvent> expert_events() const;
    void clear_telemetry();

private:
    struct Run { uint64_t file_begin = 0, length = 0, slot_offset = 0; };  // 4096-aligned span of the file
    struct Unit {
        std::vector<const GgufTensorInfo*> tensors;
        std::vector<Run> runs;
        uint64_t packed_bytes = 0;  // bytes the runs take in a slot
        uint8_t* pinned = nullptr;  // non-null when resident
    };
    enum class SlotState { Free, Loading, Ready, InUse, Failed };
    struct Slot {
        uint8_t* buffer = nullptr;
        SlotState state = SlotState::Free;
        int unit = -1;
        uint64_t seq = 0;
        int pending = 0;         // chunks not yet read
        ErrorKind error_kind = ErrorKind::Internal;
        std::string error;
        double io_start = 0, io_end = 0;
        LayerWeights layer;
        HeadWeights head;
    };
    struct Chunk {
        int slot;        // layer slot, or expert slot when `expert`
        uint64_t seq;    // layer slot: the streamed use it fills
        uint8_t* dst;
        uint64_t offset;
        uint64_t length;
        bool expert = false;
    };
    enum class ExpertState { Free, Loading, Ready, Failed };
    // One cached expert: gate, up and down, each read as one 4096-aligned span of its 3-D tensor.
    struct ExpertSlot {
        uint8_t* buffer = nullptr;
        ExpertState state = ExpertState::Free;
        int layer = -1, expert = -1;
        int pending = 0;
        int pins = 0;                 // held by the current acquire_experts
        bool speculative = false;     // read on a prediction and not used since
        bool speculative_in_flight = false;  // counted in speculative_in_flight_
        bool issued_on_prediction = false;   // how the current read was issued (for the timeline)
        uint64_t last_use = 0;        // tick of the last use or prediction
        ErrorKind error_kind = ErrorKind::Internal;
        std::string error;
        double io_start = 0, io_end = 0;
        ExpertWeights views;
    };
    // Where matrix `m` (0 gate, 1 up, 2 down) of an expert of layer il sits in the file.
    struct ExpertSpan { uint64_t file_begin = 0, length = 0, skip = 0; };

    void build(MemoryAccountant& accountant);  // the constructor's work (placement, pinned reads, I/O threads)
    void shutdown() noexcept;  // stop the I/O threads and free every buffer; the destructor, or a failed build()
    const uint8_t* locate(const Unit& u, const uint8_t* base, const GgufTensorInfo& t) const;
    void bind_views(int unit, const uint8_t* base, LayerWeights& layer, HeadWeights& head) const;
    Slot& acquire_unit(int unit);
    void release_unit(int unit);
    void issue(uint64_t seq);            // queue the fill of the slot for streamed use `seq` (lock held)
    void resync(uint64_t seq, std::unique_lock<std::mutex>& lock);  // drop the pipeline, restart at seq
    void io_loop();
    double now() const;
    // Expert cache (lock held).
    ExpertSpan expert_span(int il, int e, int m) const;
    // A slot to (re)fill, or -1 when every slot is loading or held. A prediction also spares slots
    // holding unused predictions and slots touched at or after protect_from_tick.
    int find_victim(bool for_prediction, uint64_t protect_from_tick) const;
    void issue_expert(int slot, int il, int e, bool speculative);
    void touch(ExpertSlot& slot, bool use);
    void forget(ExpertSlot& slot);       // empty the slot and unmap its expert

    std::shared_ptr<const GgufFile> file_;
    ModelConfig cfg_;
    StreamingOptions options_;
    std::unique_ptr<FileReader> reader_;
    std::vector<Unit> units_;
    std::vector<LayerWeights> pinned_layers_;
    HeadWeights pinned_head_;
    std::vector<int> streamed_;          // streamed unit ids in the order of one pass
    std::vector<int> stream_pos_;        // unit id -> index in streamed_ (-1 if pinned)
    uint64_t slot_bytes_ = 0;
    std::vector<Slot> slots_;
    uint64_t next_acquire_ = 0;          // sequence number of the next streamed use
    uint64_t next_issue_ = 0;            // sequence number of the next slot fill to queue
    bool needs_resync_ = false;
    TensorView token_embd_;              // info only; rows are read on demand unless pinned
    const uint8_t* pinned_embd_ = nullptr;
    uint8_t* embd_buf_ = nullptr;        // aligned scratch for one embedding row read (raw bytes)
    uint64_t embd_buf_bytes_ = 0;

    mutable std::mutex mutex_;
    std::condition_variable io_wake_;    // I/O threads: chunks queued or stopping
    std::condition_variable slot_ready_; // engine: a slot finished loading
    std::deque<Chunk> queue_;
    std::vector<std::thread> io_threads_;
    int io_busy_ = 0;
    bool stopping_ = false;

    // Mixture of experts.
    bool moe_ = false;
    std::vector<uint8_t*> router_pins_;      // per layer: ffn_norm + ffn_gate_inp, read at load
    std::vector<TensorView> router_norms_, routers_;
    std::vector<const GgufTensorInfo*> expert_tensors_;  // per layer: gate, up, down (3 entries each)
    uint64_t expert_part_bytes_[3] = {0, 0, 0};  // room for each matrix in a slot (aligned span + slack)
    uint64_t expert_slot_bytes_ = 0;
    std::vector<ExpertSlot> expert_slots_;
    std::vector<int> slot_of_expert_;        // layer * n_expert + e -> slot, -1 when not cached
    std::vector<int> held_slots_;            // pinned by the current acquire_experts
    std::vector<double> expert_freq_;        // decayed use counts (Lfu), per layer * n_expert + e
    uint64_t tick_ = 0;
    uint64_t passes_ = 0;
    uint64_t speculative_in_flight_ = 0;     // bytes
    uint64_t speculative_cap_ = 0;
    int prediction_width_ = 0;
    std::vector<std::vector<uint8_t>> predicted_[2];  // per layer: expert predicted this pass
    std::vector<uint8_t> predictor_ran_[2];

    StreamStats stats_;
    std::vector<StreamEvent> events_;
    ExpertStats expert_stats_;
    std::vector<ExpertReadEvent> expert_events_;
    double t0_ = 0;
};

}  // namespace edge_rt
