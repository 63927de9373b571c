// AVX2-level helpers shared by the x86 kernel files (kernels_avx2.cpp, kernels_avx512vnni.cpp).
//
// Include ONLY from a translation unit compiled with at least -mavx2 -mfma -mf16c. Everything here has
// internal linkage (anonymous namespace), so each kernel file gets its own copy compiled with its own
// ISA flags: an AVX-512 build of a helper can never be linked into the AVX2 path (which a shared inline
// function with external linkage would allow, the linker keeping whichever copy it sees first).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "edge_rt/fp16.h"
#include "edge_rt/ggml_types.h"

namespace edge_rt {
namespace {

#define ERT_INLINE inline __attribute__((always_inline))

ERT_INLINE float h2f(fp16_t h) { return _cvtsh_ss(h); }

ERT_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ERT_INLINE int hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// sum of signed x signed int8 in groups of 4 -> 8 x int32 (inputs in [-127, 127]).
ERT_INLINE __m256i dot_i8(__m256i x, __m256i y) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// unsigned x signed int8 in groups of 4 -> 8 x int32 (unsigned side <= 63 so int16 pairs never saturate).
ERT_INLINE __m256i dot_u8i8(__m256i u, __m256i y) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
}

// 32 nibbles of a 16-byte run: low nibbles -> bytes 0..15, high nibbles -> bytes 16..31.
ERT_INLINE __m256i unpack_nibbles(const uint8_t* p) {
    const __m128i t = _mm_loadu_si128((const __m128i*)p);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// Bit j of the 32-bit little-endian word at p -> 0xFF in byte j (else 0x00).
ERT_INLINE __m256i bits_to_bytes(const uint8_t* p) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    const __m256i shuf =
        _mm256_setr_epi64x(0x0000000000000000LL, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

ERT_INLINE const uint8_t* act_row(const void* a, size_t stride, int r) {
    return static_cast<const uint8_t*>(a) + (size_t)r * stride;
}

// Runs block(b, acc) over all blocks with one float accumulator per activation row, whatever NA: ggml's
// AVX2 vec_dot and tinyBLAS sum the blocks of a row into one accumulator in order, and splitting it
// (as an unrolled single-row loop did, for FMA latency) changes the rounding of decode steps and of
// prompts whose last group of 8 rows has 1 or 2 rows.
template <int NA, class Block>
ERT_INLINE void run_blocks(int64_t nb, const Block& block, float* out) {
    constexpr int U = 1;
    __m256 acc[U][NA];
    for (int u = 0; u < U; ++u)
        for (int r = 0; r < NA; ++r) acc[u][r] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + U <= nb; b += U)
        for (int u = 0; u < U; ++u) block(b + u, acc[u]);
    for (; b < nb; ++b) block(b, acc[0]);
    for (int r = 0; r < NA; ++r) {
        __m256 s = acc[0][r];
        for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[u][r]);
        out[r] = hsum8(s);
    }
}

// Splits n_act activation rows into runs of at most 8 and calls run(std::integral_constant<int, k>, j) for the
// run of k rows starting at row j: the kernels are templated on their row count.
template <class Run>
ERT_INLINE void act_runs(int n_act, Run&& run) {
    for (int j = 0; j < n_act;) {
        const int k = n_act - j < 8 ? n_act - j : 8;
        switch (k) {
            case 1: run(std::integral_constant<int, 1>{}, j); break;
            case 2: run(std::integral_constant<int, 2>{}, j); break;
            case 3: run(std::integral_constant<int, 3>{}, j); break;
            case 4: run(std::integral_constant<int, 4>{}, j); break;
            case 5: run(std::integral_constant<int, 5>{}, j); break;
            case 6: run(std::integral_constant<int, 6>{}, j); break;
            case 7: run(std::integral_constant<int, 7>{}, j); break;
            default: run(std::integral_constant<int, 8>{}, j); break;
        }
        j += k;
    }
}

// Widen a run of 1..8 activation rows into calls of the NA-templated body.
#define ERT_DEFINE_DOTS(NAME)                                                                                          \
    [[maybe_unused]] float NAME##_dot(int64_t n, const void* w, const void* a) {                                       \
        float o;                                                                                                       \
        NAME##_rows<1>(n, w, a, 0, &o);                                                                                \
        return o;                                                                                                      \
    }                                                                                                                  \
    void NAME##_dot_rows(int64_t n, const void* w, const void* a, size_t st, int na, float* out) {                     \
        const uint8_t* ap = static_cast<const uint8_t*>(a);                                                            \
        act_runs(na, [&](auto k, int j) { NAME##_rows<decltype(k)::value>(n, w, ap + (size_t)j * st, st, out + j); }); \
    }

// Weight decoders: one 32-element block -> 32 int8 in element order.
struct DecQ8_0 {  // signed
    using Block = BlockQ8_0;
    static ERT_INLINE __m256i q(const Block& x) { return _mm256_loadu_si256((const __m256i*)x.qs); }
};
struct DecQ4_0 {  // signed, q - 8
    using Block = BlockQ4_0;
    static ERT_INLINE __m256i q(const Block& x) { return _mm256_sub_epi8(unpack_nibbles(x.qs), _mm256_set1_epi8(8)); }
};
struct DecQ5_0 {  // signed, q - 16
    using Block = BlockQ5_0;
    static ERT_INLINE __m256i q(const Block& x) {
        const __m256i hb = _mm256_and_si256(bits_to_bytes(x.qh), _mm256_set1_epi8(0x10));
        return _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(x.qs), hb), _mm256_set1_epi8(16));
    }
};
struct DecQ4_1 {  // unsigned 0..15
    using Block = BlockQ4_1;
    static ERT_INLINE __m256i q(const Block& x) { return unpack_nibbles(x.qs); }
};
struct DecQ5_1 {  // unsigned 0..31
    using Block = BlockQ5_1;
    static ERT_INLINE __m256i q(const Block& x) {
        return _mm256_or_si256(unpack_nibbles(x.qs), _mm256_and_si256(bits_to_bytes(x.qh), _mm256_set1_epi8(0x10)));
    }
};

