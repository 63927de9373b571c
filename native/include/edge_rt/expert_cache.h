// ExpertCache: the Mixture-of-Experts half of a streaming weight provider.
//
// Each (layer, expert) is cached on its own in equal slots (one expert's gate, up and down matrices,
// each read as one 4096-aligned span of its 3-D tensor: three reads), as many as the placement gives.
// Misses are read when the engine needs them (ahead of every other read); predicted experts are read
// speculatively (behind layer reads, at most the speculative cap in flight) into slots chosen by the
// eviction policy. A wrong prediction costs reads and cache room, never correctness: the engine
// computes with exactly the experts its router selected. A failed read is raised by the acquire() that
// needs it, as Error(Io) / Error(ModelFormat), and the slot is emptied so the next use reads again.
//
// Locking: every member below the constants is guarded by the streaming lock (IoQueue::mutex()), which
// the cache shares with the layer window and the I/O threads (see io_queue.h for why). Engine-thread
// methods take it themselves unless marked "lock held"; the IoSink callbacks run with it held.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edge_rt/io_queue.h"
#include "edge_rt/placement.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

// Expert cache eviction. Lru: the least recently used expert. Lfu: the expert with the lowest decayed
// use count (counts persist across evictions, decay by half every 64 passes), least recent on ties.
enum class ExpertPolicy : int { Lru = 0, Lfu = 1 };

// Expert cache telemetry. A use is one (layer, expert) the router selected in one micro-batch; a hit
// is a use found in the cache or already being read (a prefetch), a miss had to be read on demand.
struct ExpertLayerStats {
    uint64_t uses = 0, hits = 0;
    uint64_t predicted[2] = {0, 0};               // experts predicted, by PredictionSource
    uint64_t correct[2] = {0, 0};                 // of which the router then selected
    uint64_t needed_with_prediction[2] = {0, 0};  // uses in passes where that predictor ran (recall's base)
};

struct ExpertStats {
    int cache_slots = 0;
    uint64_t slot_bytes = 0;
    uint64_t total_experts = 0;  // n_layer * n_expert
    uint64_t uses = 0, hits = 0, misses = 0;
    uint64_t bytes_read = 0;  // expert bytes read (on demand + speculative)
    uint64_t reads_on_demand = 0, reads_speculative = 0;
    uint64_t speculative_unused = 0;   // speculative reads evicted before any use
    uint64_t predictions_dropped = 0;  // predicted misses not read (cap reached or no free slot)
    double stall_seconds = 0;          // acquire_experts() waiting for reads
    std::vector<ExpertLayerStats> layers;
};

// One expert read, seconds since the provider was created (for the timeline).
struct ExpertReadEvent {
    int layer = 0, expert = 0;
    bool speculative = false;
    double io_start = 0, io_end = 0;
};

// The cache's part of the provider's StreamStats (the window adds its own).
struct ExpertIoTotals {
    uint64_t bytes_read = 0;
    double io_seconds = 0, stall_seconds = 0;
    uint64_t stalls = 0;
};

class ExpertCache final : public IoSink {
public:
    // Allocates placement.expert_slots slots of placement.expert_slot_bytes (Error(OutOfMemory) if it
    // cannot). speculative_cap_bytes 0 = 2 * n_expert_used experts; prediction_width 0 = n_expert_used.
    // Reads go through `io`, which must stop its threads before the cache is destroyed.
    ExpertCache(const GgufFile& file, const ModelConfig& cfg, const Placement& placement, ExpertPolicy policy,
                uint64_t speculative_cap_bytes, int prediction_width, IoQueue& io);
    ~ExpertCache() = default;

    int slots() const noexcept { return (int)slots_.size(); }            // constant
    int prediction_width() const noexcept { return prediction_width_; }  // constant

