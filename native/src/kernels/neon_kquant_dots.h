// AdvSIMD K-quant kernels (Q3_K, Q4_K, Q5_K, Q6_K against Q8_K activations), templated on the integer dot
// product like neon_block_dots.h (include it first; the same rules: NEON kernel files only, internal
// linkage).
//
// Lanes order (vec_dot, vec_dot_rows): the bits of the AVX2 kernels (kernels_avx2.cpp rows_groups16,
// rows_kquant_min), i.e. llama.cpp's x86 build: per super-block, 8 int32 lanes whose values are the AVX2
// lanes' exactly (lane j of a 32-element chunk sums the products of its elements 4j..4j+3; the bias of
// Q6_K codes is removed per lane through the bsums, Q3_K's per element, as AVX2 does), converted and added
// with one fma per lane, then hsum8; the Q4_K/Q5_K mins term in its own accumulator (4 float lanes for
// Q4_K, one float for Q5_K, as kernels_avx2.cpp MinsAcc says), added after. The scalar twins sum in another order, so these are compared with them under the
// K-quant error limit.
// Tiled order (dot_rows_tiled): exact per-super-block integer sums, then the scalar twin's float steps:
// bit for bit the twin.
#pragma once

#include <cmath>
#include <type_traits>

#include "neon_block_dots.h"

namespace edge_rt {
namespace {

// A decoded super-block: q[c] holds the unsigned codes of elements 32c..32c+31 (value + bias).
struct KCodes {
    I8x32 q[8];
};

ERT_INLINE int8x16_t u8s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

// Q6_K: codes 0..63 (value + 32); element 32c + l of half h = c / 4, t = c % 4 takes ql[64h + l + 32(t & 1)]
// (low nibble for t < 2, high for t >= 2) and bits 2t..2t+1 of qh[32h + l].
ERT_INLINE void decode_q6_K(const BlockQ6_K& x, KCodes& k) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int h = 0; h < 2; ++h)
        for (int part = 0; part < 2; ++part) {
            const uint8x16_t l0 = vld1q_u8(x.ql + 64 * h + 16 * part);
            const uint8x16_t l1 = vld1q_u8(x.ql + 64 * h + 32 + 16 * part);
            const uint8x16_t hb = vld1q_u8(x.qh + 32 * h + 16 * part);
            const int8x16_t c0 = u8s8(vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(0x03)), 4)));
            const int8x16_t c1 = u8s8(vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(0x0C)), 2)));
            const int8x16_t c2 = u8s8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, vdupq_n_u8(0x30))));
            const int8x16_t c3 = u8s8(vorrq_u8(vshrq_n_u8(l1, 4), vshrq_n_u8(vandq_u8(hb, vdupq_n_u8(0xC0)), 2)));
            (part ? k.q[4 * h].hi : k.q[4 * h].lo) = c0;
            (part ? k.q[4 * h + 1].hi : k.q[4 * h + 1].lo) = c1;
            (part ? k.q[4 * h + 2].hi : k.q[4 * h + 2].lo) = c2;
            (part ? k.q[4 * h + 3].hi : k.q[4 * h + 3].lo) = c3;
        }
}

// Q3_K: codes 0..7 (value + 4); chunk c = 4h + t: bits 2t..2t+1 of qs[32h + l], bit c of hmask[l] as bit 2.
ERT_INLINE void decode_q3_K(const BlockQ3_K& x, KCodes& k) {
    const uint8x16_t m3 = vdupq_n_u8(0x03);
    for (int part = 0; part < 2; ++part) {
        const uint8x16_t hm = vld1q_u8(x.hmask + 16 * part);
        for (int h = 0; h < 2; ++h) {
            const uint8x16_t raw = vld1q_u8(x.qs + 32 * h + 16 * part);
            for (int t = 0; t < 4; ++t) {
                const int c = 4 * h + t;
                const uint8x16_t lo2 = vandq_u8(vshlq_u8(raw, vdupq_n_s8((int8_t)(-2 * t))), m3);
                const uint8x16_t hi = vandq_u8(vshlq_u8(hm, vdupq_n_s8((int8_t)(2 - c))), vdupq_n_u8(0x04));
                (part ? k.q[c].hi : k.q[c].lo) = u8s8(vorrq_u8(lo2, hi));
            }
        }
    }
}

