#include "edge_rt/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edge_rt/error.h"
#include "expert_prediction.h"
#include "forward.h"
#include "models/registry.h"
#include "ops.h"

namespace edge_rt {

namespace {

// The RoPE factors held by the engine for a context of n_ctx positions (rope_freqs.weight of Llama
// 3.1+, phi3's rope_factors_long/short: n_rot/2 floats).
uint64_t rope_factor_bytes(const ModelConfig& cfg, int64_t n_ctx) {
    return cfg.rope_factors_tensor(n_ctx).empty() ? 0 : (uint64_t)(cfg.n_rot / 2) * sizeof(float);
}

// The error for a budget below the minimum `least`: every class of the minimum, exact bytes first (a
// rounded size could itself be below the minimum).
std::string below_minimum(const std::string& path, const EngineOptions& options, const BudgetFloor& least, bool moe) {
    const uint64_t budget = options.model.mem_budget, minimum = least.total();
    return "[budget] memory budget " + std::to_string(budget) + " bytes (" + format_bytes(budget) +
           ") is below the minimum " + std::to_string(minimum) + " bytes (" + format_bytes(minimum) + ") for '" + path +
           "': one window slot for the largest layer and the embedding row buffer" +
           (moe ? std::string(", the routers and one expert") : std::string()) + " (" + format_bytes(least.weights) +
           ")" + (least.predictor ? " + expert predictor (" + format_bytes(least.predictor) + ")" : std::string()) +
           " + KV cache (" + format_bytes(least.kv_cache) + ", n_ctx=" + std::to_string(options.context.n_ctx) +
           ") + scratch (" + format_bytes(least.scratch) + ") + metadata (" + format_bytes(least.metadata) +
           ": tokenizer and GGUF key/values)" +
           (least.npu ? " + npu (" + format_bytes(least.npu) + ": the NPU prefill graph's weights and buffers)"
                      : std::string());
}

// The KV cache: K and V for every layer, n_ctx rows of kv_dim fp16 values each.
uint64_t kv_bytes(const ModelConfig& cfg, int64_t n_ctx) {
    return (uint64_t)cfg.n_layer * 2 * (uint64_t)n_ctx * (uint64_t)cfg.kv_dim() * sizeof(uint16_t);
}

}  // namespace

std::unique_ptr<ExpertPredictor> Engine::load_predictor(const EngineOptions& options, const ModelConfig& cfg,
                                                        bool budgeted, std::vector<std::string>* notes) {
    const ModelParams& m = options.model;
    if (m.expert_predictor.empty()) return nullptr;
    const bool used = cfg.is_moe() && budgeted && m.streaming.prefetch &&
                      ((int)m.streaming.expert_prefetch & (int)ExpertPrefetch::NextLayer);
    if (!used) {
        if (m.expert_predictor_optional) return nullptr;  // nothing would run it: not worth a note
        fail(ErrorKind::InvalidArgument,
             "[load] expert_predictor is used by next-layer expert prefetch: it needs an MoE "
             "model, mem_budget, prefetch on and expert_prefetch 'next' or 'both'");
    }
    try {
        return ExpertPredictor::load(m.expert_predictor, cfg);
    } catch (const Error& e) {
        if (!m.expert_predictor_optional) throw;
        if (notes)
            notes->push_back(std::string("ignoring the expert predictor next to the model (") + e.what() +
                             "); next-layer prediction uses the router");
        return nullptr;
    }
}

int64_t Engine::ubatch_for(const EngineOptions& options, const ModelConfig& cfg, bool budgeted) {
    // MoE models use the budget's micro-batch even when resident: a quantized matmul's rounding depends
    // on how many activation rows one kernel call takes, and tokens are grouped by expert, so equal
    // micro-batches are what keeps resident and streamed logits bitwise identical.
    return options.context.n_ubatch > 0 ? options.context.n_ubatch : (budgeted || cfg.is_moe() ? 128 : 256);
}

BudgetFloor Engine::budget_floor(const GgufFile& file, const ModelConfig& cfg, const EngineOptions& options,
                                 int64_t n_ubatch, const ExpertPredictor* predictor) {
    BudgetFloor f;
    f.weights = StreamingWeights::min_weight_bytes(file, cfg) + rope_factor_bytes(cfg, options.context.n_ctx);
    f.kv_cache = kv_bytes(cfg, options.context.n_ctx);
    f.scratch = scratch_bytes(cfg, n_ubatch, options.context.n_ctx, options.context.n_threads);
    f.metadata = file.metadata_bytes() + options.model.host_metadata_bytes;
    f.npu = options.model.npu_bytes;
    if (predictor) {
        f.predictor = predictor->bytes();
        // Its hidden and correction rows, and converted hidden rows where wider than the converted
        // activations scratch_bytes already counts (n_embd, the FFN width, q_dim).
        const uint64_t H = (uint64_t)predictor->hidden_size();
        const uint64_t widest = (uint64_t)std::max({cfg.n_embd, cfg.n_ff, cfg.n_ff_exp, cfg.n_ff_shexp, cfg.q_dim()});
        f.scratch += (uint64_t)n_ubatch * (H + (uint64_t)cfg.n_expert + (H > widest ? H - widest : 0)) * sizeof(float);
    }
    return f;
}

BudgetFloor Engine::minimum_budget(const std::string& path, const EngineOptions& options) {
    check_options(options);
    // Unlimited here (up to the expansion ceiling): the floor is what is being asked for.
    const auto file = GgufFile::open(path);
    const ModelConfig cfg = ModelConfig::from_gguf(*file);
    // The floor is that of a budgeted load, whatever options.model.mem_budget says.
    const std::unique_ptr<ExpertPredictor> predictor = load_predictor(options, cfg, true, nullptr);
    return budget_floor(*file, cfg, options, ubatch_for(options, cfg, true), predictor.get());
}

Engine::Engine(const std::string& path, const EngineOptions& options) {
    check_options(options);
    // Under a budget the metadata is refused before it is allocated past the budget (the error states
    // what it needs); the whole minimum, metadata included, is checked below once the config is known.
    GgufOpenLimits limits;
    limits.max_metadata_bytes = options.model.mem_budget;
    try {
        file_ = GgufFile::open(path, limits);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::OutOfMemory || !options.model.mem_budget) throw;
        // The metadata alone exceeds the budget, and was not allocated past it: state the whole minimum,
        // from one unbounded parse (this engine's own copy was never made).
        const auto full = GgufFile::open(path);
        const ModelConfig cfg = ModelConfig::from_gguf(*full);
        const std::unique_ptr<ExpertPredictor> predictor = load_predictor(options, cfg, true, nullptr);
        const BudgetFloor least = budget_floor(*full, cfg, options, ubatch_for(options, cfg, true), predictor.get());
        fail(ErrorKind::OutOfMemory, below_minimum(path, options, least, cfg.is_moe()) + " (" + e.what() + ")");
    }
    cfg_ = ModelConfig::from_gguf(*file_);
    cfg_.repack = options.model.repack;
    block_ = block_recipe(cfg_.arch);
    if (!block_) fail(ErrorKind::Internal, "[load] no block recipe for architecture '" + cfg_.arch + "'");
    n_ctx_ = options.context.n_ctx;
    n_ubatch_ = ubatch_for(options, cfg_, options.model.mem_budget != 0);
    accountant_ = MemoryAccountant(options.model.mem_budget);
    const StreamingOptions& so = options.model.streaming;
    if (!cfg_.is_moe() && (so.expert_cache_bytes || so.prediction_width)) {
        fail(ErrorKind::InvalidArgument,
             "[load] expert_cache and expert_prediction_width are for Mixture-of-Experts "
             "models; " +
                 path + " is dense");
    }
    predictor_ = load_predictor(options, cfg_, options.model.mem_budget != 0, &notes_);
    const BudgetFloor least = budget_floor(*file_, cfg_, options, n_ubatch_, predictor_.get());
    // Check the whole minimum first so the error states it, whichever class would overflow.
    if (options.model.mem_budget && options.model.mem_budget < least.total()) {
        fail(ErrorKind::OutOfMemory, below_minimum(path, options, least, cfg_.is_moe()));
    }
    accountant_.reserve(MemClass::Metadata, least.metadata, "metadata");
    accountant_.reserve(MemClass::KvCache, least.kv_cache, "KV cache");
    if (least.npu) accountant_.reserve(MemClass::Npu, least.npu, "NPU prefill stage");
    const std::string rope_factors = cfg_.rope_factors_tensor(n_ctx_);
    if (!rope_factors.empty()) {
        // Read once, kept beside the weights (it belongs to no layer unit, so no provider serves it).
        accountant_.reserve(MemClass::PinnedWeights, rope_factor_bytes(cfg_, n_ctx_), rope_factors);
        const GgufTensorInfo& t = *file_->find_tensor(rope_factors);
        rope_factors_.resize((size_t)(cfg_.n_rot / 2));
        open_model_reader(path, IoMode::Buffered)->read_exact(rope_factors_.data(), (size_t)t.n_bytes, t.offset);
        for (float v : rope_factors_) {
            if (!(v > 0.0f) || !std::isfinite(v)) {
                fail(ErrorKind::ModelFormat,
                     "[model] tensor '" + rope_factors + "' holds a factor that is not a positive finite number");
            }
        }
    }
    accountant_.reserve(MemClass::Scratch, least.scratch, "scratch");
    if (predictor_) accountant_.reserve(MemClass::PinnedWeights, least.predictor, "expert predictor");
    if (options.model.mem_budget) {
        auto sw = std::make_unique<StreamingWeights>(file_, cfg_, accountant_, options.model.streaming);
        streaming_ = sw.get();
        weights_ = std::move(sw);
    } else {
        weights_ = std::make_unique<ResidentWeights>(file_, cfg_);
        accountant_.reserve(MemClass::PinnedWeights, weights_->resident_bytes(), "resident weights");
    }
    pool_ = std::make_unique<ThreadPool>(options.context.n_threads);
    scratch_ = std::make_unique<Scratch>();
    kv_ = std::make_unique<KvCache>();
    try {
        kv_->n_ctx = n_ctx_;
        kv_->k.resize((size_t)cfg_.n_layer);
        kv_->v.resize((size_t)cfg_.n_layer);
        for (int64_t il = 0; il < cfg_.n_layer; ++il) {
            kv_->k[(size_t)il].assign((size_t)(n_ctx_ * cfg_.kv_dim()), 0);
            kv_->v[(size_t)il].assign((size_t)(n_ctx_ * cfg_.kv_dim()), 0);
        }
        kv_rows_.assign((size_t)cfg_.n_layer, 0);
    } catch (const std::bad_alloc&) {
        fail(ErrorKind::OutOfMemory, "[load] cannot allocate the KV cache for n_ctx=" + std::to_string(n_ctx_));
    }
}

