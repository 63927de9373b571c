#include "expert_prediction.h"

#include <algorithm>

#include "edge_rt/moe_routing.h"
#include "ops.h"

namespace edge_rt {

namespace {

// s.pred_router += the fitted predictor's correction: out . silu(hidden . x + b_hidden) + b_out,
// x the converted rows in s.act (stride, format `converted`).
void add_fitted_correction(ForwardPass& f, const ExpertPredictor::Layer& fitted, const WeightKernels& converted,
                           size_t stride) {
    Scratch& s = f.s;
    const int64_t n = f.n, NE = f.cfg.n_expert, H = f.predictor->hidden_size();
    const WeightKernels& kh = kernels_of(fitted.hidden_w);
    if (kh.act_type != converted.act_type) stride = quantize_rows(f, s.pred_in.data(), n, f.cfg.n_embd, kh);
    matmul(f, fitted.hidden_w, kh, stride, n, s.pred_hidden.data(), H);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < H; ++h) {
            float& v = s.pred_hidden[(size_t)(t * H + h)];
            v = silu(v + fitted.hidden_b[h]);
        }
    const WeightKernels& ko = kernels_of(fitted.out_w);
    matmul(f, fitted.out_w, ko, quantize_rows(f, s.pred_hidden.data(), n, H, ko), n, s.pred_fit.data(), NE);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t e = 0; e < NE; ++e)
            s.pred_router[(size_t)(t * NE + e)] += s.pred_fit[(size_t)(t * NE + e)] + fitted.out_b[e];
}

}  // namespace

void predict_experts(ForwardPass& f, int il_target, PredictionSource source) {
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const int64_t n = f.n, E = c.n_embd, NE = c.n_expert;
    TensorView pn, pr;
    if (il_target >= c.n_layer || !f.weights.router_weights(il_target, &pn, &pr)) return;
    std::vector<float> norm_tmp;
    const float* nw = f32_of(pn, norm_tmp);
    for (int64_t t = 0; t < n; ++t) rms_norm(&s.x[(size_t)(t * E)], nw, &s.pred_in[(size_t)(t * E)], E, c.rms_eps);
    const WeightKernels& kr = kernels_of(pr);
    const size_t stride = quantize_rows(f, s.pred_in.data(), n, E, kr);
    matmul(f, pr, kr, stride, n, s.pred_router.data(), NE);
    const ExpertPredictor::Layer* fitted =
        f.predictor && source == PredictionSource::NextLayer ? f.predictor->layer(il_target) : nullptr;
    if (fitted) add_fitted_correction(f, *fitted, kr, stride);
    // The top-w experts of each token (w = the provider's prediction width, k by default), ranked by
    // the raw scores: a softmax first could underflow large score gaps into ties.
    const int64_t width = std::min<int64_t>(NE, std::max(1, f.weights.expert_prediction_width()));
    for (int64_t t = 0; t < n; ++t)
        top_k_experts(&s.pred_router[(size_t)(t * NE)], NE, width, &s.pred_sel[(size_t)(t * width)]);
    std::fill(s.pred_flag.begin(), s.pred_flag.end(), 0);
    for (int64_t i = 0; i < n * width; ++i) s.pred_flag[(size_t)s.pred_sel[(size_t)i]] = 1;
    s.pred_ids.clear();
    for (int64_t e = 0; e < NE; ++e)
        if (s.pred_flag[(size_t)e]) s.pred_ids.push_back((int32_t)e);
    f.weights.prefetch_experts(il_target, s.pred_ids.data(), (int)s.pred_ids.size(), source);
}

}  // namespace edge_rt