// Q3_K's 16 signed scales s - 32 (layout in ggml_types.h).
ERT_INLINE void q3_K_scales(const uint8_t* s12, int8_t* sc) {
    for (int j = 0; j < 16; ++j) {
        const int low = j < 8 ? (s12[j] & 0x0F) : (s12[j - 8] >> 4);
        const int high = (s12[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        sc[j] = (int8_t)((low | (high << 4)) - 32);
    }
}

// Q4_K / Q5_K: the 8 six-bit scales and mins of the 12 packed bytes.
ERT_INLINE void q4_K_scales_mins(const uint8_t* s, int* sc, int* m) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

// Q4_K: sub-block 2k in the low nibbles of qs[32k..32k+31], 2k + 1 in the high nibbles.
ERT_INLINE void decode_q4_K(const BlockQ4_K& x, KCodes& k) {
    for (int j = 0; j < 4; ++j) {
        const uint8x16_t a = vld1q_u8(x.qs + 32 * j), b = vld1q_u8(x.qs + 32 * j + 16);
        k.q[2 * j] = {u8s8(vandq_u8(a, vdupq_n_u8(0x0F))), u8s8(vandq_u8(b, vdupq_n_u8(0x0F)))};
        k.q[2 * j + 1] = {u8s8(vshrq_n_u8(a, 4)), u8s8(vshrq_n_u8(b, 4))};
    }
}

// Q5_K: Q4_K plus bit 4 of element l of sub-block j from bit j of qh[l].
ERT_INLINE void decode_q5_K(const BlockQ5_K& x, KCodes& k) {
    const uint8x16_t h[2] = {vld1q_u8(x.qh), vld1q_u8(x.qh + 16)};
    for (int j = 0; j < 4; ++j) {
        const uint8x16_t a = vld1q_u8(x.qs + 32 * j), b = vld1q_u8(x.qs + 32 * j + 16);
        const uint8x16_t b4 = vdupq_n_u8(0x10);
        auto bit4 = [&](int part, int sub) { return vandq_u8(vshlq_u8(h[part], vdupq_n_s8((int8_t)(4 - sub))), b4); };
        k.q[2 * j] = {u8s8(vorrq_u8(vandq_u8(a, vdupq_n_u8(0x0F)), bit4(0, 2 * j))),
                      u8s8(vorrq_u8(vandq_u8(b, vdupq_n_u8(0x0F)), bit4(1, 2 * j)))};
        k.q[2 * j + 1] = {u8s8(vorrq_u8(vshrq_n_u8(a, 4), bit4(0, 2 * j + 1))),
                          u8s8(vorrq_u8(vshrq_n_u8(b, 4), bit4(1, 2 * j + 1)))};
    }
}

// The 8 AVX2 int32 lanes of one super-block (lo = lanes 0..3, hi = 4..7).
struct Lanes8 {
    int32x4_t lo, hi;
};

// Q3_K / Q6_K (16 groups of 16, one signed scale each, codes biased by 1 << Shift): chunk c's lanes 0..3
// take scale 2c, lanes 4..7 scale 2c + 1; lane j then loses (bsums[2j] sc[2j] + bsums[2j+1] sc[2j+1]) << Shift.
template <class Dot, int Shift>
ERT_INLINE Lanes8 lanes_groups16(const KCodes& k, const int8_t* sc, const BlockQ8_K& y) {
    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
    for (int c = 0; c < 8; ++c) {
        const I8x32 qy = load_i8x32(y.qs + 32 * c);
        lo = vmlaq_n_s32(lo, Dot::dot4(vdupq_n_s32(0), k.q[c].lo, qy.lo), sc[2 * c]);
        hi = vmlaq_n_s32(hi, Dot::dot4(vdupq_n_s32(0), k.q[c].hi, qy.hi), sc[2 * c + 1]);
    }
    int32_t corr[8];
    for (int j = 0; j < 8; ++j)
        corr[j] = (y.bsums[2 * j] * sc[2 * j] + y.bsums[2 * j + 1] * sc[2 * j + 1]) * (1 << Shift);
    return {vsubq_s32(lo, vld1q_s32(corr)), vsubq_s32(hi, vld1q_s32(corr + 4))};
}

// Q3_K: each code minus its bias 4 (values -4..3), so lane j holds its own elements' products as AVX2's
// isum_q3_K does; no bsums correction.
template <class Dot>
ERT_INLINE Lanes8 lanes_q3_K(const KCodes& k, const int8_t* sc, const BlockQ8_K& y) {
    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
    const int8x16_t four = vdupq_n_s8(4);
    for (int c = 0; c < 8; ++c) {
        const I8x32 qy = load_i8x32(y.qs + 32 * c);
        lo = vmlaq_n_s32(lo, Dot::dot4(vdupq_n_s32(0), vsubq_s8(k.q[c].lo, four), qy.lo), sc[2 * c]);
        hi = vmlaq_n_s32(hi, Dot::dot4(vdupq_n_s32(0), vsubq_s8(k.q[c].hi, four), qy.hi), sc[2 * c + 1]);
    }
    return {lo, hi};
}

// Q4_K / Q5_K: sub-block j's scale on all 8 lanes of its chunk (unsigned codes, no bias).
template <class Dot>
ERT_INLINE Lanes8 lanes_kquant(const KCodes& k, const int* sc, const BlockQ8_K& y) {
    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
    for (int j = 0; j < 8; ++j) {
        const I8x32 qy = load_i8x32(y.qs + 32 * j);
        lo = vmlaq_n_s32(lo, Dot::dot4(vdupq_n_s32(0), k.q[j].lo, qy.lo), sc[j]);
        hi = vmlaq_n_s32(hi, Dot::dot4(vdupq_n_s32(0), k.q[j].hi, qy.hi), sc[j]);
    }
    return {lo, hi};
}

// The mins term as AVX2's 4 lanes: lane i = p[2i] m[2i] + p[2i+1] m[2i+1], p[j] = bsums[2j] + bsums[2j+1].
ERT_INLINE int32x4_t mins_lanes(const int* m, const BlockQ8_K& y) {
    int32_t v[4];
    for (int i = 0; i < 4; ++i) {
        const int p0 = y.bsums[4 * i] + y.bsums[4 * i + 1], p1 = y.bsums[4 * i + 2] + y.bsums[4 * i + 3];
        v[i] = p0 * m[2 * i] + p1 * m[2 * i + 1];
    }
    return vld1q_s32(v);
}

// Per-type decode + integer lanes: Ints::block(x, y, &lanes, &mins) fills the super-block's lanes (and
// for types with mins, the 4 mins lanes); HasMin says which.
template <class Dot>
struct KTypes {
    struct Q3K {
        using Block = BlockQ3_K;
        static constexpr bool kHasMin = false;
        static ERT_INLINE void prepare(const Block& x, KCodes& k, int8_t* sc, int*, int*) {
            decode_q3_K(x, k);
            q3_K_scales(x.scales, sc);
        }
    };
    struct Q6K {
        using Block = BlockQ6_K;
        static constexpr bool kHasMin = false;
        static ERT_INLINE void prepare(const Block& x, KCodes& k, int8_t* sc, int*, int*) {
            decode_q6_K(x, k);
            std::memcpy(sc, x.scales, 16);
        }
    };
    struct Q4K {
        using Block = BlockQ4_K;
        static constexpr bool kHasMin = true;
        static constexpr bool kMinsInLanes = true;  // 4 float lanes (Q5_K: one float)
        static ERT_INLINE void prepare(const Block& x, KCodes& k, int8_t*, int* sc, int* m) {
            decode_q4_K(x, k);
            q4_K_scales_mins(x.scales, sc, m);
        }
    };
    struct Q5K {
        using Block = BlockQ5_K;
        static constexpr bool kHasMin = true;
        static constexpr bool kMinsInLanes = false;
        static ERT_INLINE void prepare(const Block& x, KCodes& k, int8_t*, int* sc, int* m) {
            decode_q5_K(x, k);
            q4_K_scales_mins(x.scales, sc, m);
        }
    };
};

template <class T>
constexpr int kBiasShift = std::is_same_v<typename T::Block, BlockQ6_K> ? 5 : 2;

// Integer lanes of one super-block against one activation block (mins lanes zero for types without).
template <class Dot, class T>
ERT_INLINE Lanes8 block_lanes(const KCodes& k, const int8_t* sc8, const int* sc, const int* m, const BlockQ8_K& y,
                              int32x4_t* mins) {
    if constexpr (T::kHasMin) {
        *mins = mins_lanes(m, y);
        return lanes_kquant<Dot>(k, sc, y);
    } else if constexpr (std::is_same_v<typename T::Block, BlockQ3_K>) {
        *mins = vdupq_n_s32(0);
        return lanes_q3_K<Dot>(k, sc8, y);
    } else {
        *mins = vdupq_n_s32(0);
        return lanes_groups16<Dot, kBiasShift<T>>(k, sc8, y);
    }
}

// Lanes order (AVX2 bits), NA activation rows.
template <int NA, class Dot, class T>
void rows_kquant(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const typename T::Block*>(w);
    const BlockQ8_K* y[NA];
    float32x4_t lo[NA], hi[NA], acc_m[NA];
    float summs[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
        lo[r] = hi[r] = acc_m[r] = vdupq_n_f32(0.f);
        summs[r] = 0.f;
    }
    for (int64_t b = 0; b < n / QK_K; ++b) {
        KCodes k;
        int8_t sc8[16];
        int sc[8], m[8];
        T::prepare(x[b], k, sc8, sc, m);
        const float d = h2f(x[b].d);
        for (int r = 0; r < NA; ++r) {
            int32x4_t mins;
            const Lanes8 l = block_lanes<Dot, T>(k, sc8, sc, m, y[r][b], &mins);
            const float32x4_t s = vdupq_n_f32(d * y[r][b].d);
            lo[r] = vfmaq_f32(lo[r], vcvtq_f32_s32(l.lo), s);
            hi[r] = vfmaq_f32(hi[r], vcvtq_f32_s32(l.hi), s);
            if constexpr (T::kHasMin) {
                const float sm = -h2f(x[b].dmin) * y[r][b].d;
                if constexpr (T::kMinsInLanes)
                    acc_m[r] = vfmaq_f32(acc_m[r], vcvtq_f32_s32(mins), vdupq_n_f32(sm));
                else
                    summs[r] = std::fma(sm, (float)vaddvq_s32(mins), summs[r]);
            }
        }
    }
    for (int r = 0; r < NA; ++r) {
        float m = 0.f;
        if constexpr (T::kHasMin) {
            if constexpr (T::kMinsInLanes) {  // (m0 + m2) + (m1 + m3), as SSE's movehl / movehdup reduction
                m = (vgetq_lane_f32(acc_m[r], 0) + vgetq_lane_f32(acc_m[r], 2)) +
                    (vgetq_lane_f32(acc_m[r], 1) + vgetq_lane_f32(acc_m[r], 3));
            } else {
                m = summs[r];
            }
        }
        out[r] = T::kHasMin ? hsum8(lo[r], hi[r]) + m : hsum8(lo[r], hi[r]);
    }
}

// Tiled order (kernels.h takes_tiled): s1 = the lanes' total, s2 = the mins lanes' total (exact), then
// res = d * float(s1); res = fma(-dmin, float(s2), res); acc = fma(res, dy, acc), as the scalar twin.
template <class Dot, class T>
void rows_kquant_tiled(int64_t n, const void* w, const void* a, size_t stride, int n_act, float* out) {
    const auto* x = static_cast<const typename T::Block*>(w);
    for (int r = 0; r < n_act; ++r) out[r] = 0.f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        KCodes k;
        int8_t sc8[16];
        int sc[8], m[8];
        T::prepare(x[b], k, sc8, sc, m);
        const float d = h2f(x[b].d);
        for (int r = 0; r < n_act; ++r) {
            const BlockQ8_K& yb = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r))[b];
            int32x4_t mins;
            const Lanes8 l = block_lanes<Dot, T>(k, sc8, sc, m, yb, &mins);
            float res = d * (float)vaddvq_s32(vaddq_s32(l.lo, l.hi));
            if constexpr (T::kHasMin) res = std::fma(-h2f(x[b].dmin), (float)vaddvq_s32(mins), res);
            out[r] = std::fma(res, yb.d, out[r]);
        }
    }
}

