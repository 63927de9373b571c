// AVX2 integer kernels (IntKernels, edge_rt/int_kernels.h); compiled with -mavx2 only, run after
// cpu_features decided the CPU has it. Reference twin: int_kernels_scalar.cpp. Every entry computes the
// same exact integers as its twin:
//  * matmul_acc splits 16-bit codes into two byte planes, so every product is int16 x int16 (madd_epi16),
//    summed in int32 lanes over chunks short enough never to overflow and then in int64; zero points are
//    applied afterwards from the rows' code sums;
//  * the requantizing entries work on int64 lanes: 64 x 32-bit products from two mul_epu32 (exact modulo
//    2^64, and the true values stay below 2^62), and the arithmetic right shift AVX2 lacks as
//    srl(x ^ sign, s) ^ sign.
// lut has no AVX2 entry (a byte/halfword table lookup has no AVX2 gather): the scalar one runs.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "edge_rt/int_kernels.h"
#include "int_code_planes.h"

namespace edge_rt {

namespace {

#define ERT_INLINE inline __attribute__((always_inline))

constexpr int64_t kChunk = 8192 * 16;  // per-lane int32 sum: 8192 steps x <= 2 * 255 * 255 < 2^31

const IntKernels& scalar() { return *scalar_int_kernels(); }

ERT_INLINE int64_t hsum_epi32_wide(__m256i v) {
    const __m256i w = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)),
                                       _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
    alignas(32) int64_t l[4];
    _mm256_store_si256((__m256i*)l, w);
    return l[0] + l[1] + l[2] + l[3];
}

// Plane dots (int_code_planes.h): 16 int16 codes per madd_epi16 step.
struct MaddDot {
    static constexpr int64_t kStep = 16;
    static void dot4(const int16_t* a, const int16_t* b, int64_t b_stride, int64_t Kp, int64_t out[4]) {
        for (int64_t c0 = 0; c0 < Kp; c0 += kChunk) {
            const int64_t c1 = std::min(Kp, c0 + kChunk);
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
            for (int64_t k = c0; k < c1; k += kStep) {
                const __m256i va = _mm256_loadu_si256((const __m256i*)(a + k));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(va, _mm256_loadu_si256((const __m256i*)(b + k))));
                s1 =
                    _mm256_add_epi32(s1, _mm256_madd_epi16(va, _mm256_loadu_si256((const __m256i*)(b + b_stride + k))));
                s2 = _mm256_add_epi32(
                    s2, _mm256_madd_epi16(va, _mm256_loadu_si256((const __m256i*)(b + 2 * b_stride + k))));
                s3 = _mm256_add_epi32(
                    s3, _mm256_madd_epi16(va, _mm256_loadu_si256((const __m256i*)(b + 3 * b_stride + k))));
            }
            out[0] += hsum_epi32_wide(s0);
            out[1] += hsum_epi32_wide(s1);
            out[2] += hsum_epi32_wide(s2);
            out[3] += hsum_epi32_wide(s3);
        }
    }
    static int64_t dot(const int16_t* a, const int16_t* b, int64_t Kp) {
        int64_t total = 0;
        for (int64_t c0 = 0; c0 < Kp; c0 += kChunk) {
            const int64_t c1 = std::min(Kp, c0 + kChunk);
            __m256i s = _mm256_setzero_si256();
            for (int64_t k = c0; k < c1; k += kStep)
                s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(a + k)),
                                                          _mm256_loadu_si256((const __m256i*)(b + k))));
            total += hsum_epi32_wide(s);
        }
        return total;
    }
};

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    int_planes::matmul_acc<MaddDot>(a, b, M, N, K, acc);
}

// ---------------------------------------------------------------- int64-lane requantization helpers

// x * m exactly for |x * m| < 2^63, 0 <= m < 2^32 (two unsigned 32 x 32 products, exact modulo 2^64).
ERT_INLINE __m256i mul_i64_u32(__m256i x, __m256i m) {
    const __m256i lo = _mm256_mul_epu32(x, m);
    const __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
    return _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
}

// round_shift per lane: floor((x + 2^(s-1)) / 2^s), 1 <= s <= 63.
ERT_INLINE __m256i round_shift4(__m256i x, __m256i s) {
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i t = _mm256_add_epi64(x, _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one)));
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), t);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(t, sign), s), sign);
}

// clamp(z + v, 0, 2^bits - 1) of 4 lanes stored as 4 codes.
ERT_INLINE void store4(__m256i v, __m256i z, int bits, void* y, int64_t i) {
    const __m256i hi = _mm256_set1_epi64x(((int64_t)1 << bits) - 1);
    v = _mm256_add_epi64(v, z);
    v = _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), v), v);
    v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    const __m128i d = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    const __m128i w = _mm_packus_epi32(d, d);  // 4 x uint16 in the low 64 bits
    if (bits == 16) {
        _mm_storel_epi64((__m128i*)(static_cast<uint16_t*>(y) + i), w);
    } else {
        const int32_t b4 = _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
        std::memcpy(static_cast<uint8_t*>(y) + i, &b4, 4);
    }
}

