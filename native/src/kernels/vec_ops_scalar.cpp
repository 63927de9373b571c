// ggml's float vector ops (kernels.h GgmlVecOps), the scalar twins of both flavours, and their per-ISA
// dispatch. Each AVX2 (AVX-512) lane is emulated operation for operation (std::fma is one rounding like
// vfmadd), so the results are the SIMD variant's bits, not just close to them. Compiled with the portable flags (ISO C++: no
// implicit FMA contraction), like kernels_scalar.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"

namespace edge_rt {

namespace {

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// One lane of ggml_v_expf (AVX2): ARM optimized-routines expf, max error 1.45 ulp; exp(-inf) = 0.
float ggml_expf_lane(float x) {
    const float r = 0x1.8p23f;
    const float z = std::fma(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    const uint32_t e = float_bits(z) << 23;
    const float k = bits_float(e + float_bits(1.0f));
    const float u = b * b;
    const float j =
        std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                 u, 0x1.ffffecp-1f * b);
    if (!(std::fabs(n) > 126.0f)) return std::fma(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = bits_float(g + 0x7f000000u);
    const float s2 = bits_float(e - g);
    if (std::fabs(n) > 192.0f) return s1 * s1;
    return std::fma(s2, j, s2) * s1;
}

// hsum_float_8 / tinyBLAS hsum: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
inline float hsum8_lanes(const float* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

void ggml_swiglu_scalar(const float* x, const float* g, float* y, int64_t n) {
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; ++i) y[i] = x[i] / (1.0f + ggml_expf_lane(0.0f - x[i])) * g[i];
    for (int64_t i = n8; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

double ggml_softmax_exp_scalar(const float* x, float* y, int64_t n, float max) {
    double sum = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += 8) {
        float l[8] = {};  // masked lanes: exp(-inf) = 0
        for (int64_t i = i0; i < std::min(n, i0 + 8); ++i) l[i - i0] = y[i] = ggml_expf_lane(x[i] - max);
        sum += (double)hsum8_lanes(l);
    }
    return sum;
}

float ggml_dot_f16_tinyblas_scalar(int64_t n, const uint16_t* x, const uint16_t* y) {
    float acc[8] = {};
    for (int64_t i = 0; i < n; ++i) acc[i & 7] = std::fma(fp16_to_fp32(x[i]), fp16_to_fp32(y[i]), acc[i & 7]);
    return hsum8_lanes(acc);
}

float ggml_dot_f16_scalar(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    const int64_t np = n_total & ~(int64_t)31;
    float acc[4][8] = {};
    for (int64_t i = 0; i < std::min(n, np); ++i) {
        float& a = acc[(i >> 3) & 3][i & 7];
        a = std::fma(fp16_to_fp32(x[i]), fp16_to_fp32(y[i]), a);
    }
    float l[8];
    for (int k = 0; k < 8; ++k) l[k] = (acc[0][k] + acc[2][k]) + (acc[1][k] + acc[3][k]);
    // GGML_F32x8_REDUCE: (lo + hi), then two hadds
    double sum = (double)(((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])));
    for (int64_t i = np; i < n; ++i) sum += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return (float)sum;
}

void ggml_kq_tinyblas_scalar(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                             float* out, int64_t out_stride) {
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j) {
            float acc[8] = {};
            for (int64_t e = 0; e < D; ++e)
                acc[e & 7] = std::fma(fp16_to_fp32(k[j * k_stride + e]), q[i * D + e], acc[e & 7]);
            out[i * out_stride + j] = hsum8_lanes(acc);
        }
}

void ggml_kq_ggml_scalar(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                         float* out, int64_t out_stride) {
    const int64_t np = D & ~(int64_t)31;
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j) {
            const uint16_t* kr = k + j * k_stride;
            const float* qi = q + i * D;
            float acc[4][8] = {};
            for (int64_t e = 0; e < np; ++e) {
                float& a = acc[(e >> 3) & 3][e & 7];
                a = std::fma(fp16_to_fp32(kr[e]), qi[e], a);
            }
            float l[8];
            for (int c = 0; c < 8; ++c) l[c] = (acc[0][c] + acc[2][c]) + (acc[1][c] + acc[3][c]);
            double sum = (double)(((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])));
            for (int64_t e = np; e < D; ++e) sum += (double)(fp16_to_fp32(kr[e]) * qi[e]);
            out[i * out_stride + j] = (float)sum;
        }
}

