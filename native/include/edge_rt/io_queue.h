// IoQueue: the I/O threads of a streaming weight provider and the queue of reads they serve.
//
// Owners (the layer window, the expert cache) submit spans of the model file to read into their
// buffers, for one of their targets (a window slot, an expert slot). The queue cuts each span into
// chunks of at most kIoChunkBytes, several I/O threads read them concurrently through one FileReader
// (direct I/O when the filesystem allows it, else buffered reads that drop the page cache behind them;
// wrapped by the fault-injecting reader when asked to fail), and every chunk is reported back to its
// owner through IoSink: on_read_start before its read, on_read_done after it, with the error if the
// read failed (Error(Io), or Error(ModelFormat) for a short read). Errors are never thrown on an I/O
// thread: the owner records them and raises them on the engine thread.
//
// Order: chunks are read in queue order. Urgent submissions go ahead of everything queued (what the
// engine waits on), normal ones behind; promote() moves one target's queued chunks to the front.
//
// Locking: one mutex, "the streaming lock" (mutex()), guards the queue, the in-flight count and, by
// the owners' contract, every piece of owner state that their IoSink callbacks touch: the callbacks
// run on I/O threads with the lock held, and the engine thread holds it while it reads or changes that
// state. It is shared because one invariant spans both: a resync drops the queue and resets the targets
// whose chunks it dropped in one step. The sections below say which methods need it held; the others
// take nothing (read_now, now) or take it themselves (start, stop).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/file_reader.h"

namespace edge_rt {

constexpr uint64_t kIoChunkBytes = 4ull << 20;  // one read request; one per I/O thread in flight
constexpr size_t kMaxIoEvents = 1u << 18;       // timeline records an owner keeps (window fills, expert reads)

// The owner of read targets. Both callbacks run on an I/O thread with the streaming lock held: they
// must not block, take another lock, or throw.
class IoSink {
public:
    // A chunk of `target` is about to be read; t = IoQueue::now().
    virtual void on_read_start(int target, double t) = 0;
    // A chunk of `target` (`bytes` long) was read, or failed with error (non-empty) of `kind`.
    virtual void on_read_done(int target, uint64_t bytes, ErrorKind kind, const std::string& error, double t) = 0;

protected:
    ~IoSink() = default;
};

// A target's read as its owner tracks it, from the IoSink callbacks (guarded by the streaming lock).
struct IoProgress {
    int pending = 0;                  // chunks not yet read (set from IoQueue::submit)
    double io_start = 0, io_end = 0;  // first chunk started / last chunk done (IoQueue::now()); 0 = not yet
    ErrorKind error_kind = ErrorKind::Internal;
    std::string error;  // the first failure; empty if none

    void start(double t) noexcept {
        if (io_start == 0) io_start = t;
    }
    // Records one chunk's outcome; true when it was the last one (then io_end = t).
    bool chunk_done(ErrorKind kind, const std::string& e, double t);
};

// length bytes of the file at offset (4096-aligned, as direct I/O needs) into dst.
struct IoSpan {
    uint8_t* dst = nullptr;
    uint64_t offset = 0, length = 0;
};

enum class IoPriority { Normal, Urgent };

// A buffer aligned for direct I/O (freed with std::free); throws Error(OutOfMemory) naming `what`.
struct IoBufferFree {
    void operator()(uint8_t* p) const noexcept;
};
using IoBuffer = std::unique_ptr<uint8_t, IoBufferFree>;
IoBuffer alloc_io_buffer(uint64_t bytes, const std::string& what);

class IoQueue {
public:
    // Opens the model file (Error(Io) if it cannot); fault_after_bytes > 0 wraps the reader so that the
    // read crossing that much traffic fails (a short read when fault_short_read, else EIO). The clock of
    // now() starts here.
    IoQueue(const std::string& path, uint64_t file_size, IoMode mode, uint64_t fault_after_bytes,
            bool fault_short_read);
    ~IoQueue();  // stop()
    IoQueue(const IoQueue&) = delete;
    IoQueue& operator=(const IoQueue&) = delete;

    // ---- engine thread: lifetime (take the lock themselves) ----
    void start(int n_threads);
    // Drops queued chunks (never reported) and joins the threads; reads in flight finish first and
    // are reported. Idempotent. Owners' buffers must outlive it.
    void stop() noexcept;

    // ---- engine thread: synchronous reads (no lock; the reader is thread-safe) ----
    // Reads [offset, offset + length) into dst on the calling thread (pinned weights, embedding rows);
    // throws the reader's Error. The part past the end of the file is not required.
    void read_now(uint8_t* dst, uint64_t length, uint64_t offset);

    // ---- engine thread: lock held ----
    // Queues spans[0..n) for `owner`'s `target`, in order; returns the number of chunks, each reported
    // once to owner.on_read_done (unless dropped by drop_all or stop).
    size_t submit(IoSink& owner, int target, const IoSpan* spans, size_t n, IoPriority priority);
    // Moves the queued chunks of (owner, target) ahead of the others (each group keeps its order).
    void promote(const IoSink& owner, int target);
    // Drops every queued chunk (never reported) and waits until no read is in flight.
    void drop_all(std::unique_lock<std::mutex>& lock);
    // Waits until some chunk completes (spurious wake-ups possible: callers loop on their state).
    void wait_for_completion(std::unique_lock<std::mutex>& lock) { completed_.wait(lock); }

    // ---- any thread ----
    std::mutex& mutex() const noexcept { return mutex_; }
    double now() const;  // seconds since construction (the telemetry clock)
    const char* reader_kind() const noexcept { return reader_->kind(); }

private:
    struct Chunk {
        IoSink* owner;
        int target;
        uint8_t* dst;
        uint64_t offset, length;
    };
    void run();  // an I/O thread

    std::unique_ptr<FileReader> reader_;
    uint64_t file_size_ = 0;
    double t0_ = 0;

    mutable std::mutex mutex_;           // the streaming lock (see above)
    std::condition_variable wake_;       // I/O threads: chunks queued or stopping
    std::condition_variable completed_;  // engine: a chunk completed
    std::deque<Chunk> queue_;            // guarded by mutex_
    int busy_ = 0;                       // guarded by mutex_: chunks being read
    bool stopping_ = false;              // guarded by mutex_
    std::vector<std::thread> threads_;   // engine thread only (start/stop)
};

}  // namespace edge_rt
