// AdvSIMD + i8mm kernels (SMMLA; compiled with -march=armv8-a+dotprod+i8mm). Reached through
// neon_i8mm_weight_kernels() only where cpu_features saw HWCAP2_I8MM and HWCAP_ASIMDDP (Armv8.6 cores:
// Cortex-A510/A710/X2, Neoverse V1/N2 and later); everything else is the dotprod table's.
//
// SMMLA multiplies a 2x8 by an 8x2 int8 matrix into 2x2 int32: four 8-element dot products in one
// instruction. That gives whole-block integer sums, which is what the Blockwise order (kernels.h SumOrder)
// adds per block; the Lanes order needs sums of 4 products per AVX2 lane, which SDOT gives and SMMLA
// does not, so vec_dot stays the dotprod table's. The repacked Q4_0 and Q4_K gemms use it (Q4_K's sums per
// sub-block are exact integers too). Reference twin: kernels_scalar.cpp (bit for bit).
#include <arm_neon.h>

#include "edge_rt/kernels.h"
#include "neon_kquant_dots.h"

namespace edge_rt {

namespace {

// Weight rows 2p and 2p + 1 of an interleaved Q4_0 group, elements 8h..8h+7 of the low (or high) nibble
// half: qs[2h] and qs[2h + 1] each hold 4 bytes per row, so zipping their 32-bit lanes puts row 2p's 8
// bytes next to row 2p + 1's (the 8x2 operand of SMMLA).
struct RowPairs {
    uint8x16_t pair[4];  // rows (0,1), (2,3), (4,5), (6,7)
};

ERT_INLINE RowPairs row_pairs(const uint8_t* qs, int h) {
    const uint32x4_t a0 = vreinterpretq_u32_u8(vld1q_u8(qs + 64 * h)),
                     a1 = vreinterpretq_u32_u8(vld1q_u8(qs + 64 * h + 16));
    const uint32x4_t b0 = vreinterpretq_u32_u8(vld1q_u8(qs + 64 * h + 32)),
                     b1 = vreinterpretq_u32_u8(vld1q_u8(qs + 64 * h + 48));
    return {{vreinterpretq_u8_u32(vzip1q_u32(a0, b0)), vreinterpretq_u8_u32(vzip2q_u32(a0, b0)),
             vreinterpretq_u8_u32(vzip1q_u32(a1, b1)), vreinterpretq_u8_u32(vzip2q_u32(a1, b1))}};
}

// One interleaved Q4_0 group times activation rows two at a time (an odd last row is paired with itself
// and its copy dropped). Per block, p[i] = [r0.c, r0.c', r1.c, r1.c'] for rows c = 2i, c' = 2i + 1: the
// unsigned-nibble sums, then - 8 * block sum and the twin's fma per output.
void q4_0_gemm_x8_i8mm(int64_t n, const void* group, const void* a, size_t stride, const int16_t* a_sums, int n_act,
                       int /*n_gemm*/, float* out, size_t out_stride) {
    const int64_t nb = n / QK4_0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int r = 0; r < n_act; r += 2) {
        const int r1 = r + 1 < n_act ? r + 1 : r;
        const auto* y0 = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        const auto* y1 = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r1));
        const uint8_t* g = static_cast<const uint8_t*>(group);
        float32x4_t acc[2][2];  // [activation row][weight rows 0..3, 4..7]
        for (auto& ar : acc) ar[0] = ar[1] = vdupq_n_f32(0.f);
        for (int64_t b = 0; b < nb; ++b, g += kQ4_0x8BlockBytes) {
            int32x4_t p[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
            for (int h = 0; h < 2; ++h) {  // elements 8h..8h+7 (low nibbles) and 16+8h.. (high nibbles)
                const RowPairs w = row_pairs(g + 16, h);
                const int8x16_t ylo = vcombine_s8(vld1_s8(y0[b].qs + 8 * h), vld1_s8(y1[b].qs + 8 * h));
                const int8x16_t yhi = vcombine_s8(vld1_s8(y0[b].qs + 16 + 8 * h), vld1_s8(y1[b].qs + 16 + 8 * h));
                for (int i = 0; i < 4; ++i) {
                    p[i] = vmmlaq_s32(p[i], ylo, vreinterpretq_s8_u8(vandq_u8(w.pair[i], m4)));
                    p[i] = vmmlaq_s32(p[i], yhi, vreinterpretq_s8_u8(vshrq_n_u8(w.pair[i], 4)));
                }
            }
            const uint16x8_t d = vld1q_u16(reinterpret_cast<const uint16_t*>(g));
            const float32x4_t d0 = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(d)));
            const float32x4_t d1 = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(d)));
            const int32x4_t sums[2][2] = {{vcombine_s32(vget_low_s32(p[0]), vget_low_s32(p[1])),
                                           vcombine_s32(vget_low_s32(p[2]), vget_low_s32(p[3]))},
                                          {vcombine_s32(vget_high_s32(p[0]), vget_high_s32(p[1])),
                                           vcombine_s32(vget_high_s32(p[2]), vget_high_s32(p[3]))}};
            const BlockQ8_0* ys[2] = {y0 + b, y1 + b};
            const int rows[2] = {r, r1};
            for (int j = 0; j < 2; ++j) {
                const int32x4_t bias = vdupq_n_s32(8 * a_sums[(size_t)rows[j] * nb + b]);
                const float dy = h2f(ys[j]->d);
                acc[j][0] = vfmaq_f32(acc[j][0], vcvtq_f32_s32(vsubq_s32(sums[j][0], bias)), vmulq_n_f32(d0, dy));
                acc[j][1] = vfmaq_f32(acc[j][1], vcvtq_f32_s32(vsubq_s32(sums[j][1], bias)), vmulq_n_f32(d1, dy));
            }
        }
        for (int j = 0; j < (r1 > r ? 2 : 1); ++j) {
            vst1q_f32(out + (size_t)(r + j) * out_stride, acc[j][0]);
            vst1q_f32(out + (size_t)(r + j) * out_stride + 4, acc[j][1]);
        }
    }
}

