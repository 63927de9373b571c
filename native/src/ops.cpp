#include "ops.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "edge_rt/error.h"
#include "weight_prefetch.h"

namespace edge_rt {

const WeightKernels& kernels_of(const TensorView& w) {
    const WeightKernels* k = weight_kernels(w.type);
    if (!k) fail(ErrorKind::Internal, std::string("[eval] no kernel for tensor type ") + type_name(w.type));
    return *k;
}

const float* f32_of(const TensorView& t, std::vector<float>& tmp) {
    if (t.type == GgmlType::F32) return reinterpret_cast<const float*>(t.data);
    tmp.resize((size_t)t.ne0);
    weight_kernels(t.type)->dequantize_row(t.data, tmp.data(), t.ne0);
    return tmp.data();
}

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(x[i] * x[i]);
    const float scale = 1.0f / std::sqrt((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void norm_rows(ForwardPass& f, const float* src, const TensorView& w, float* dst, int64_t first) {
    const int64_t E = f.cfg.n_embd;
    const float* weight = f32_of(w, f.s.norm_w);
    for (int64_t t = first; t < f.n; ++t) rms_norm(src + t * E, weight, dst + t * E, E, f.cfg.rms_eps);
}

FfnRows::FfnRows(ForwardPass& f, int il) : f_(f), saved_peer_rows_(f.peer_rows) {
    const bool selects = il == f.cfg.n_layer - 1 && !f.cfg.is_moe() && f.last_layer_rows_from >= 0;
    first = selects ? f.last_layer_rows_from : 0;
    count = f.n - first;
    if (selects) f.peer_rows = count;
}

FfnRows::~FfnRows() { f_.peer_rows = saved_peer_rows_; }

void add_bias(ForwardPass& f, const TensorView& b, float* y, int64_t width) {
    if (!b.present()) return;
    const float* bias = f32_of(b, f.s.norm_w);
    for (int64_t t = 0; t < f.n; ++t)
        for (int64_t i = 0; i < width; ++i) y[t * width + i] += bias[i];
}

void add_into(float* x, const float* y, int64_t count) {
    for (int64_t i = 0; i < count; ++i) x[i] += y[i];
}

size_t quantize_rows(ForwardPass& f, const float* src, int64_t m, int64_t width, const WeightKernels& k) {
    const size_t stride = k.act_row_bytes(width);
    std::vector<uint8_t>& act = f.s.act;
    if (act.size() < stride * (size_t)m) act.resize(stride * (size_t)m);
    uint8_t* dst = act.data();
    f.pool.parallel_for(m, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) k.quantize_act(src + t * width, dst + (size_t)t * stride, width);
    });
    return stride;
}

// Prefill tiles the loops: a block of kRowTile weight rows (tens of KB, stays in L2) is swept by
// groups of 8 activation rows (one group stays in L1), so neither side is re-streamed per row.
// A Blockwise matrix interleaved in RAM: groups of 8 rows (gemm_x8) swept by runs of activation rows.
void matmul_x8(ForwardPass& f, const TensorView& W, const WeightKernels& k, size_t act_stride, int64_t n_tok, float* y,
               int64_t y_stride) {
    constexpr int64_t kGroupTile = 4;  // 32 weight rows per tile
    constexpr int64_t kActTile = 16;   // activation rows per pass over the tile
    const uint8_t* act = f.s.act.data();
    const int64_t width = W.ne0, nb = width / QK8_0;
    const int64_t n_gemm = n_tok - n_tok % 4;  // prompt rows llama.cpp's repacked gemm takes (kernels.h)
    std::vector<int16_t>& sums = f.s.act_sums;
    if (k.act_type == GgmlType::Q8_0) {  // the Q4_0 kernels' block sums (Q8_K activations carry theirs)
        if (sums.size() < (size_t)(n_tok * nb)) sums.resize((size_t)(n_tok * nb));
        for (int64_t t = 0; t < n_tok; ++t)
            act_block_sums(act + (size_t)t * act_stride, width, &sums[(size_t)(t * nb)]);
    }
    const size_t group_bytes = 8 * W.row_bytes;
    f.pool.parallel_for(W.ne1 / 8, 2, [&](int64_t g0, int64_t g1) {
        float tmp[kActTile * 16];
        for (int64_t gb = g0; gb < g1; gb += kGroupTile) {
            const int64_t ge = std::min(g1, gb + kGroupTile);
            for (int64_t t = 0; t < n_tok; t += kActTile) {
                const int n_act = (int)std::min<int64_t>(kActTile, n_tok - t);
                for (int64_t g = gb; g < ge; ++g) {
                    if (t == 0)
                        prefetch_ahead(W.data + (size_t)g * group_bytes, group_bytes, W.data + g1 * group_bytes);
                    const int gemm_rows = (int)std::clamp<int64_t>(n_gemm - t, 0, n_act);
                    if (k.gemm_x16 && g + 1 < ge) {  // groups g and g + 1 in one call
                        if (t == 0)
                            prefetch_ahead(W.data + (size_t)(g + 1) * group_bytes, group_bytes,
                                           W.data + g1 * group_bytes);
                        k.gemm_x16(width, W.data + (size_t)g * group_bytes, act + (size_t)t * act_stride, act_stride,
                                   k.act_type == GgmlType::Q8_0 ? sums.data() + (size_t)(t * nb) : nullptr, n_act,
                                   gemm_rows, tmp, 16);
                        for (int j = 0; j < n_act; ++j)
                            std::memcpy(&y[(t + j) * y_stride + g * 8], &tmp[j * 16], 16 * sizeof(float));
                        ++g;
                        continue;
                    }
                    k.gemm_x8(width, W.data + (size_t)g * group_bytes, act + (size_t)t * act_stride, act_stride,
                              k.act_type == GgmlType::Q8_0 ? sums.data() + (size_t)(t * nb) : nullptr, n_act, gemm_rows,
                              tmp, 8);
                    for (int j = 0; j < n_act; ++j)
                        std::memcpy(&y[(t + j) * y_stride + g * 8], &tmp[j * 8], 8 * sizeof(float));
                }
            }
        }
    });
}

void matmul(ForwardPass& f, const TensorView& W, const WeightKernels& k, size_t act_stride, int64_t n_tok, float* y,
            int64_t y_stride) {
    if (W.interleaved) return matmul_x8(f, W, k, act_stride, n_tok, y, y_stride);
    constexpr int64_t kRowTile = 32;
    const uint8_t* act = f.s.act.data();
    const int64_t width = W.ne0;
    const bool blockwise = W.sum_order == SumOrder::Blockwise;
    // The rows llama.cpp's op has: the eval's batch for the whole micro-batch (forward.h peer_rows), else its
    // own count (one expert's routed rows, the head's output rows).
    const int64_t peer_rows = n_tok == f.n ? f.peer_rows : n_tok;
    const bool tiled = k.dot_rows_tiled && takes_tiled(W.type, W.sum_order, peer_rows);
    const int64_t n_gemm = n_tok - n_tok % 4;  // prompt rows llama.cpp's repacked gemm takes (kernels.h)
    const bool scaled = !blockwise && !tiled && k.vec_dot_rows_scaled && n_tok > 1;
    const int64_t nb = width / QK8_0;
    std::vector<float>& scales = f.s.act_scales;
    if (scaled) {  // each activation block's scale converted once, not once per weight row
        if (scales.size() < (size_t)(n_tok * nb)) scales.resize((size_t)(n_tok * nb));
        for (int64_t t = 0; t < n_tok; ++t)
            act_block_scales(act + (size_t)t * act_stride, width, &scales[(size_t)(t * nb)]);
    }
    f.pool.parallel_for(W.ne1, 16, [&](int64_t r0, int64_t r1) {
        float tmp[8];
        for (int64_t rb = r0; rb < r1; rb += kRowTile) {
            const int64_t re = std::min(r1, rb + kRowTile);
            for (int64_t t = 0; t < n_tok; t += 8) {
                const int n_act = (int)std::min<int64_t>(8, n_tok - t);
                const uint8_t* a = act + (size_t)t * act_stride;
                for (int64_t r = rb; r < re; ++r) {
                    const uint8_t* wrow = W.row(r);
                    if (t == 0) prefetch_ahead(wrow, W.row_bytes, W.row(r1));  // the first sweep streams W
                    if (r + 1 < re && ((scaled && k.vec_dot2_rows_scaled) || (tiled && k.dot2_rows_tiled))) {
                        // rows r and r + 1 in one call
                        if (t == 0) prefetch_ahead(W.row(r + 1), W.row_bytes, W.row(r1));
                        float two[16];
                        if (tiled)
                            k.dot2_rows_tiled(width, wrow, W.row_bytes, a, act_stride, n_act, two);
                        else
                            k.vec_dot2_rows_scaled(width, wrow, W.row_bytes, a, act_stride, &scales[(size_t)(t * nb)],
                                                   (size_t)nb, n_act, two);
                        for (int j = 0; j < n_act; ++j) {
                            y[(t + j) * y_stride + r] = two[j];
                            y[(t + j) * y_stride + r + 1] = two[8 + j];
                        }
                        ++r;
                        continue;
                    }
                    if (blockwise) {
                        const int gemm_rows = (int)std::clamp<int64_t>(n_gemm - t, 0, n_act);
                        k.dot_rows_blockwise(width, wrow, a, act_stride, n_act, gemm_rows, tmp);
                        for (int j = 0; j < n_act; ++j) y[(t + j) * y_stride + r] = tmp[j];
                    } else if (tiled) {
                        k.dot_rows_tiled(width, wrow, a, act_stride, n_act, tmp);
                        for (int j = 0; j < n_act; ++j) y[(t + j) * y_stride + r] = tmp[j];
                    } else if (scaled) {
                        k.vec_dot_rows_scaled(width, wrow, a, act_stride, &scales[(size_t)(t * nb)], (size_t)nb, n_act,
                                              tmp);
                        for (int j = 0; j < n_act; ++j) y[(t + j) * y_stride + r] = tmp[j];
                    } else if (k.vec_dot_rows && n_act > 1) {
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
}

void observe_input(ForwardPass& f, int layer, const TensorView& W, int64_t expert, const float* src, int64_t m,
                   int64_t width) {
    if (!f.observing(Observed::MatmulInput)) return;
    Observation o;
    o.kind = Observed::MatmulInput;
    o.layer = layer;
    o.weight = W.info;
    o.expert = expert;
    o.data = src;
    o.rows = m;
    o.cols = width;
    f.observer->observe(o);
}

void project(ForwardPass& f, int layer, int64_t expert, const float* in, int64_t m, int64_t width,
             const TensorView* const* W, float* const* outs, int count) {
    // Views into one fused tensor (phi3's q/k/v, gate/up) share its input: observed once, as one weight.
    for (int i = 0; i < count; ++i) {
        bool seen = false;
        for (int j = 0; j < i; ++j) seen = seen || W[j]->info == W[i]->info;
        if (!seen) observe_input(f, layer, *W[i], expert, in, m, width);
    }
    size_t stride = 0;
    const WeightKernels* converted = nullptr;  // the format f.s.act holds
    for (int i = 0; i < count; ++i) {
        const WeightKernels& k = kernels_of(*W[i]);
        if (!converted || converted->act_type != k.act_type) {
            stride = quantize_rows(f, in, m, width, k);
            converted = &k;
        }
        matmul(f, *W[i], k, stride, m, outs[i], W[i]->ne1);
    }
}

}  // namespace edge_rt
