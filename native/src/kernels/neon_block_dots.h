// AdvSIMD kernels of the 32-element block formats, templated on the integer dot product, shared by
// kernels_neon.cpp (plain Armv8-A: SMULL + pairwise adds) and kernels_neon_dotprod.cpp (SDOT).
//
// Include ONLY from the NEON kernel files. Everything here has internal linkage (anonymous namespace),
// so each file gets its own copy compiled with its own -march: a dotprod build of a helper can never be
// linked into the plain path (a shared inline function with external linkage would let the linker keep
// whichever copy it sees first, and a Cortex-A53 would then fault on SDOT).
//
// Summation order: the scalar twins' (kernels_scalar.cpp LaneSum, Q4_0 Blockwise), i.e. llama.cpp's AVX2
// order, so every kernel here computes its twin's bits. Lane j of the AVX2 8-float accumulator is lane j
// of lo (j < 4) or lane j - 4 of hi; each lane takes fma(float(sum of the 4 products 4j..4j+3), dx * dy);
// a Dot policy's dot4(a, b) returns exactly those 4-product sums, so the float steps are the twin's.
#pragma once

#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "edge_rt/ggml_types.h"
#include "edge_rt/kernels.h"

namespace edge_rt {
namespace {

#define ERT_INLINE inline __attribute__((always_inline))

// fp16 <-> fp32 with the FCVT instructions (round to nearest even: the scalar twins' conversions).
ERT_INLINE float h2f(fp16_t h) {
    __fp16 f;
    std::memcpy(&f, &h, 2);
    return (float)f;
}
ERT_INLINE fp16_t f2h(float x) {
    const __fp16 f = (__fp16)x;
    fp16_t h;
    std::memcpy(&h, &f, 2);
    return h;
}

// hsum8 of the AVX2 lanes (lo = lanes 0..3, hi = 4..7): ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
ERT_INLINE float hsum8(float32x4_t lo, float32x4_t hi) {
    const float32x4_t s = vaddq_f32(lo, hi);
    const float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}

// Plain AdvSIMD integer dot: lane j = sum_{i<4} a[4j+i] * b[4j+i], exact (|a|, |b| <= 128: the int16
// products cannot overflow).
struct DotNeon {
    static ERT_INLINE int32x4_t dot4(int32x4_t acc, int8x16_t a, int8x16_t b) {
        const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        const int16x8_t hi = vmull_high_s8(a, b);
        return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
    }
};

// 32 elements of a block in element order: lo = elements 0..15, hi = 16..31.
struct I8x32 {
    int8x16_t lo, hi;
};

ERT_INLINE I8x32 load_i8x32(const int8_t* q) { return {vld1q_s8(q), vld1q_s8(q + 16)}; }

// Low nibbles of 16 bytes are elements 0..15, high nibbles 16..31.
ERT_INLINE I8x32 unpack_nibbles(const uint8_t* qs) {
    const uint8x16_t v = vld1q_u8(qs);
    return {vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(v, 4))};
}

// Bit 16 * half + j of the little-endian 32-bit word at qh -> 0x10 in byte j (j < 16), else 0.
ERT_INLINE int8x16_t qh_bit4(const uint8_t* qh, int half) {
    static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[2 * half]), vdup_n_u8(qh[2 * half + 1]));
    return vreinterpretq_s8_u8(vandq_u8(vtstq_u8(bytes, vld1q_u8(kBit)), vdupq_n_u8(0x10)));
}

// Weight decoders: one 32-element block -> 32 int8 in element order (the scalar twins' integers).
struct DecQ8_0 {
    using Block = BlockQ8_0;
    static ERT_INLINE I8x32 q(const Block& x) { return load_i8x32(x.qs); }
};
struct DecQ4_0 {  // q - 8
    using Block = BlockQ4_0;
    static ERT_INLINE I8x32 q(const Block& x) {
        const I8x32 v = unpack_nibbles(x.qs);
        return {vsubq_s8(v.lo, vdupq_n_s8(8)), vsubq_s8(v.hi, vdupq_n_s8(8))};
    }
};
struct DecQ5_0 {  // q - 16
    using Block = BlockQ5_0;
    static ERT_INLINE I8x32 q(const Block& x) {
        const I8x32 v = unpack_nibbles(x.qs);
        return {vsubq_s8(vorrq_s8(v.lo, qh_bit4(x.qh, 0)), vdupq_n_s8(16)),
                vsubq_s8(vorrq_s8(v.hi, qh_bit4(x.qh, 1)), vdupq_n_s8(16))};
    }
};
struct DecQ4_1 {  // 0..15
    using Block = BlockQ4_1;
    static ERT_INLINE I8x32 q(const Block& x) { return unpack_nibbles(x.qs); }
};
struct DecQ5_1 {  // 0..31
    using Block = BlockQ5_1;
    static ERT_INLINE I8x32 q(const Block& x) {
        const I8x32 v = unpack_nibbles(x.qs);
        return {vorrq_s8(v.lo, qh_bit4(x.qh, 0)), vorrq_s8(v.hi, qh_bit4(x.qh, 1))};
    }
};

