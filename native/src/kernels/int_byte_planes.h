// The integer GEMM shared by the kernels whose instruction multiplies unsigned bytes by signed bytes and
// adds each group of 4 products into an int32 lane (x86 vpdpbusd, Arm USDOT): the exports' projections,
// unsigned activation codes (U8, U16) times signed weight codes (I8, I4).
//
// A 16-bit activation is split into its low and high byte planes (a = lo + 256 hi), each its own u8 dot;
// I4 weights are widened to one signed byte per code. Every lane stays exact: a step adds at most
// 4 x 255 x 127 < 2^17 per lane, so Dot sums at most kChunkSteps steps in int32 (below 2^31) before
// widening to int64. Zero points are applied afterwards from the rows' code sums (weights are symmetric,
// zero point 0): sum (a - z_a) w = sum a w - z_a sum w.
// Header-only: included by int_kernels_avx512vnni.cpp and int_kernels_neon_i8mm.cpp, each compiled with
// its own ISA flags. Everything here has internal linkage, and it instantiates no standard-library
// template with loops (no std::vector or std::fill, whose instantiations the linker shares between
// files: another file could end up calling a copy compiled with these instructions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "edge_rt/int_kernels.h"

namespace edge_rt {
namespace int_bytes {
namespace {

constexpr int64_t kChunkSteps = 8192;  // per-lane int32 sum: 8192 x 4 x 255 x 127 < 2^31

// A zeroed heap array (in place of std::vector, see above).
template <class T>
struct Buffer {
    T* p;
    explicit Buffer(size_t n) : p(new T[n]()) {}
    ~Buffer() { delete[] p; }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    T& operator[](size_t i) { return p[i]; }
};

// Whether matmul_acc below handles these operands (else the caller's parent kernel does).
inline bool applies(const CodeMatrix& a, const CodeMatrix& b) {
    return (a.type == CodeType::U8 || a.type == CodeType::U16) && (b.type == CodeType::I8 || b.type == CodeType::I4);
}

// Row `row` of the activations as byte planes of Kp bytes (zero-padded past K): U8 one plane, U16 the
// low bytes then the high bytes. Returns the raw code sum.
inline int64_t activation_planes(const CodeMatrix& a, int64_t row, int64_t K, int64_t Kp, uint8_t* planes) {
    int64_t sum = 0;
    if (a.type == CodeType::U8) {
        const uint8_t* p = static_cast<const uint8_t*>(a.data) + row * K;
        std::memcpy(planes, p, (size_t)K);
        for (int64_t k = 0; k < K; ++k) sum += p[k];
        std::memset(planes + K, 0, (size_t)(Kp - K));
        return sum;
    }
    const uint16_t* p = static_cast<const uint16_t*>(a.data) + row * K;
    for (int64_t k = 0; k < K; ++k) {
        planes[k] = (uint8_t)(p[k] & 0xFF);
        planes[Kp + k] = (uint8_t)(p[k] >> 8);
        sum += p[k];
    }
    std::memset(planes + K, 0, (size_t)(Kp - K));
    std::memset(planes + Kp + K, 0, (size_t)(Kp - K));
    return sum;
}

// Row `row` of the weights as Kp signed bytes (zero-padded past K); returns the code sum.
inline int64_t weight_bytes(const CodeMatrix& b, int64_t row, int64_t K, int64_t Kp, int8_t* out) {
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
    std::memset(out + K, 0, (size_t)(Kp - K));
    return sum;
}

// Exact dots of Kp bytes (Kp a multiple of Dot::kStep, zero-padded) in int32 lanes over chunks of
// kChunkSteps steps, widened to int64 in between. Dot supplies the ISA's lanes:
//   using Acc;  kStep (bytes per step);  static Acc zero();
//   static Acc step(Acc acc, const uint8_t* a, const int8_t* w);  acc + the u8 x s8 products of kStep bytes;
//   static int64_t wide_sum(Acc acc);  the lanes' sum in int64.
// out[r] = sum_k a[k] * w[r * Kp + k] for r < 4.
template <class Dot>
void dot4(const uint8_t* a, const int8_t* w, int64_t Kp, int64_t out[4]) {
    for (int r = 0; r < 4; ++r) out[r] = 0;
    for (int64_t c0 = 0; c0 < Kp; c0 += kChunkSteps * Dot::kStep) {
        const int64_t c1 = (Kp < c0 + kChunkSteps * Dot::kStep ? Kp : c0 + kChunkSteps * Dot::kStep);
        typename Dot::Acc s0 = Dot::zero(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t k = c0; k < c1; k += Dot::kStep) {
            s0 = Dot::step(s0, a + k, w + k);
            s1 = Dot::step(s1, a + k, w + Kp + k);
            s2 = Dot::step(s2, a + k, w + 2 * Kp + k);
            s3 = Dot::step(s3, a + k, w + 3 * Kp + k);
        }
        out[0] += Dot::wide_sum(s0);
        out[1] += Dot::wide_sum(s1);
        out[2] += Dot::wide_sum(s2);
        out[3] += Dot::wide_sum(s3);
    }
}

template <class Dot>
int64_t dot1(const uint8_t* a, const int8_t* w, int64_t Kp) {
    int64_t total = 0;
    for (int64_t c0 = 0; c0 < Kp; c0 += kChunkSteps * Dot::kStep) {
        const int64_t c1 = (Kp < c0 + kChunkSteps * Dot::kStep ? Kp : c0 + kChunkSteps * Dot::kStep);
        typename Dot::Acc s = Dot::zero();
        for (int64_t k = c0; k < c1; k += Dot::kStep) s = Dot::step(s, a + k, w + k);
        total += Dot::wide_sum(s);
    }
    return total;
}

// acc[i * N + j] as IntKernels::matmul_acc defines it, for operands where applies() holds, with Dot's
// byte dots (above).
template <class Dot>
void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    constexpr int64_t kBlockRows = 64;  // weight rows converted to bytes at a time
    const int64_t Kp = (K + Dot::kStep - 1) / Dot::kStep * Dot::kStep;
    const int pa = a.type == CodeType::U16 ? 2 : 1;
    Buffer<uint8_t> ap((size_t)(M * pa * Kp));
    Buffer<int8_t> wb((size_t)(kBlockRows * Kp));
    Buffer<int64_t> a_sum((size_t)M), b_sum((size_t)kBlockRows);
    for (int64_t i = 0; i < M; ++i) a_sum[(size_t)i] = activation_planes(a, i, K, Kp, &ap[(size_t)(i * pa * Kp)]);
    for (int64_t j0 = 0; j0 < N; j0 += kBlockRows) {
        const int64_t nb = (N - j0 < kBlockRows ? N - j0 : kBlockRows);
        for (int64_t r = 0; r < nb; ++r) b_sum[(size_t)r] = weight_bytes(b, j0 + r, K, Kp, &wb[(size_t)(r * Kp)]);
        for (int64_t i = 0; i < M; ++i) {
            int64_t* out = acc + i * N + j0;
            for (int64_t r = 0; r < nb; ++r) out[r] = 0;
            for (int p = 0; p < pa; ++p) {
                const uint8_t* av = &ap[(size_t)((i * pa + p) * Kp)];
                const int64_t scale = (int64_t)1 << (8 * p);
                int64_t r = 0;
                for (; r + 4 <= nb; r += 4) {
                    int64_t part[4];
                    dot4<Dot>(av, &wb[(size_t)(r * Kp)], Kp, part);
                    for (int t = 0; t < 4; ++t) out[r + t] += part[t] * scale;
                }
                for (; r < nb; ++r) out[r] += dot1<Dot>(av, &wb[(size_t)(r * Kp)], Kp) * scale;
            }
            for (int64_t r = 0; r < nb; ++r)
                out[r] += -b.zero_point * a_sum[(size_t)i] - a.zero_point * b_sum[(size_t)r] +
                          K * a.zero_point * b.zero_point;
        }
    }
}

}  // namespace
}  // namespace int_bytes
}  // namespace edge_rt
