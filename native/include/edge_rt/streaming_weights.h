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
#include "edge_rt/file_reader.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

struct StreamingOptions {
    int window = 0;              // slots; 0 = the largest that fits the budget (at least 1)
    IoMode io_mode = IoMode::Auto;
    bool prefetch = true;        // false: the naive baseline, each unit read when acquired, no overlap
    int io_threads = 4;          // requests in flight
    uint64_t fault_after_bytes = 0;  // test hook: inject a failure after this much traffic (0 = off)
    bool fault_short_read = false;   // injected failure is a short read (else EIO)
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
    uint64_t bytes_read = 0;     // weight bytes read from the file (window fills and embedding rows)
    double io_seconds = 0;       // sum of slot fill durations
    double stall_seconds = 0;    // time acquire() waited for I/O
    uint64_t acquires = 0;       // streamed unit acquisitions
    uint64_t stalls = 0;         // of which had to wait
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

    // Smallest weight budget this model can stream with: one slot for its largest unit plus the
    // embedding row buffer.
    static uint64_t min_weight_bytes(const GgufFile& file, const ModelConfig& cfg);

    int window() const noexcept { return (int)slots_.size(); }
    uint64_t slot_bytes() const noexcept { return slot_bytes_; }
    std::vector<int> pinned_units() const;
    std::vector<int> streamed_units() const { return streamed_; }
    uint64_t streamed_bytes_per_pass() const noexcept;  // bytes read per token when every unit streams once
    const char* io_kind() const noexcept { return reader_->kind(); }
    StreamStats stats() const;
    std::vector<StreamEvent> events() const;
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
    struct Chunk { int slot; uint64_t seq; uint8_t* dst; uint64_t offset; uint64_t length; };

    const uint8_t* locate(const Unit& u, const uint8_t* base, const GgufTensorInfo& t) const;
    void bind_views(int unit, const uint8_t* base, LayerWeights& layer, HeadWeights& head) const;
    Slot& acquire_unit(int unit);
    void release_unit(int unit);
    void issue(uint64_t seq);            // queue the fill of the slot for streamed use `seq` (lock held)
    void resync(uint64_t seq, std::unique_lock<std::mutex>& lock);  // drop the pipeline, restart at seq
    void io_loop();
    double now() const;

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

    StreamStats stats_;
    std::vector<StreamEvent> events_;
    double t0_ = 0;
};

}  // namespace edge_rt
