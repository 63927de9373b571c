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

// ---- The AVX-512 flavour's expf lane and reduction (kernels.h GgmlVecOps): llama.cpp built on an AVX-512 CPU.

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

inline float widen(uint16_t h) { return fp16_to_fp32(h); }
inline float widen(float f) { return f; }

// ---- The twins, one template per op over the flavour's lanes and reductions.

// llama.cpp's AVX2 build: 8 lanes; GGML_F32x8_REDUCE ends in two hadds, ((0 + 4) + (1 + 5)) + ((2 + 6) + (3 + 7)).
struct Avx2Flavour {
    static constexpr int kLanes = 8;
    static float expf(float x) { return ggml_expf_lane(x); }
    static float hsum(const float* l) { return hsum8_lanes(l); }
    static float reduce(const float* l) { return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])); }
};

// llama.cpp's AVX-512 build: 16 lanes; both reductions are _mm512_reduce_add_ps.
struct Avx512Flavour {
    static constexpr int kLanes = 16;
    static float expf(float x) { return ggml_expf_lane_avx512(x); }
    static float hsum(const float* l) { return hsum16_lanes(l); }
    static float reduce(const float* l) { return hsum16_lanes(l); }
};

// ggml_vec_swiglu_f32: whole vectors with ggml_v_silu, the tail with libm's expf.
template <class F>
void swiglu_twin(const float* x, const float* g, float* y, int64_t n) {
    const int64_t nv = n & ~(int64_t)(F::kLanes - 1);
    for (int64_t i = 0; i < nv; ++i) y[i] = x[i] / (1.0f + F::expf(0.0f - x[i])) * g[i];
    for (int64_t i = nv; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

template <class F>
double softmax_exp_twin(const float* x, float* y, int64_t n, float max) {
    constexpr int L = F::kLanes;
    double sum = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += L) {
        float l[L] = {};  // masked lanes: exp(-inf) = 0
        for (int64_t i = i0; i < std::min(n, i0 + L); ++i) l[i - i0] = y[i] = F::expf(x[i] - max);
        sum += (double)F::hsum(l);
    }
    return sum;
}

// One tinyBLAS accumulator along the row (element i in lane i % L), then hsum. x is fp16, y fp16 or the
// widened floats (Y = float).
template <class F, class Y>
float tinyblas_twin(int64_t n, const uint16_t* x, const Y* y) {
    constexpr int L = F::kLanes;
    float acc[L] = {};
    for (int64_t i = 0; i < n; ++i) acc[i % L] = std::fma(fp16_to_fp32(x[i]), widen(y[i]), acc[i % L]);
    return F::hsum(acc);
}

// ggml_vec_dot_f16 over a row of n_total elements whose products past n are zero: 4 accumulators over
// steps of 4 L, GGML_F32xL_REDUCE, then the elements past the last whole step (below n) in double.
template <class F, class Y>
float dot_f16_ggml_twin(int64_t n, const uint16_t* x, const Y* y, int64_t n_total) {
    constexpr int L = F::kLanes;
    const int64_t np = n_total & ~(int64_t)(4 * L - 1);
    float acc[4][L] = {};
    for (int64_t i = 0; i < std::min(n, np); ++i) {
        float& a = acc[(i / L) & 3][i % L];
        a = std::fma(fp16_to_fp32(x[i]), widen(y[i]), a);
    }
    float l[L];
    for (int k = 0; k < L; ++k) l[k] = (acc[0][k] + acc[2][k]) + (acc[1][k] + acc[3][k]);
    double sum = (double)F::reduce(l);
    for (int64_t i = np; i < n; ++i) sum += (double)(fp16_to_fp32(x[i]) * widen(y[i]));
    return (float)sum;
}

template <class F>
float dot_f16_tinyblas_twin(int64_t n, const uint16_t* x, const uint16_t* y) {
    return tinyblas_twin<F>(n, x, y);
}

template <class F>
float dot_f16_twin(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    return dot_f16_ggml_twin<F>(n, x, y, n_total);
}

template <class F>
void kq_tinyblas_twin(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq, float* out,
                      int64_t out_stride) {
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j) out[i * out_stride + j] = tinyblas_twin<F>(D, k + j * k_stride, q + i * D);
}

template <class F>
void kq_ggml_twin(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq, float* out,
                  int64_t out_stride) {
    for (int i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n_pos; ++j)
            out[i * out_stride + j] = dot_f16_ggml_twin<F>(D, k + j * k_stride, q + i * D, D);
}

template <class F>
void pv_tinyblas_twin(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p, int64_t p_stride,
                      int np, float* out) {
    for (int i = 0; i < np; ++i)
        for (int64_t d = 0; d < D; ++d) out[i * D + d] = tinyblas_twin<F>(n, v + d * v_stride, p + i * p_stride);
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

namespace {
template <class F>
GgmlVecOps twin_table() {
    return GgmlVecOps{swiglu_twin<F>,      softmax_exp_twin<F>, dot_f16_tinyblas_twin<F>, dot_f16_twin<F>, ggml_geglu,
                      kq_tinyblas_twin<F>, pv_tinyblas_twin<F>, kq_ggml_twin<F>,          F::kLanes};
}
}  // namespace

const GgmlVecOps* scalar_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops = twin_table<Avx2Flavour>();
    return &ops;
}

const GgmlVecOps* scalar_avx512_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops = twin_table<Avx512Flavour>();
    return &ops;
}

const char* vec_ops_flavour_name(VecOpsFlavour flavour) noexcept {
    return flavour == VecOpsFlavour::Avx512 ? "avx512" : "avx2";
}

VecOpsFlavour vec_ops_flavour() noexcept {
    static const VecOpsFlavour flavour = [] {
        const char* env = std::getenv("EDGE_RT_VEC_OPS");
        if (env && std::strcmp(env, "avx2") == 0) return VecOpsFlavour::Avx2;
        if (env && std::strcmp(env, "avx512") == 0) return VecOpsFlavour::Avx512;
        return best_isa() == Isa::Avx512Vnni ? VecOpsFlavour::Avx512 : VecOpsFlavour::Avx2;
    }();
    return flavour;
}

const GgmlVecOps& ggml_vec_ops(Isa isa, VecOpsFlavour flavour) noexcept {
    const GgmlVecOps* simd = nullptr;
    const Isa runs = runnable_isa(isa);
    if (flavour == VecOpsFlavour::Avx512) {
        if (runs == Isa::Avx512Vnni) simd = avx512_ggml_vec_ops();
    } else {
        switch (runs) {
            case Isa::Avx2:
            case Isa::Avx512Vnni: simd = avx2_ggml_vec_ops(); break;
            case Isa::Neon:
            case Isa::NeonDotprod:
            case Isa::NeonI8mm: simd = neon_ggml_vec_ops(); break;
            case Isa::Scalar: break;
        }
    }
    return simd ? *simd : ggml_vec_ops_scalar_twin(flavour);
}

const GgmlVecOps& ggml_vec_ops_scalar_twin(VecOpsFlavour flavour) noexcept {
    return flavour == VecOpsFlavour::Avx512 ? *scalar_avx512_ggml_vec_ops() : *scalar_ggml_vec_ops();
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
