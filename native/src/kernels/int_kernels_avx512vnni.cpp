// AVX512-VNNI integer kernels (IntKernels, edge_rt/int_kernels.h); compiled with -mavx512f -mavx512bw
// -mavx512vnni only, run after cpu_features decided the CPU has them. Reference twin:
// int_kernels_scalar.cpp; the entries this table lacks are the AVX2 ones (int_kernel_dispatch.cpp).
//
// matmul_acc, for the exports' GEMMs (unsigned activation codes times signed weight codes, I8 or I4):
// vpdpbusd multiplies 64 unsigned activation bytes by 64 signed weight bytes and adds each group of 4
// products into an int32 lane, the integer dot llama.cpp and ONNX Runtime use for u8 x s8. A 16-bit
// activation is split into its low and high byte planes (a = lo + 256 hi), each its own u8 dot. Every
// lane stays exact: a step adds at most 4 x 255 x 127 < 2^17 per lane, so chunks of kChunkSteps steps sum
// in int32 below 2^31 and are widened to int64 in between; zero points are applied afterwards from the
// rows' code sums, as the AVX2 kernel does. Unsigned right operands (U8/U16 x U8/U16, the attention
// matmuls) have no u8 x u8 VNNI form and keep the AVX2 kernel.
// GCC 12's AVX-512 headers seed some intrinsics with _mm512_undefined_*(), which -Wuninitialized
// reports at every inlined call site (GCC bug 105593); the values are fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "edge_rt/int_kernels.h"

namespace edge_rt {

namespace {

constexpr int64_t kStep = 64;          // bytes per vpdpbusd
constexpr int64_t kChunkSteps = 8192;  // per-lane int32 sum: 8192 x 4 x 255 x 127 < 2^31
constexpr int64_t kBlockRows = 64;     // weight rows converted to bytes at a time

// Row `row` of the activations as byte planes of Kp bytes (zero-padded past K): U8 one plane, U16 the
// low bytes then the high bytes. Returns the raw code sum.
int64_t activation_planes(const CodeMatrix& a, int64_t row, int64_t K, int64_t Kp, uint8_t* planes) {
    int64_t sum = 0;
    if (a.type == CodeType::U8) {
        const uint8_t* p = static_cast<const uint8_t*>(a.data) + row * K;
        std::memcpy(planes, p, (size_t)K);
        for (int64_t k = 0; k < K; ++k) sum += p[k];
        std::fill(planes + K, planes + Kp, (uint8_t)0);
        return sum;
    }
    const uint16_t* p = static_cast<const uint16_t*>(a.data) + row * K;
    for (int64_t k = 0; k < K; ++k) {
        planes[k] = (uint8_t)(p[k] & 0xFF);
        planes[Kp + k] = (uint8_t)(p[k] >> 8);
        sum += p[k];
    }
    std::fill(planes + K, planes + Kp, (uint8_t)0);
    std::fill(planes + Kp + K, planes + 2 * Kp, (uint8_t)0);
    return sum;
}

// Row `row` of the weights as Kp signed bytes (zero-padded past K); returns the code sum.
int64_t weight_bytes(const CodeMatrix& b, int64_t row, int64_t K, int64_t Kp, int8_t* out) {
    int64_t sum = 0;
    if (b.type == CodeType::I8) {
        const int8_t* p = static_cast<const int8_t*>(b.data) + row * K;
        std::memcpy(out, p, (size_t)K);
        for (int64_t k = 0; k < K; ++k) sum += p[k];
    } else {  // I4: two codes per byte, low nibble first
        const uint8_t* p = static_cast<const uint8_t*>(b.data) + row * ((K + 1) / 2);
        for (int64_t k = 0; k < K; ++k) {
            out[k] = (int8_t)((((p[k / 2] >> (4 * (k & 1))) & 0xF) ^ 8) - 8);
            sum += out[k];
        }
    }
    std::fill(out + K, out + Kp, (int8_t)0);
    return sum;
}

int64_t hsum_epi32_wide(__m512i v) {
    const __m512i w = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)),
                                       _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
    return _mm512_reduce_add_epi64(w);
}

