#include "edge_rt/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edge_rt/error.h"
#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"
#include "edge_rt/moe_routing.h"

namespace edge_rt {

// Per-eval working memory, sized for one micro-batch and reused across calls.
// Row-major: a buffer of "n x d" holds n token rows of d floats.
struct Engine::Scratch {
    std::vector<float> x;        // n x n_embd  residual stream
    std::vector<float> cur;      // n x n_embd  normalized input of the current block
    std::vector<float> q;        // n x q_dim
    std::vector<float> k;        // n x kv_dim
    std::vector<float> v;        // n x kv_dim
    std::vector<float> attn;     // n x q_dim   attention output (heads concatenated)
    std::vector<float> gate;     // n x max(n_ff, n_ff_exp, n_ff_shexp)
    std::vector<float> up;       // n x max(n_ff, n_ff_exp, n_ff_shexp)
    std::vector<float> ffn_out;  // n x n_embd  FFN output (dense, one expert's rows, or the shared expert)
    // Mixture of experts
    std::vector<float> router;   // n x n_expert   router logits, then probabilities
    std::vector<int32_t> sel;    // n x k          selected experts per token, by descending probability
    std::vector<float> sel_w;    // n x k          their weights
    std::vector<float> exp_out;  // n x k x n_embd each selected expert's output for each token
    std::vector<float> gather;   // n x n_embd     rows of `cur` routed to one expert
    std::vector<float> moe;      // n x n_embd     weighted sum of the experts
    std::vector<float> shexp_g;  // n              shared-expert gate logits
    std::vector<int32_t> expert_ids;          // experts used by the batch, ascending
    std::vector<int32_t> expert_first;        // n_expert + 1 offsets into expert_slots (counting sort)
    std::vector<int32_t> expert_slots;        // n x k: (token * k + j) grouped by expert
    std::vector<ExpertWeights> expert_views;  // one per used expert
    // Expert prediction (providers that prefetch experts): its own buffers, so it cannot touch the
    // values the forward pass computes.
    std::vector<float> pred_in;       // n x n_embd  normalized hidden state
    std::vector<float> pred_router;   // n x n_expert
    std::vector<float> pred_hidden;   // n x hidden (fitted predictor)
    std::vector<float> pred_fit;      // n x n_expert (fitted predictor's correction)
    std::vector<int32_t> pred_sel;    // n x w (w = the provider's prediction width)
    std::vector<uint8_t> pred_flag;   // n_expert
    std::vector<int32_t> pred_ids;    // predicted experts, ascending
    std::vector<uint8_t> act;    // n rows of the widest activation encoding (quantized matmul input)
    std::vector<float> norm_w;   // dequantized 1-D weights (norms, biases) when not stored as F32
};

namespace {

// The KV cache: K and V for every layer, n_ctx rows of kv_dim fp16 values each.
uint64_t kv_bytes(const ModelConfig& cfg, int64_t n_ctx) {
    return (uint64_t)cfg.n_layer * 2 * (uint64_t)n_ctx * (uint64_t)cfg.kv_dim() * sizeof(uint16_t);
}

// 1-D weights (norms, biases) as F32, dequantizing into tmp when stored in another type.
const float* f32_of(const TensorView& t, std::vector<float>& tmp) {
    if (t.type == GgmlType::F32) return reinterpret_cast<const float*>(t.data);
    tmp.resize((size_t)t.ne0);
    weight_kernels(t.type)->dequantize_row(t.data, tmp.data(), t.ne0);
    return tmp.data();
}

// ggml_rms_norm semantics: squares rounded to float, accumulated in double, mean rounded to float.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(x[i] * x[i]);
    const float scale = 1.0f / std::sqrt((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

// Rotates x[0..n_rot) of one head in place for position pos. Angles follow ggml: theta_i =
// pos * freq_scale * base^(-2i/n_rot), with the power built by repeated multiplication like ggml's
// rope cache so both engines land on the same float angles.
void rope(float* x, int64_t n_rot, int64_t pos, float freq_base, float freq_scale, RopeKind kind) {
    const float theta_scale = std::pow(freq_base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float angle = freq_scale * theta;
        const float c = std::cos(angle), s = std::sin(angle);
        const int64_t a = kind == RopeKind::Normal ? 2 * i : i;
        const int64_t b = kind == RopeKind::Normal ? 2 * i + 1 : i + half;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
        theta *= theta_scale;
    }
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

const WeightKernels& kernels_of(const TensorView& w) {
    const WeightKernels* k = weight_kernels(w.type);
    if (!k) fail(ErrorKind::Internal, std::string("[eval] no kernel for tensor type ") + type_name(w.type));
    return *k;
}

}  // namespace

void Engine::check_options(const EngineOptions& options) {
    if (options.n_threads < 1 || options.n_threads > kMaxThreads) {
        fail(ErrorKind::InvalidArgument, "[load] threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                             std::to_string(options.n_threads));
    }
    if (options.n_ctx < 1 || options.n_ctx > kMaxContext) {
        fail(ErrorKind::InvalidArgument, "[load] n_ctx must be in [1, " + std::to_string(kMaxContext) + "], got " +
                                             std::to_string(options.n_ctx));
    }
}

int64_t Engine::ubatch_for(const EngineOptions& options, const ModelConfig& cfg, bool budgeted) {
    // MoE models use the budget's micro-batch even when resident: a quantized matmul's rounding depends
    // on how many activation rows one kernel call takes, and tokens are grouped by expert, so equal
    // micro-batches are what keeps resident and streamed logits bitwise identical.
    return options.n_ubatch > 0 ? options.n_ubatch : (budgeted || cfg.is_moe() ? 128 : 256);
}

BudgetFloor Engine::budget_floor(const GgufFile& file, const ModelConfig& cfg, const EngineOptions& options,
                                 int64_t n_ubatch, const ExpertPredictor* predictor) {
    BudgetFloor f;
    f.weights = StreamingWeights::min_weight_bytes(file, cfg);
    f.kv_cache = kv_bytes(cfg, options.n_ctx);
    f.scratch = scratch_bytes(cfg, n_ubatch, options.n_ctx, options.n_threads);
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
    const auto file = GgufFile::open(path);
    const ModelConfig cfg = ModelConfig::from_gguf(*file);
    std::unique_ptr<ExpertPredictor> predictor;
    if (!options.expert_predictor.empty()) predictor = ExpertPredictor::load(options.expert_predictor, cfg);
    return budget_floor(*file, cfg, options, ubatch_for(options, cfg, true), predictor.get());
}

Engine::Engine(const std::string& path, const EngineOptions& options) {
    check_options(options);
    file_ = GgufFile::open(path);
    cfg_ = ModelConfig::from_gguf(*file_);
    n_ctx_ = options.n_ctx;
    n_ubatch_ = ubatch_for(options, cfg_, options.mem_budget != 0);
    accountant_ = MemoryAccountant(options.mem_budget);
    if (!options.expert_predictor.empty()) {
        if (!options.mem_budget || !options.streaming.prefetch ||
            !((int)options.streaming.expert_prefetch & (int)ExpertPrefetch::NextLayer)) {
            fail(ErrorKind::InvalidArgument, "[load] an expert predictor is used by next-layer expert prefetch: it needs "
                                             "mem_budget, prefetch on and expert_prefetch 'next' or 'both'");
        }
        predictor_ = ExpertPredictor::load(options.expert_predictor, cfg_);
    }
    const BudgetFloor least = budget_floor(*file_, cfg_, options, n_ubatch_, predictor_.get());
    if (options.mem_budget) {
        // Check the whole minimum first so the error states it, whichever class would overflow.
        const uint64_t minimum = least.total();
        if (options.mem_budget < minimum) {
            // Exact bytes first: a rounded size could itself be below the minimum.
            fail(ErrorKind::OutOfMemory, "[budget] memory budget " + std::to_string(options.mem_budget) + " bytes (" +
                                             format_bytes(options.mem_budget) + ") is below the minimum " +
                                             std::to_string(minimum) + " bytes (" + format_bytes(minimum) + ") for '" +
                                             path + "': one window slot for the largest layer and the embedding row buffer" +
                                             (cfg_.is_moe() ? std::string(", the routers and one expert") : std::string()) + " (" +
                                             format_bytes(least.weights) +
                                             ")" + (predictor_ ? " + expert predictor (" + format_bytes(least.predictor) + ")" : std::string()) +
                                             " + KV cache (" + format_bytes(least.kv_cache) + ", n_ctx=" +
                                             std::to_string(n_ctx_) + ") + scratch (" + format_bytes(least.scratch) + ")");
        }
    }
    accountant_.reserve(MemClass::KvCache, least.kv_cache, "KV cache");
    accountant_.reserve(MemClass::Scratch, least.scratch, "scratch");
    if (predictor_) accountant_.reserve(MemClass::PinnedWeights, least.predictor, "expert predictor");
    if (options.mem_budget) {
        auto sw = std::make_unique<StreamingWeights>(file_, cfg_, accountant_, options.streaming);
        streaming_ = sw.get();
        weights_ = std::move(sw);
    } else {
        weights_ = std::make_unique<ResidentWeights>(file_, cfg_);
        accountant_.reserve(MemClass::PinnedWeights, weights_->resident_bytes(), "resident weights");
    }
    pool_ = std::make_unique<ThreadPool>(options.n_threads);
    scratch_ = std::make_unique<Scratch>();
    try {
        k_cache_.resize((size_t)cfg_.n_layer);
        v_cache_.resize((size_t)cfg_.n_layer);
        for (int64_t il = 0; il < cfg_.n_layer; ++il) {
            k_cache_[(size_t)il].assign((size_t)(n_ctx_ * cfg_.kv_dim()), 0);
            v_cache_[(size_t)il].assign((size_t)(n_ctx_ * cfg_.kv_dim()), 0);
        }
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
        b += n * ((uint64_t)c.n_embd + 3 * (uint64_t)c.n_expert) * sizeof(float) + (uint64_t)c.n_expert;  // prediction (width <= n_expert)
    }
    b += n * widest * sizeof(float);                                     // converted activations (F32 is widest)
    b += (uint64_t)n_threads * ((uint64_t)n_ctx * 6 + (uint64_t)c.head_dim * 2);  // attention scores, fp16 copies
    b += (uint64_t)c.n_vocab * sizeof(float);                           // one row of logits
    b += (uint64_t)std::max(c.n_embd, c.head_dim) * sizeof(float) * 2;  // dequantized norms / biases
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

void Engine::record_activation_stats(bool enabled) {
    if (enabled) stats_.clear();
    recording_stats_ = enabled;
}

void Engine::record_routing(bool enabled, bool inputs) {
    if (enabled) {
        routing_.clear();
        routing_inputs_.clear();
    }
    recording_routing_ = enabled;
    recording_routing_inputs_ = enabled && inputs;
}

uint64_t Engine::n_params() const noexcept {
    uint64_t n = 0;
    for (const auto& t : file_->tensors()) n += t.n_elements;
    return n;
}

uint64_t Engine::kv_cache_bytes() const noexcept { return kv_bytes(cfg_, n_ctx_); }

void Engine::truncate(int64_t n_past) {
    if (n_past < 0 || n_past > n_past_) {
        fail(ErrorKind::InvalidArgument, "[truncate] n_past " + std::to_string(n_past) + " outside [0, " +
                                             std::to_string(n_past_) + "]");
    }
    n_past_ = n_past;
}

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
    const size_t routing_rows = routing_.size();
    // Calibration statistics count only evaluations that complete: a failed one (I/O error, Ctrl-C)
    // is rolled back like n_past, so that retrying it does not count its rows twice.
    if (recording_stats_) stats_.begin();
    try {
        for (int64_t done = 0; done < n; done += n_ubatch_) {
            const int64_t m = std::min(n_ubatch_, n - done);
            const bool last = done + m == n;
            // Rows of logits: every token when all_logits, else only the final token of the last ubatch.
            float* dst = all_logits ? out + (size_t)done * (size_t)cfg_.n_vocab : (last ? out : nullptr);
            eval_ubatch(tokens + done, m, all_logits, dst, should_abort);
        }
        if (recording_stats_) stats_.commit();
    } catch (...) {
        n_past_ = start;
        if (recording_stats_) stats_.rollback();
        routing_.resize(routing_rows);  // the trace holds only tokens that were evaluated
        if (recording_routing_inputs_) routing_inputs_.resize(routing_rows / (size_t)std::max<int64_t>(cfg_.n_expert, 1) * (size_t)cfg_.n_embd);
        throw;
    }
}

void Engine::eval_ubatch(const int32_t* tokens, int64_t n, bool all_logits, float* out,
                         const std::function<bool()>& should_abort) {
    const ModelConfig& c = cfg_;
    Scratch& s = *scratch_;
    const int64_t E = c.n_embd, Q = c.q_dim(), KV = c.kv_dim(), F = c.n_ff, D = c.head_dim;
    const int64_t NE = c.n_expert, K = c.n_expert_used;
    const int64_t FF = std::max({F, c.n_ff_exp, c.n_ff_shexp});
    s.x.resize((size_t)(n * E));
    s.cur.resize((size_t)(n * E));
    s.q.resize((size_t)(n * Q));
    s.k.resize((size_t)(n * KV));
    s.v.resize((size_t)(n * KV));
    s.attn.resize((size_t)(n * Q));
    s.gate.resize((size_t)(n * FF));
    s.up.resize((size_t)(n * FF));
    s.ffn_out.resize((size_t)(n * E));
    if (c.is_moe()) {
        s.router.resize((size_t)(n * NE));
        s.sel.resize((size_t)(n * K));
        s.sel_w.resize((size_t)(n * K));
        s.exp_out.resize((size_t)(n * K * E));
        s.gather.resize((size_t)(n * E));
        s.moe.resize((size_t)(n * E));
        s.shexp_g.resize((size_t)n);
        if (weights_->expert_prefetch() != ExpertPrefetch::Off) {
            s.pred_in.resize((size_t)(n * E));
            s.pred_router.resize((size_t)(n * NE));
            if (predictor_) {
                s.pred_hidden.resize((size_t)(n * predictor_->hidden_size()));
                s.pred_fit.resize((size_t)(n * NE));
            }
            const int64_t W = std::max<int64_t>(1, weights_->expert_prediction_width());
            s.pred_sel.resize((size_t)(n * W));
            s.pred_flag.resize((size_t)NE);
        }
    }
    ThreadPool& pool = *pool_;
    // Routing trace rows of this micro-batch (see record_routing).
    const int64_t routing_base = c.is_moe() && recording_routing_ ? (int64_t)routing_.size() / (c.n_layer * NE) : 0;
    if (c.is_moe() && recording_routing_) routing_.resize((size_t)((routing_base + n) * c.n_layer * NE), 0.0f);
    const bool recording_inputs = c.is_moe() && recording_routing_inputs_;
    if (recording_inputs) routing_inputs_.resize((size_t)((routing_base + n) * c.n_layer * E), 0.0f);

    // Converts m rows of `width` floats (row stride `width`) into the activation format of `k`.
    // Returns the byte stride of one converted row in s.act.
    auto quantize_rows = [&](const float* src, int64_t m, int64_t width, const WeightKernels& k) -> size_t {
        const size_t stride = k.act_row_bytes(width);
        if (s.act.size() < stride * (size_t)m) s.act.resize(stride * (size_t)m);
        uint8_t* dst = s.act.data();
        pool.parallel_for(m, 1, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) k.quantize_act(src + t * width, dst + (size_t)t * stride, width);
        });
        return stride;
    };
    auto quantize_input = [&](const float* src, int64_t width, const WeightKernels& k) -> size_t {
        return quantize_rows(src, n, width, k);
    };
    // y[t * y_stride + r] = W[r] . act[t] for rows r < W.ne1 and tokens t < n_tok (act already converted).
    // Prefill tiles the loops: a block of kRowTile weight rows (tens of KB, stays in L2) is swept by
    // groups of 8 activation rows (one group stays in L1), so neither side is re-streamed per row.
    auto matmul = [&](const TensorView& W, const WeightKernels& k, size_t act_stride, int64_t n_tok, float* y,
                      int64_t y_stride) {
        constexpr int64_t kRowTile = 32;
        const uint8_t* act = s.act.data();
        const int64_t width = W.ne0;
        pool.parallel_for(W.ne1, 16, [&](int64_t r0, int64_t r1) {
            float tmp[8];
            for (int64_t rb = r0; rb < r1; rb += kRowTile) {
                const int64_t re = std::min(r1, rb + kRowTile);
                for (int64_t t = 0; t < n_tok; t += 8) {
                    const int n_act = (int)std::min<int64_t>(8, n_tok - t);
                    const uint8_t* a = act + (size_t)t * act_stride;
                    for (int64_t r = rb; r < re; ++r) {
                        const uint8_t* wrow = W.row(r);
                        if (k.vec_dot_rows && n_act > 1) {
                            k.vec_dot_rows(width, wrow, a, act_stride, n_act, tmp);
                            for (int j = 0; j < n_act; ++j) y[(t + j) * y_stride + r] = tmp[j];
                        } else {
                            for (int j = 0; j < n_act; ++j)
                                y[(t + j) * y_stride + r] = k.vec_dot(width, wrow, a + (size_t)j * act_stride);
                        }
                    }
                }
            }
        });
    };
    // Calibration statistics of the input rows fed to W (expert: the slice of a 3-D expert tensor).
    auto observe = [&](const TensorView& W, int64_t expert, const float* src, int64_t m, int64_t width) {
        if (recording_stats_) stats_.add(*W.info, expert, src, m, width, width);
    };
    // out (m x E) <- down(silu(gate . in) * (up . in)) for m rows of `in` (m x E); ff = rows of gate/up.
    auto swiglu = [&](const TensorView& wg, const TensorView& wu, const TensorView& wd, int64_t expert,
                      const float* in, int64_t m, int64_t ff, float* out) {
        observe(wg, expert, in, m, E);
        observe(wu, expert, in, m, E);
        const WeightKernels& kg = kernels_of(wg);
        size_t stride = quantize_rows(in, m, E, kg);
        matmul(wg, kg, stride, m, s.gate.data(), ff);
        const WeightKernels& ku = kernels_of(wu);
        if (ku.act_type != kg.act_type) stride = quantize_rows(in, m, E, ku);
        matmul(wu, ku, stride, m, s.up.data(), ff);
        for (int64_t i = 0; i < m * ff; ++i) s.gate[(size_t)i] = silu(s.gate[(size_t)i]) * s.up[(size_t)i];
        observe(wd, expert, s.gate.data(), m, ff);
        const WeightKernels& kd = kernels_of(wd);
        stride = quantize_rows(s.gate.data(), m, ff, kd);
        matmul(wd, kd, stride, m, out, E);
    };
    // Mixture of experts on the n rows of s.cur -> s.moe. Tokens are grouped by expert so each used
    // expert runs one matrix-matrix product over its rows; the weighted outputs are then summed per
    // token in selection order, the order in which llama.cpp adds them (bitwise the same sums).
    auto moe_ffn = [&](int il, const LayerWeights& w) {
        const TensorView& R = w.ffn_gate_inp;
        observe(R, 0, s.cur.data(), n, E);
        const WeightKernels& kr = kernels_of(R);
        matmul(R, kr, quantize_input(s.cur.data(), E, kr), n, s.router.data(), NE);
        route_tokens(s.router.data(), n, NE, K, c.expert_weights_norm, c.expert_weights_scale, s.sel.data(),
                     s.sel_w.data());
        if (recording_routing_) {
            for (int64_t t = 0; t < n; ++t)
                std::memcpy(&routing_[(size_t)(((routing_base + t) * c.n_layer + il) * NE)], &s.router[(size_t)(t * NE)],
                            (size_t)NE * sizeof(float));
        }
        // Counting sort of the (token, j) slots by expert.
        s.expert_first.assign((size_t)(NE + 1), 0);
        for (int64_t i = 0; i < n * K; ++i) ++s.expert_first[(size_t)s.sel[(size_t)i] + 1];
        s.expert_ids.clear();
        for (int64_t e = 0; e < NE; ++e) {
            if (s.expert_first[(size_t)e + 1] > 0) s.expert_ids.push_back((int32_t)e);
            s.expert_first[(size_t)e + 1] += s.expert_first[(size_t)e];
        }
        s.expert_slots.resize((size_t)(n * K));
        {
            std::vector<int32_t>& fill = s.expert_first;  // advanced while filling, rebuilt below
            for (int64_t i = 0; i < n * K; ++i) s.expert_slots[(size_t)fill[(size_t)s.sel[(size_t)i]]++] = (int32_t)i;
            for (int64_t e = NE; e > 0; --e) fill[(size_t)e] = fill[(size_t)e - 1];
            fill[0] = 0;
        }
        const int n_used = (int)s.expert_ids.size();
        s.expert_views.resize((size_t)n_used);
        weights_->note_routing(il, s.expert_ids.data(), n_used);
        // A provider with a bounded expert cache serves the set in groups; each expert's output is
        // independent of the others', so the grouping cannot change the result.
        const int group = weights_->max_experts_per_acquire() > 0 ? weights_->max_experts_per_acquire() : n_used;
        for (int u = 0; u < n_used; ++u) {
            if (u % group == 0) {
                if (u > 0) weights_->release_experts(il);
                weights_->acquire_experts(il, w, s.expert_ids.data() + u, std::min(group, n_used - u),
                                          s.expert_views.data() + u);
            }
            const int32_t e = s.expert_ids[(size_t)u];
            const int32_t first = s.expert_first[(size_t)e], m = s.expert_first[(size_t)e + 1] - first;
            const int32_t* slots = s.expert_slots.data() + first;
            for (int32_t r = 0; r < m; ++r) {
                const int64_t t = slots[r] / K;
                std::memcpy(&s.gather[(size_t)r * (size_t)E], &s.cur[(size_t)(t * E)], (size_t)E * sizeof(float));
            }
            const ExpertWeights& ew = s.expert_views[(size_t)u];
            swiglu(ew.gate, ew.up, ew.down, e, s.gather.data(), m, c.n_ff_exp, s.ffn_out.data());
            for (int32_t r = 0; r < m; ++r) {
                std::memcpy(&s.exp_out[(size_t)slots[r] * (size_t)E], &s.ffn_out[(size_t)r * (size_t)E],
                            (size_t)E * sizeof(float));
            }
        }
        weights_->release_experts(il);
        for (int64_t t = 0; t < n; ++t) {
            float* out = &s.moe[(size_t)(t * E)];
            const float* w_t = &s.sel_w[(size_t)(t * K)];
            const float* e0 = &s.exp_out[(size_t)(t * K) * (size_t)E];
            for (int64_t i = 0; i < E; ++i) out[i] = e0[i] * w_t[0];
            for (int64_t j = 1; j < K; ++j) {
                const float* ej = &s.exp_out[(size_t)(t * K + j) * (size_t)E];
                for (int64_t i = 0; i < E; ++i) {
                    const float weighted = ej[i] * w_t[j];
                    out[i] = out[i] + weighted;
                }
            }
        }
        // Shared expert (qwen2moe): its SwiGLU output gated by sigmoid(gate_inp_shexp . cur), computed
        // as llama.cpp does, silu(g) / g.
        if (c.n_ff_shexp > 0) {  // ModelConfig checked all four tensors' shapes
            const TensorView& G = w.ffn_gate_inp_shexp;
            observe(G, 0, s.cur.data(), n, E);
            const WeightKernels& kg = kernels_of(G);
            matmul(G, kg, quantize_input(s.cur.data(), E, kg), n, s.shexp_g.data(), 1);
            swiglu(w.ffn_gate_shexp, w.ffn_up_shexp, w.ffn_down_shexp, 0, s.cur.data(), n, c.n_ff_shexp,
                   s.ffn_out.data());
            for (int64_t t = 0; t < n; ++t) {
                const float g = s.shexp_g[(size_t)t];
                const float gate = silu(g) / g;
                for (int64_t i = 0; i < E; ++i) {
                    const float gated = s.ffn_out[(size_t)(t * E + i)] * gate;
                    s.moe[(size_t)(t * E + i)] += gated;
                }
            }
        }
    };
    // Expert prediction: layer il_target's router applied to the current residual stream (after the
    // layer's FFN norm) -- for next-layer prediction corrected by the fitted predictor, when one is
    // loaded (expert_predictor.h) -- and the union over tokens of each one's top-w goes to the provider.
    const ExpertPrefetch prefetch_mode = c.is_moe() ? weights_->expert_prefetch() : ExpertPrefetch::Off;
    auto predict_experts = [&](int il_target, PredictionSource source) {
        TensorView pn, pr;
        if (il_target >= c.n_layer || !weights_->router_weights(il_target, &pn, &pr)) return;
        std::vector<float> norm_tmp;
        const float* nw = f32_of(pn, norm_tmp);
        for (int64_t t = 0; t < n; ++t) rms_norm(&s.x[(size_t)(t * E)], nw, &s.pred_in[(size_t)(t * E)], E, c.rms_eps);
        const WeightKernels& kr = kernels_of(pr);
        size_t stride = quantize_rows(s.pred_in.data(), n, E, kr);
        matmul(pr, kr, stride, n, s.pred_router.data(), NE);
        const ExpertPredictor::Layer* fitted =
            predictor_ && source == PredictionSource::NextLayer ? predictor_->layer(il_target) : nullptr;
        if (fitted) {
            // scores = router . x + out . silu(hidden . x + b_hidden) + b_out (expert_predictor.h)
            const int64_t H = predictor_->hidden_size();
            const WeightKernels& kh = kernels_of(fitted->hidden_w);
            if (kh.act_type != kr.act_type) stride = quantize_rows(s.pred_in.data(), n, E, kh);  // else reuse
            matmul(fitted->hidden_w, kh, stride, n, s.pred_hidden.data(), H);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t h = 0; h < H; ++h) {
                    float& v = s.pred_hidden[(size_t)(t * H + h)];
                    v = silu(v + fitted->hidden_b[h]);
                }
            const WeightKernels& ko = kernels_of(fitted->out_w);
            matmul(fitted->out_w, ko, quantize_rows(s.pred_hidden.data(), n, H, ko), n, s.pred_fit.data(), NE);
            for (int64_t t = 0; t < n; ++t)
                for (int64_t e = 0; e < NE; ++e)
                    s.pred_router[(size_t)(t * NE + e)] += s.pred_fit[(size_t)(t * NE + e)] + fitted->out_b[e];
        }
        // The top-w experts of each token (w = the provider's prediction width, k by default), ranked by
        // the raw scores: a softmax first could underflow large score gaps into ties.
        const int64_t width = std::min<int64_t>(NE, std::max(1, weights_->expert_prediction_width()));
        for (int64_t t = 0; t < n; ++t)
            top_k_experts(&s.pred_router[(size_t)(t * NE)], NE, width, &s.pred_sel[(size_t)(t * width)]);
        std::fill(s.pred_flag.begin(), s.pred_flag.end(), 0);
        for (int64_t i = 0; i < n * width; ++i) s.pred_flag[(size_t)s.pred_sel[(size_t)i]] = 1;
        s.pred_ids.clear();
        for (int64_t e = 0; e < NE; ++e)
            if (s.pred_flag[(size_t)e]) s.pred_ids.push_back((int32_t)e);
        weights_->prefetch_experts(il_target, s.pred_ids.data(), (int)s.pred_ids.size(), source);
    };
    auto add_bias = [&](const TensorView& b, float* y, int64_t width) {
        if (!b.present()) return;
        const float* bias = f32_of(b, s.norm_w);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < width; ++i) y[t * width + i] += bias[i];
    };
    auto norm_rows = [&](const float* src, const TensorView& w, float* dst) {
        const float* weight = f32_of(w, s.norm_w);
        for (int64_t t = 0; t < n; ++t) rms_norm(src + t * E, weight, dst + t * E, E, c.rms_eps);
    };