    // ---- engine thread ----
    // Blocks until experts ids[0..n) (distinct, n <= slots()) of layer il are readable; writes their
    // views to out[0..n). They stay pinned (never evicted) until release().
    void acquire(int il, const int32_t* ids, int n, ExpertWeights* out);
    void release();
    // Every expert the router selected for layer il in this micro-batch: scores the predictions.
    void note_routing(int il, const int32_t* ids, int n);
    // Experts ids[0..n) of layer il are predicted by `source`: read the missing ones if the cap allows.
    void prefetch(int il, const int32_t* ids, int n, PredictionSource source);
    // Lock held (the window's resync, after IoQueue::drop_all): empty the slots whose reads were dropped.
    void drop_loading();

    // ---- I/O threads, lock held (IoSink) ----
    void on_read_start(int slot, double t) override;
    void on_read_done(int slot, uint64_t bytes, ErrorKind kind, const std::string& error, double t) override;

    // ---- telemetry ----
    ExpertStats stats() const;                    // takes the lock
    std::vector<ExpertReadEvent> events() const;  // takes the lock
    ExpertIoTotals io_totals() const;             // lock held
    void clear_telemetry();                       // lock held

private:
    enum class State { Free, Loading, Ready, Failed };
    // One cached expert: gate, up and down, each read as one 4096-aligned span of its 3-D tensor.
    struct Slot {
        IoBuffer buffer;  // expert_slot_bytes, fixed at construction
        State state = State::Free;
        int layer = -1, expert = -1;
        int pins = 0;                        // held by the current acquire
        bool speculative = false;            // read on a prediction and not used since
        bool speculative_in_flight = false;  // counted in speculative_in_flight_
        bool issued_on_prediction = false;   // how the current read was issued (for the timeline)
        uint64_t last_use = 0;               // tick of the last use or prediction
        IoProgress io;                       // the current read
        ExpertWeights views;
    };

    // All lock held.
    size_t key(int il, int e) const noexcept { return (size_t)il * (size_t)n_expert_ + (size_t)e; }
    int pin_for_use(int il, int e, std::unique_lock<std::mutex>& lock);  // the slot of a routed expert
    void wait_pinned(int il, std::unique_lock<std::mutex>& lock);        // until held_ is read; raises a failure
    // A slot to (re)fill, or -1 when every slot is loading or held. A prediction also spares slots
    // holding unused predictions and slots touched at or after protect_from_tick.
    int find_victim(bool for_prediction, uint64_t protect_from_tick) const;
    void issue(int slot, int il, int e, bool speculative);
    void touch(Slot& slot, bool use);
    void forget(Slot& slot);  // empty the slot and unmap its expert

    // Constants (set by the constructor).
    int64_t n_expert_ = 0;
    bool repack_ = true;  // ModelConfig::repack: the sum order of the expert views it makes
    ExpertPolicy policy_ = ExpertPolicy::Lfu;
    IoQueue& io_;
    std::vector<const GgufTensorInfo*> tensors_;  // per layer: gate, up, down (3 entries each)
    uint64_t part_bytes_[3] = {0, 0, 0};          // room for each matrix in a slot (aligned span + slack)
    uint64_t slot_bytes_ = 0;
    uint64_t speculative_cap_ = 0;  // bytes
    int prediction_width_ = 0;

    // Guarded by the streaming lock.
    std::vector<Slot> slots_;
    std::vector<int> slot_of_expert_;  // key(layer, e) -> slot, -1 when not cached
    std::vector<int> held_;            // slots pinned by the current acquire
    std::vector<double> freq_;         // decayed use counts (Lfu), per key(layer, e)
    uint64_t tick_ = 0;
    uint64_t passes_ = 0;
    uint64_t speculative_in_flight_ = 0;              // bytes
    std::vector<std::vector<uint8_t>> predicted_[2];  // per layer: expert predicted this pass
    std::vector<uint8_t> predictor_ran_[2];
    ExpertStats stats_;
    std::vector<ExpertReadEvent> events_;
    double io_seconds_ = 0;  // sum of expert read durations
    uint64_t stalls_ = 0;    // acquires that waited for reads
};

}  // namespace edge_rt