Engine::~Engine() = default;

uint64_t Engine::scratch_bytes(const ModelConfig& c, int64_t n_ubatch, int64_t n_ctx, int n_threads) {
    const uint64_t n = (uint64_t)n_ubatch;
    const uint64_t ff = (uint64_t)std::max({c.n_ff, c.n_ff_exp, c.n_ff_shexp});
    const uint64_t widest = std::max({(uint64_t)c.n_embd, ff, (uint64_t)c.q_dim()});
    uint64_t b = n * (uint64_t)(3 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * ff) * sizeof(float);
    if (c.is_moe()) {
        const uint64_t k = (uint64_t)c.n_expert_used;
        b += n * ((uint64_t)c.n_expert + 2 * k + k * (uint64_t)c.n_embd + 2 * (uint64_t)c.n_embd + 1) * sizeof(float);
        b += n * ((uint64_t)c.n_embd + 3 * (uint64_t)c.n_expert) * sizeof(float) +
             (uint64_t)c.n_expert;  // prediction (width <= n_expert)
    }
    b += n * widest * sizeof(float);  // converted activations (F32 is widest)
    // per Q8_0 activation block: its int8 sum (x8 kernels) and its fp32 scale (vec_dot_rows_scaled)
    b += n * (widest / 32) * (sizeof(int16_t) + sizeof(float));
    b += (uint64_t)n_threads * ((uint64_t)n_ctx * 6 + (uint64_t)c.head_dim * 2);  // attention scores, fp16 copies
    b += (uint64_t)c.n_vocab * sizeof(float);                                     // one row of logits
    b += (uint64_t)std::max(c.n_embd, c.head_dim) * sizeof(float) * 2;            // dequantized norms / biases
    return b;
}

