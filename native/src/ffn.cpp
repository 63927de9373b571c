#include "ffn.h"

#include <algorithm>
#include <cstring>

#include "edge_rt/moe_routing.h"
#include "expert_prediction.h"
#include "ops.h"

namespace edge_rt {

void gated_ffn(ForwardPass& f, int il, const TensorView& gate, const TensorView& up, const TensorView& down,
               int64_t expert, const float* in, int64_t m, int64_t ff, float* out, GateActivation act) {
    Scratch& s = f.s;
    const TensorView* gu[2] = {&gate, &up};
    float* dst[2] = {s.gate.data(), s.up.data()};
    project(f, il, expert, in, m, f.cfg.n_embd, gu, dst, 2);
    // ggml's SwiGLU / GeGLU bit for bit (kernels.h GgmlVecOps), one row at a time as ggml runs it (the
    // SwiGLU tail depends on ff): std::exp's last bit differs from ggml's expf, and trained weights amplify that.
    const GgmlVecOps& vec_ops = ggml_vec_ops();
    const auto glu = act == GateActivation::Silu ? vec_ops.swiglu : vec_ops.geglu;
    for (int64_t t = 0; t < m; ++t) {
        float* g = &s.gate[(size_t)(t * ff)];
        glu(g, &s.up[(size_t)(t * ff)], g, ff);
    }
    linear(f, il, down, expert, s.gate.data(), m, out);
}

namespace {

// Routes the n rows of s.cur: s.router (probabilities), s.sel / s.sel_w (each token's experts and
// weights), and the counting sort of the (token, j) slots by expert: s.expert_ids (used experts,
// ascending), s.expert_first (offsets) and s.expert_slots.
void route(ForwardPass& f, int il, const LayerWeights& w) {
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const int64_t n = f.n, NE = c.n_expert, K = c.n_expert_used;
    linear(f, il, w.ffn_gate_inp, 0, s.cur.data(), n, s.router.data());
    route_tokens(s.router.data(), n, NE, K, c.expert_weights_norm, c.expert_weights_scale, s.sel.data(),
                 s.sel_w.data());
    if (f.observing(Observed::RouterProbs)) {
        Observation o;
        o.kind = Observed::RouterProbs;
        o.layer = il;
        o.data = s.router.data();
        o.rows = n;
        o.cols = NE;
        f.observer->observe(o);
    }
    s.expert_first.assign((size_t)(NE + 1), 0);
    for (int64_t i = 0; i < n * K; ++i) ++s.expert_first[(size_t)s.sel[(size_t)i] + 1];
    s.expert_ids.clear();
    for (int64_t e = 0; e < NE; ++e) {
        if (s.expert_first[(size_t)e + 1] > 0) s.expert_ids.push_back((int32_t)e);
        s.expert_first[(size_t)e + 1] += s.expert_first[(size_t)e];
    }
    s.expert_slots.resize((size_t)(n * K));
    std::vector<int32_t>& fill = s.expert_first;  // advanced while filling, rebuilt below
    for (int64_t i = 0; i < n * K; ++i) s.expert_slots[(size_t)fill[(size_t)s.sel[(size_t)i]]++] = (int32_t)i;
    for (int64_t e = NE; e > 0; --e) fill[(size_t)e] = fill[(size_t)e - 1];
    fill[0] = 0;
}

// s.exp_out[(t * k + j)] <- the output of token t's j-th expert, for every used expert. A provider with
// a bounded expert cache serves the set in groups; each expert's output is independent of the
// others', so the grouping cannot change the result.
void run_experts(ForwardPass& f, int il, const LayerWeights& w) {
    Scratch& s = f.s;
    const int64_t E = f.cfg.n_embd, K = f.cfg.n_expert_used;
    const int n_used = (int)s.expert_ids.size();
    s.expert_views.resize((size_t)n_used);
    f.weights.note_routing(il, s.expert_ids.data(), n_used);
    const int group = f.weights.max_experts_per_acquire() > 0 ? f.weights.max_experts_per_acquire() : n_used;
    for (int u = 0; u < n_used; ++u) {
        if (u % group == 0) {
            if (u > 0) f.weights.release_experts(il);
            f.weights.acquire_experts(il, w, s.expert_ids.data() + u, std::min(group, n_used - u),
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
        gated_ffn(f, il, ew.gate, ew.up, ew.down, e, s.gather.data(), m, f.cfg.n_ff_exp, s.ffn_out.data());
        for (int32_t r = 0; r < m; ++r) {
            std::memcpy(&s.exp_out[(size_t)slots[r] * (size_t)E], &s.ffn_out[(size_t)r * (size_t)E],
                        (size_t)E * sizeof(float));
        }
    }
    f.weights.release_experts(il);
}

// s.moe += the shared expert's SwiGLU output gated by sigmoid(gate_inp_shexp . cur), computed as
// llama.cpp does, silu(g) / g.
void shared_expert(ForwardPass& f, int il, const LayerWeights& w) {
    Scratch& s = f.s;
    const int64_t E = f.cfg.n_embd;
    linear(f, il, w.ffn_gate_inp_shexp, 0, s.cur.data(), f.n, s.shexp_g.data());
    gated_ffn(f, il, w.ffn_gate_shexp, w.ffn_up_shexp, w.ffn_down_shexp, 0, s.cur.data(), f.n, f.cfg.n_ff_shexp,
              s.ffn_out.data());
    for (int64_t t = 0; t < f.n; ++t) {
        const float g = s.shexp_g[(size_t)t];
        const float gate = silu(g) / g;
        for (int64_t i = 0; i < E; ++i) {
            const float gated = s.ffn_out[(size_t)(t * E + i)] * gate;
            s.moe[(size_t)(t * E + i)] += gated;
        }
    }
}

}  // namespace

void moe_ffn(ForwardPass& f, int il, const LayerWeights& w) {
    Scratch& s = f.s;
    const int64_t E = f.cfg.n_embd, K = f.cfg.n_expert_used;
    route(f, il, w);
    run_experts(f, il, w);
    for (int64_t t = 0; t < f.n; ++t) {
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
    if (f.cfg.n_ff_shexp > 0) shared_expert(f, il, w);  // ModelConfig checked all four tensors' shapes
}

void ffn_boundary(ForwardPass& f, int il) {
    if (f.observing(Observed::FfnInput)) {
        Observation o;
        o.kind = Observed::FfnInput;
        o.layer = il;
        o.data = f.s.x.data();
        o.rows = f.n;
        o.cols = f.cfg.n_embd;
        f.observer->observe(o);
    }
    if ((int)f.prefetch & (int)ExpertPrefetch::NextLayer) predict_experts(f, il + 1, PredictionSource::NextLayer);
}

}  // namespace edge_rt
