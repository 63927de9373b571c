#include "edge_rt/engine_options.h"

#include "edge_rt/error.h"

namespace edge_rt {

namespace {

void check_range(const char* name, int64_t value, int64_t lo, int64_t hi, const char* what = "") {
    if (value < lo || value > hi) {
        fail(ErrorKind::InvalidArgument, std::string("[load] ") + name + " must be in [" + std::to_string(lo) + ", " +
                                             std::to_string(hi) + "]" + what + ", got " + std::to_string(value));
    }
}

}  // namespace

void check_options(const EngineOptions& o) {
    check_range("threads", o.context.n_threads, 1, kMaxThreads);
    check_range("n_ctx", o.context.n_ctx, 1, kMaxContext);
    check_range("n_ubatch", o.context.n_ubatch, 0, kMaxUbatch, " (0 = the default)");
    const StreamingOptions& s = o.model.streaming;
    check_range("window", s.window, 0, kMaxWindow, " (0 = the largest that fits)");
    check_range("expert_prediction_width", s.prediction_width, 0, 1 << 16, " (0 = expert_used_count)");
    if (!o.model.mem_budget) {
        if (s.window)
            fail(ErrorKind::InvalidArgument,
                 "[load] window needs mem_budget (without a budget every weight is resident)");
        if (s.expert_cache_bytes) {
            fail(ErrorKind::InvalidArgument,
                 "[load] expert_cache needs mem_budget (without a budget every weight is resident)");
        }
    }
}

ExpertPolicy parse_expert_policy(const std::string& name) {
    if (name == "lru") return ExpertPolicy::Lru;
    if (name == "lfu") return ExpertPolicy::Lfu;
    fail(ErrorKind::InvalidArgument, "[load] expert_policy must be 'lru' or 'lfu', got '" + name + "'");
}

ExpertPrefetch parse_expert_prefetch(const std::string& name) {
    if (name == "off") return ExpertPrefetch::Off;
    if (name == "same") return ExpertPrefetch::SameLayer;
    if (name == "next") return ExpertPrefetch::NextLayer;
    if (name == "both") return ExpertPrefetch::Both;
    fail(ErrorKind::InvalidArgument,
         "[load] expert_prefetch must be 'off', 'same', 'next' or 'both', got '" + name + "'");
}

const char* expert_policy_name(ExpertPolicy policy) noexcept { return policy == ExpertPolicy::Lru ? "lru" : "lfu"; }

const char* expert_prefetch_name(ExpertPrefetch prefetch) noexcept {
    switch (prefetch) {
        case ExpertPrefetch::Off: return "off";
        case ExpertPrefetch::SameLayer: return "same";
        case ExpertPrefetch::NextLayer: return "next";
        case ExpertPrefetch::Both: return "both";
    }
    return "off";
}

const char* io_mode_name(IoMode mode) noexcept {
    switch (mode) {
        case IoMode::Auto: return "auto";
        case IoMode::Direct: return "direct";
        case IoMode::Buffered: return "buffered";
    }
    return "auto";
}

}  // namespace edge_rt
