// ggml's float vector ops (kernels.h GgmlVecOps) in plain AdvSIMD (compiled with -march=armv8-a). The bits
// are the AVX2 variant's, which the scalar twin (vec_ops_scalar.cpp) emulates: each 8-float AVX2 register
// is a pair of 4-float registers here (F8: lo = lanes 0..3, hi = 4..7), every fmadd one FMLA (one
// rounding), every horizontal sum in the AVX2 order. ggml_geglu is the shared scalar loop (ggml runs it
// on every ISA).
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "edge_rt/kernels.h"

namespace edge_rt {

namespace {

#define ERT_INLINE inline __attribute__((always_inline))

struct F8 {
    float32x4_t lo, hi;
};

ERT_INLINE F8 splat(float v) { return {vdupq_n_f32(v), vdupq_n_f32(v)}; }
ERT_INLINE F8 load(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
ERT_INLINE void store(float* p, F8 v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}
ERT_INLINE F8 load_f16(const uint16_t* p) {
    const uint16x8_t h = vld1q_u16(p);
    return {vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))), vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)))};
}
// a * b + c, one rounding (_mm256_fmadd_ps)
ERT_INLINE F8 fmadd(F8 a, F8 b, F8 c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
// -(a * b) + c, one rounding (_mm256_fnmadd_ps)
ERT_INLINE F8 fnmadd(F8 a, F8 b, F8 c) { return {vfmsq_f32(c.lo, a.lo, b.lo), vfmsq_f32(c.hi, a.hi, b.hi)}; }
ERT_INLINE F8 add(F8 a, F8 b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
ERT_INLINE F8 sub(F8 a, F8 b) { return {vsubq_f32(a.lo, b.lo), vsubq_f32(a.hi, b.hi)}; }
ERT_INLINE F8 mul(F8 a, F8 b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
ERT_INLINE F8 div(F8 a, F8 b) { return {vdivq_f32(a.lo, b.lo), vdivq_f32(a.hi, b.hi)}; }

// hsum8 / tinyBLAS hsum: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
ERT_INLINE float hsum8(F8 v) {
    const float32x4_t s = vaddq_f32(v.lo, v.hi);
    const float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}

// GGML_F32x8_REDUCE of 4 accumulators: lanes (s0+s2)+(s1+s3), then ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)).
ERT_INLINE float reduce4(const F8* s) {
    const F8 l = add(add(s[0], s[2]), add(s[1], s[3]));
    const float32x4_t t = vaddq_f32(l.lo, l.hi);
    const float32x2_t p = vpadd_f32(vget_low_f32(t), vget_high_f32(t));
    return vget_lane_f32(p, 0) + vget_lane_f32(p, 1);
}

// ggml_v_expf, 4 lanes (ARM optimized-routines expf; the scalar twin's ggml_expf_lane per lane).
ERT_INLINE float32x4_t expf4(float32x4_t x) {
    const float32x4_t r = vdupq_n_f32(0x1.8p23f);
    const float32x4_t z = vfmaq_f32(r, x, vdupq_n_f32(0x1.715476p+0f));
    const float32x4_t n = vsubq_f32(z, r);
    const float32x4_t b = vfmsq_f32(vfmsq_f32(x, n, vdupq_n_f32(0x1.62e4p-1f)), n, vdupq_n_f32(0x1.7f7d1cp-20f));
    const uint32x4_t e = vshlq_n_u32(vreinterpretq_u32_f32(z), 23);
    const float32x4_t k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(vdupq_n_f32(1.0f))));
    const uint32x4_t c = vcagtq_f32(n, vdupq_n_f32(126.0f));
    const float32x4_t u = vmulq_f32(b, b);
    const float32x4_t j =
        vfmaq_f32(vmulq_f32(vdupq_n_f32(0x1.ffffecp-1f), b),
                  vfmaq_f32(vfmaq_f32(vdupq_n_f32(0x1.fffdb6p-2f), vdupq_n_f32(0x1.555e66p-3f), b),
                            vfmaq_f32(vdupq_n_f32(0x1.573e2ep-5f), vdupq_n_f32(0x1.0e4020p-7f), b), u),
                  u);
    const float32x4_t normal = vfmaq_f32(k, j, k);
    if (vmaxvq_u32(c) == 0) return normal;
    const uint32x4_t g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x82000000u));
    const float32x4_t s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f000000u)));
    const float32x4_t s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
    const uint32x4_t d = vcagtq_f32(n, vdupq_n_f32(192.0f));
    const float32x4_t scaled = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
    return vbslq_f32(d, vmulq_f32(s1, s1), vbslq_f32(c, scaled, normal));
}
ERT_INLINE F8 expf8(F8 x) { return {expf4(x.lo), expf4(x.hi)}; }

