// The forward pass of llama-family decoders (llama, qwen2, qwen3, phi3, and the Mixture-of-Experts
// llama/Mixtral, qwen2moe, qwen3moe) on the CPU.
//
// Contract:
//  * Engine(path, options) parses and validates the model (ModelConfig), creates the weight provider
//    and allocates the KV cache for options.n_ctx positions. Errors as in model_config.h / gguf_reader.h.
//  * eval(tokens, n, all_logits, out) appends n tokens at positions n_past() .. n_past()+n-1, fills
//    out with logits: n rows (all_logits) or 1 row (last token) of n_vocab floats, row-major, and
//    advances n_past(). Batched prefill runs matrix-matrix in micro-batches; n == 1 is the decode path.
//    Throws Error(InvalidArgument) if the context would overflow or a token is out of range (state
//    unchanged), Error(Interrupted) when should_abort() returns true between layers (n_past unchanged).
//  * Numerics follow llama.cpp: activations converted to the weight type's vec_dot format (int8
//    blocks for quantized weights), K/V cached as fp16, attention probabilities rounded to fp16
//    before the V product, RMSNorm sums in double.
//  * Not thread-safe: one caller at a time (the binding holds a mutex). Uses the engine's thread pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edge_rt/engine_options.h"
#include "edge_rt/eval_observer.h"
#include "edge_rt/expert_predictor.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/model_config.h"
#include "edge_rt/streaming_weights.h"
#include "edge_rt/thread_pool.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

// Internal to the forward pass (src/forward.h, src/models/registry.h).
struct Scratch;
struct KvCache;
struct ForwardPass;
using BlockRecipe = void (*)(ForwardPass& f, int il, const LayerWeights& w);

// What the engine holds, by memory class, and how the weights are placed.
struct MemoryReport {
    uint64_t budget = 0;  // 0 = unlimited
    uint64_t classes[(size_t)MemClass::kCount] = {};
    uint64_t total = 0;
    bool streaming = false;
    int window = 0;  // slots in the ring (streaming only)
    uint64_t slot_bytes = 0;
    std::vector<int> pinned_units;  // layer ids; n_layer = the output head
    std::vector<int> streamed_units;
    uint64_t streamed_bytes_per_token = 0;
    std::string io;              // "direct", "buffered", ... (streaming only)
    int expert_cache_slots = 0;  // MoE under a budget: experts the cache holds
    uint64_t expert_slot_bytes = 0;
    uint64_t total_experts = 0;
};

// The least mem_budget a model loads with (Engine::minimum_budget), in bytes, by what needs it.
struct BudgetFloor {
    uint64_t weights = 0;    // one window slot for the largest streamed unit + the embedding row buffer
                             // (MoE: + the pinned routers and one expert slot)
    uint64_t predictor = 0;  // the expert predictor's weights (0 without one); its scratch is in scratch
    uint64_t kv_cache = 0;
    uint64_t scratch = 0;
    uint64_t metadata = 0;  // the parsed metadata the engine keeps + ModelParams::host_metadata_bytes
    uint64_t npu = 0;       // ModelParams::npu_bytes: the caller's NPU prefill stage
    uint64_t total() const noexcept { return weights + predictor + kv_cache + scratch + metadata + npu; }
};

// What Engine(path, options) would place, decided without reading a weight (Engine::plan): the classes
// besides the weights (as the constructor reserves them) and place_weights() for what they leave of the
// budget. placement's tensor pointers point into file, which the plan keeps alive.
struct PlannedLoad {
    std::shared_ptr<const GgufFile> file;
    ModelConfig cfg;
    BudgetFloor floor;       // the minimum budget, by class (Engine::minimum_budget)
    uint64_t reserved = 0;   // bytes the non-weight classes hold before the weights are placed
    bool streaming = false;  // options.model.mem_budget set: the placement below applies
    Placement placement;     // for a resident load (no budget): units sized, every one pinned
};

class Engine {
public:
    Engine(const std::string& path, const EngineOptions& options);
    ~Engine();

    // The BudgetFloor of the model at path for options' context and expert predictor (counted when
    // the engine would use it), with the default window and expert cache (an explicit streaming.window or
    // expert_cache_bytes needs room for what it asks). Reads the GGUF header and the predictor, no
    // weights. A budget below total() fails to load with OutOfMemory; at total() it loads. Errors as
    // the constructor's for the arguments, the file, the model and the predictor.
    static BudgetFloor minimum_budget(const std::string& path, const EngineOptions& options);
    // The placement a load with options would make (PlannedLoad), from the GGUF header (and the expert
    // predictor's) alone. Errors as the constructor's, including OutOfMemory below the minimum budget and
    // for a window or expert cache that does not fit.
    static PlannedLoad plan(const std::string& path, const EngineOptions& options);

    void eval(const int32_t* tokens, int64_t n, bool all_logits, float* out,
              const std::function<bool()>& should_abort = {});

    void reset() noexcept;
    void truncate(int64_t n_past);  // keep positions [0, n_past); InvalidArgument if n_past > n_past()

