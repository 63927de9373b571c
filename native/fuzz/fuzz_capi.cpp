// libFuzzer harness: the C ABI (include/edge_rt/edge_rt.h) over a fuzzed GGUF file, as an app calls it.
//
// For each input: edge_rt_model_create on the file (n_ctx 32, one thread, a 256 MiB budget), then, if it
// loaded, every call of the ABI in the order an app makes them: info, memory report, tokenize (size query,
// then the call) of the input's last bytes as text, detokenize of those ids and of out-of-range ids, eval
// with a logits buffer that is too small and then right, eval past n_ctx, greedy generate of a few tokens
// with a callback, reset, and free twice.
//
// The ABI's contract is what is checked (a violation aborts: a finding), beyond ASan/UBSan/leaks:
//  - every status is one of edge_rt_status's values, and never EDGE_RT_ERR_INTERNAL (a bug by definition);
//  - a failure leaves a message starting with "[" in edge_rt_last_error (the model's and the thread's);
//  - a failed create sets *out to NULL; the memory report's classes sum to its total, within the budget;
//  - BUFFER_TOO_SMALL stores a size larger than the buffer given; a size query then the call agree;
//  - token ids from tokenize lie in [0, n_vocab); ids outside are INVALID_ARGUMENT;
//  - argument errors (a small logits buffer, a full context) leave n_past as it was; eval appends;
//  - generate reports at most max_tokens tokens, as many as the callback saw; reset empties the cache;
//  - a freed handle is EDGE_RT_ERR_INVALID_HANDLE for every call, free included.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "edge_rt/edge_rt.h"
#include "fuzz_file.h"