MemoryReport Engine::memory_report() const {
    MemoryReport r;
    r.budget = accountant_.budget();
    for (size_t i = 0; i < (size_t)MemClass::kCount; ++i) r.classes[i] = accountant_.used((MemClass)i);
    r.total = accountant_.total();
    r.streaming = streaming_ != nullptr;
    if (streaming_) {
        r.window = streaming_->window();
        r.slot_bytes = streaming_->slot_bytes();
        r.pinned_units = streaming_->pinned_units();
        r.streamed_units = streaming_->streamed_units();
        r.streamed_bytes_per_token = streaming_->streamed_bytes_per_pass();
        r.io = streaming_->io_kind();
        const ExpertStats es = streaming_->expert_stats();
        r.expert_cache_slots = es.cache_slots;
        r.expert_slot_bytes = es.slot_bytes;
        r.total_experts = es.total_experts;
    } else {
        for (int u = 0; u <= cfg_.n_layer; ++u) r.pinned_units.push_back(u);
    }
    return r;
}

StreamStats Engine::stream_stats() const { return streaming_ ? streaming_->stats() : StreamStats{}; }
std::vector<StreamEvent> Engine::stream_events() const {
    return streaming_ ? streaming_->events() : std::vector<StreamEvent>{};
}
ExpertStats Engine::expert_stats() const { return streaming_ ? streaming_->expert_stats() : ExpertStats{}; }
std::vector<ExpertReadEvent> Engine::expert_events() const {
    return streaming_ ? streaming_->expert_events() : std::vector<ExpertReadEvent>{};
}
void Engine::clear_stream_telemetry() {
    if (streaming_) streaming_->clear_telemetry();
}

