#include "edge_rt/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGE_RT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EDGE_RT_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define EDGE_RT_CPU_RELAX() ((void)0)
#endif

namespace edge_rt {

namespace {
// Spin iterations before a worker sleeps. A decode step posts a job every few tens of microseconds;
// spinning across that gap avoids a futex wake per job, while ~50k pauses (~1-2 ms) keeps an idle
// model from burning a core.
constexpr int kSpinBeforeSleep = 50000;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve((size_t)n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true, std::memory_order_release);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
    const RangeFn& fn = *job_;
    for (;;) {
        const int64_t begin = cursor_.fetch_add(job_chunk_, std::memory_order_relaxed);
        if (begin >= job_items_) break;
        fn(begin, std::min(job_items_, begin + job_chunk_));
    }
}

void ThreadPool::parallel_for(int64_t n_items, int64_t min_chunk, const RangeFn& fn) {
    if (n_items <= 0) return;
    // About four chunks per thread balances load without contending on the cursor.
    int64_t chunk = std::max<int64_t>(min_chunk, (n_items + n_threads_ * 4 - 1) / (n_threads_ * 4));
    chunk = std::max<int64_t>(chunk, 1);
    if (n_threads_ == 1 || n_items <= chunk) {
        fn(0, n_items);
        return;
    }
    job_ = &fn;
    job_items_ = n_items;
    job_chunk_ = chunk;
    cursor_.store(0, std::memory_order_relaxed);
    busy_workers_.store(n_threads_ - 1, std::memory_order_relaxed);
    // seq_cst on both sides (here and the worker's sleeping_ increment then generation_ check) so a
    // worker going to sleep either sees the new generation or is seen sleeping and woken.
    generation_.fetch_add(1);
    if (sleeping_.load() > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        wake_.notify_all();
    }
    run_chunks();
    while (busy_workers_.load(std::memory_order_acquire) != 0) EDGE_RT_CPU_RELAX();
    job_ = nullptr;
}

void ThreadPool::worker_loop(int) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        int spins = 0;
        while (gen == seen) {
            if (++spins < kSpinBeforeSleep) {
                EDGE_RT_CPU_RELAX();
            } else {
                std::unique_lock<std::mutex> lock(mutex_);
                sleeping_.fetch_add(1);
                wake_.wait(lock, [&] { return generation_.load() != seen; });
                sleeping_.fetch_sub(1, std::memory_order_acq_rel);
                spins = 0;
            }
            gen = generation_.load(std::memory_order_acquire);
        }
        seen = gen;
        if (stop_.load(std::memory_order_acquire)) return;
        run_chunks();
        busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

}  // namespace edge_rt
