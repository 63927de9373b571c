// The integer GEMM shared by the SIMD integer kernels (edge_rt/int_kernels.h IntKernels::matmul_acc) that
// multiply int16 lanes: codes become int16 "planes" (a 16-bit code is split into its low and high bytes,
// a = lo + 256 hi, so every product is at most 255 x 255 and fits the int32 sums of int16 x int16 SIMD
// multiplies), each ISA supplies only the dot products of planes, and the zero points are applied
// afterwards from the rows' code sums: sum (a - z_a)(b - z_b) = sum ab - z_b sum a - z_a sum b + K z_a z_b.
// Header-only: included by int_kernels_avx2.cpp and int_kernels_neon.cpp, each compiled with its own ISA
// flags (inline functions here carry none of their own).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "edge_rt/int_kernels.h"

namespace edge_rt {
namespace int_planes {

inline int n_planes(CodeType t) { return t == CodeType::U16 ? 2 : 1; }

// Row `row` of x as int16 planes of Kp codes each (zero-padded past K): for U16, plane 0 holds the low
// bytes and plane 1 the high bytes; other types have one plane holding the code. Returns the raw code sum.
inline int64_t to_planes(const CodeMatrix& x, int64_t row, int64_t K, int64_t Kp, int16_t* planes) {
    int64_t sum = 0;
    switch (x.type) {
        case CodeType::U8: {
            const uint8_t* p = static_cast<const uint8_t*>(x.data) + row * K;
            for (int64_t k = 0; k < K; ++k) planes[k] = p[k], sum += p[k];
            break;
        }
        case CodeType::U16: {
            const uint16_t* p = static_cast<const uint16_t*>(x.data) + row * K;
            for (int64_t k = 0; k < K; ++k) {
                planes[k] = (int16_t)(p[k] & 0xFF);
                planes[Kp + k] = (int16_t)(p[k] >> 8);
                sum += p[k];
            }
            std::fill(planes + Kp + K, planes + 2 * Kp, (int16_t)0);
            break;
        }
        case CodeType::I8: {
            const int8_t* p = static_cast<const int8_t*>(x.data) + row * K;
            for (int64_t k = 0; k < K; ++k) planes[k] = p[k], sum += p[k];
            break;
        }
        case CodeType::I4: {
            const uint8_t* p = static_cast<const uint8_t*>(x.data) + row * ((K + 1) / 2);
            for (int64_t k = 0; k < K; ++k) {
                planes[k] = (int16_t)((((p[k / 2] >> (4 * (k & 1))) & 0xF) ^ 8) - 8);
                sum += planes[k];
            }
            break;
        }
    }
    std::fill(planes + K, planes + Kp, (int16_t)0);
    return sum;
}

// acc[i * N + j] as IntKernels::matmul_acc defines it. Dot supplies, for planes of Kp int16 codes (Kp a
// multiple of Dot::kStep, zero-padded):
//   static void dot4(const int16_t* a, const int16_t* b, int64_t b_stride, int64_t Kp, int64_t out[4]);
//     out[r] = sum_k a[k] * b[r * b_stride + k] for r < 4, exact;
//   static int64_t dot(const int16_t* a, const int16_t* b, int64_t Kp);  the same for one row.
template <class Dot>
void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    constexpr int64_t kBlockRows = 64;  // right-operand rows converted to planes at a time
    const int64_t Kp = (K + Dot::kStep - 1) / Dot::kStep * Dot::kStep;
    const int pa = n_planes(a.type), pb = n_planes(b.type);
    std::vector<int16_t> ap((size_t)(M * pa * Kp)), bp((size_t)(kBlockRows * pb * Kp)), row((size_t)(pb * Kp));
    std::vector<int64_t> a_sum((size_t)M), b_sum((size_t)kBlockRows);
    for (int64_t i = 0; i < M; ++i) a_sum[(size_t)i] = to_planes(a, i, K, Kp, &ap[(size_t)(i * pa * Kp)]);
    for (int64_t j0 = 0; j0 < N; j0 += kBlockRows) {
        const int64_t nb = std::min(kBlockRows, N - j0);
        // plane q of block row r lives at bp[(q * nb + r) * Kp]: rows of one plane are Kp apart
        for (int64_t r = 0; r < nb; ++r) {
            b_sum[(size_t)r] = to_planes(b, j0 + r, K, Kp, row.data());
            for (int q = 0; q < pb; ++q)
                std::memcpy(&bp[(size_t)((q * nb + r) * Kp)], &row[(size_t)(q * Kp)], (size_t)Kp * sizeof(int16_t));
        }
        for (int64_t i = 0; i < M; ++i) {
            int64_t* out = acc + i * N + j0;
            std::fill(out, out + nb, (int64_t)0);
            for (int p = 0; p < pa; ++p)
                for (int q = 0; q < pb; ++q) {
                    const int16_t* av = &ap[(size_t)((i * pa + p) * Kp)];
                    const int16_t* bv = &bp[(size_t)(q * nb * Kp)];
                    const int64_t scale = (int64_t)1 << (8 * (p + q));
                    int64_t r = 0;
                    for (; r + 4 <= nb; r += 4) {
                        int64_t part[4] = {0, 0, 0, 0};
                        Dot::dot4(av, bv + r * Kp, Kp, Kp, part);
                        for (int t = 0; t < 4; ++t) out[r + t] += part[t] * scale;
                    }
                    for (; r < nb; ++r) out[r] += Dot::dot(av, bv + r * Kp, Kp) * scale;
                }
            for (int64_t r = 0; r < nb; ++r)
                out[r] += -b.zero_point * a_sum[(size_t)i] - a.zero_point * b_sum[(size_t)r] +
                          K * a.zero_point * b.zero_point;
        }
    }
}

}  // namespace int_planes
}  // namespace edge_rt