// vec_dot / vec_dot_rows / dot_rows_tiled of one K-quant type.
template <class Dot, class T>
struct KquantDots {
    template <int NA>
    struct Rows {
        static void run(int64_t n, const void* w, const void* a, size_t stride, float* out) {
            rows_kquant<NA, Dot, T>(n, w, a, stride, out);
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
    static void dot_rows_tiled(int64_t n, const void* w, const void* a, size_t stride, int n_act, float* out) {
        rows_kquant_tiled<Dot, T>(n, w, a, stride, n_act, out);
    }
};

// ---- Q4_K in Blockwise order (kernels.h SumOrder): per output, exact sums of `step` sub-blocks (2 for the
// rows llama.cpp's gemm sums, 8 for its gemv), each step's float terms fma'd into acc and acc_min; out =
// acc - acc_min. The scalar twin's steps, bit for bit.

template <class Dot>
void q4_K_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t stride, int n_act, int n_gemm,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_K*>(w);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
        const int step = r < n_gemm ? 2 : 8;
        float acc = 0.f, acc_min = 0.f;
        for (int64_t b = 0; b < n / QK_K; ++b) {
            KCodes k;
            decode_q4_K(x[b], k);
            int sc[8], m[8];
            q4_K_scales_mins(x[b].scales, sc, m);
            int32_t sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
                const I8x32 qy = load_i8x32(y[b].qs + 32 * j);
                sumi += sc[j] * vaddvq_s32(Dot::dot4(Dot::dot4(vdupq_n_s32(0), k.q[j].lo, qy.lo), k.q[j].hi, qy.hi));
                summ += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
                if ((j + 1) % step == 0) {
                    acc = std::fma((float)sumi, h2f(x[b].d) * y[b].d, acc);
                    acc_min = std::fma((float)summ, h2f(x[b].dmin) * y[b].d, acc_min);
                    sumi = summ = 0;
                }
            }
        }
        out[r] = acc - acc_min;
    }
}