// 4 codes from element i as int64 lanes.
ERT_INLINE __m256i load4(const void* p, int bits, int64_t i) {
    if (bits == 16)
        return _mm256_cvtepu16_epi64(_mm_loadl_epi64((const __m128i*)(static_cast<const uint16_t*>(p) + i)));
    int32_t b4;
    std::memcpy(&b4, static_cast<const uint8_t*>(p) + i, 4);
    return _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(b4));
}

inline const void* at(const void* p, int bits, int64_t i) { return static_cast<const uint8_t*>(p) + i * (bits / 8); }
inline void* at(void* p, int bits, int64_t i) { return static_cast<uint8_t*>(p) + i * (bits / 8); }

void requant_rows(const int64_t* x, int64_t rows, int64_t N, const int64_t* m, const int32_t* s, int64_t z, int bits,
                  void* y) {
    const __m256i vz = _mm256_set1_epi64x(z);
    const int64_t n4 = N / 4 * 4;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < n4; j += 4) {
            const __m256i vm = _mm256_loadu_si256((const __m256i*)(m + j));
            const __m256i vs = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i*)(s + j)));
            const __m256i vx = _mm256_loadu_si256((const __m256i*)(x + i * N + j));
            store4(round_shift4(mul_i64_u32(vx, vm), vs), vz, bits, y, i * N + j);
        }
        if (n4 < N) scalar().requant_rows(x + i * N + n4, 1, N - n4, m + n4, s + n4, z, bits, at(y, bits, i * N + n4));
    }
}

void add(const void* a, int a_bits, int64_t z_a, int64_t m_a, const void* b, int b_bits, int64_t z_b, int64_t m_b,
         int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    const __m256i za = _mm256_set1_epi64x(z_a), zb = _mm256_set1_epi64x(z_b), zy = _mm256_set1_epi64x(z_y);
    const __m256i ma = _mm256_set1_epi64x(m_a), vs = _mm256_set1_epi64x(s);
    const __m256i mb_lo = _mm256_set1_epi64x(m_b & 0xFFFFFFFF), mb_hi = _mm256_set1_epi64x(m_b >> 32);
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4) {
        const __m256i da = _mm256_sub_epi64(load4(a, a_bits, i), za);
        const __m256i db = _mm256_sub_epi64(load4(b, b_bits, i), zb);
        const __m256i tb = _mm256_add_epi64(mul_i64_u32(db, mb_lo), _mm256_slli_epi64(mul_i64_u32(db, mb_hi), 32));
        store4(round_shift4(_mm256_add_epi64(mul_i64_u32(da, ma), tb), vs), zy, y_bits, y, i);
    }
    if (n4 < n)
        scalar().add(at(a, a_bits, n4), a_bits, z_a, m_a, at(b, b_bits, n4), b_bits, z_b, m_b, s, z_y, y_bits,
                     at(y, y_bits, n4), n - n4);
}

void mul(const void* a, int a_bits, int64_t z_a, const void* b, int b_bits, int64_t z_b, int64_t m, int s, int64_t z_y,
         int y_bits, void* y, int64_t n) {
    const __m256i za = _mm256_set1_epi64x(z_a), zb = _mm256_set1_epi64x(z_b), zy = _mm256_set1_epi64x(z_y);
    const __m256i vm = _mm256_set1_epi64x(m), vs = _mm256_set1_epi64x(s);
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4) {
        const __m256i da = _mm256_sub_epi64(load4(a, a_bits, i), za);
        const __m256i db = _mm256_sub_epi64(load4(b, b_bits, i), zb);
        store4(round_shift4(mul_i64_u32(_mm256_mul_epi32(da, db), vm), vs), zy, y_bits, y, i);
    }
    if (n4 < n)
        scalar().mul(at(a, a_bits, n4), a_bits, z_a, at(b, b_bits, n4), b_bits, z_b, m, s, z_y, y_bits,
                     at(y, y_bits, n4), n - n4);
}

void requantize(const void* a, int a_bits, int64_t z_a, int64_t m, int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    const __m256i za = _mm256_set1_epi64x(z_a), zy = _mm256_set1_epi64x(z_y);
    const __m256i vm = _mm256_set1_epi64x(m), vs = _mm256_set1_epi64x(s);
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4)
        store4(round_shift4(mul_i64_u32(_mm256_sub_epi64(load4(a, a_bits, i), za), vm), vs), zy, y_bits, y, i);
    if (n4 < n) scalar().requantize(at(a, a_bits, n4), a_bits, z_a, m, s, z_y, y_bits, at(y, y_bits, n4), n - n4);
}