uint64_t Engine::n_params() const noexcept {
    uint64_t n = 0;
    for (const auto& t : file_->tensors()) n += t.n_elements;
    return n;
}

uint64_t Engine::kv_cache_bytes() const noexcept { return kv_bytes(cfg_, n_ctx_); }

void Engine::eval(const int32_t* tokens, int64_t n, bool all_logits, float* out,
                  const std::function<bool()>& should_abort) {
    if (n <= 0) fail(ErrorKind::InvalidArgument, "[eval] no tokens to evaluate");
    if (n_past_ + n > n_ctx_) {
        fail(ErrorKind::InvalidArgument, "[eval] context overflow: " + std::to_string(n_past_) + " cached + " +
                                             std::to_string(n) + " new tokens > n_ctx " + std::to_string(n_ctx_));
    }
    for (int64_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= cfg_.n_vocab) {
            fail(ErrorKind::InvalidArgument, "[eval] token id " + std::to_string(tokens[i]) + " at index " +
                                                 std::to_string(i) + " outside the vocabulary [0, " +
                                                 std::to_string(cfg_.n_vocab) + ")");
        }
    }
    const int64_t start = n_past_;
    if (observer_) observer_->begin_eval(start, n);
    try {
        for (int64_t done = 0; done < n; done += n_ubatch_) {
            const int64_t m = std::min(n_ubatch_, n - done);
            const bool last = done + m == n;
            // Rows of logits: every token when all_logits, else only the final token of the last ubatch.
            float* dst = all_logits ? out + (size_t)done * (size_t)cfg_.n_vocab : (last ? out : nullptr);
            const int64_t peer_start = done / kPeerBatchRows * kPeerBatchRows;  // forward.h peer_rows
            eval_ubatch(tokens + done, m, n > 1, std::min(kPeerBatchRows, n - peer_start), all_logits, dst,
                        should_abort);
        }
    } catch (...) {
        n_past_ = start;
        std::fill(kv_rows_.begin(), kv_rows_.end(), start);  // rows from start on may be half overwritten
        if (observer_) observer_->end_eval(false);
        throw;
    }
    std::fill(kv_rows_.begin(), kv_rows_.end(), n_past_.load());  // rows staged by write_kv are overwritten
    if (observer_) observer_->end_eval(true);
}

