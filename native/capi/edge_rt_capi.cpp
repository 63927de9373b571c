// libedge_rt.so: the C ABI of edge_rt.h over the same Engine the Python module wraps, plus the C++
// Tokenizer. Thin by design: handle lookup, argument checks, one catch-all per call mapping edge_rt::Error
// kinds to edge_rt_status (no exception crosses the ABI), and greedy generation as Model.generate_tokens.
#include "edge_rt/edge_rt.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "edge_rt/cpu_features.h"
#include "edge_rt/engine.h"
#include "edge_rt/error.h"
#include "edge_rt/file_reader.h"
#include "edge_rt/tokenizer.h"

#ifndef EDGE_RT_VERSION_STRING
#define EDGE_RT_VERSION_STRING "unknown"
#endif

namespace {

using edge_rt::ErrorKind;

constexpr int64_t kEvalChunk = 512;     // prompt tokens per Engine::eval call (edge_rt/model.py _EVAL_CHUNK)
constexpr int64_t kDefaultNCtx = 2048;  // edge_rt/loading.py DEFAULT_N_CTX
// The tokenizer's tables, declared to the budget as a multiple of the parsed metadata, the bound
// edge_rt/loading.py HOST_METADATA_FACTOR measured for the Python tokenizer. The C tokenizer holds no
// more than that, so a C ABI model and a Python one with the same options place the same weights.
constexpr uint64_t kHostMetadataFactor = 10;

struct Model {
    std::unique_ptr<edge_rt::Engine> engine;
    std::unique_ptr<edge_rt::Tokenizer> tokenizer;
    std::mutex mutex;                            // one call at a time
    std::atomic<std::thread::id> busy_thread{};  // the thread inside a call (callback re-entry check)
    std::atomic<bool> cancel{false};             // edge_rt_cancel's request, consumed by the eval it stops
    std::mutex error_mutex;
    std::string last_error;
};

// Live handles: id -> model. Ids come from a counter and are never reused, so a freed handle cannot alias a
// newer model; a call holds its own reference, so a concurrent free releases the model after the call.
std::mutex g_registry_mutex;
std::unordered_map<uintptr_t, std::shared_ptr<Model>> g_models;
uintptr_t g_next_id = 1;

thread_local std::string t_last_error;
thread_local std::string t_returned_error;  // what edge_rt_last_error returned last on this thread

std::shared_ptr<Model> lookup(const edge_rt_model* handle) {
    if (!handle) return nullptr;
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    auto it = g_models.find(reinterpret_cast<uintptr_t>(handle));
    return it == g_models.end() ? nullptr : it->second;
}

edge_rt_status status_of(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::ModelFormat: return EDGE_RT_ERR_MODEL_FORMAT;
        case ErrorKind::UnsupportedArchitecture: return EDGE_RT_ERR_UNSUPPORTED;
        case ErrorKind::UnsupportedType: return EDGE_RT_ERR_UNSUPPORTED_TYPE;
        case ErrorKind::InvalidArgument: return EDGE_RT_ERR_INVALID_ARGUMENT;
        case ErrorKind::Io: return EDGE_RT_ERR_IO;
        case ErrorKind::OutOfMemory: return EDGE_RT_ERR_OUT_OF_MEMORY;
        case ErrorKind::Interrupted: return EDGE_RT_ERR_CANCELLED;
        case ErrorKind::Internal: return EDGE_RT_ERR_INTERNAL;
    }
    return EDGE_RT_ERR_INTERNAL;
}

// A failure the C layer reports itself (not an edge_rt::Error from the core).
struct CError {
    edge_rt_status status;
    std::string message;
};

edge_rt_status record(Model* m, edge_rt_status status, const std::string& message) {
    t_last_error = message;
    if (m) {
        std::lock_guard<std::mutex> lock(m->error_mutex);
        m->last_error = message;
    }
    return status;
}

