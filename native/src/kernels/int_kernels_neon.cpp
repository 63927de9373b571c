// NEON integer kernels (IntKernels, edge_rt/int_kernels.h) for every Armv8-A core; compiled with
// -march=armv8-a. Reference twin: int_kernels_scalar.cpp. Every entry computes the same exact integers as
// its twin, so the result is the scalar one bit for bit (test_int_kernels under qemu on three CPU models):
//  * matmul_acc on int16 code planes (int_code_planes.h, as the AVX2 kernel): smlal / smlal2 multiply 8
//    int16 pairs into int32 lanes per step, each lane gaining at most one product of 255 x 255 per step,
//    so chunks of 16,384 steps (131,072 codes) stay below 2^31 and are widened to int64 in between. The
//    dotprod level uses it too (SDOT is int8 x int8 only); the i8mm level has a USDOT GEMM
//    (int_kernels_neon_i8mm.cpp);
//  * the requantizing entries work on 8 codes per step in int64 lanes: code differences fit int32, so
//    smull gives their exact products with multipliers below 2^31; wider products (a 64-bit value times a
//    32-bit multiplier) are lo x m + (hi x m) << 32, exact modulo 2^64 while the true value stays below
//    2^62; the spec's round_shift is srshl by -s (a rounding right shift, the 2^(s-1) added at full
//    precision), and the clamp is sqxtun (negative -> 0) and a umin at 2^bits - 1.
// lut has no NEON entry (tbl looks up at most 64 bytes; the tables hold 2^8 or 2^16 codes): the scalar
// one runs; exp_row takes its row maximum with NEON and looks the table up per element.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>

#include "edge_rt/int_kernels.h"
#include "int_code_planes.h"

namespace edge_rt {

namespace {

constexpr int64_t kChunk = 16384 * 8;  // codes per int32 chunk: 16,384 steps x 255 x 255 < 2^31 per lane

// Plane dots (int_code_planes.h): 8 int16 codes per step, two int32x4 accumulators per row.
struct MlalDot {
    static constexpr int64_t kStep = 8;
    static int64_t wide_sum(int32x4_t lo, int32x4_t hi) { return vaddlvq_s32(lo) + vaddlvq_s32(hi); }
    static void dot4(const int16_t* a, const int16_t* b, int64_t b_stride, int64_t Kp, int64_t out[4]) {
        for (int64_t c0 = 0; c0 < Kp; c0 += kChunk) {
            const int64_t c1 = std::min(Kp, c0 + kChunk);
            int32x4_t lo[4], hi[4];
            for (int r = 0; r < 4; ++r) lo[r] = hi[r] = vdupq_n_s32(0);
            for (int64_t k = c0; k < c1; k += kStep) {
                const int16x8_t va = vld1q_s16(a + k);
                for (int r = 0; r < 4; ++r) {
                    const int16x8_t vb = vld1q_s16(b + r * b_stride + k);
                    lo[r] = vmlal_s16(lo[r], vget_low_s16(va), vget_low_s16(vb));
                    hi[r] = vmlal_high_s16(hi[r], va, vb);
                }
            }
            for (int r = 0; r < 4; ++r) out[r] += wide_sum(lo[r], hi[r]);
        }
    }
    static int64_t dot(const int16_t* a, const int16_t* b, int64_t Kp) {
        int64_t total = 0;
        for (int64_t c0 = 0; c0 < Kp; c0 += kChunk) {
            const int64_t c1 = std::min(Kp, c0 + kChunk);
            int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
            for (int64_t k = c0; k < c1; k += kStep) {
                const int16x8_t va = vld1q_s16(a + k), vb = vld1q_s16(b + k);
                lo = vmlal_s16(lo, vget_low_s16(va), vget_low_s16(vb));
                hi = vmlal_high_s16(hi, va, vb);
            }
            total += wide_sum(lo, hi);
        }
        return total;
    }
};

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    int_planes::matmul_acc<MlalDot>(a, b, M, N, K, acc);
}

// ---------------------------------------------------------------- int64-lane requantization helpers

#define ERT_INLINE inline __attribute__((always_inline))

const IntKernels& scalar() { return *scalar_int_kernels(); }

// Codes i..i+7 minus z, as int32 (codes and zero points are below 2^16).
ERT_INLINE int32x4x2_t diff8(const void* p, int bits, int64_t i, int32x4_t z) {
    const uint16x8_t c = bits == 16 ? vld1q_u16(static_cast<const uint16_t*>(p) + i)
                                    : vmovl_u8(vld1_u8(static_cast<const uint8_t*>(p) + i));
    return {{vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(c))), z),
             vsubq_s32(vreinterpretq_s32_u32(vmovl_high_u16(c)), z)}};
}

// x * m for 0 <= m < 2^32, exact modulo 2^64 (exact while |x * m| < 2^63).
ERT_INLINE int64x2_t mul_i64_u32(int64x2_t x, uint32x2_t m) {
    const uint32x2_t lo = vmovn_u64(vreinterpretq_u64_s64(x));
    const uint32x2_t hi = vreinterpret_u32_s32(vshrn_n_s64(x, 32));
    return vreinterpretq_s64_u64(vmlal_u32(vshll_n_u32(vmul_u32(hi, m), 32), lo, m));
}