// Signed weights x Q8_0: sum_b dx*dy * sum_i qx*qy. Dot is the ISA's integer dot product policy:
// Dot::i8(|x|, sign(y, x)) and Dot::u8i8(u, y) return 8 x int32 partial sums of groups of 4 products.
template <int NA, class D, class Dot>
ERT_INLINE void rows_q8_0_act(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const typename D::Block*>(w);
    const BlockQ8_0* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
    auto block = [&](int64_t b, __m256* acc) {
        const __m256i qx = D::q(x[b]);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        const float dx = h2f(x[b].d);
        for (int r = 0; r < NA; ++r) {
            const __m256i qy = _mm256_loadu_si256((const __m256i*)y[r][b].qs);
            const __m256i p = Dot::u8i8(ax, _mm256_sign_epi8(qy, qx));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dx * h2f(y[r][b].d)), acc[r]);
        }
    };
    run_blocks<NA>(n / QK8_0, block, out);
}

// rows_q8_0_act with the activation block scales given in fp32 (WeightKernels::vec_dot_rows_scaled):
// dx * dy is the same float product, taken in all 8 lanes by one multiply.
template <int NA, class D, class Dot>
ERT_INLINE void rows_q8_0_act_scaled(int64_t n, const void* w, const void* a, size_t stride, const float* scales,
                                     size_t scale_stride, float* out) {
    const auto* x = static_cast<const typename D::Block*>(w);
    const BlockQ8_0* y[NA];
    const float* dy[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        dy[r] = scales + (size_t)r * scale_stride;
    }
    auto block = [&](int64_t b, __m256* acc) {
        const __m256i qx = D::q(x[b]);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        const __m256 dx = _mm256_set1_ps(h2f(x[b].d));
        for (int r = 0; r < NA; ++r) {
            const __m256i qy = _mm256_loadu_si256((const __m256i*)y[r][b].qs);
            const __m256i p = Dot::u8i8(ax, _mm256_sign_epi8(qy, qx));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dx, _mm256_broadcast_ss(&dy[r][b])), acc[r]);
        }
    };
    run_blocks<NA>(n / QK8_0, block, out);
}

// vec_dot_rows_scaled over runs of up to 8 activation rows.
#define ERT_DEFINE_SCALED_DOTS(NAME, DEC, DOT)                                                                      \
    void NAME##_dot_rows_scaled(int64_t n, const void* w, const void* a, size_t st, const float* sc, size_t sst,    \
                                int na, float* out) {                                                               \
        const uint8_t* ap = static_cast<const uint8_t*>(a);                                                         \
        act_runs(na, [&](auto k, int j) {                                                                           \
            rows_q8_0_act_scaled<decltype(k)::value, DEC, DOT>(n, w, ap + (size_t)j * st, st, sc + (size_t)j * sst, \
                                                               sst, out + j);                                       \
        });                                                                                                         \
    }

// Unsigned weights with min x Q8_1: sum_b dx*dy * sum_i qx*qy + mx * sy.
template <int NA, class D, class Dot>
ERT_INLINE void rows_q8_1_act(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const typename D::Block*>(w);
    const BlockQ8_1* y[NA];
    float ms[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_1*>(act_row(a, stride, r));
        ms[r] = 0.f;
    }
    auto block = [&](int64_t b, __m256* acc) {
        const __m256i qx = D::q(x[b]);
        const float dx = h2f(x[b].d), mx = h2f(x[b].m);
        for (int r = 0; r < NA; ++r) {
            const __m256i qy = _mm256_loadu_si256((const __m256i*)y[r][b].qs);
            const __m256i p = Dot::u8i8(qx, qy);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dx * h2f(y[r][b].d)), acc[r]);
            ms[r] += mx * h2f(y[r][b].s);
        }
    };
    run_blocks<NA>(n / QK8_1, block, out);
    for (int r = 0; r < NA; ++r) out[r] += ms[r];
}