void Engine::eval_ubatch(const int32_t* tokens, int64_t n, bool prompt, int64_t peer_rows, bool all_logits, float* out,
                         const std::function<bool()>& should_abort) {
    const ExpertPrefetch prefetch = cfg_.is_moe() ? weights_->expert_prefetch() : ExpertPrefetch::Off;
    const int64_t predict_width =
        prefetch == ExpertPrefetch::Off ? 0 : std::max(1, weights_->expert_prediction_width());
    scratch_->resize(cfg_, n, predict_width, predictor_ ? predictor_->hidden_size() : 0);
    ForwardPass f{cfg_,
                  *weights_,
                  *pool_,
                  *scratch_,
                  *kv_,
                  observer_,
                  predictor_.get(),
                  prefetch,
                  rope_factors_.empty() ? nullptr : rope_factors_.data(),
                  n,
                  n_past_,
                  prompt,
                  peer_rows};
    // Rows the head will read after the last layer (forward.h); an observer sees every row.
    if (!all_logits && !observer_) f.last_layer_rows_from = out ? n - 1 : n;

    weights_->read_embeddings(tokens, n, f.s.x.data());  // only the rows of this batch's tokens
    if (cfg_.embedding_scale != 1.0f) {                  // Gemma: ggml_scale, one float product each
        for (int64_t i = 0; i < n * cfg_.n_embd; ++i) f.s.x[(size_t)i] *= cfg_.embedding_scale;
    }
    for (int il = 0; il < cfg_.n_layer; ++il) {
        if (should_abort && should_abort()) fail(ErrorKind::Interrupted, "[eval] interrupted");
        if ((int)prefetch & (int)ExpertPrefetch::SameLayer) predict_experts(f, il, PredictionSource::SameLayer);
        const LayerWeights& w = weights_->acquire_layer(il);
        block_(f, il, w);
        weights_->release_layer(il);
    }
    if (should_abort && should_abort()) fail(ErrorKind::Interrupted, "[eval] interrupted");
    // The head is acquired every micro-batch, even when no logits are wanted, so a streaming provider
    // sees units in the same order every pass and its prefetch stays ahead.
    const HeadWeights& head = weights_->acquire_head();
    if (!all_logits) f.peer_rows = 1;  // llama.cpp's head multiplies only the rows that return logits
    if (out) output_head(f, head, all_logits ? 0 : n - 1, out);
    weights_->release_head();
    n_past_ += n;
}

void Engine::output_head(ForwardPass& f, const HeadWeights& head, int64_t first, float* out) {
    const int64_t E = cfg_.n_embd, rows = f.n - first;
    const float* nw = f32_of(head.output_norm, f.s.norm_w);
    for (int64_t t = first; t < f.n; ++t)
        rms_norm(&f.s.x[(size_t)(t * E)], nw, &f.s.cur[(size_t)((t - first) * E)], E, cfg_.rms_eps);
    linear(f, (int)cfg_.n_layer, head.output, 0, f.s.cur.data(), rows, out);
    if (cfg_.final_logit_softcap > 0.0f) {
        // As llama.cpp: ggml_scale by 1/cap, ggml_tanh (libm tanhf), ggml_scale by cap.
        const float cap = cfg_.final_logit_softcap, inv = 1.0f / cap;
        for (int64_t i = 0; i < rows * cfg_.n_vocab; ++i) out[i] = std::tanh(out[i] * inv) * cap;
    }
}

void Scratch::resize(const ModelConfig& c, int64_t n, int64_t predict_width, int64_t predictor_hidden) {
    const int64_t E = c.n_embd, NE = c.n_expert, K = c.n_expert_used;
    const int64_t FF = std::max({c.n_ff, c.n_ff_exp, c.n_ff_shexp});
    x.resize((size_t)(n * E));
    cur.resize((size_t)(n * E));
    q.resize((size_t)(n * c.q_dim()));
    k.resize((size_t)(n * c.kv_dim()));
    v.resize((size_t)(n * c.kv_dim()));
    attn.resize((size_t)(n * c.q_dim()));
    gate.resize((size_t)(n * FF));
    up.resize((size_t)(n * FF));
    ffn_out.resize((size_t)(n * E));
    if (!c.is_moe()) return;
    router.resize((size_t)(n * NE));
    sel.resize((size_t)(n * K));
    sel_w.resize((size_t)(n * K));
    exp_out.resize((size_t)(n * K * E));
    gather.resize((size_t)(n * E));
    moe.resize((size_t)(n * E));
    shexp_g.resize((size_t)n);
    if (predict_width == 0) return;
    pred_in.resize((size_t)(n * E));
    pred_router.resize((size_t)(n * NE));
    pred_hidden.resize((size_t)(n * predictor_hidden));
    pred_fit.resize((size_t)(n * (predictor_hidden ? NE : 0)));
    pred_sel.resize((size_t)(n * predict_width));
    pred_flag.resize((size_t)NE);
}

}  // namespace edge_rt