// y[i..i+7] = clamp(z + round_shift(v[t], s), 0, 2^bits - 1), with neg_s = -s per lane.
ERT_INLINE void store8(const int64x2_t v[4], const int64x2_t neg_s[4], int64x2_t z, int bits, void* y, int64_t i) {
    const uint32x4_t top = vdupq_n_u32((uint32_t)((1u << bits) - 1));
    uint32x2_t n[4];
    for (int t = 0; t < 4; ++t) n[t] = vqmovun_s64(vaddq_s64(z, vrshlq_s64(v[t], neg_s[t])));
    const uint16x8_t h = vcombine_u16(vmovn_u32(vminq_u32(vcombine_u32(n[0], n[1]), top)),
                                      vmovn_u32(vminq_u32(vcombine_u32(n[2], n[3]), top)));
    if (bits == 16)
        vst1q_u16(static_cast<uint16_t*>(y) + i, h);
    else
        vst1_u8(static_cast<uint8_t*>(y) + i, vmovn_u16(h));
}

ERT_INLINE void splat_shift(int s, int64x2_t neg_s[4]) {
    for (int t = 0; t < 4; ++t) neg_s[t] = vdupq_n_s64(-(int64_t)s);
}

// The 8 int64 products d[t] * m of two int32x4 differences and a multiplier 0 <= m < 2^31.
ERT_INLINE void mull8(const int32x4x2_t& d, int32x2_t m, int64x2_t out[4]) {
    for (int h = 0; h < 2; ++h) {
        out[2 * h] = vmull_s32(vget_low_s32(d.val[h]), m);
        out[2 * h + 1] = vmull_high_s32(d.val[h], vcombine_s32(m, m));
    }
}

inline const void* at(const void* p, int bits, int64_t i) { return static_cast<const uint8_t*>(p) + i * (bits / 8); }
inline void* at(void* p, int bits, int64_t i) { return static_cast<uint8_t*>(p) + i * (bits / 8); }

void requant_rows(const int64_t* x, int64_t rows, int64_t N, const int64_t* m, const int32_t* s, int64_t z, int bits,
                  void* y) {
    const int64x2_t vz = vdupq_n_s64(z);
    const int64_t n8 = N / 8 * 8;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < n8; j += 8) {
            int64x2_t v[4], neg_s[4];
            const int32x4_t s_lo = vld1q_s32(s + j), s_hi = vld1q_s32(s + j + 4);
            const int32x4_t s8[2] = {s_lo, s_hi};
            for (int t = 0; t < 4; ++t) {
                const uint32x2_t mt = vmovn_u64(vld1q_u64(reinterpret_cast<const uint64_t*>(m + j + 2 * t)));
                v[t] = mul_i64_u32(vld1q_s64(x + i * N + j + 2 * t), mt);
                const int32x4_t st = s8[t / 2];
                neg_s[t] = vnegq_s64(t % 2 ? vmovl_high_s32(st) : vmovl_s32(vget_low_s32(st)));
            }
            store8(v, neg_s, vz, bits, y, i * N + j);
        }
        if (n8 < N) scalar().requant_rows(x + i * N + n8, 1, N - n8, m + n8, s + n8, z, bits, at(y, bits, i * N + n8));
    }
}

void add(const void* a, int a_bits, int64_t z_a, int64_t m_a, const void* b, int b_bits, int64_t z_b, int64_t m_b,
         int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    const int32x4_t za = vdupq_n_s32((int32_t)z_a), zb = vdupq_n_s32((int32_t)z_b);
    const int64x2_t zy = vdupq_n_s64(z_y);
    // m_a < 2^31; m_b < 2^46 in two parts below 2^31: m_b = mb_hi 2^31 + mb_lo
    const int32x2_t ma = vdup_n_s32((int32_t)m_a), mb_lo = vdup_n_s32((int32_t)(m_b & 0x7FFFFFFF)),
                    mb_hi = vdup_n_s32((int32_t)(m_b >> 31));
    int64x2_t neg_s[4];
    splat_shift(s, neg_s);
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        const int32x4x2_t da = diff8(a, a_bits, i, za), db = diff8(b, b_bits, i, zb);
        int64x2_t ta[4], tb_lo[4], tb_hi[4], v[4];
        mull8(da, ma, ta);
        mull8(db, mb_lo, tb_lo);
        mull8(db, mb_hi, tb_hi);
        for (int t = 0; t < 4; ++t) v[t] = vaddq_s64(vaddq_s64(ta[t], tb_lo[t]), vshlq_n_s64(tb_hi[t], 31));
        store8(v, neg_s, zy, y_bits, y, i);
    }
    if (n8 < n)
        scalar().add(at(a, a_bits, n8), a_bits, z_a, m_a, at(b, b_bits, n8), b_bits, z_b, m_b, s, z_y, y_bits,
                     at(y, y_bits, n8), n - n8);
}