// Runs body(model) for the call op on handle: validates the handle, serializes calls, and turns every
// exception into a status and a message.
template <class Body>
edge_rt_status with_model(edge_rt_model* handle, const char* op, Body&& body) {
    std::shared_ptr<Model> m = lookup(handle);
    if (!m) {
        return record(nullptr, EDGE_RT_ERR_INVALID_HANDLE,
                      std::string("[") + op + "] invalid model handle (NULL, freed, or not from edge_rt_model_create)");
    }
    if (m->busy_thread.load() == std::this_thread::get_id()) {
        return record(m.get(), EDGE_RT_ERR_INVALID_ARGUMENT,
                      std::string("[") + op + "] the model is busy on this thread (called from a token callback?)");
    }
    try {
        std::lock_guard<std::mutex> lock(m->mutex);
        m->busy_thread.store(std::this_thread::get_id());
        struct Unmark {
            Model& m;
            ~Unmark() { m.busy_thread.store(std::thread::id()); }
        } unmark{*m};
        return body(*m);
    } catch (const CError& e) {
        return record(m.get(), e.status, e.message);
    } catch (const edge_rt::Error& e) {
        return record(m.get(), status_of(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
        return record(m.get(), EDGE_RT_ERR_OUT_OF_MEMORY, std::string("[") + op + "] out of memory");
    } catch (const std::exception& e) {
        return record(m.get(), EDGE_RT_ERR_INTERNAL, std::string("[") + op + "] " + e.what());
    } catch (...) {
        return record(m.get(), EDGE_RT_ERR_INTERNAL, std::string("[") + op + "] unknown error");
    }
}

[[noreturn]] void c_fail(edge_rt_status status, const std::string& message) { throw CError{status, message}; }

void require(bool ok, const char* op, const char* what) {
    if (!ok) c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, std::string("[") + op + "] " + what);
}

// The struct_size of a caller's struct: at least the ABI-1 size (fields are only ever appended).
void require_size(uint32_t got, size_t need, const char* op, const char* type) {
    if (got < need) {
        c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, std::string("[") + op + "] " + type + ".struct_size is " +
                                                 std::to_string(got) + ", expected " + std::to_string(need) +
                                                 " (call the *_init function or set it to sizeof)");
    }
}

int default_threads() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return (int)std::max(1u, std::thread::hardware_concurrency());
}

void copy_name(char* dst, size_t cap, const std::string& src) {
    const size_t n = std::min(cap - 1, src.size());
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

// Engine::eval with the model's cancel flag polled between layers; a cancel that stops it is consumed.
// On any failure the KV cache is emptied, so the next call starts from a known state.
void eval(Model& m, const int32_t* tokens, int64_t n, float* logits) {
    try {
        m.engine->eval(tokens, n, false, logits, [&m] { return m.cancel.load(); });
    } catch (const edge_rt::Error& e) {
        m.engine->reset();
        if (e.kind() == ErrorKind::Interrupted) {
            m.cancel.store(false);
            c_fail(EDGE_RT_ERR_CANCELLED, "[eval] cancelled (edge_rt_cancel)");
        }
        throw;
    } catch (...) {
        m.engine->reset();
        throw;
    }
}

void check_tokens(const Model& m, const int32_t* tokens, size_t n, const char* op) {
    const int32_t n_vocab = m.engine->config().n_vocab;
    for (size_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, std::string("[") + op + "] token id " + std::to_string(tokens[i]) +
                                                     " at position " + std::to_string(i) + " is outside [0, " +
                                                     std::to_string(n_vocab) + ")");
        }
    }
}

// np.argmax: the first maximum. NaN or all -inf is an error, as edge_rt.sampling's greedy sampler says.
int32_t argmax(const std::vector<float>& x) {
    int32_t best = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        if (std::isnan(x[i])) c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, "[sampling] logits contain NaN");
        if (x[i] > x[best]) best = (int32_t)i;
    }
    if (x[best] == INFINITY) c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, "[sampling] logits contain +inf");
    if (x[best] == -INFINITY) c_fail(EDGE_RT_ERR_INVALID_ARGUMENT, "[sampling] every logit is -inf");
    return best;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