int64_t sum_squares(const void* a, int a_bits, int64_t z, int64_t n) {
    const __m256i vz = _mm256_set1_epi64x(z);
    __m256i acc = _mm256_setzero_si256();
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4) {
        const __m256i d = _mm256_sub_epi64(load4(a, a_bits, i), vz);
        acc = _mm256_add_epi64(acc, _mm256_mul_epi32(d, d));
    }
    alignas(32) int64_t l[4];
    _mm256_store_si256((__m256i*)l, acc);
    int64_t total = l[0] + l[1] + l[2] + l[3];
    if (n4 < n) total += scalar().sum_squares(at(a, a_bits, n4), a_bits, z, n - n4);
    return total;
}

void scaled_product(const void* a, int a_bits, int64_t z_a, const uint16_t* g, int64_t z_g, int64_t mu, int S,
                    int64_t z_y, int y_bits, void* y, int64_t n) {
    const __m256i za = _mm256_set1_epi64x(z_a), zg = _mm256_set1_epi64x(z_g), zy = _mm256_set1_epi64x(z_y);
    const __m256i vm = _mm256_set1_epi64x(mu), vs = _mm256_set1_epi64x(S);
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4) {
        const __m256i da = _mm256_sub_epi64(load4(a, a_bits, i), za);
        const __m256i dg = _mm256_sub_epi64(load4(g, 16, i), zg);
        store4(round_shift4(mul_i64_u32(_mm256_mul_epi32(da, dg), vm), vs), zy, y_bits, y, i);
    }
    if (n4 < n)
        scalar().scaled_product(at(a, a_bits, n4), a_bits, z_a, g + n4, z_g, mu, S, z_y, y_bits, at(y, y_bits, n4),
                                n - n4);
}

int64_t exp_row(const void* a, int a_bits, const uint32_t* table, int64_t n, int64_t* e) {
    const int64_t n8 = n / 8 * 8;
    int64_t mx = 0;
    {
        __m256i vmax = _mm256_setzero_si256();
        for (int64_t i = 0; i < n8; i += 8) {
            const __m128i raw = a_bits == 16 ? _mm_loadu_si128((const __m128i*)(static_cast<const uint16_t*>(a) + i))
                                             : _mm_loadl_epi64((const __m128i*)(static_cast<const uint8_t*>(a) + i));
            vmax = _mm256_max_epi32(vmax, a_bits == 16 ? _mm256_cvtepu16_epi32(raw) : _mm256_cvtepu8_epi32(raw));
        }
        alignas(32) int32_t l[8];
        _mm256_store_si256((__m256i*)l, vmax);
        for (int t = 0; t < 8; ++t) mx = std::max(mx, (int64_t)l[t]);
        for (int64_t i = n8; i < n; ++i)
            mx = std::max(mx, a_bits == 16 ? (int64_t)static_cast<const uint16_t*>(a)[i]
                                           : (int64_t)static_cast<const uint8_t*>(a)[i]);
    }
    const __m256i vmx = _mm256_set1_epi32((int32_t)mx);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t i = 0; i < n8; i += 8) {
        const __m128i raw = a_bits == 16 ? _mm_loadu_si128((const __m128i*)(static_cast<const uint16_t*>(a) + i))
                                         : _mm_loadl_epi64((const __m128i*)(static_cast<const uint8_t*>(a) + i));
        const __m256i idx =
            _mm256_sub_epi32(vmx, a_bits == 16 ? _mm256_cvtepu16_epi32(raw) : _mm256_cvtepu8_epi32(raw));
        const __m256i v = _mm256_i32gather_epi32((const int*)table, idx, 4);  // entries <= 2^30
        const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
        const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
        _mm256_storeu_si256((__m256i*)(e + i), lo);
        _mm256_storeu_si256((__m256i*)(e + i + 4), hi);
        sum = _mm256_add_epi64(sum, _mm256_add_epi64(lo, hi));
    }
    alignas(32) int64_t l[4];
    _mm256_store_si256((__m256i*)l, sum);
    int64_t total = l[0] + l[1] + l[2] + l[3];
    for (int64_t i = n8; i < n; ++i) {
        e[i] = table[mx - (a_bits == 16 ? (int64_t)static_cast<const uint16_t*>(a)[i]
                                        : (int64_t)static_cast<const uint8_t*>(a)[i])];
        total += e[i];
    }
    return total;
}

const IntKernels kAvx2 = {matmul_acc,  requant_rows,   add,     mul,    requantize,
                          sum_squares, scaled_product, exp_row, nullptr};

}  // namespace

const IntKernels* avx2_int_kernels() noexcept { return &kAvx2; }

}  // namespace edge_rt
