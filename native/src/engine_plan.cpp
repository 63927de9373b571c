// Engine::plan: the placement a load would make, from the header alone (the planner's view of a load).
#include "edge_rt/engine.h"
#include "edge_rt/error.h"
#include "edge_rt/placement.h"

namespace edge_rt {

PlannedLoad Engine::plan(const std::string& path, const EngineOptions& options) {
    check_options(options);
    PlannedLoad p;
    p.file = GgufFile::open(path);
    p.cfg = ModelConfig::from_gguf(*p.file);
    const bool budgeted = options.model.mem_budget != 0;
    const StreamingOptions& so = options.model.streaming;
    if (!p.cfg.is_moe() && (so.expert_cache_bytes || so.prediction_width)) {
        fail(
            ErrorKind::InvalidArgument,
            "[plan] expert_cache and expert_prediction_width are for Mixture-of-Experts models; " + path + " is dense");
    }
    const std::unique_ptr<ExpertPredictor> predictor = load_predictor(options, p.cfg, budgeted, nullptr);
    p.floor = budget_floor(*p.file, p.cfg, options, ubatch_for(options, p.cfg, budgeted), predictor.get());
    // The constructor reserves every class but the streamed weights before placing them; the weights'
    // floor (StreamingWeights::min_weight_bytes) is the only part of floor.weights place_weights adds.
    p.reserved = p.floor.total() - StreamingWeights::min_weight_bytes(*p.file, p.cfg);
    p.streaming = budgeted;
    if (budgeted && options.model.mem_budget < p.floor.total()) {
        fail(ErrorKind::OutOfMemory, "[plan] memory budget " + std::to_string(options.model.mem_budget) +
                                         " bytes is below the minimum " + std::to_string(p.floor.total()) + " bytes (" +
                                         format_bytes(p.floor.total()) + ") for '" + path + "'");
    }
    PlacementRequest request;
    request.budget = options.model.mem_budget;  // 0: unlimited, every unit pinned (a resident load)
    request.reserved = budgeted ? p.reserved : 0;
    request.window = so.window;
    request.prefetch = so.prefetch;
    request.expert_cache_bytes = so.expert_cache_bytes;
    p.placement = place_weights(*p.file, p.cfg, request);
    return p;
}

}  // namespace edge_rt