extern "C" {

int32_t edge_rt_abi_version(void) { return EDGE_RT_ABI_VERSION; }

const char* edge_rt_version(void) { return EDGE_RT_VERSION_STRING; }

const char* edge_rt_last_error(const edge_rt_model* handle) {
    std::shared_ptr<Model> m = lookup(handle);
    if (!m) return t_last_error.c_str();
    std::lock_guard<std::mutex> lock(m->error_mutex);
    t_returned_error = m->last_error;  // a copy: another thread may set the model's error meanwhile
    return t_returned_error.c_str();
}

const char* edge_rt_status_name(edge_rt_status status) {
    switch (status) {
        case EDGE_RT_OK: return "EDGE_RT_OK";
        case EDGE_RT_ERR_INVALID_ARGUMENT: return "EDGE_RT_ERR_INVALID_ARGUMENT";
        case EDGE_RT_ERR_MODEL_FORMAT: return "EDGE_RT_ERR_MODEL_FORMAT";
        case EDGE_RT_ERR_UNSUPPORTED: return "EDGE_RT_ERR_UNSUPPORTED";
        case EDGE_RT_ERR_UNSUPPORTED_TYPE: return "EDGE_RT_ERR_UNSUPPORTED_TYPE";
        case EDGE_RT_ERR_IO: return "EDGE_RT_ERR_IO";
        case EDGE_RT_ERR_OUT_OF_MEMORY: return "EDGE_RT_ERR_OUT_OF_MEMORY";
        case EDGE_RT_ERR_CANCELLED: return "EDGE_RT_ERR_CANCELLED";
        case EDGE_RT_ERR_INVALID_HANDLE: return "EDGE_RT_ERR_INVALID_HANDLE";
        case EDGE_RT_ERR_BUFFER_TOO_SMALL: return "EDGE_RT_ERR_BUFFER_TOO_SMALL";
        case EDGE_RT_ERR_CONTEXT_FULL: return "EDGE_RT_ERR_CONTEXT_FULL";
        case EDGE_RT_ERR_INTERNAL: return "EDGE_RT_ERR_INTERNAL";
    }
    return "EDGE_RT_ERR_UNKNOWN";
}

void edge_rt_options_init(edge_rt_options* options) {
    if (!options) return;
    std::memset(options, 0, sizeof(*options));
    options->struct_size = sizeof(*options);
}

edge_rt_status edge_rt_model_create(const edge_rt_options* options, edge_rt_model** out) {
    const char* op = "create";
    if (out) *out = nullptr;
    try {
        require(options != nullptr, op, "options is NULL");
        require(out != nullptr, op, "out is NULL");
        require_size(options->struct_size, sizeof(edge_rt_options), op, "edge_rt_options");
        require(options->model_path != nullptr, op, "options.model_path is NULL");
        require(options->n_ctx >= 0 && options->n_threads >= 0 && options->window >= 0 && options->n_ubatch >= 0, op,
                "options: n_ctx, n_threads, window and n_ubatch must be >= 0 (0 = default)");
        edge_rt::EngineOptions eo;
        eo.model.mem_budget = options->mem_budget;
        eo.model.streaming.window = options->window;
        eo.model.streaming.expert_cache_bytes = options->expert_cache_bytes;
        if (options->io_mode) eo.model.streaming.io_mode = edge_rt::parse_io_mode(options->io_mode);
        eo.context.n_threads = options->n_threads ? options->n_threads : std::min(default_threads(), 8);
        eo.context.n_ubatch = options->n_ubatch;
        const std::string path = options->model_path;
        auto file = edge_rt::GgufFile::open(path);
        eo.model.host_metadata_bytes = kHostMetadataFactor * file->metadata_bytes();
        if (options->n_ctx) {
            eo.context.n_ctx = options->n_ctx;
        } else {
            const int64_t train = edge_rt::ModelConfig::from_gguf(*file).n_ctx_train;
            eo.context.n_ctx = train > 0 ? std::min(kDefaultNCtx, train) : kDefaultNCtx;
        }
        auto m = std::make_shared<Model>();
        m->engine = std::make_unique<edge_rt::Engine>(path, eo);
        m->tokenizer = std::make_unique<edge_rt::Tokenizer>(edge_rt::Tokenizer::from_gguf(*file));
        if (m->tokenizer->n_vocab() != m->engine->config().n_vocab) {
            edge_rt::fail(ErrorKind::ModelFormat,
                          "[tokenizer] key 'tokenizer.ggml.tokens': " + std::to_string(m->tokenizer->n_vocab()) +
                              " tokens, but the model has n_vocab " + std::to_string(m->engine->config().n_vocab));
        }
        std::lock_guard<std::mutex> lock(g_registry_mutex);
        const uintptr_t id = g_next_id++;
        g_models.emplace(id, std::move(m));
        *out = reinterpret_cast<edge_rt_model*>(id);
        return EDGE_RT_OK;
    } catch (const CError& e) {
        return record(nullptr, e.status, e.message);
    } catch (const edge_rt::Error& e) {
        return record(nullptr, status_of(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
        return record(nullptr, EDGE_RT_ERR_OUT_OF_MEMORY, "[create] out of memory");
    } catch (const std::exception& e) {
        return record(nullptr, EDGE_RT_ERR_INTERNAL, std::string("[create] ") + e.what());
    } catch (...) {
        return record(nullptr, EDGE_RT_ERR_INTERNAL, "[create] unknown error");
    }
}

edge_rt_status edge_rt_model_free(edge_rt_model* handle) {
    std::shared_ptr<Model> m;
    {
        std::lock_guard<std::mutex> lock(g_registry_mutex);
        auto it = handle ? g_models.find(reinterpret_cast<uintptr_t>(handle)) : g_models.end();
        if (it == g_models.end()) {
            return record(nullptr, EDGE_RT_ERR_INVALID_HANDLE, "[free] invalid model handle (NULL or already freed)");
        }
        m = std::move(it->second);
        g_models.erase(it);
    }
    // A call in progress (on another thread, or this one's token callback) holds its own reference: it stops
    // at its next cancel check, and the model is released when it returns.
    m->cancel.store(true);
    return EDGE_RT_OK;
}

edge_rt_status edge_rt_model_info_get(edge_rt_model* handle, edge_rt_model_info* info) {
    return with_model(handle, "model_info", [&](Model& m) {
        require(info != nullptr, "model_info", "info is NULL");
        require_size(info->struct_size, sizeof(edge_rt_model_info), "model_info", "edge_rt_model_info");
        const edge_rt::ModelConfig& c = m.engine->config();
        info->n_vocab = (int32_t)c.n_vocab;
        info->n_ctx = m.engine->n_ctx();
        info->n_layer = (int32_t)c.n_layer;
        info->n_embd = (int32_t)c.n_embd;
        info->n_threads = m.engine->n_threads();
        info->bos_token = m.tokenizer->bos_id();
        info->eos_token = m.tokenizer->eos_id();
        info->can_tokenize = m.tokenizer->can_tokenize() ? 1 : 0;
        copy_name(info->arch, sizeof(info->arch), c.arch);
        copy_name(info->isa, sizeof(info->isa), edge_rt::isa_name(edge_rt::active_isa()));
        return EDGE_RT_OK;
    });
}

edge_rt_status edge_rt_memory_report_get(edge_rt_model* handle, edge_rt_memory_report* report) {
    return with_model(handle, "memory_report", [&](Model& m) {
        require(report != nullptr, "memory_report", "report is NULL");
        require_size(report->struct_size, sizeof(edge_rt_memory_report), "memory_report", "edge_rt_memory_report");
        const edge_rt::MemoryReport r = m.engine->memory_report();
        using edge_rt::MemClass;
        report->budget = r.budget;
        report->total = r.total;
        report->pinned_weights = r.classes[(size_t)MemClass::PinnedWeights];
        report->window_slots = r.classes[(size_t)MemClass::WindowSlots];
        report->expert_cache = r.classes[(size_t)MemClass::ExpertCache];
        report->kv_cache = r.classes[(size_t)MemClass::KvCache];
        report->scratch = r.classes[(size_t)MemClass::Scratch];
        report->metadata = r.classes[(size_t)MemClass::Metadata];
        report->streaming = r.streaming ? 1 : 0;
        report->window = r.window;
        report->streamed_bytes_per_token = r.streamed_bytes_per_token;
        return EDGE_RT_OK;
    });
}

int32_t edge_rt_token_is_eog(edge_rt_model* handle, int32_t token) {
    int32_t answer = -1;
    with_model(handle, "token_is_eog", [&](Model& m) {
        check_tokens(m, &token, 1, "token_is_eog");
        answer = m.tokenizer->is_eog(token) ? 1 : 0;
        return EDGE_RT_OK;
    });
    return answer;
}

edge_rt_status edge_rt_tokenize(edge_rt_model* handle, const char* text, size_t text_len, int add_special,
                                int parse_special, int32_t* out, size_t cap, size_t* n_out) {
    return with_model(handle, "tokenize", [&](Model& m) {
        require(text != nullptr || text_len == 0, "tokenize", "text is NULL");
        require(n_out != nullptr, "tokenize", "n_out is NULL");
        require(out != nullptr || cap == 0, "tokenize", "out is NULL with cap > 0");
        const std::vector<int32_t> ids =
            m.tokenizer->tokenize(std::string(text ? text : "", text_len), add_special != 0, parse_special != 0);
        *n_out = ids.size();
        if (ids.size() > cap) {
            c_fail(EDGE_RT_ERR_BUFFER_TOO_SMALL,
                   "[tokenize] " + std::to_string(ids.size()) + " tokens do not fit in cap=" + std::to_string(cap));
        }
        std::copy(ids.begin(), ids.end(), out);
        return EDGE_RT_OK;
    });
}

edge_rt_status edge_rt_detokenize(edge_rt_model* handle, const int32_t* ids, size_t n_ids, int special, char* out,
                                  size_t cap, size_t* n_out) {
    return with_model(handle, "detokenize", [&](Model& m) {
        require(ids != nullptr || n_ids == 0, "detokenize", "ids is NULL");
        require(n_out != nullptr, "detokenize", "n_out is NULL");
        require(out != nullptr || cap == 0, "detokenize", "out is NULL with cap > 0");
        const std::string text = m.tokenizer->detokenize(ids, n_ids, special != 0);
        *n_out = text.size();
        if (text.size() > cap) {
            c_fail(EDGE_RT_ERR_BUFFER_TOO_SMALL,
                   "[detokenize] " + std::to_string(text.size()) + " bytes do not fit in cap=" + std::to_string(cap));
        }
        if (!text.empty()) std::memcpy(out, text.data(), text.size());
        return EDGE_RT_OK;
    });
}

edge_rt_status edge_rt_eval(edge_rt_model* handle, const int32_t* tokens, size_t n_tokens, float* logits,
                            size_t logits_cap) {
    return with_model(handle, "eval", [&](Model& m) {
        require(tokens != nullptr && n_tokens > 0, "eval", "tokens is NULL or empty");
        const size_t n_vocab = (size_t)m.engine->config().n_vocab;
        if (logits && logits_cap < n_vocab) {
            c_fail(EDGE_RT_ERR_BUFFER_TOO_SMALL,
                   "[eval] logits_cap " + std::to_string(logits_cap) + " < n_vocab " + std::to_string(n_vocab));
        }
        check_tokens(m, tokens, n_tokens, "eval");
        if ((int64_t)n_tokens > m.engine->n_ctx() - m.engine->n_past()) {
            c_fail(EDGE_RT_ERR_CONTEXT_FULL, "[eval] " + std::to_string(n_tokens) + " tokens after " +
                                                 std::to_string(m.engine->n_past()) +
                                                 " exceed n_ctx=" + std::to_string(m.engine->n_ctx()));
        }
        std::vector<float> row(n_vocab);
        for (size_t s = 0; s < n_tokens; s += kEvalChunk)
            eval(m, tokens + s, (int64_t)std::min<size_t>(kEvalChunk, n_tokens - s), row.data());
        if (logits) std::copy(row.begin(), row.end(), logits);
        return EDGE_RT_OK;
    });
}

edge_rt_status edge_rt_reset(edge_rt_model* handle) {
    return with_model(handle, "reset", [&](Model& m) {
        m.engine->reset();
        return EDGE_RT_OK;
    });
}

int64_t edge_rt_n_past(edge_rt_model* handle) {
    int64_t n = -1;
    with_model(handle, "n_past", [&](Model& m) {
        n = m.engine->n_past();
        return EDGE_RT_OK;
    });
    return n;
}

edge_rt_status edge_rt_generate(edge_rt_model* handle, const int32_t* prompt, size_t n_prompt, int32_t max_tokens,
                                edge_rt_token_callback callback, void* user_data, edge_rt_generate_result* result) {
    const char* op = "generate";
    if (result) {
        if (result->struct_size < sizeof(edge_rt_generate_result)) {
            return record(lookup(handle).get(), EDGE_RT_ERR_INVALID_ARGUMENT,
                          "[generate] edge_rt_generate_result.struct_size is too small (set it to sizeof)");
        }
        result->n_tokens = 0;
        result->finish_reason = EDGE_RT_FINISH_CANCELLED;
        result->prefill_seconds = result->decode_seconds = 0.0;
    }
    edge_rt_generate_result local{sizeof(edge_rt_generate_result), 0, EDGE_RT_FINISH_CANCELLED, 0.0, 0.0};
    edge_rt_generate_result& res = result ? *result : local;
    return with_model(handle, op, [&](Model& m) {
        require(prompt != nullptr && n_prompt > 0, op, "prompt is NULL or empty");
        check_tokens(m, prompt, n_prompt, op);
        const int64_t n_ctx = m.engine->n_ctx();
        if ((int64_t)n_prompt > n_ctx) {
            c_fail(EDGE_RT_ERR_CONTEXT_FULL, "[generate] " + std::to_string(n_prompt) +
                                                 " tokens exceed the context size n_ctx=" + std::to_string(n_ctx));
        }
        m.engine->reset();
        if (max_tokens == 0) {
            res.finish_reason = EDGE_RT_FINISH_LENGTH;
            return EDGE_RT_OK;
        }
        std::vector<float> logits((size_t)m.engine->config().n_vocab);
        auto t0 = std::chrono::steady_clock::now();
        for (size_t s = 0; s < n_prompt; s += kEvalChunk)
            eval(m, prompt + s, (int64_t)std::min<size_t>(kEvalChunk, n_prompt - s), logits.data());
        res.prefill_seconds = seconds_since(t0);
        while (true) {
            t0 = std::chrono::steady_clock::now();
            const int32_t tok = argmax(logits);
            if (m.tokenizer->is_eog(tok)) {
                res.finish_reason = EDGE_RT_FINISH_EOG;
                return EDGE_RT_OK;
            }
            res.n_tokens += 1;
            if (callback) {
                const std::string piece = m.tokenizer->token_to_piece(tok, false);
                if (callback(tok, piece.data(), piece.size(), user_data) != 0) {
                    res.finish_reason = EDGE_RT_FINISH_CANCELLED;
                    c_fail(EDGE_RT_ERR_CANCELLED, "[generate] cancelled by the token callback after " +
                                                      std::to_string(res.n_tokens) + " tokens");
                }
            }
            if (max_tokens > 0 && res.n_tokens >= max_tokens) {
                res.finish_reason = EDGE_RT_FINISH_LENGTH;
                return EDGE_RT_OK;
            }
            if (m.engine->n_past() >= n_ctx) {
                res.finish_reason = EDGE_RT_FINISH_CONTEXT;
                return EDGE_RT_OK;
            }
            if (m.cancel.exchange(false))
                c_fail(EDGE_RT_ERR_CANCELLED,
                       "[generate] cancelled (edge_rt_cancel) after " + std::to_string(res.n_tokens) + " tokens");
            eval(m, &tok, 1, logits.data());
            res.decode_seconds += seconds_since(t0);
        }
    });
}

edge_rt_status edge_rt_cancel(edge_rt_model* handle) {
    std::shared_ptr<Model> m = lookup(handle);
    if (!m) return record(nullptr, EDGE_RT_ERR_INVALID_HANDLE, "[cancel] invalid model handle (NULL or freed)");
    m->cancel.store(true);
    return EDGE_RT_OK;
}

}  // extern "C"
