// Stress test of the fork-join pool: every item of every job runs exactly once, inside the job's
// range, and parallel_for returns only after all of them ran.
//
// Jobs alternate between few and many items, so a worker that looked at a finished job just before
// the next one was posted would, if it could still claim a chunk of the old job, run past the old
// job's end (the bug this guards against: a crash or a hang in the engine, 1 run in 3 on 2 cores).
// The test build widens that window (EDGE_RT_TEST_WIDEN_POOL_RACE); before the fix it hung here.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

#include "edge_rt/thread_pool.h"

using namespace edge_rt;

int main() {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    int failures = 0;
    for (int n_threads : {2, (int)cores + 2}) {
        ThreadPool pool(n_threads);
        std::vector<std::atomic<int>> hits(4096);
        std::atomic<int64_t> out_of_range{0};
        const int kJobs = 60000;
        int bad_coverage = 0;
        for (int j = 0; j < kJobs; ++j) {
            // 2..9 items (every chunk one item) alternating with 1000..4000 items.
            const int64_t n = (j % 2) ? 2 + (j % 8) : 1000 + (j * 37) % 3000;
            for (int64_t i = 0; i < n; ++i) hits[(size_t)i].store(0, std::memory_order_relaxed);
            pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
                if (b < 0 || e > n || b >= e) {
                    out_of_range.fetch_add(1);
                    return;
                }
                for (int64_t i = b; i < e; ++i) hits[(size_t)i].fetch_add(1, std::memory_order_relaxed);
            });
            for (int64_t i = 0; i < n; ++i)
                if (hits[(size_t)i].load(std::memory_order_relaxed) != 1) {
                    ++bad_coverage;
                    break;
                }
        }
        if (out_of_range.load() != 0 || bad_coverage != 0) {
            std::fprintf(stderr, "FAIL threads=%d: %lld out-of-range chunks, %d jobs with items not run once\n",
                         n_threads, (long long)out_of_range.load(), bad_coverage);
            ++failures;
        } else {
            std::printf("threads=%d: %d jobs, every item ran once\n", n_threads, kJobs);
        }
    }
    return failures == 0 ? 0 : 1;
}