void ggml_pv_tinyblas_scalar(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p,
                             int64_t p_stride, int np, float* out) {
    for (int i = 0; i < np; ++i)
        for (int64_t d = 0; d < D; ++d) {
            float acc[8] = {};
            for (int64_t e = 0; e < n; ++e)
                acc[e & 7] = std::fma(fp16_to_fp32(v[d * v_stride + e]), p[i * p_stride + e], acc[e & 7]);
            out[i * D + d] = hsum8_lanes(acc);
        }
}

// ---- The AVX-512 flavour (kernels.h GgmlVecOps): llama.cpp built on an AVX-512 CPU.

// One lane of ggml_v_expf (AVX-512): the AVX2 polynomial, but its last fma adds the 1 (j = 1 + ...),
// then vscalefps multiplies by 2^n exactly (ldexp: n is an integer here, |n| <= 192, and both round a
// subnormal result to nearest); beyond |n| > 192, +inf for n > 0 and 0 otherwise; NaN stays NaN.
float ggml_expf_lane_avx512(float x) {
    const float r = 0x1.8p23f;
    const float z = std::fma(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j =
        std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                 u, std::fma(0x1.ffffecp-1f, b, 1.0f));
    if (std::isnan(n)) return n;
    if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    return std::ldexp(j, (int)n);
}

// GCC's _mm512_reduce_add_ps (avx512fintrin.h, the compiler llama-cpp-python builds with): the upper 8
// lanes onto the lower, then 4 onto 4, then (0 + 2) + (1 + 3).
inline float hsum16_lanes(const float* l) {
    float t3[8], t6[4];
    for (int i = 0; i < 8; ++i) t3[i] = l[i + 8] + l[i];
    for (int i = 0; i < 4; ++i) t6[i] = t3[i + 4] + t3[i];
    return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

void ggml_swiglu_scalar_avx512(const float* x, const float* g, float* y, int64_t n) {
    const int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; ++i) y[i] = x[i] / (1.0f + ggml_expf_lane_avx512(0.0f - x[i])) * g[i];
    for (int64_t i = n16; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

double ggml_softmax_exp_scalar_avx512(const float* x, float* y, int64_t n, float max) {
    double sum = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
        float l[16] = {};  // masked lanes: exp(-inf) = 0
        for (int64_t i = i0; i < std::min(n, i0 + 16); ++i) l[i - i0] = y[i] = ggml_expf_lane_avx512(x[i] - max);
        sum += (double)hsum16_lanes(l);
    }
    return sum;
}

float ggml_dot_f16_tinyblas_scalar_avx512(int64_t n, const uint16_t* x, const uint16_t* y) {
    float acc[16] = {};
    for (int64_t i = 0; i < n; ++i) acc[i & 15] = std::fma(fp16_to_fp32(x[i]), fp16_to_fp32(y[i]), acc[i & 15]);
    return hsum16_lanes(acc);
}

// GGML_F32x16_REDUCE over 4 accumulators of 16 lanes (steps of 64), then the tail in double.
float ggml_dot_f16_scalar_avx512(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    const int64_t np = n_total & ~(int64_t)63;
    float acc[4][16] = {};
    for (int64_t i = 0; i < std::min(n, np); ++i) {
        float& a = acc[(i >> 4) & 3][i & 15];
        a = std::fma(fp16_to_fp32(x[i]), fp16_to_fp32(y[i]), a);
    }
    float l[16];
    for (int k = 0; k < 16; ++k) l[k] = (acc[0][k] + acc[2][k]) + (acc[1][k] + acc[3][k]);
    double sum = (double)hsum16_lanes(l);
    for (int64_t i = np; i < n; ++i) sum += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return (float)sum;
}

void ggml_kq_tinyblas_scalar_avx512(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q,
                                    int nq, float* out, int64_t out_stride) {
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j) {
            float acc[16] = {};
            for (int64_t e = 0; e < D; ++e)
                acc[e & 15] = std::fma(fp16_to_fp32(k[j * k_stride + e]), q[i * D + e], acc[e & 15]);
            out[i * out_stride + j] = hsum16_lanes(acc);
        }
}

void ggml_kq_ggml_scalar_avx512(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                                float* out, int64_t out_stride) {
    const int64_t np = D & ~(int64_t)63;
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j) {
            const uint16_t* kr = k + j * k_stride;
            const float* qi = q + i * D;
            float acc[4][16] = {};
            for (int64_t e = 0; e < np; ++e) {
                float& a = acc[(e >> 4) & 3][e & 15];
                a = std::fma(fp16_to_fp32(kr[e]), qi[e], a);
            }
            float l[16];
            for (int c = 0; c < 16; ++c) l[c] = (acc[0][c] + acc[2][c]) + (acc[1][c] + acc[3][c]);
            double sum = (double)hsum16_lanes(l);
            for (int64_t e = np; e < D; ++e) sum += (double)(fp16_to_fp32(kr[e]) * qi[e]);
            out[i * out_stride + j] = (float)sum;
        }
}

