// AdvSIMD + i8mm integer kernels (IntKernels, edge_rt/int_kernels.h); compiled with
// -march=armv8.2-a+dotprod+i8mm, reached only where cpu_features saw HWCAP2_I8MM (the neon_i8mm level).
// Reference twin: int_kernels_scalar.cpp; the entries this table lacks are the plain NEON ones.
//
// matmul_acc, for the exports' GEMMs (unsigned activation codes times signed weight codes, I8 or I4):
// USDOT multiplies 16 unsigned activation bytes by 16 signed weight bytes and adds each group of 4
// products into an int32 lane, Arm's form of x86's vpdpbusd; the byte planes, chunking and zero points
// are int_byte_planes.h's, shared with the AVX512-VNNI kernel. SDOT (the dotprod level) is signed x
// signed only, which the unsigned activation codes do not fit, so that level keeps the plain NEON GEMM;
// unsigned right operands (the attention matmuls) keep it here too.
#include <arm_neon.h>

#include "edge_rt/int_kernels.h"
#include "int_byte_planes.h"

namespace edge_rt {

namespace {

// Byte dots for int_bytes::matmul_acc: 16 bytes per USDOT.
struct UsdotDot {
    using Acc = int32x4_t;
    static constexpr int64_t kStep = 16;
    static Acc zero() { return vdupq_n_s32(0); }
    static Acc step(Acc acc, const uint8_t* a, const int8_t* w) { return vusdotq_s32(acc, vld1q_u8(a), vld1q_s8(w)); }
    static int64_t wide_sum(Acc v) { return vaddlvq_s32(v); }
};

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    if (int_bytes::applies(a, b))
        int_bytes::matmul_acc<UsdotDot>(a, b, M, N, K, acc);
    else
        neon_int_kernels()->matmul_acc(a, b, M, N, K, acc);
}

const IntKernels kNeonI8mm = {matmul_acc, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const IntKernels* neon_i8mm_int_kernels() noexcept { return &kNeonI8mm; }

}  // namespace edge_rt