// out[r] = sum_k a[k] * w_r[k] for 4 weight rows (Kp apart in w); Kp a multiple of kStep.
void dot4(const uint8_t* a, const int8_t* w, int64_t Kp, int64_t out[4]) {
    for (int r = 0; r < 4; ++r) out[r] = 0;
    for (int64_t c0 = 0; c0 < Kp; c0 += kChunkSteps * kStep) {
        const int64_t c1 = std::min(Kp, c0 + kChunkSteps * kStep);
        __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t k = c0; k < c1; k += kStep) {
            const __m512i va = _mm512_loadu_si512((const void*)(a + k));
            s0 = _mm512_dpbusd_epi32(s0, va, _mm512_loadu_si512((const void*)(w + k)));
            s1 = _mm512_dpbusd_epi32(s1, va, _mm512_loadu_si512((const void*)(w + Kp + k)));
            s2 = _mm512_dpbusd_epi32(s2, va, _mm512_loadu_si512((const void*)(w + 2 * Kp + k)));
            s3 = _mm512_dpbusd_epi32(s3, va, _mm512_loadu_si512((const void*)(w + 3 * Kp + k)));
        }
        out[0] += hsum_epi32_wide(s0);
        out[1] += hsum_epi32_wide(s1);
        out[2] += hsum_epi32_wide(s2);
        out[3] += hsum_epi32_wide(s3);
    }
}

int64_t dot1(const uint8_t* a, const int8_t* w, int64_t Kp) {
    int64_t total = 0;
    for (int64_t c0 = 0; c0 < Kp; c0 += kChunkSteps * kStep) {
        const int64_t c1 = std::min(Kp, c0 + kChunkSteps * kStep);
        __m512i s = _mm512_setzero_si512();
        for (int64_t k = c0; k < c1; k += kStep)
            s = _mm512_dpbusd_epi32(s, _mm512_loadu_si512((const void*)(a + k)),
                                    _mm512_loadu_si512((const void*)(w + k)));
        total += hsum_epi32_wide(s);
    }
    return total;
}

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    const bool signed_weights = b.type == CodeType::I8 || b.type == CodeType::I4;
    if (!signed_weights || (a.type != CodeType::U8 && a.type != CodeType::U16)) {
        avx2_int_kernels()->matmul_acc(a, b, M, N, K, acc);
        return;
    }
    const int64_t Kp = (K + kStep - 1) / kStep * kStep;
    const int pa = a.type == CodeType::U16 ? 2 : 1;
    std::vector<uint8_t> ap((size_t)(M * pa * Kp));
    std::vector<int8_t> wb((size_t)(kBlockRows * Kp));
    std::vector<int64_t> a_sum((size_t)M), b_sum((size_t)kBlockRows);
    for (int64_t i = 0; i < M; ++i) a_sum[(size_t)i] = activation_planes(a, i, K, Kp, &ap[(size_t)(i * pa * Kp)]);
    for (int64_t j0 = 0; j0 < N; j0 += kBlockRows) {
        const int64_t nb = std::min(kBlockRows, N - j0);
        for (int64_t r = 0; r < nb; ++r) b_sum[(size_t)r] = weight_bytes(b, j0 + r, K, Kp, &wb[(size_t)(r * Kp)]);
        for (int64_t i = 0; i < M; ++i) {
            int64_t* out = acc + i * N + j0;
            std::fill(out, out + nb, (int64_t)0);
            for (int p = 0; p < pa; ++p) {
                const uint8_t* av = &ap[(size_t)((i * pa + p) * Kp)];
                const int shift = 8 * p;
                int64_t r = 0;
                for (; r + 4 <= nb; r += 4) {
                    int64_t part[4];
                    dot4(av, &wb[(size_t)(r * Kp)], Kp, part);
                    for (int t = 0; t < 4; ++t) out[r + t] += part[t] * ((int64_t)1 << shift);
                }
                for (; r < nb; ++r) out[r] += dot1(av, &wb[(size_t)(r * Kp)], Kp) * ((int64_t)1 << shift);
            }
            // weights are symmetric (zero point 0): only the activations' zero point remains
            for (int64_t r = 0; r < nb; ++r)
                out[r] += -b.zero_point * a_sum[(size_t)i] - a.zero_point * b_sum[(size_t)r] +
                          K * a.zero_point * b.zero_point;
        }
    }
}

const IntKernels kAvx512Vnni = {matmul_acc, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const IntKernels* avx512vnni_int_kernels() noexcept { return &kAvx512Vnni; }

}  // namespace edge_rt
