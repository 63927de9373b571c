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

// Test builds only (native/tests/test_thread_pool.cpp): a pause between reading the cursor and reading
// the job parameters, where preemption would put it, so the stress test hits that window every run.
#ifdef EDGE_RT_TEST_WIDEN_POOL_RACE
#define EDGE_RT_TEST_PAUSE() \
    for (volatile int pause = 0; pause < 300; ++pause) {}
#else
#define EDGE_RT_TEST_PAUSE() ((void)0)
#endif

namespace edge_rt {

namespace {
// A decode step posts a job every few tens of microseconds; a worker spins about that long before
// yielding, and sleeps after ~1 ms without work so an idle model burns no core.
constexpr int kSpinBeforeYield = 2000;
constexpr int kYieldsBeforeSleep = 200;
constexpr uint64_t kIndexMask = (uint64_t(1) << 40) - 1;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve((size_t)n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(uint64_t epoch) {
    for (;;) {
        uint64_t c = cursor_.load(std::memory_order_acquire);
        if ((c >> kIndexBits) != epoch) return;
        const int64_t begin = (int64_t)(c & kIndexMask);
        EDGE_RT_TEST_PAUSE();
        // Acquire: a worker that sees the next job's parameters also sees the cursor closed (below),
        // so its compare-exchange on this job's cursor value fails.
        const int64_t items = job_items_.load(std::memory_order_acquire);
        const int64_t chunk = job_chunk_.load(std::memory_order_acquire);
        if (begin >= items) return;
        const int64_t end = std::min(items, begin + chunk);
        if (!cursor_.compare_exchange_weak(c, c + (uint64_t)(end - begin), std::memory_order_acq_rel)) continue;
        // The chunk is ours and unfinished, so the caller is still waiting and the job is alive.
        (*job_.load(std::memory_order_relaxed))(begin, end);
        done_items_.fetch_add(end - begin, std::memory_order_acq_rel);
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
    // Close the previous job before rewriting the parameters: a worker may have read that job's
    // cursor (all items claimed) and be about to read job_items_; if it read the new, larger count
    // while the cursor still held the old value, its compare-exchange would succeed and it would run
    // the new closure past the old job's end (a crash) and miscount done_items_ (a hang). With the
    // cursor at the old epoch's closed index, that compare-exchange fails and no new chunk is claimable.
    cursor_.store((epoch_ << kIndexBits) | kIndexMask);
    epoch_ = (epoch_ + 1) & ((uint64_t(1) << (64 - kIndexBits)) - 1);
    if (epoch_ == 0) epoch_ = 1;  // epoch 0 means "no job" to a fresh worker
    job_.store(&fn, std::memory_order_release);
    job_items_.store(n_items, std::memory_order_release);
    job_chunk_.store(chunk, std::memory_order_release);
    done_items_.store(0, std::memory_order_relaxed);
    // seq_cst here and in the worker's sleeping_ increment then cursor_ check: a worker going to
    // sleep either sees the new job or is seen sleeping and woken.
    cursor_.store(epoch_ << kIndexBits);
    if (sleeping_.load() > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        wake_.notify_all();
    }
    run_chunks(epoch_);
    int spins = 0;
    while (done_items_.load(std::memory_order_acquire) != n_items) {
        if (++spins < kSpinBeforeYield)
            EDGE_RT_CPU_RELAX();
        else
            std::this_thread::yield();
    }
}

void ThreadPool::worker_loop() {
    uint64_t seen_epoch = 0;
    for (;;) {
        int spins = 0, yields = 0;
        uint64_t epoch = cursor_.load(std::memory_order_acquire) >> kIndexBits;
        while (epoch == seen_epoch) {
            if (stop_.load(std::memory_order_acquire)) return;
            if (++spins < kSpinBeforeYield) {
                EDGE_RT_CPU_RELAX();
            } else if (++yields < kYieldsBeforeSleep) {
                std::this_thread::yield();
            } else {
                std::unique_lock<std::mutex> lock(mutex_);
                sleeping_.fetch_add(1);
                wake_.wait(lock, [&] { return stop_.load() || (cursor_.load() >> kIndexBits) != seen_epoch; });
                sleeping_.fetch_sub(1);
                spins = yields = 0;
            }
            epoch = cursor_.load(std::memory_order_acquire) >> kIndexBits;
        }
        seen_epoch = epoch;
        run_chunks(epoch);
    }
}

}  // namespace edge_rt