    // KV hand-off from a prefill that ran outside the engine (an NPU graph, edge_rt/npu_stage.py), so
    // decode continues here. write_kv stores positions [first, first + n) of layer il: k and v are n
    // rows of kv_dim() floats each, row-major (heads contiguous, head_dim each; K after RoPE in this
    // model's rotation layout, ModelConfig::rope_kind), rounded to fp16 as eval() stores its own rows.
    // Rows must not leave a gap: first <= the rows layer il holds (n_past() after eval, reset or
    // truncate, extended by earlier write_kv calls), and first + n <= n_ctx(). commit_kv(n_past) then
    // appends positions [n_past(), n_past) to the sequence; every layer must hold them. Both throw
    // Error(InvalidArgument) naming the violated bound, with nothing changed. Not during eval().
    void write_kv(int il, int64_t first, int64_t n, const float* k, const float* v);
    void commit_kv(int64_t n_past);
    // k, v (n rows of kv_dim() floats each, write_kv's layout) <- positions [first, first + n) of layer
    // il, which must lie in [0, n_past()): what attention reads. InvalidArgument otherwise.
    void read_kv(int il, int64_t first, int64_t n, float* k, float* v) const;
    int64_t kv_dim() const noexcept { return cfg_.kv_dim(); }

    int64_t n_past() const noexcept { return n_past_; }
    int64_t n_ctx() const noexcept { return n_ctx_; }
    int n_threads() const noexcept { return pool_->size(); }
    const ModelConfig& config() const noexcept { return cfg_; }
    const GgufFile& file() const noexcept { return *file_; }
    uint64_t n_params() const noexcept;
    uint64_t kv_cache_bytes() const noexcept;
    uint64_t weight_bytes() const noexcept { return weights_->resident_bytes(); }
    MemoryReport memory_report() const;
    // Streaming telemetry (zeros when all weights are resident).
    StreamStats stream_stats() const;
    std::vector<StreamEvent> stream_events() const;
    // Expert cache telemetry (MoE under a budget; empty otherwise).
    ExpertStats expert_stats() const;
    std::vector<ExpertReadEvent> expert_events() const;
    void clear_stream_telemetry();
    // The observation hook (eval_observer.h): calibration statistics, routing traces and debugging
    // tools see the forward pass through it. Not owned; nullptr removes it. Not during eval().
    void set_observer(EvalObserver* observer) noexcept { observer_ = observer; }
    // The fitted next-layer expert predictor in use, or nullptr.
    const ExpertPredictor* expert_predictor() const noexcept { return predictor_.get(); }
    // What the engine left out instead of failing (an optional expert predictor it does not use).
    const std::vector<std::string>& notes() const noexcept { return notes_; }
    // Estimate of the scratch memory eval() uses (counted in the budget).
    static uint64_t scratch_bytes(const ModelConfig& cfg, int64_t n_ubatch, int64_t n_ctx, int n_threads);

private:
    // The predictor options.model asks for, loaded, or nullptr (none, or an optional one left out:
    // why goes to notes when given). Next-layer prefetch, its only user, runs only when budgeted.
    static std::unique_ptr<ExpertPredictor> load_predictor(const EngineOptions& options, const ModelConfig& cfg,
                                                           bool budgeted, std::vector<std::string>* notes);
    // Prefill micro-batch: options.n_ubatch, else 128 under a budget or for MoE, else 256.
    static int64_t ubatch_for(const EngineOptions& options, const ModelConfig& cfg, bool budgeted);
    static BudgetFloor budget_floor(const GgufFile& file, const ModelConfig& cfg, const EngineOptions& options,
                                    int64_t n_ubatch, const ExpertPredictor* predictor);
    // peer_rows: the rows of the batch llama.cpp evaluates this micro-batch in (ForwardPass::peer_rows).
    void eval_ubatch(const int32_t* tokens, int64_t n, bool prompt, int64_t peer_rows, bool all_logits, float* out,
                     const std::function<bool()>& should_abort);
    // out (n_vocab floats per row) <- logits of the micro-batch's rows first .. n-1.
    void output_head(ForwardPass& f, const HeadWeights& head, int64_t first, float* out);

    std::shared_ptr<const GgufFile> file_;
    ModelConfig cfg_;
    MemoryAccountant accountant_;
    std::unique_ptr<WeightProvider> weights_;
    StreamingWeights* streaming_ = nullptr;  // weights_ when streaming, else nullptr
    std::unique_ptr<ThreadPool> pool_;
    std::unique_ptr<Scratch> scratch_;
    std::unique_ptr<KvCache> kv_;
    BlockRecipe block_ = nullptr;  // the architecture's layer (models/registry.h)
    EvalObserver* observer_ = nullptr;
    std::unique_ptr<ExpertPredictor> predictor_;
    std::vector<std::string> notes_;
    std::vector<float> rope_factors_;  // cfg_.rope_factors_tensor(n_ctx_) (n_rot/2), empty without one
    int64_t n_ctx_ = 0;
    int64_t n_ubatch_ = 256;
    std::atomic<int64_t> n_past_{0};  // atomic: Python may read n_past while another thread evaluates
    // Per layer: positions [0, kv_rows_[il]) hold this sequence's K/V (>= n_past_; past it only rows
    // write_kv staged for commit_kv). Set back to n_past_ by eval, reset and truncate.
    std::vector<int64_t> kv_rows_;
};

}  // namespace edge_rt