namespace {

constexpr int64_t kNCtx = 32;
constexpr uint64_t kBudget = 256ull << 20;
constexpr size_t kTextBytes = 48;  // the input's tail tokenized as text
constexpr int32_t kMaxGenerate = 3;

[[noreturn]] void violation(const char* what, int status, const char* message) {
    std::fprintf(stderr, "C ABI contract violation: %s (status %d %s: %s)\n", what, status,
                 edge_rt_status_name(static_cast<edge_rt_status>(status)), message ? message : "(null)");
    std::abort();
}

// Checks a returned status against the contract; returns it for the caller's branch.
edge_rt_status check(edge_rt_status s, edge_rt_model* model, const char* op) {
    if (s < EDGE_RT_OK || s > EDGE_RT_ERR_INTERNAL) violation(op, s, "status outside edge_rt_status");
    if (s == EDGE_RT_OK) return s;
    const char* thread_msg = edge_rt_last_error(nullptr);
    if (!thread_msg || thread_msg[0] != '[') violation(op, s, thread_msg);
    if (s == EDGE_RT_ERR_INTERNAL) violation(op, s, thread_msg);
    // On a live model its own message is the same failure's; edge_rt_last_error(NULL) above overwrote
    // nothing (it returns this thread's last failure).
    if (model && s != EDGE_RT_ERR_INVALID_HANDLE) {
        const char* model_msg = edge_rt_last_error(model);
        if (!model_msg || model_msg[0] != '[') violation(op, s, model_msg);
    }
    return s;
}

int count_tokens(int32_t, const char*, size_t, void* user_data) {
    ++*static_cast<int*>(user_data);
    return 0;
}

void exercise(edge_rt_model* m, const uint8_t* data, size_t size) {
    edge_rt_model_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (check(edge_rt_model_info_get(m, &info), m, "model_info") != EDGE_RT_OK) violation("model_info", -1, "");
    if (info.n_vocab <= 0 || info.n_ctx != kNCtx) violation("model_info values", info.n_vocab, "");

    edge_rt_memory_report rep;
    std::memset(&rep, 0, sizeof rep);
    rep.struct_size = sizeof rep;
    if (check(edge_rt_memory_report_get(m, &rep), m, "memory_report") != EDGE_RT_OK) {
        violation("memory_report", -1, "");
    }
    const uint64_t sum =
        rep.pinned_weights + rep.window_slots + rep.expert_cache + rep.kv_cache + rep.scratch + rep.metadata;
    if (sum > rep.total || rep.total > kBudget) violation("memory report total", (int)(rep.total >> 20), "MiB");

    // tokenize: size query, then the call
    const size_t text_len = size < kTextBytes ? size : kTextBytes;
    const char* text = reinterpret_cast<const char*>(data + size - text_len);
    std::vector<int32_t> ids;
    size_t n = 0;
    edge_rt_status s = check(edge_rt_tokenize(m, text, text_len, 1, 1, nullptr, 0, &n), m, "tokenize query");
    if (s == EDGE_RT_OK && n != 0) violation("tokenize query with cap 0 returned OK and ids", (int)n, "");
    if (s == EDGE_RT_ERR_UNSUPPORTED && info.can_tokenize) violation("tokenize unsupported", s, "");
    if (s == EDGE_RT_ERR_BUFFER_TOO_SMALL) {
        if (n == 0) violation("BUFFER_TOO_SMALL without the size needed", s, "");
        ids.resize(n);
        size_t n2 = 0;
        if (check(edge_rt_tokenize(m, text, text_len, 1, 1, ids.data(), ids.size(), &n2), m, "tokenize") !=
                EDGE_RT_OK ||
            n2 != n) {
            violation("tokenize after its size query", (int)n2, "");
        }
        for (int32_t id : ids) {
            if (id < 0 || id >= info.n_vocab) violation("tokenize returned an id outside the vocabulary", id, "");
        }
    }

    // detokenize: the ids, then ids outside the vocabulary
    if (!ids.empty()) {
        size_t len = 0;
        s = check(edge_rt_detokenize(m, ids.data(), ids.size(), 1, nullptr, 0, &len), m, "detokenize query");
        if (s == EDGE_RT_ERR_BUFFER_TOO_SMALL) {
            std::vector<char> out(len);
            size_t len2 = 0;
            if (check(edge_rt_detokenize(m, ids.data(), ids.size(), 1, out.data(), out.size(), &len2), m,
                      "detokenize") != EDGE_RT_OK ||
                len2 != len) {
                violation("detokenize after its size query", (int)len2, "");
            }
        }
    }
    const int32_t bad[2] = {-1, info.n_vocab};
    for (int32_t b : bad) {
        char buf[16];
        size_t len = 0;
        if (check(edge_rt_detokenize(m, &b, 1, 1, buf, sizeof buf, &len), m, "detokenize bad id") !=
            EDGE_RT_ERR_INVALID_ARGUMENT) {
            violation("detokenize accepted an id outside the vocabulary", b, "");
        }
    }

    // eval: too small a logits buffer changes nothing; then two tokens; then past n_ctx
    std::vector<int32_t> prompt;
    for (size_t i = 0; i < 2; ++i) prompt.push_back(i < ids.size() ? ids[i] : (int32_t)(i % info.n_vocab));
    std::vector<float> logits((size_t)info.n_vocab);
    if (check(edge_rt_eval(m, prompt.data(), prompt.size(), logits.data(), logits.size() - 1), m, "eval small") !=
            EDGE_RT_ERR_BUFFER_TOO_SMALL ||
        edge_rt_n_past(m) != 0) {
        violation("eval with a short logits buffer", (int)edge_rt_n_past(m), "");
    }
    s = check(edge_rt_eval(m, prompt.data(), prompt.size(), logits.data(), logits.size()), m, "eval");
    const int64_t past = edge_rt_n_past(m);
    if (s == EDGE_RT_OK ? past != (int64_t)prompt.size() : past != 0) violation("n_past after eval", (int)past, "");
    std::vector<int32_t> too_many((size_t)kNCtx, 0);
    if (check(edge_rt_eval(m, too_many.data(), too_many.size(), nullptr, 0), m, "eval full") !=
            EDGE_RT_ERR_CONTEXT_FULL ||
        edge_rt_n_past(m) != past) {
        violation("eval past n_ctx", (int)edge_rt_n_past(m), "");
    }

    // generate: greedy, a few tokens, from an empty cache
    int seen = 0;
    edge_rt_generate_result res;
    std::memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    s = check(edge_rt_generate(m, prompt.data(), prompt.size(), kMaxGenerate, count_tokens, &seen, &res), m,
              "generate");
    if (s == EDGE_RT_OK && (res.n_tokens != seen || seen > kMaxGenerate)) violation("generate count", seen, "");
    if (check(edge_rt_reset(m), m, "reset") != EDGE_RT_OK || edge_rt_n_past(m) != 0) violation("reset", -1, "");
    if (edge_rt_token_is_eog(m, -1) != -1) violation("token_is_eog(-1)", -1, "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzFile file(data, size);
    edge_rt_options opt;
    edge_rt_options_init(&opt);
    opt.model_path = file.path().c_str();
    opt.n_ctx = kNCtx;
    opt.n_threads = 1;
    opt.mem_budget = kBudget;
    edge_rt_model* m = reinterpret_cast<edge_rt_model*>(uintptr_t{1});  // create must overwrite it
    if (check(edge_rt_model_create(&opt, &m), nullptr, "create") != EDGE_RT_OK) {
        if (m != nullptr) violation("failed create left *out set", -1, "");
        return 0;
    }
    exercise(m, data, size);
    if (check(edge_rt_model_free(m), nullptr, "free") != EDGE_RT_OK) violation("free", -1, "");
    if (check(edge_rt_model_free(m), nullptr, "free twice") != EDGE_RT_ERR_INVALID_HANDLE) {
        violation("free of a freed handle", -1, "");
    }
    if (edge_rt_n_past(m) != -1) violation("n_past on a freed handle", -1, "");
    return 0;
}
