// AVX512-VNNI integer kernels (IntKernels, edge_rt/int_kernels.h); compiled with -mavx512f -mavx512bw
// -mavx512vnni only, run after cpu_features decided the CPU has them. Reference twin:
// int_kernels_scalar.cpp; the entries this table lacks are the AVX2 ones (int_kernel_dispatch.cpp).
//
// matmul_acc, for the exports' GEMMs (unsigned activation codes times signed weight codes, I8 or I4):
// vpdpbusd multiplies 64 unsigned activation bytes by 64 signed weight bytes and adds each group of 4
// products into an int32 lane, the integer dot llama.cpp and ONNX Runtime use for u8 x s8; the byte
// planes, chunking and zero points are int_byte_planes.h's (shared with the NEON i8mm kernel). Unsigned
// right operands (U8/U16 x U8/U16, the attention matmuls) have no u8 x u8 VNNI form and keep the AVX2
// kernel.
// GCC 12's AVX-512 headers seed some intrinsics with _mm512_undefined_*(), which -Wuninitialized
// reports at every inlined call site (GCC bug 105593); the values are fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include "edge_rt/int_kernels.h"
#include "int_byte_planes.h"

namespace edge_rt {

namespace {

// Byte dots for int_bytes::matmul_acc: 64 bytes per vpdpbusd.
struct DpbusdDot {
    using Acc = __m512i;
    static constexpr int64_t kStep = 64;
    static Acc zero() { return _mm512_setzero_si512(); }
    static Acc step(Acc acc, const uint8_t* a, const int8_t* w) {
        return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void*)a), _mm512_loadu_si512((const void*)w));
    }
    static int64_t wide_sum(Acc v) {
        const __m512i w = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)),
                                           _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
        return _mm512_reduce_add_epi64(w);
    }
};

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    if (int_bytes::applies(a, b))
        int_bytes::matmul_acc<DpbusdDot>(a, b, M, N, K, acc);
    else
        avx2_int_kernels()->matmul_acc(a, b, M, N, K, acc);
}

const IntKernels kAvx512Vnni = {matmul_acc, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const IntKernels* avx512vnni_int_kernels() noexcept { return &kAvx512Vnni; }

}  // namespace edge_rt