// ---- K-quant scale unpacking (both x86 kernel files)

// Unpacks the 12 packed bytes of a Q4_K super-block into sc[0..7] (bytes 0..7) and m[0..7] (8..15).
ERT_INLINE void q4k_unpack_scales(const uint8_t* s12, uint32_t out[4]) {
    uint32_t u[3];
    std::memcpy(u, s12, 12);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    out[0] = u[0] & m6;                                       // sc[0..3]
    out[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);         // sc[4..7]
    out[2] = u[1] & m6;                                       // m[0..3]
    out[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);  // m[4..7]
}

// One Q3_K or Q6_K super-block decoded for vpmaddubsw: q[c] holds chunk c's 32 codes (elements
// 32c..32c+31) as unsigned bytes, value + bias; scv[c] the scales of groups 2c (low 128 bits) and 2c + 1
// (high 128 bits) as int16; sc16 the 16 scales as int16.
struct Groups16 {
    __m256i q[8], scv[8], sc16;
};

// Q6_K: q in 0..63 (value + 32), 16 int8 scales.
ERT_INLINE void decode_q6_K(const BlockQ6_K& xb, Groups16& g) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i*)(xb.ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i*)(xb.ql + 64 * h + 32));
        const __m256i hb = _mm256_loadu_si256((const __m256i*)(xb.qh + 32 * h));
        g.q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x03)), 4));
        g.q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x0C)), 2));
        g.q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
        g.q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8((char)0xC0)), 2));
    }
    for (int c = 0; c < 8; ++c)
        g.scv[c] = _mm256_set_m128i(_mm_set1_epi16(xb.scales[2 * c + 1]), _mm_set1_epi16(xb.scales[2 * c]));
    g.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)xb.scales));
}

// The scales and mins of 64-element chunk k of an interleaved Q4_K x8 super-block (interleave.cpp's
// layout), for the gemm_x8 kernels of both x86 files.
struct Q4KChunkScales {
    __m256i sc_lo, sc_hi, mins;  // lane c: (sc[2k], sc[2k]), (sc[2k+1], sc[2k+1]), (m[2k], m[2k+1]) as i16
};

ERT_INLINE void q4_K_x8_scales(const uint8_t* g, Q4KChunkScales* out) {
    const __m128i low4 = _mm_set1_epi8(0x0F), low2 = _mm_set1_epi8(0x03);
    for (int k = 0; k < 4; ++k) {
        const __m128i l0 = _mm_loadl_epi64((const __m128i*)(g + 32 + 16 * k));      // low4[2k][c]
        const __m128i l1 = _mm_loadl_epi64((const __m128i*)(g + 32 + 16 * k + 8));  // low4[2k+1][c]
        const __m128i h = _mm_loadl_epi64((const __m128i*)(g + 96 + 8 * k));        // high2[k][c]
        const __m128i sc0 = _mm_or_si128(_mm_and_si128(l0, low4), _mm_slli_epi16(_mm_and_si128(h, low2), 4));
        const __m128i m0 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l0, 4), low4),
                                        _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 2), low2), 4));
        const __m128i sc1 =
            _mm_or_si128(_mm_and_si128(l1, low4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 4), low2), 4));
        const __m128i m1 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l1, 4), low4),
                                        _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 6), low2), 4));
        const __m256i s0 = _mm256_cvtepu8_epi32(sc0), s1 = _mm256_cvtepu8_epi32(sc1);
        out[k].sc_lo = _mm256_or_si256(s0, _mm256_slli_epi32(s0, 16));
        out[k].sc_hi = _mm256_or_si256(s1, _mm256_slli_epi32(s1, 16));
        out[k].mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m0, m1));
    }
}

// Unpacks the 12 packed bytes of a Q3_K super-block into its 16 signed scales s[j] - 32 (int8). Built in
// registers (vpinsrd) rather than through a stack array: a 16-byte load of four fresh 4-byte stores
// cannot be store-forwarded and stalls every super-block.
ERT_INLINE __m128i q3k_unpack_scales(const uint8_t* s12) {
    uint32_t u0, u1, u2;
    std::memcpy(&u0, s12, 4);
    std::memcpy(&u1, s12 + 4, 4);
    std::memcpy(&u2, s12 + 8, 4);
    const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const __m128i v = _mm_setr_epi32((int)((u0 & m4) | ((u2 & m2) << 4)),                 // s[0..3]
                                     (int)((u1 & m4) | (((u2 >> 2) & m2) << 4)),          // s[4..7]
                                     (int)(((u0 >> 4) & m4) | (((u2 >> 4) & m2) << 4)),   // s[8..11]
                                     (int)(((u1 >> 4) & m4) | (((u2 >> 6) & m2) << 4)));  // s[12..15]
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

}  // namespace
}  // namespace edge_rt