// The 6-bit scales and mins of one interleaved Q4_K super-block (kernels.h x8 layout), [sub-block][row].
ERT_INLINE void q4_K_x8_scales_mins(const uint8_t* g, int32_t sc[8][8], int32_t m[8][8]) {
    for (int j = 0; j < 8; ++j)
        for (int c = 0; c < 8; ++c) {
            const int hi2 = g[96 + 8 * (j / 2) + c] >> (4 * (j % 2));
            sc[j][c] = (g[32 + 8 * j + c] & 15) | (hi2 & 3) << 4;
            m[j][c] = (g[32 + 8 * j + c] >> 4) | ((hi2 >> 2) & 3) << 4;
        }
}

// d (h = 0) or dmin (h = 1) of the 8 rows of an interleaved Q4_K super-block times the activation's d:
// rows 0..3 in out[0], 4..7 in out[1].
ERT_INLINE void q4_K_x8_scaled(const uint8_t* g, int h, float dy, float32x4_t out[2]) {
    const uint16x8_t v = vld1q_u16(reinterpret_cast<const uint16_t*>(g + 16 * h));
    out[0] = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(v))), dy);
    out[1] = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(v))), dy);
}

// One interleaved Q4_K group (kernels.h x8 layout) times n_act rows, the 8 weight rows in the lanes of two
// vectors (rows 0..3, 4..7): qs[k][g] holds 4 bytes of each row, so a dot4 against the activation bytes
// repeated per lane gives 4 rows' partial sums of sub-blocks 2k (low nibbles) and 2k + 1 (high nibbles).
template <class Dot>
void q4_K_gemm_x8(int64_t n, const void* group, const void* a, size_t stride, const int16_t* /*a_sums*/, int n_act,
                  int n_gemm, float* out, size_t out_stride) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
        const int step = r < n_gemm ? 2 : 8;
        const uint8_t* g = static_cast<const uint8_t*>(group);
        float32x4_t acc[2] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f)}, acc_min[2] = {acc[0], acc[0]};
        for (int64_t b = 0; b < n / QK_K; ++b, g += kQ4_Kx8BlockBytes) {
            int32_t sc[8][8], m[8][8];  // [sub-block][row]
            q4_K_x8_scales_mins(g, sc, m);
            float32x4_t d[2], dm[2];
            q4_K_x8_scaled(g, 0, y[b].d, d);
            q4_K_x8_scaled(g, 1, y[b].d, dm);
            int32x4_t sumi[2] = {vdupq_n_s32(0), vdupq_n_s32(0)}, summ[2] = {sumi[0], sumi[0]};
            for (int kk = 0; kk < 4; ++kk) {
                int32x4_t dj[2][2] = {{vdupq_n_s32(0), vdupq_n_s32(0)}, {vdupq_n_s32(0), vdupq_n_s32(0)}};
                for (int gi = 0; gi < 8; ++gi) {
                    const uint8_t* q = g + 128 + 256 * kk + 32 * gi;
                    const int8x16_t ylo = bcast4(y[b].qs + 64 * kk, gi), yhi = bcast4(y[b].qs + 64 * kk + 32, gi);
                    for (int h = 0; h < 2; ++h) {
                        const uint8x16_t v = vld1q_u8(q + 16 * h);
                        dj[0][h] = Dot::dot4(dj[0][h], u8s8(vandq_u8(v, m4)), ylo);
                        dj[1][h] = Dot::dot4(dj[1][h], u8s8(vshrq_n_u8(v, 4)), yhi);
                    }
                }
                for (int s = 0; s < 2; ++s) {  // sub-block j = 2kk + s
                    const int j = 2 * kk + s;
                    const int bsum = y[b].bsums[2 * j] + y[b].bsums[2 * j + 1];
                    for (int h = 0; h < 2; ++h) {
                        sumi[h] = vmlaq_s32(sumi[h], vld1q_s32(sc[j] + 4 * h), dj[s][h]);
                        summ[h] = vmlaq_n_s32(summ[h], vld1q_s32(m[j] + 4 * h), bsum);
                    }
                    if ((j + 1) % step == 0) {
                        for (int h = 0; h < 2; ++h) {
                            acc[h] = vfmaq_f32(acc[h], vcvtq_f32_s32(sumi[h]), d[h]);
                            acc_min[h] = vfmaq_f32(acc_min[h], vcvtq_f32_s32(summ[h]), dm[h]);
                            sumi[h] = summ[h] = vdupq_n_s32(0);
                        }
                    }
                }
            }
        }
        for (int h = 0; h < 2; ++h) vst1q_f32(out + (size_t)r * out_stride + 4 * h, vsubq_f32(acc[h], acc_min[h]));
    }
}

// Adds the four K-quant types' entries to a table (vec_dot, vec_dot_rows, dot_rows_tiled; Q4_K's Blockwise
// kernels).
template <class Dot, class Table>
void add_kquant_dots(Table& t) {
    using K = KTypes<Dot>;
    auto put = [&](GgmlType type, auto dots) {
        using D = decltype(dots);
        WeightKernels& e = t.entry(type);
        e.vec_dot = D::dot;
        e.vec_dot_rows = D::dot_rows;
        e.dot_rows_tiled = D::dot_rows_tiled;
    };
    put(GgmlType::Q3_K, KquantDots<Dot, typename K::Q3K>{});
    put(GgmlType::Q4_K, KquantDots<Dot, typename K::Q4K>{});
    put(GgmlType::Q5_K, KquantDots<Dot, typename K::Q5K>{});
    put(GgmlType::Q6_K, KquantDots<Dot, typename K::Q6K>{});
    t.entry(GgmlType::Q4_K).dot_rows_blockwise = q4_K_dot_rows_blockwise<Dot>;
    t.entry(GgmlType::Q4_K).gemm_x8 = q4_K_gemm_x8<Dot>;
}

}  // namespace
}  // namespace edge_rt