// The 8 values round_shift'ed by mul and scaled_product: (a - z_a)(b - z_b) m, the code product exact in
// int64 (|product| <= 65535^2) and then times m < 2^31.
ERT_INLINE void product_times(const int32x4x2_t& da, const int32x4x2_t& db, uint32x2_t m, int64x2_t v[4]) {
    for (int h = 0; h < 2; ++h) {
        v[2 * h] = mul_i64_u32(vmull_s32(vget_low_s32(da.val[h]), vget_low_s32(db.val[h])), m);
        v[2 * h + 1] = mul_i64_u32(vmull_high_s32(da.val[h], db.val[h]), m);
    }
}

void mul(const void* a, int a_bits, int64_t z_a, const void* b, int b_bits, int64_t z_b, int64_t m, int s, int64_t z_y,
         int y_bits, void* y, int64_t n) {
    const int32x4_t za = vdupq_n_s32((int32_t)z_a), zb = vdupq_n_s32((int32_t)z_b);
    const int64x2_t zy = vdupq_n_s64(z_y);
    const uint32x2_t vm = vdup_n_u32((uint32_t)m);
    int64x2_t neg_s[4];
    splat_shift(s, neg_s);
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        int64x2_t v[4];
        product_times(diff8(a, a_bits, i, za), diff8(b, b_bits, i, zb), vm, v);
        store8(v, neg_s, zy, y_bits, y, i);
    }
    if (n8 < n)
        scalar().mul(at(a, a_bits, n8), a_bits, z_a, at(b, b_bits, n8), b_bits, z_b, m, s, z_y, y_bits,
                     at(y, y_bits, n8), n - n8);
}

void requantize(const void* a, int a_bits, int64_t z_a, int64_t m, int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    const int32x4_t za = vdupq_n_s32((int32_t)z_a);
    const int64x2_t zy = vdupq_n_s64(z_y);
    const int32x2_t vm = vdup_n_s32((int32_t)m);
    int64x2_t neg_s[4];
    splat_shift(s, neg_s);
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        int64x2_t v[4];
        mull8(diff8(a, a_bits, i, za), vm, v);
        store8(v, neg_s, zy, y_bits, y, i);
    }
    if (n8 < n) scalar().requantize(at(a, a_bits, n8), a_bits, z_a, m, s, z_y, y_bits, at(y, y_bits, n8), n - n8);
}

int64_t sum_squares(const void* a, int a_bits, int64_t z, int64_t n) {
    const int32x4_t vz = vdupq_n_s32((int32_t)z);
    int64x2_t acc = vdupq_n_s64(0);
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        const int32x4x2_t d = diff8(a, a_bits, i, vz);
        for (int h = 0; h < 2; ++h) {
            acc = vmlal_s32(acc, vget_low_s32(d.val[h]), vget_low_s32(d.val[h]));
            acc = vmlal_high_s32(acc, d.val[h], d.val[h]);
        }
    }
    int64_t total = vaddvq_s64(acc);
    if (n8 < n) total += scalar().sum_squares(at(a, a_bits, n8), a_bits, z, n - n8);
    return total;
}

// RMSNorm's elements are mul's arithmetic with 16-bit weight codes as the right operand (mu <= 2^30 and
// S = 63 are within what this mul computes exactly).
void scaled_product(const void* a, int a_bits, int64_t z_a, const uint16_t* g, int64_t z_g, int64_t mu, int S,
                    int64_t z_y, int y_bits, void* y, int64_t n) {
    mul(a, a_bits, z_a, g, 16, z_g, mu, S, z_y, y_bits, y, n);
}

int64_t exp_row(const void* a, int a_bits, const uint32_t* table, int64_t n, int64_t* e) {
    const auto code = [&](int64_t i) {
        return a_bits == 16 ? (int64_t)static_cast<const uint16_t*>(a)[i] : (int64_t)static_cast<const uint8_t*>(a)[i];
    };
    const int64_t n8 = n / 8 * 8;
    uint16x8_t vmax = vdupq_n_u16(0);
    for (int64_t i = 0; i < n8; i += 8)
        vmax = vmaxq_u16(vmax, a_bits == 16 ? vld1q_u16(static_cast<const uint16_t*>(a) + i)
                                            : vmovl_u8(vld1_u8(static_cast<const uint8_t*>(a) + i)));
    int64_t mx = vmaxvq_u16(vmax);
    for (int64_t i = n8; i < n; ++i) mx = std::max(mx, code(i));
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        e[i] = table[mx - code(i)];
        total += e[i];
    }
    return total;
}

const IntKernels kNeon = {matmul_acc,  requant_rows,   add,     mul,    requantize,
                          sum_squares, scaled_product, exp_row, nullptr};

}  // namespace

const IntKernels* neon_int_kernels() noexcept { return &kNeon; }

}  // namespace edge_rt