void ggml_pv_tinyblas_scalar_avx512(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p,
                                    int64_t p_stride, int np, float* out) {
    for (int i = 0; i < np; ++i)
        for (int64_t d = 0; d < D; ++d) {
            float acc[16] = {};
            for (int64_t e = 0; e < n; ++e)
                acc[e & 15] = std::fma(fp16_to_fp32(v[d * v_stride + e]), p[i * p_stride + e], acc[e & 15]);
            out[i * D + d] = hsum16_lanes(acc);
        }
}

// ggml_table_gelu_f16 (ggml_cpu_init): entry h = fp16(gelu(fp16_to_fp32(h))) with ggml_gelu_f32's tanh
// form 0.5x(1 + tanhf(sqrt(2/pi) x (1 + 0.044715 x^2))). GCC contracts 1 + (0.044715 x) x into one fma in
// llama.cpp's x86-64 FMA build; unfused, the entry of x = -1.999 rounds the other way (1 of 65536; checked
// against the table exported by llama-cpp-python 0.3.36's libggml-cpu: all entries equal).
const uint16_t* gelu_f16_table() {
    static const std::vector<uint16_t> table = [] {
        constexpr float kCoefA = 0.044715f;
        constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
        std::vector<uint16_t> t(1 << 16);
        for (uint32_t h = 0; h < t.size(); ++h) {
            const float x = fp16_to_fp32((uint16_t)h);
            const float inner = kSqrt2OverPi * x * std::fma(kCoefA * x, x, 1.0f);
            t[h] = fp32_to_fp16(0.5f * x * (1.0f + std::tanh(inner)));
        }
        return t;
    }();
    return table.data();
}

}  // namespace

void ggml_geglu(const float* x, const float* g, float* y, int64_t n) noexcept {
    const uint16_t* table = gelu_f16_table();
    for (int64_t i = 0; i < n; ++i) {
        if (x[i] <= -10.0f)
            y[i] = 0.0f;
        else if (x[i] >= 10.0f)
            y[i] = x[i] * g[i];
        else
            y[i] = fp16_to_fp32(table[fp32_to_fp16(x[i])]) * g[i];
    }
}

const GgmlVecOps* scalar_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops{ggml_swiglu_scalar,      ggml_softmax_exp_scalar, ggml_dot_f16_tinyblas_scalar,
                                ggml_dot_f16_scalar,     ggml_geglu,              ggml_kq_tinyblas_scalar,
                                ggml_pv_tinyblas_scalar, ggml_kq_ggml_scalar,     8};
    return &ops;
}

const GgmlVecOps* scalar_avx512_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops{ggml_swiglu_scalar_avx512,      ggml_softmax_exp_scalar_avx512,
                                ggml_dot_f16_tinyblas_scalar_avx512,
                                ggml_dot_f16_scalar_avx512,     ggml_geglu,
                                ggml_kq_tinyblas_scalar_avx512, ggml_pv_tinyblas_scalar_avx512,
                                ggml_kq_ggml_scalar_avx512,     16};
    return &ops;
}

const GgmlVecOps& ggml_vec_ops(Isa isa) noexcept {
    const GgmlVecOps* simd = nullptr;
    switch (runnable_isa(isa)) {
        case Isa::Avx2: simd = avx2_ggml_vec_ops(); break;
        case Isa::Avx512Vnni: simd = avx512_ggml_vec_ops(); break;
        case Isa::Neon:
        case Isa::NeonDotprod:
        case Isa::NeonI8mm: simd = neon_ggml_vec_ops(); break;
        case Isa::Scalar: break;
    }
    return simd ? *simd : ggml_vec_ops_scalar_twin(isa);
}

const GgmlVecOps& ggml_vec_ops_scalar_twin(Isa isa) noexcept {
    return runnable_isa(isa) == Isa::Avx512Vnni ? *scalar_avx512_ggml_vec_ops() : *scalar_ggml_vec_ops();
}

// Stand-ins where an ISA's file is not compiled (the other architecture): "not built" = nullptr.
#if !defined(EDGE_RT_HAVE_AVX2)
const GgmlVecOps* avx2_ggml_vec_ops() noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_AVX512VNNI)
const GgmlVecOps* avx512_ggml_vec_ops() noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_NEON)
const GgmlVecOps* neon_ggml_vec_ops() noexcept { return nullptr; }
#endif

}  // namespace edge_rt
