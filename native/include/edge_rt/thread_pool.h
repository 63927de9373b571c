// A small fork-join thread pool for the forward pass.
//
// Contract: ThreadPool(n) owns n-1 worker threads; the calling thread is worker 0. parallel_for()
// runs fn(begin, end) over [0, n_items) in chunks handed out dynamically (an atomic cursor), so a
// core stolen by another process slows the run but never stalls it. It returns only when every chunk
// has finished. parallel_for must be called from one thread at a time (the engine's); fn must not
// throw (kernels do not) and must not call parallel_for recursively.
// Workers spin briefly between jobs (a decode step issues hundreds of small jobs per token) and then
// sleep on a condition variable, so an idle model costs no CPU. Waits yield the core after a short
// spin, so an oversubscribed machine (more runnable threads than cores) degrades gracefully.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edge_rt {

class ThreadPool {
public:
    using RangeFn = std::function<void(int64_t begin, int64_t end)>;

    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const noexcept { return n_threads_; }

    // Runs fn over [0, n_items) in chunks of at least min_chunk items.
    void parallel_for(int64_t n_items, int64_t min_chunk, const RangeFn& fn);

private:
    void worker_loop();
    // Claims and runs chunks of the job tagged `epoch` until none is left (or a newer job started).
    void run_chunks(uint64_t epoch);

    int n_threads_;
    std::vector<std::thread> workers_;

    // The current job. cursor_ packs (epoch << kIndexBits) | next item index, so a worker that wakes
    // late can never claim a chunk of a job other than the one it read: its compare-exchange fails
    // once the epoch moved on. The caller waits for done_items_, not for workers, so a descheduled
    // worker that never got a chunk costs nothing.
    static constexpr int kIndexBits = 40;
    std::atomic<const RangeFn*> job_{nullptr};
    std::atomic<int64_t> job_items_{0};
    std::atomic<int64_t> job_chunk_{1};
    std::atomic<uint64_t> cursor_{0};
    std::atomic<int64_t> done_items_{0};
    uint64_t epoch_ = 0;
    std::atomic<bool> stop_{false};

    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<int> sleeping_{0};
};

}  // namespace edge_rt