void swiglu_neon(const float* x, const float* g, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 7 < n; i += 8) {
        const F8 v = load(x + i);
        const F8 silu = div(v, add(splat(1.0f), expf8(sub(splat(0.0f), v))));
        store(y + i, mul(silu, load(g + i)));
    }
    for (; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

double softmax_exp_neon(const float* x, float* y, int64_t n, float max) {
    double sum = 0.0;
    const F8 vmax = splat(max);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const F8 v = expf8(sub(load(x + i), vmax));
        store(y + i, v);
        sum += (double)hsum8(v);
    }
    if (i < n) {  // the masked lanes of ggml's padded row: exp(-inf) = 0
        float t[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        std::memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        const F8 v = expf8(sub(load(t), vmax));
        store(t, v);
        std::memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
        sum += (double)hsum8(v);
    }
    return sum;
}

float dot_f16_tinyblas_neon(int64_t n, const uint16_t* x, const uint16_t* y) {
    F8 acc = splat(0.f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = fmadd(load_f16(x + i), load_f16(y + i), acc);
    if (i < n) {
        uint16_t tx[8] = {}, ty[8] = {};
        std::memcpy(tx, x + i, (size_t)(n - i) * 2);
        std::memcpy(ty, y + i, (size_t)(n - i) * 2);
        acc = fmadd(load_f16(tx), load_f16(ty), acc);
    }
    return hsum8(acc);
}

ERT_INLINE float h2f(uint16_t h) {
    __fp16 f;
    std::memcpy(&f, &h, 2);
    return (float)f;
}

float dot_f16_ggml_neon(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    const int64_t np = n_total & ~(int64_t)31;
    const int64_t m = n < np ? n : np;
    F8 s[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
    int64_t i = 0;
    for (; i + 32 <= m; i += 32)
        for (int j = 0; j < 4; ++j) s[j] = fmadd(load_f16(x + i + 8 * j), load_f16(y + i + 8 * j), s[j]);
    if (i < m) {
        uint16_t tx[32] = {}, ty[32] = {};
        std::memcpy(tx, x + i, (size_t)(m - i) * 2);
        std::memcpy(ty, y + i, (size_t)(m - i) * 2);
        for (int j = 0; j < 4; ++j) s[j] = fmadd(load_f16(tx + 8 * j), load_f16(ty + 8 * j), s[j]);
    }
    double sum = (double)reduce4(s);
    for (int64_t k = np; k < n; ++k) sum += (double)(h2f(x[k]) * h2f(y[k]));
    return (float)sum;
}

// Key row j widened once per 8 elements for all nq queries; each output dot_f16_tinyblas's bits.
void kq_tinyblas_neon(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq, float* out,
                      int64_t out_stride) {
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        F8 acc[8];
        for (int i = 0; i < nq; ++i) acc[i] = splat(0.f);
        for (int64_t c = 0; c < D; c += 8) {
            const F8 kv = load_f16(kr + c);
            for (int i = 0; i < nq; ++i) acc[i] = fmadd(kv, load(q + i * D + c), acc[i]);
        }
        for (int i = 0; i < nq; ++i) out[i * out_stride + j] = hsum8(acc[i]);
    }
}

// dot_f16_ggml(D, k_j, q_i, D) for every position and query.
void kq_ggml_neon(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq, float* out,
                  int64_t out_stride) {
    const int64_t np = D & ~(int64_t)31;
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        for (int i = 0; i < nq; ++i) {
            const float* qi = q + i * D;
            F8 s[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
            for (int64_t e = 0; e < np; e += 32)
                for (int c = 0; c < 4; ++c) s[c] = fmadd(load_f16(kr + e + 8 * c), load(qi + e + 8 * c), s[c]);
            double sum = (double)reduce4(s);
            for (int64_t e = np; e < D; ++e) sum += (double)(h2f(kr[e]) * qi[e]);
            out[i * out_stride + j] = (float)sum;
        }
    }
}

// One V row (d) widened 8 positions at a time against up to 8 probability rows.
void pv_tinyblas_neon(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p, int64_t p_stride,
                      int np, float* out) {
    for (int64_t d = 0; d < D; ++d) {
        const uint16_t* vr = v + d * v_stride;
        F8 acc[8];
        for (int i = 0; i < np; ++i) acc[i] = splat(0.f);
        int64_t e = 0;
        for (; e + 8 <= n; e += 8) {
            const F8 vv = load_f16(vr + e);
            for (int i = 0; i < np; ++i) acc[i] = fmadd(vv, load(p + i * p_stride + e), acc[i]);
        }
        if (e < n) {
            uint16_t tail[8] = {};
            std::memcpy(tail, vr + e, (size_t)(n - e) * 2);
            const F8 vv = load_f16(tail);
            for (int i = 0; i < np; ++i) acc[i] = fmadd(vv, load(p + i * p_stride + e), acc[i]);
        }
        for (int i = 0; i < np; ++i) out[i * D + d] = hsum8(acc[i]);
    }
}

}  // namespace

const GgmlVecOps* neon_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops{swiglu_neon,       softmax_exp_neon, dot_f16_tinyblas_neon,
                                dot_f16_ggml_neon, ggml_geglu,       kq_tinyblas_neon,
                                pv_tinyblas_neon,  kq_ggml_neon,     8};
    return &ops;
}

}  // namespace edge_rt