ERT_INLINE const uint8_t* act_row(const void* a, size_t stride, int r) {
    return static_cast<const uint8_t*>(a) + (size_t)r * stride;
}

// NA activation rows against one weight row of a Q8_0-activation type (Q8_0, Q4_0, Q5_0): LaneSum order.
template <int NA, class D, class Dot>
void rows_q8_0_act(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const typename D::Block*>(w);
    const BlockQ8_0* y[NA];
    float32x4_t lo[NA], hi[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        lo[r] = hi[r] = vdupq_n_f32(0.f);
    }
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const I8x32 q = D::q(x[b]);
        const float dx = h2f(x[b].d);
        for (int r = 0; r < NA; ++r) {
            const I8x32 qy = load_i8x32(y[r][b].qs);
            const float32x4_t s = vdupq_n_f32(dx * h2f(y[r][b].d));
            lo[r] = vfmaq_f32(lo[r], vcvtq_f32_s32(Dot::dot4(vdupq_n_s32(0), q.lo, qy.lo)), s);
            hi[r] = vfmaq_f32(hi[r], vcvtq_f32_s32(Dot::dot4(vdupq_n_s32(0), q.hi, qy.hi)), s);
        }
    }
    for (int r = 0; r < NA; ++r) out[r] = hsum8(lo[r], hi[r]);
}

// Q8_1-activation types with a min (Q4_1, Q5_1): the lanes, plus the m * s terms in one float in block
// order, added after the lanes.
template <int NA, class D, class Dot>
void rows_q8_1_act(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const typename D::Block*>(w);
    const BlockQ8_1* y[NA];
    float32x4_t lo[NA], hi[NA];
    float ms[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_1*>(act_row(a, stride, r));
        lo[r] = hi[r] = vdupq_n_f32(0.f);
        ms[r] = 0.f;
    }
    for (int64_t b = 0; b < n / QK8_1; ++b) {
        const I8x32 q = D::q(x[b]);
        const float dx = h2f(x[b].d), mx = h2f(x[b].m);
        for (int r = 0; r < NA; ++r) {
            const I8x32 qy = load_i8x32(y[r][b].qs);
            const float32x4_t s = vdupq_n_f32(dx * h2f(y[r][b].d));
            lo[r] = vfmaq_f32(lo[r], vcvtq_f32_s32(Dot::dot4(vdupq_n_s32(0), q.lo, qy.lo)), s);
            hi[r] = vfmaq_f32(hi[r], vcvtq_f32_s32(Dot::dot4(vdupq_n_s32(0), q.hi, qy.hi)), s);
            ms[r] += mx * h2f(y[r][b].s);
        }
    }
    for (int r = 0; r < NA; ++r) out[r] = hsum8(lo[r], hi[r]) + ms[r];
}

// Runs Rows<NA> over n_act activation rows in chunks of at most 4 (the accumulators stay in registers).
template <template <int> class Rows>
void rows_in_chunks(int64_t n, const void* w, const void* a, size_t stride, int n_act, float* out) {
    while (n_act > 0) {
        const int k = n_act < 4 ? n_act : 4;
        switch (k) {
            case 1: Rows<1>::run(n, w, a, stride, out); break;
            case 2: Rows<2>::run(n, w, a, stride, out); break;
            case 3: Rows<3>::run(n, w, a, stride, out); break;
            default: Rows<4>::run(n, w, a, stride, out); break;
        }
        a = act_row(a, stride, k);
        out += k;
        n_act -= k;
    }
}

