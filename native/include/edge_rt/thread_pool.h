// A small fork-join thread pool for the forward pass.
//
// Contract: ThreadPool(n) owns n-1 worker threads; the calling thread is worker 0. parallel_for()
// runs fn(begin, end) over [0, n_items) in chunks handed out dynamically (an atomic cursor), so a
// core stolen by another process slows the run but never stalls it. It returns only when every chunk
// has finished. parallel_for must be called from one thread at a time (the engine's); fn must not
// throw (kernels do not) and must not call parallel_for recursively.
// Workers spin briefly between jobs (a decode step issues hundreds of small jobs per token) and then
// sleep on a condition variable, so an idle model costs no CPU.
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
    void worker_loop(int index);
    void run_chunks();

    int n_threads_;
    std::vector<std::thread> workers_;

    // Current job, published by bumping generation_.
    const RangeFn* job_ = nullptr;
    int64_t job_items_ = 0;
    int64_t job_chunk_ = 1;
    std::atomic<int64_t> cursor_{0};
    std::atomic<int> busy_workers_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};

    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<int> sleeping_{0};
};

}  // namespace edge_rt
