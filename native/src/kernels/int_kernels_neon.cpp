// NEON integer kernels (IntKernels, edge_rt/int_kernels.h) for every Armv8-A core; compiled with
// -march=armv8-a. Reference twin: int_kernels_scalar.cpp; the entries this table lacks are the scalar ones.
//
// matmul_acc on int16 code planes (int_code_planes.h, as the AVX2 kernel): smlal / smlal2 multiply 8 int16
// pairs into int32 lanes per step, each lane gaining at most one product of 255 x 255 per step, so chunks
// of 16,384 steps (131,072 codes) stay below 2^31 and are widened to int64 in between. Exact integers, so
// the result is the scalar twin's bit for bit (test_int_kernels under qemu on three CPU models). The dotprod
// and i8mm levels use this table too (SDOT is int8 x int8 only, and the unsigned activation planes need
// USDOT, an i8mm instruction: a later kernel).
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

const IntKernels kNeon = {matmul_acc, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const IntKernels* neon_int_kernels() noexcept { return &kNeon; }

}  // namespace edge_rt