// The vec_dot / vec_dot_rows pair of one block type: D the decoder, Q81 whether it takes Q8_1 activations.
template <class D, bool Q81, class Dot>
struct BlockDots {
    template <int NA>
    struct Rows {
        static void run(int64_t n, const void* w, const void* a, size_t stride, float* out) {
            if constexpr (Q81)
                rows_q8_1_act<NA, D, Dot>(n, w, a, stride, out);
            else
                rows_q8_0_act<NA, D, Dot>(n, w, a, stride, out);
        }
    };
    static float dot(int64_t n, const void* w, const void* a) {
        float o;
        Rows<1>::run(n, w, a, 0, &o);
        return o;
    }
    static void dot_rows(int64_t n, const void* w, const void* a, size_t stride, int n_act, float* out) {
        rows_in_chunks<Rows>(n, w, a, stride, n_act, out);
    }
};

// An overlay entry for the tables that only add dot products over a lower ISA (kernel_dispatch.cpp
// merges them): the type's activation format, every function null.
inline WeightKernels overlay_entry(GgmlType w) {
    const WeightKernels* s = scalar_weight_kernels(w);
    WeightKernels e{};
    e.weight_type = w;
    e.act_type = s->act_type;
    e.act_block_elems = s->act_block_elems;
    e.act_block_bytes = s->act_block_bytes;
    return e;
}

// ---- Q4_0 in Blockwise order (kernels.h SumOrder): per output acc = fma(float(block sum), dx * dy, acc).

template <class Dot>
void q4_0_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t stride, int n_act, int /*n_gemm*/,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        float acc = 0.f;
        for (int64_t b = 0; b < n / QK4_0; ++b) {
            const I8x32 q = DecQ4_0::q(x[b]);
            const I8x32 qy = load_i8x32(y[b].qs);
            const int32_t sumi = vaddvq_s32(Dot::dot4(Dot::dot4(vdupq_n_s32(0), q.lo, qy.lo), q.hi, qy.hi));
            acc = std::fma((float)sumi, h2f(x[b].d) * h2f(y[b].d), acc);
        }
        out[r] = acc;
    }
}

// The 4 activation bytes 4k..4k+3 of q repeated in every 32-bit lane.
ERT_INLINE int8x16_t bcast4(const int8_t* q, int k) {
    int32_t v;
    std::memcpy(&v, q + 4 * k, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// One interleaved Q4_0 group (kernels.h x8 layout) times n_act rows: qs[k] holds 4 bytes of each of the
// 8 rows, so a dot4 against the activation bytes 4k..4k+3 repeated per lane gives 4 rows' partial sums at
// once. Unsigned nibbles, then - 8 * (block sum of the activations): the twin's integers.
template <class Dot>
void q4_0_gemm_x8(int64_t n, const void* group, const void* a, size_t stride, const int16_t* a_sums, int n_act,
                  int /*n_gemm*/, float* out, size_t out_stride) {
    const int64_t nb = n / QK4_0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        const uint8_t* g = static_cast<const uint8_t*>(group);
        float32x4_t acc0 = vdupq_n_f32(0.f), acc1 = vdupq_n_f32(0.f);  // rows 0..3, 4..7
        for (int64_t b = 0; b < nb; ++b, g += kQ4_0x8BlockBytes) {
            int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
            for (int k = 0; k < 4; ++k) {
                const uint8x16_t q0 = vld1q_u8(g + 16 + 32 * k), q1 = vld1q_u8(g + 32 + 32 * k);
                const int8x16_t ylo = bcast4(y[b].qs, k), yhi = bcast4(y[b].qs + 16, k);
                s0 = Dot::dot4(s0, vreinterpretq_s8_u8(vandq_u8(q0, m4)), ylo);
                s0 = Dot::dot4(s0, vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), yhi);
                s1 = Dot::dot4(s1, vreinterpretq_s8_u8(vandq_u8(q1, m4)), ylo);
                s1 = Dot::dot4(s1, vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)), yhi);
            }
            const int32x4_t bias = vdupq_n_s32(8 * a_sums[(size_t)r * nb + b]);
            const float dy = h2f(y[b].d);
            const uint16x8_t d = vld1q_u16(reinterpret_cast<const uint16_t*>(g));
            const float32x4_t d0 = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(d)));
            const float32x4_t d1 = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(d)));
            acc0 = vfmaq_f32(acc0, vcvtq_f32_s32(vsubq_s32(s0, bias)), vmulq_n_f32(d0, dy));
            acc1 = vfmaq_f32(acc1, vcvtq_f32_s32(vsubq_s32(s1, bias)), vmulq_n_f32(d1, dy));
        }
        vst1q_f32(out + (size_t)r * out_stride, acc0);
        vst1q_f32(out + (size_t)r * out_stride + 4, acc1);
    }
}

}  // namespace
}  // namespace edge_rt