    // Token embeddings: only the rows of the tokens in this batch are read.
    weights_->read_embeddings(tokens, n, s.x.data());

    const WeightKernels& k16 = *weight_kernels(GgmlType::F16);
    const float kq_scale = 1.0f / std::sqrt((float)D);
    const int64_t group = c.n_head / c.n_head_kv;
    const int64_t n_kv = n_past_ + n;  // cache positions visible to the last token of this batch

    for (int64_t il = 0; il < c.n_layer; ++il) {
        if (should_abort && should_abort()) fail(ErrorKind::Interrupted, "[eval] interrupted");
        if ((int)prefetch_mode & (int)ExpertPrefetch::SameLayer) predict_experts((int)il, PredictionSource::SameLayer);
        const LayerWeights& w = weights_->acquire_layer((int)il);

        // ---- attention ----
        norm_rows(s.x.data(), w.attn_norm, s.cur.data());
        observe(w.wq, 0, s.cur.data(), n, E);
        observe(w.wk, 0, s.cur.data(), n, E);
        observe(w.wv, 0, s.cur.data(), n, E);
        {
            const WeightKernels& kq = kernels_of(w.wq);
            size_t stride = quantize_input(s.cur.data(), E, kq);
            matmul(w.wq, kq, stride, n, s.q.data(), Q);
            const WeightKernels& kk = kernels_of(w.wk);
            if (kk.act_type != kq.act_type) stride = quantize_input(s.cur.data(), E, kk);
            matmul(w.wk, kk, stride, n, s.k.data(), KV);
            const WeightKernels& kv = kernels_of(w.wv);
            if (kv.act_type != kk.act_type) stride = quantize_input(s.cur.data(), E, kv);
            matmul(w.wv, kv, stride, n, s.v.data(), KV);
        }
        add_bias(w.bq, s.q.data(), Q);
        add_bias(w.bk, s.k.data(), KV);
        add_bias(w.bv, s.v.data(), KV);
        if (c.has_qk_norm) {
            std::vector<float> qn_tmp, kn_tmp;
            const float* qn = f32_of(w.q_norm, qn_tmp);
            const float* kn = f32_of(w.k_norm, kn_tmp);
            for (int64_t t = 0; t < n; ++t) {
                for (int64_t h = 0; h < c.n_head; ++h) rms_norm(&s.q[(size_t)(t * Q + h * D)], qn, &s.q[(size_t)(t * Q + h * D)], D, c.rms_eps);
                for (int64_t h = 0; h < c.n_head_kv; ++h) rms_norm(&s.k[(size_t)(t * KV + h * D)], kn, &s.k[(size_t)(t * KV + h * D)], D, c.rms_eps);
            }
        }
        for (int64_t t = 0; t < n; ++t) {
            const int64_t pos = n_past_ + t;
            for (int64_t h = 0; h < c.n_head; ++h)
                rope(&s.q[(size_t)(t * Q + h * D)], c.n_rot, pos, c.rope_freq_base, c.rope_freq_scale, c.rope_kind);
            for (int64_t h = 0; h < c.n_head_kv; ++h)
                rope(&s.k[(size_t)(t * KV + h * D)], c.n_rot, pos, c.rope_freq_base, c.rope_freq_scale, c.rope_kind);
        }
        // KV cache (fp16). K: n_ctx rows of kv_dim. V transposed: kv_dim rows of n_ctx, so that the
        // probability-weighted sum over positions is a contiguous fp16 dot product per output element.
        uint16_t* kc = k_cache_[(size_t)il].data();
        uint16_t* vc = v_cache_[(size_t)il].data();
        for (int64_t t = 0; t < n; ++t) {
            const int64_t pos = n_past_ + t;
            k16.quantize_act(&s.k[(size_t)(t * KV)], kc + pos * KV, KV);
            for (int64_t i = 0; i < KV; ++i) vc[i * n_ctx_ + pos] = fp32_to_fp16(s.v[(size_t)(t * KV + i)]);
        }
        // One work item per (token, head): causal softmax(q K^T * scale) V.
        const int64_t n_items = n * c.n_head;
        pool.parallel_for(n_items, 1, [&](int64_t b, int64_t e) {
            // Per-thread workspace: scores, and fp16 copies of q and of the probabilities.
            thread_local std::vector<float> scores;
            thread_local std::vector<uint16_t> p16v, q16v;
            if ((int64_t)scores.size() < n_kv) { scores.resize((size_t)n_kv); p16v.resize((size_t)n_kv); }
            if ((int64_t)q16v.size() < D) q16v.resize((size_t)D);
            float* sc = scores.data();
            uint16_t* p16 = p16v.data();
            uint16_t* q16 = q16v.data();
            for (int64_t item = b; item < e; ++item) {
                const int64_t t = item / c.n_head, h = item % c.n_head, hk = h / group;
                const int64_t len = n_past_ + t + 1;
                k16.quantize_act(&s.q[(size_t)(t * Q + h * D)], q16, D);
                float mx = -INFINITY;
                for (int64_t j = 0; j < len; ++j) {
                    sc[j] = k16.vec_dot(D, kc + j * KV + hk * D, q16) * kq_scale;
                    mx = std::max(mx, sc[j]);
                }
                double sum = 0.0;
                for (int64_t j = 0; j < len; ++j) {
                    sc[j] = std::exp(sc[j] - mx);
                    sum += sc[j];
                }
                const float inv = (float)(1.0 / sum);
                for (int64_t j = 0; j < len; ++j) sc[j] *= inv;
                k16.quantize_act(sc, p16, len);
                float* o = &s.attn[(size_t)(t * Q + h * D)];
                for (int64_t d = 0; d < D; ++d) o[d] = k16.vec_dot(len, vc + (hk * D + d) * n_ctx_, p16);
            }
        });
        observe(w.wo, 0, s.attn.data(), n, Q);
        {
            const WeightKernels& ko = kernels_of(w.wo);
            const size_t stride = quantize_input(s.attn.data(), Q, ko);
            matmul(w.wo, ko, stride, n, s.cur.data(), E);  // cur reused as the projection output
            for (int64_t i = 0; i < n * E; ++i) s.x[(size_t)i] += s.cur[(size_t)i];
        }
        if (recording_inputs) {
            for (int64_t t = 0; t < n; ++t)
                std::memcpy(&routing_inputs_[(size_t)(((routing_base + t) * c.n_layer + il) * E)], &s.x[(size_t)(t * E)],
                            (size_t)E * sizeof(float));
        }
        if ((int)prefetch_mode & (int)ExpertPrefetch::NextLayer) predict_experts((int)il + 1, PredictionSource::NextLayer);

        // ---- feed-forward: SwiGLU, or a mixture of SwiGLU experts ----
        norm_rows(s.x.data(), w.ffn_norm, s.cur.data());
        if (!c.is_moe()) {
            swiglu(w.ffn_gate, w.ffn_up, w.ffn_down, 0, s.cur.data(), n, F, s.ffn_out.data());
            for (int64_t i = 0; i < n * E; ++i) s.x[(size_t)i] += s.ffn_out[(size_t)i];
        } else {
            moe_ffn((int)il, w);
            for (int64_t i = 0; i < n * E; ++i) s.x[(size_t)i] += s.moe[(size_t)i];
        }
        weights_->release_layer((int)il);
    }
    if (should_abort && should_abort()) fail(ErrorKind::Interrupted, "[eval] interrupted");

    // ---- output head ----
    // Acquired every micro-batch, even when no logits are wanted, so a streaming provider sees units
    // in the same order every pass and its prefetch stays ahead.
    const HeadWeights& g = weights_->acquire_head();
    if (out) {
        const int64_t first = all_logits ? 0 : n - 1;
        const int64_t rows = n - first;
        const float* nw = f32_of(g.output_norm, s.norm_w);
        for (int64_t t = first; t < n; ++t) rms_norm(&s.x[(size_t)(t * E)], nw, &s.cur[(size_t)((t - first) * E)], E, c.rms_eps);
        observe(g.output, 0, s.cur.data(), rows, E);
        const WeightKernels& kout = kernels_of(g.output);
        const size_t stride = kout.act_row_bytes(E);
        if (s.act.size() < stride * (size_t)rows) s.act.resize(stride * (size_t)rows);
        for (int64_t t = 0; t < rows; ++t) kout.quantize_act(&s.cur[(size_t)(t * E)], s.act.data() + (size_t)t * stride, E);
        matmul(g.output, kout, stride, rows, out, c.n_vocab);
    }
    weights_->release_head();
    n_past_ += n;
}

}  // namespace edge_rt
