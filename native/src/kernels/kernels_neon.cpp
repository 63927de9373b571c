// Plain AdvSIMD kernels (Armv8-A, every 64-bit ARM core; compiled with -march=armv8-a). Reached through
// neon_weight_kernels() after cpu_features saw HWCAP_ASIMD. Reference twin: kernels_scalar.cpp, whose
// bits these compute (neon_block_dots.h); types without an entry here run the scalar kernels.
#include <arm_neon.h>

#include "edge_rt/kernels.h"
#include "neon_block_dots.h"
#include "neon_kquant_dots.h"

namespace edge_rt {

namespace {

// ---- activation quantizers: the scalar twin's formula (d = amax / 127, q = round-half-even(x * 127 /
// amax)) operation for operation; FCVTNS rounds to nearest even like the twin's nearest_int.

// Quantizes 32 floats with multiplier id into q; returns the sum of the 32 int8 values.
int32_t quantize_block32(const float* x, float id, int8_t* q) {
    int32x4_t sum = vdupq_n_s32(0);
    for (int i = 0; i < 32; i += 8) {
        const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i), id));
        const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 4), id));
        sum = vaddq_s32(sum, vaddq_s32(a, b));
        vst1_s8(q + i, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
    }
    return vaddvq_s32(sum);
}

float amax32(const float* x) {
    float32x4_t m = vabsq_f32(vld1q_f32(x));
    for (int i = 4; i < 32; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
    return vmaxvq_f32(m);
}

void q8_0_quantize(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(vy);
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        const float amax = amax32(x);
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = f2h(amax / 127.f);
        quantize_block32(x, id, y[b].qs);
    }
}

void q8_1_quantize(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(vy);
    for (int64_t b = 0; b < n / QK8_1; ++b, x += QK8_1) {
        const float amax = amax32(x);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = f2h(d);
        y[b].s = f2h((float)quantize_block32(x, id, y[b].qs) * d);
    }
}

// ---- float types: the AVX2 kernels' order (ggml's SIMD semantics): 4 accumulators of 8 lanes over steps of
// 32, one of them over the remaining steps of 8, hsum8((s0 + s1) + (s2 + s3)), then the tail elements added
// with one fma each (GCC contracts the AVX2 file's s += a * b).

struct F8 {
    float32x4_t lo, hi;
};

ERT_INLINE F8 fma8(F8 acc, F8 a, F8 b) { return {vfmaq_f32(acc.lo, a.lo, b.lo), vfmaq_f32(acc.hi, a.hi, b.hi)}; }

template <class Load, class Elem>
float dot_float(int64_t n, const Load& load, const Elem& elem) {
    const F8 zero = {vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    F8 s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = fma8(s0, load(0, i), load(1, i));
        s1 = fma8(s1, load(0, i + 8), load(1, i + 8));
        s2 = fma8(s2, load(0, i + 16), load(1, i + 16));
        s3 = fma8(s3, load(0, i + 24), load(1, i + 24));
    }
    for (; i + 8 <= n; i += 8) s0 = fma8(s0, load(0, i), load(1, i));
    const F8 s01 = {vaddq_f32(s0.lo, s1.lo), vaddq_f32(s0.hi, s1.hi)};
    const F8 s23 = {vaddq_f32(s2.lo, s3.lo), vaddq_f32(s2.hi, s3.hi)};
    float s = hsum8(vaddq_f32(s01.lo, s23.lo), vaddq_f32(s01.hi, s23.hi));
    for (; i < n; ++i) s = std::fma(elem(0, i), elem(1, i), s);
    return s;
}

float f32_dot(int64_t n, const void* w, const void* a) {
    const float* p[2] = {static_cast<const float*>(w), static_cast<const float*>(a)};
    return dot_float(
        n, [&](int k, int64_t i) { return F8{vld1q_f32(p[k] + i), vld1q_f32(p[k] + i + 4)}; },
        [&](int k, int64_t i) { return p[k][i]; });
}

float f16_dot(int64_t n, const void* w, const void* a) {
    const fp16_t* p[2] = {static_cast<const fp16_t*>(w), static_cast<const fp16_t*>(a)};
    return dot_float(
        n,
        [&](int k, int64_t i) {
            const uint16x8_t h = vld1q_u16(p[k] + i);
            return F8{vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))),
                      vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)))};
        },
        [&](int k, int64_t i) { return h2f(p[k][i]); });
}

float bf16_dot(int64_t n, const void* w, const void* a) {
    const bf16_t* p[2] = {static_cast<const bf16_t*>(w), static_cast<const bf16_t*>(a)};
    return dot_float(
        n,
        [&](int k, int64_t i) {
            const uint16x8_t h = vld1q_u16(p[k] + i);
            return F8{vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)),
                      vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16))};
        },
        [&](int k, int64_t i) {
            const uint32_t u = (uint32_t)p[k][i] << 16;
            float f;
            std::memcpy(&f, &u, 4);
            return f;
        });
}

// fp32 -> fp16 activations (FCVTN rounds to nearest even, as the twin).
void f16_quantize(const float* x, void* y, int64_t n) {
    auto* o = static_cast<fp16_t*>(y);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(o + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; ++i) o[i] = f2h(x[i]);
}

using Q8_0Dots = BlockDots<DecQ8_0, false, DotNeon>;
using Q4_0Dots = BlockDots<DecQ4_0, false, DotNeon>;
using Q5_0Dots = BlockDots<DecQ5_0, false, DotNeon>;
using Q4_1Dots = BlockDots<DecQ4_1, true, DotNeon>;
using Q5_1Dots = BlockDots<DecQ5_1, true, DotNeon>;

constexpr int kTypeSlots = 31;

struct NeonTable {
    WeightKernels k[kTypeSlots] = {};
    bool present[kTypeSlots] = {};
    // The type's entry, started as an overlay entry (its activation format, no functions) on first use.
    WeightKernels& entry(GgmlType w) {
        if (!present[(int)w]) k[(int)w] = overlay_entry(w);
        present[(int)w] = true;
        return k[(int)w];
    }
    template <class Dots>
    void add(GgmlType w, GgmlType act, int64_t abe, int64_t abb, void (*q)(const float*, void*, int64_t)) {
        k[(int)w] = WeightKernels{w,       act,     abe,     abb,     q,       Dots::dot, Dots::dot_rows, nullptr,
                                  nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,   nullptr,        nullptr};
        present[(int)w] = true;
    }
    NeonTable() {
        using T = GgmlType;
        add<Q8_0Dots>(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize);
        add<Q4_0Dots>(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize);
        add<Q5_0Dots>(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize);
        add<Q4_1Dots>(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q8_1_quantize);
        add<Q5_1Dots>(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q8_1_quantize);
        k[(int)T::Q4_0].dot_rows_blockwise = q4_0_dot_rows_blockwise<DotNeon>;
        k[(int)T::Q4_0].gemm_x8 = q4_0_gemm_x8<DotNeon>;
        add_kquant_dots<DotNeon>(*this);
        entry(T::F32).vec_dot = f32_dot;
        entry(T::F16).vec_dot = f16_dot;
        entry(T::F16).quantize_act = f16_quantize;
        entry(T::BF16).vec_dot = bf16_dot;
    }
};

}  // namespace

const WeightKernels* neon_weight_kernels(GgmlType type) noexcept {
    static const NeonTable t;
    const int i = (int)type;
    return i >= 0 && i < kTypeSlots && t.present[i] ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