// One interleaved Q4_K group (kernels.h x8 layout) times activation rows two at a time, with SMMLA: per
// sub-block, the exact integer dot of each (activation row, weight row) pair, then the dotprod kernel's
// integer and float steps per activation row (q4_K_gemm_x8 in neon_kquant_dots.h), so the bits are its.
// Row c's elements 8t..8t+7 of a sub-block are 4 bytes of group 2t and 4 of group 2t + 1 (qs[k][g][c]):
// zipping the two groups' 32-bit lanes puts rows (c, c + 1) side by side, SMMLA's 8x2 operand; the low
// nibbles are sub-block 2k, the high ones 2k + 1. An odd last activation row is paired with itself.
void q4_K_gemm_x8_i8mm(int64_t n, const void* group, const void* a, size_t stride, const int16_t* /*a_sums*/, int n_act,
                       int n_gemm, float* out, size_t out_stride) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int r = 0; r < n_act; r += 2) {
        const int rows[2] = {r, r + 1 < n_act ? r + 1 : r};
        const BlockQ8_K* y[2] = {reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, rows[0])),
                                 reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, rows[1]))};
        const int step[2] = {rows[0] < n_gemm ? 2 : 8, rows[1] < n_gemm ? 2 : 8};
        const uint8_t* g = static_cast<const uint8_t*>(group);
        float32x4_t acc[2][2], acc_min[2][2];  // [activation row][weight rows 0..3, 4..7]
        for (int j = 0; j < 2; ++j) acc[j][0] = acc[j][1] = acc_min[j][0] = acc_min[j][1] = vdupq_n_f32(0.f);
        for (int64_t b = 0; b < n / QK_K; ++b, g += kQ4_Kx8BlockBytes) {
            int32_t sc[8][8], m[8][8];  // [sub-block][row]
            q4_K_x8_scales_mins(g, sc, m);
            float32x4_t d[2][2], dm[2][2];
            int32x4_t sumi[2][2], summ[2][2];
            for (int j = 0; j < 2; ++j) {
                q4_K_x8_scaled(g, 0, y[j][b].d, d[j]);
                q4_K_x8_scaled(g, 1, y[j][b].d, dm[j]);
                sumi[j][0] = sumi[j][1] = summ[j][0] = summ[j][1] = vdupq_n_s32(0);
            }
            for (int kk = 0; kk < 4; ++kk) {
                int32x4_t p[2][4];  // [sub-block 2kk + s][row pair]: [r0.c, r0.c', r1.c, r1.c']
                for (auto& ps : p)
                    for (auto& v : ps) v = vdupq_n_s32(0);
                for (int t = 0; t < 4; ++t) {
                    const uint8_t* q = g + 128 + 256 * kk + 64 * t;  // groups 2t and 2t + 1
                    uint8x16_t pair[4];
                    for (int half = 0; half < 2; ++half) {  // rows 0..3, 4..7
                        const uint32x4_t g0 = vreinterpretq_u32_u8(vld1q_u8(q + 16 * half));
                        const uint32x4_t g1 = vreinterpretq_u32_u8(vld1q_u8(q + 32 + 16 * half));
                        pair[2 * half] = vreinterpretq_u8_u32(vzip1q_u32(g0, g1));
                        pair[2 * half + 1] = vreinterpretq_u8_u32(vzip2q_u32(g0, g1));
                    }
                    for (int s = 0; s < 2; ++s) {
                        const int64_t off = 64 * kk + 32 * s + 8 * t;
                        const int8x16_t ya = vcombine_s8(vld1_s8(y[0][b].qs + off), vld1_s8(y[1][b].qs + off));
                        for (int i = 0; i < 4; ++i) {
                            const uint8x16_t w = s == 0 ? vandq_u8(pair[i], m4) : vshrq_n_u8(pair[i], 4);
                            p[s][i] = vmmlaq_s32(p[s][i], ya, vreinterpretq_s8_u8(w));
                        }
                    }
                }
                for (int s = 0; s < 2; ++s) {
                    const int jb = 2 * kk + s;  // sub-block
                    const int32x4_t dots[2][2] = {{vcombine_s32(vget_low_s32(p[s][0]), vget_low_s32(p[s][1])),
                                                   vcombine_s32(vget_low_s32(p[s][2]), vget_low_s32(p[s][3]))},
                                                  {vcombine_s32(vget_high_s32(p[s][0]), vget_high_s32(p[s][1])),
                                                   vcombine_s32(vget_high_s32(p[s][2]), vget_high_s32(p[s][3]))}};
                    for (int j = 0; j < 2; ++j) {
                        const int bsum = y[j][b].bsums[2 * jb] + y[j][b].bsums[2 * jb + 1];
                        for (int h = 0; h < 2; ++h) {
                            sumi[j][h] = vmlaq_s32(sumi[j][h], vld1q_s32(sc[jb] + 4 * h), dots[j][h]);
                            summ[j][h] = vmlaq_n_s32(summ[j][h], vld1q_s32(m[jb] + 4 * h), bsum);
                        }
                        if ((jb + 1) % step[j] == 0) {
                            for (int h = 0; h < 2; ++h) {
                                acc[j][h] = vfmaq_f32(acc[j][h], vcvtq_f32_s32(sumi[j][h]), d[j][h]);
                                acc_min[j][h] = vfmaq_f32(acc_min[j][h], vcvtq_f32_s32(summ[j][h]), dm[j][h]);
                                sumi[j][h] = summ[j][h] = vdupq_n_s32(0);
                            }
                        }
                    }
                }
            }
        }
        for (int j = 0; j < (rows[1] > rows[0] ? 2 : 1); ++j)
            for (int h = 0; h < 2; ++h)
                vst1q_f32(out + (size_t)rows[j] * out_stride + 4 * h, vsubq_f32(acc[j][h], acc_min[j][h]));
    }
}

constexpr int kTypeSlots = 31;

struct I8mmTable {
    WeightKernels k[kTypeSlots] = {};
    bool present[kTypeSlots] = {};
    I8mmTable() {
        const int q4_0 = (int)GgmlType::Q4_0;
        k[q4_0] = overlay_entry(GgmlType::Q4_0);
        k[q4_0].gemm_x8 = q4_0_gemm_x8_i8mm;
        present[q4_0] = true;
        const int q4_K = (int)GgmlType::Q4_K;
        k[q4_K] = overlay_entry(GgmlType::Q4_K);
        k[q4_K].gemm_x8 = q4_K_gemm_x8_i8mm;
        present[q4_K] = true;
    }
};

}  // namespace

const WeightKernels* neon_i8mm_weight_kernels(GgmlType type) noexcept {
    static const I8mmTable t;
    const int i = (int)type;
    return i >= 0 && i < kTypeSlots && t.present[i] ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
