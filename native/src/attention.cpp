#include "attention.h"

#include <algorithm>
#include <cmath>

#include "edge_rt/fp16.h"
#include "ops.h"

namespace edge_rt {

void rope(float* x, int64_t n_rot, int64_t pos, float freq_base, float freq_scale, RopeKind kind, const float* factors,
          float attn_factor) {
    const float theta_scale = std::pow(freq_base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float angle = freq_scale * (factors ? theta / factors[i] : theta);
        const float c = std::cos(angle) * attn_factor, s = std::sin(angle) * attn_factor;
        const int64_t a = kind == RopeKind::Normal ? 2 * i : i;
        const int64_t b = kind == RopeKind::Normal ? 2 * i + 1 : i + half;
        const float x0 = x[a], x1 = x[b];
        x[a] = std::fma(x0, c, -(x1 * s));
        x[b] = std::fma(x0, s, x1 * c);
        theta *= theta_scale;
    }
}

namespace {

// q (n x q_dim) and k (n x kv_dim) of layer il: optional per-head RMSNorm, then RoPE at each token's
// position with the layer's base and scale, then q times the config's query_scale when it has one (phi3,
// gemma3: they scale q rather than the scores).
void position_heads(ForwardPass& f, int il, const LayerWeights& w) {
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const int64_t Q = c.q_dim(), KV = c.kv_dim(), D = c.head_dim;
    if (c.has_qk_norm) {
        std::vector<float> qn_tmp, kn_tmp;
        const float* qn = f32_of(w.q_norm, qn_tmp);
        const float* kn = f32_of(w.k_norm, kn_tmp);
        for (int64_t t = 0; t < f.n; ++t) {
            for (int64_t h = 0; h < c.n_head; ++h)
                rms_norm(&s.q[(size_t)(t * Q + h * D)], qn, &s.q[(size_t)(t * Q + h * D)], D, c.rms_eps);
            for (int64_t h = 0; h < c.n_head_kv; ++h)
                rms_norm(&s.k[(size_t)(t * KV + h * D)], kn, &s.k[(size_t)(t * KV + h * D)], D, c.rms_eps);
        }
    }
    const float base = c.rope_base(il), scale = c.rope_scale(il);
    for (int64_t t = 0; t < f.n; ++t) {
        const int64_t pos = f.n_past + t;
        for (int64_t h = 0; h < c.n_head; ++h)
            rope(&s.q[(size_t)(t * Q + h * D)], c.n_rot, pos, base, scale, c.rope_kind, f.rope_factors,
                 c.rope_attn_factor);
        for (int64_t h = 0; h < c.n_head_kv; ++h)
            rope(&s.k[(size_t)(t * KV + h * D)], c.n_rot, pos, base, scale, c.rope_kind, f.rope_factors,
                 c.rope_attn_factor);
    }
    // ggml_scale on Q: one float product per element, before q is rounded to fp16 for the scores.
    if (c.query_scale > 0.0f)
        for (int64_t i = 0; i < f.n * Q; ++i) s.q[(size_t)i] *= c.query_scale;
}

// Appends the micro-batch's K and V rows to layer il's cache (fp16; V transposed, see KvCache).
void write_kv(ForwardPass& f, int il, const WeightKernels& k16) {
    const int64_t KV = f.cfg.kv_dim(), n_ctx = f.kv.n_ctx;
    uint16_t* kc = f.kv.k[(size_t)il].data();
    uint16_t* vc = f.kv.v[(size_t)il].data();
    for (int64_t t = 0; t < f.n; ++t) {
        const int64_t pos = f.n_past + t;
        k16.quantize_act(&f.s.k[(size_t)(t * KV)], kc + pos * KV, KV);
        for (int64_t i = 0; i < KV; ++i) vc[i * n_ctx + pos] = fp32_to_fp16(f.s.v[(size_t)(t * KV + i)]);
    }
}

// row[first, len) holds raw scores: scales them and turns row[0, len) into probabilities as
// ggml_soft_max does, positions before first masked (in the sums as zeros, as llama.cpp's).
void softmax_row(const GgmlVecOps& vec_ops, float* row, int64_t first, int64_t len, float kq_scale) {
    float mx = -INFINITY;
    std::fill(row, row + first, -INFINITY);
    for (int64_t j = first; j < len; ++j) {
        row[j] *= kq_scale;
        mx = std::max(mx, row[j]);
    }
    const double sum = vec_ops.softmax_exp(row, row, len, mx);
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < len; ++j) row[j] *= inv;
}

// The prompt (tinyBLAS) path of softmax_v, with its bits: one work item is a block of query rows that read
// the same KV head (up to 8: the heads of a GQA group, and consecutive tokens), so each K row and each V
// row is widened and read once for all of them (kq_tinyblas / pv_tinyblas). Rows of a block differ in
// length (causal); each is computed over its own positions, its probabilities zero past them.
void softmax_v_batched(ForwardPass& f, int il, const WeightKernels& k16, float kq_scale) {
    const GgmlVecOps& vec_ops = ggml_vec_ops();
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const int64_t Q = c.q_dim(), KV = c.kv_dim(), D = c.head_dim, n_ctx = f.kv.n_ctx;
    const int64_t group = c.n_head / c.n_head_kv;
    const int64_t heads_per_item = std::min<int64_t>(group, 8);
    const int64_t head_blocks = (group + heads_per_item - 1) / heads_per_item;
    const int64_t tokens_per_item = std::max<int64_t>(1, 8 / heads_per_item);
    const int64_t token_blocks = (f.n + tokens_per_item - 1) / tokens_per_item;
    const int64_t n_kv = f.n_past + f.n;
    const int64_t stride = (n_kv + 15) & ~(int64_t)15;  // one row of scores / probabilities, padded to 16
    const int64_t window = c.is_swa(il) ? c.n_swa : 0;
    const uint16_t* kc = f.kv.k[(size_t)il].data();
    const uint16_t* vc = f.kv.v[(size_t)il].data();
    f.pool.parallel_for(token_blocks * c.n_head_kv * head_blocks, 1, [&](int64_t b, int64_t e) {
        thread_local std::vector<float> scores, qf, out;
        thread_local std::vector<uint16_t> half;
        if ((int64_t)scores.size() < 8 * stride) scores.resize((size_t)(8 * stride));
        if ((int64_t)half.size() < std::max(stride, D)) half.resize((size_t)std::max(stride, D));
        if ((int64_t)qf.size() < 8 * D) qf.resize((size_t)(8 * D));
        if ((int64_t)out.size() < 8 * D) out.resize((size_t)(8 * D));
        for (int64_t item = b; item < e; ++item) {
            const int64_t tb = item / (c.n_head_kv * head_blocks), rest = item % (c.n_head_kv * head_blocks);
            const int64_t hk = rest / head_blocks, h0 = hk * group + (rest % head_blocks) * heads_per_item;
            const int64_t nh = std::min(heads_per_item, hk * group + group - h0);
            const int64_t t0 = tb * tokens_per_item, nt = std::min(tokens_per_item, f.n - t0);
            const int nq = (int)(nt * nh);
            const int64_t len_max = f.n_past + t0 + nt;
            // rows r = tt * nh + hh: token t0 + tt, head h0 + hh
            for (int r = 0; r < nq; ++r) {
                const int64_t t = t0 + r / nh, h = h0 + r % nh;
                k16.quantize_act(&s.q[(size_t)(t * Q + h * D)], half.data(), D);
                for (int64_t d = 0; d < D; ++d) qf[(size_t)(r * D + d)] = fp16_to_fp32(half[(size_t)d]);
            }
            float* sc = scores.data();
            vec_ops.kq_tinyblas(D, kc + hk * D, KV, len_max, qf.data(), nq, sc, stride);
            for (int r = 0; r < nq; ++r) {
                float* row = sc + r * stride;
                const int64_t len = f.n_past + t0 + r / nh + 1;
                const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;  // oldest visible
                softmax_row(vec_ops, row, first, len, kq_scale);
                k16.quantize_act(row, half.data(), len);  // the probabilities as ggml's F16 V matmul rounds them
                for (int64_t j = 0; j < len; ++j) row[j] = fp16_to_fp32(half[(size_t)j]);
                std::fill(row + len, row + stride, 0.0f);
            }
            vec_ops.pv_tinyblas(len_max, vc + hk * D * n_ctx, n_ctx, D, sc, stride, nq, out.data());
            for (int r = 0; r < nq; ++r) {
                const int64_t t = t0 + r / nh, h = h0 + r % nh;
                std::copy(out.begin() + r * D, out.begin() + (r + 1) * D, &s.attn[(size_t)(t * Q + h * D)]);
            }
        }
    });
}

// s.attn (n x q_dim) <- causal softmax(q K^T * scale) V, one work item per (token, head), bit for bit
// as llama.cpp computes it with flash attention off (kernels.h GgmlVecOps): the q.k and p.v sums of a
// batch of several tokens as tinyBLAS sums them, of a single token as ggml_vec_dot_f16 over n_kv (a
// multiple of 256 there, so every position is inside its SIMD loop); ggml's expf and softmax sum; the
// probabilities rounded to fp16 before the V product, as ggml's F16 V matmul converts them. A last-bit
// difference here flips int8 roundings in the next quantized matmul, which trained weights amplify
// (SmolLM2-135M: 0.16-0.35 std of the logits).
// Sliding-window layers (ModelConfig::is_swa) mask the positions n_swa or more before the token as
// llama.cpp's KQ mask does: their scores are -inf, so their probabilities are exactly 0 and they stay
// in the sums as zero terms, which keeps every other position in the SIMD lane llama.cpp gives it (its
// cache holds position p in cell p here: one sequence evaluated from an empty cache, and llama-cpp-python
// sizes the SWA cache like the global one, so no cell is reused).
void softmax_v(ForwardPass& f, int il, const WeightKernels& k16) {
    const GgmlVecOps& vec_ops = ggml_vec_ops();
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const int64_t Q = c.q_dim(), KV = c.kv_dim(), D = c.head_dim, n_ctx = f.kv.n_ctx;
    const int64_t group = c.n_head / c.n_head_kv;
    const int64_t n_kv = f.n_past + f.n;  // cache positions visible to the last token of this batch
    const float kq_scale = c.query_scale > 0.0f ? 1.0f : 1.0f / std::sqrt((float)D);  // q already scaled
    const int64_t window = c.is_swa(il) ? c.n_swa : 0;
    const uint16_t* kc = f.kv.k[(size_t)il].data();
    const uint16_t* vc = f.kv.v[(size_t)il].data();
    const int64_t n_past = f.n_past;
    const bool batched = f.prompt && D % vec_ops.tinyblas_lanes == 0;  // tinyBLAS needs k % lanes == 0
    if (batched) return softmax_v_batched(f, il, k16, kq_scale);
    f.pool.parallel_for(f.n * c.n_head, 1, [&](int64_t b, int64_t e) {
        // Per-thread workspace: scores, and fp16 copies of q and of the probabilities.
        thread_local std::vector<float> scores;
        thread_local std::vector<uint16_t> p16v, q16v;
        thread_local std::vector<float> qf;
        if ((int64_t)scores.size() < n_kv) {
            scores.resize((size_t)n_kv);
            p16v.resize((size_t)n_kv);
        }
        if ((int64_t)q16v.size() < D) q16v.resize((size_t)D);
        if ((int64_t)qf.size() < D) qf.resize((size_t)D);
        float* sc = scores.data();
        uint16_t* p16 = p16v.data();
        uint16_t* q16 = q16v.data();
        for (int64_t item = b; item < e; ++item) {
            const int64_t t = item / c.n_head, h = item % c.n_head, hk = h / group;
            const int64_t len = n_past + t + 1;
            const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;  // oldest visible position
            k16.quantize_act(&s.q[(size_t)(t * Q + h * D)], q16, D);
            for (int64_t d = 0; d < D; ++d) qf[(size_t)d] = fp16_to_fp32(q16[d]);
            vec_ops.kq_ggml(D, kc + first * KV + hk * D, KV, len - first, qf.data(), 1, sc + first, 0);
            softmax_row(vec_ops, sc, first, len, kq_scale);
            k16.quantize_act(sc, p16, len);
            float* o = &s.attn[(size_t)(t * Q + h * D)];
            // llama.cpp's n_kv, padded to 256: all of [0, len) inside the SIMD steps of either flavour
            const int64_t n_kv_padded = (len + 255) & ~(int64_t)255;
            for (int64_t d = 0; d < D; ++d)
                o[d] = vec_ops.dot_f16_ggml(len, vc + (hk * D + d) * n_ctx, p16, n_kv_padded);
        }
    });
}
}  // namespace

void attention(ForwardPass& f, int il, const LayerWeights& w, const float* in, float* out) {
    const ModelConfig& c = f.cfg;
    Scratch& s = f.s;
    const TensorView* qkv[3] = {&w.wq, &w.wk, &w.wv};
    float* dst[3] = {s.q.data(), s.k.data(), s.v.data()};
    project(f, il, 0, in, f.n, c.n_embd, qkv, dst, 3);
    add_bias(f, w.bq, s.q.data(), c.q_dim());
    add_bias(f, w.bk, s.k.data(), c.kv_dim());
    add_bias(f, w.bv, s.v.data(), c.kv_dim());
    position_heads(f, il, w);
    const WeightKernels& k16 = *weight_kernels(GgmlType::F16);
    write_kv(f, il, k16);
    softmax_v(f, il, k16);
    linear(f, il, w.wo, 0, s.attn.data(), f.n, out);
}

}  // namespace edge_rt
