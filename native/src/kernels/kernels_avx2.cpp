// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c only; reached through
// avx2_weight_kernels() after cpu_features decided the CPU runs them. Reference twin: kernels_scalar.cpp.
//
// Integer dot products use the sign trick for signed x signed int8 (|x| * sign(y, x) through
// vpmaddubsw), so block sums stay exact integers. The 32-element block formats are their scalar twins'
// bits (the twins emulate these lanes); the K-quant and float kernels differ from theirs only in the
// order in which per-block float terms are added.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"
#include "x86_simd_common.h"

namespace edge_rt {

namespace {

// AVX2 integer dot: vpmaddubsw (u8 x i8 -> i16 pairs, operands small enough not to saturate) + vpmaddwd.
struct DotAvx2 {
    static ERT_INLINE __m256i u8i8(__m256i u, __m256i y) { return dot_u8i8(u, y); }
};

template <int NA>
void q8_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ8_0, DotAvx2>(n, w, a, s, o);
}
template <int NA>
void q4_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ4_0, DotAvx2>(n, w, a, s, o);
}
template <int NA>
void q5_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ5_0, DotAvx2>(n, w, a, s, o);
}
template <int NA>
void q4_1_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_1_act<NA, DecQ4_1, DotAvx2>(n, w, a, s, o);
}
template <int NA>
void q5_1_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_1_act<NA, DecQ5_1, DotAvx2>(n, w, a, s, o);
}
ERT_DEFINE_DOTS(q8_0)
ERT_DEFINE_DOTS(q4_0)
ERT_DEFINE_DOTS(q5_0)
ERT_DEFINE_DOTS(q4_1)
ERT_DEFINE_DOTS(q5_1)
ERT_DEFINE_SCALED_DOTS(q8_0, DecQ8_0, DotAvx2)
ERT_DEFINE_SCALED_DOTS(q4_0, DecQ4_0, DotAvx2)
ERT_DEFINE_SCALED_DOTS(q5_0, DecQ5_0, DotAvx2)

// ------------------------------------------------------------------ K-quants against Q8_K

// vpshufb control that fills the low 128 bits with int16 word lo and the high 128 bits with word hi
// (word indices within each 128-bit half, 0..7).
ERT_INLINE __m256i word_pair_shuffle(int lo, int hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)(((2 * hi + 1) << 8) | (2 * hi))),
                            _mm_set1_epi16((short)(((2 * lo + 1) << 8) | (2 * lo))));
}

// Q3_K: chunk c = 4h + t holds q + 4 in 0..7 (bits 2t..2t+1 of qs[32h + l], bit 4h + t of hmask[l] as
// bit 2); scales s - 32, chunk c takes s[2c] and s[2c+1] (one vpshufb each).
ERT_INLINE void decode_q3_K(const BlockQ3_K& xb, Groups16& g) {
    g.sc16 = _mm256_cvtepi8_epi16(q3k_unpack_scales(xb.scales));
    const __m256i sc_lo = _mm256_permute2x128_si256(g.sc16, g.sc16, 0x00);  // s[0..7] in both halves
    const __m256i sc_hi = _mm256_permute2x128_si256(g.sc16, g.sc16, 0x11);  // s[8..15] in both halves
    const __m256i m3 = _mm256_set1_epi8(0x03), four = _mm256_set1_epi8(0x04);
    const __m256i hm = _mm256_loadu_si256((const __m256i*)xb.hmask);
    for (int h = 0; h < 2; ++h) {
        const __m256i raw = _mm256_loadu_si256((const __m256i*)(xb.qs + 32 * h));
        for (int t = 0; t < 4; ++t) {
            const int k = 4 * h + t;  // hmask bit of this chunk, moved to bit 2 (16-bit shifts: bits
                                      // crossing from the neighbouring byte are masked off per byte)
            const __m256i hb = k >= 2 ? _mm256_srli_epi16(hm, k - 2) : _mm256_slli_epi16(hm, 2 - k);
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * t), m3);
            g.q[k] = _mm256_or_si256(lo, _mm256_and_si256(hb, four));
        }
    }
    for (int c = 0; c < 8; ++c)
        g.scv[c] = _mm256_shuffle_epi8(c < 4 ? sc_lo : sc_hi, word_pair_shuffle((2 * c) & 7, (2 * c + 1) & 7));
}

// sum_g s[g] * dot_g(q - bias, qy) over a decoded super-block, bias = 1 << Shift, in 8 int32 lanes (exact):
// the bias is removed once through the bsums, - bias * sum_g s[g] * bsum[g].
template <int Shift>
ERT_INLINE __m256i isum_groups16(const Groups16& g, const BlockQ8_K& yb) {
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
        const __m256i qy = _mm256_loadu_si256((const __m256i*)(yb.qs + 32 * c));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(g.q[c], qy), g.scv[c]));
    }
    const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)yb.bsums), g.sc16);
    return _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, Shift));
}

// Q3_K as ggml's AVX2 vec_dot sums it: the bias taken off each element (code & 3 minus 4 where the high bit is
// clear, two vpmaddubsw subtracted in int16), so every lane holds its own 4 elements' exact products; the
// bsums correction above would move the same total between lanes and round differently in float.
ERT_INLINE __m256i isum_q3_K(const Groups16& g, const BlockQ8_K& yb) {
    const __m256i m3 = _mm256_set1_epi8(0x03), four = _mm256_set1_epi8(0x04);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
        const __m256i qy = _mm256_loadu_si256((const __m256i*)(yb.qs + 32 * c));
        const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(g.q[c], m3), qy);
        const __m256i hi = _mm256_maddubs_epi16(_mm256_andnot_si256(g.q[c], four), qy);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_sub_epi16(lo, hi), g.scv[c]));
    }
    return sumi;
}

template <int NA, class Block, int Shift, class Decode>
ERT_INLINE void rows_groups16(int64_t n, const void* w, const void* a, size_t stride, float* out,
                              const Decode& decode) {
    const auto* x = static_cast<const Block*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    auto block = [&](int64_t b, __m256* acc) {
        Groups16 g;
        decode(x[b], g);
        const float d = h2f(x[b].d);
        for (int r = 0; r < NA; ++r) {
            __m256i sumi;
            if constexpr (std::is_same_v<Block, BlockQ3_K>)
                sumi = isum_q3_K(g, y[r][b]);
            else
                sumi = isum_groups16<Shift>(g, y[r][b]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d * y[r][b].d), acc[r]);
        }
    };
    run_blocks<NA>(n / QK_K, block, out);
}

template <int NA>
void q3_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_groups16<NA, BlockQ3_K, 2>(n, w, a, stride, out, decode_q3_K);
}
ERT_DEFINE_DOTS(q3_K)

// Q4_K and Q5_K, per super-block: d*dy*sum_j sc[j]*(q_j . qy_j) - dmin*dy*sum_j m[j]*(bsum pairs).
// They differ only in how the weights decode: decode(xb, q) fills q[j] with sub-block j's 32 unsigned
// values (Q4_K 0..15, Q5_K 0..31: vpmaddubsw pairs stay below 2 * 31 * 127, no saturation).
ERT_INLINE void decode_q4_K(const BlockQ4_K& xb, __m256i* q) {
    for (int k = 0; k < 4; ++k) {
        const __m256i raw = _mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k));
        q[2 * k] = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
        q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
    }
}

// Q5_K: Q4_K with a fifth bit per element: sub-block j takes bit j of each qh byte as bit 4.
ERT_INLINE void decode_q5_K(const BlockQ5_K& xb, __m256i* q) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    // hb shifted right by j in 16-bit lanes, then left by 4: bit j of every byte lands on bit 4 of
    // the same byte (the bits crossing from the high byte land elsewhere and are masked off).
    const __m256i hb = _mm256_loadu_si256((const __m256i*)xb.qh);
    for (int k = 0; k < 4; ++k) {
        const __m256i raw = _mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k));
        const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * k), 4), b4);
        const __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * k + 1), 4), b4);
        q[2 * k] = _mm256_or_si256(_mm256_and_si256(raw, m4), h0);
        q[2 * k + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h1);
    }
}

// sum_j sc[j] * (q_j . qy_j) in 8 int32 lanes (exact).
ERT_INLINE __m256i isum_kquant(const __m256i* q, const uint8_t* sc, const BlockQ8_K& yb) {
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
        const __m256i qy = _mm256_loadu_si256((const __m256i*)(yb.qs + 32 * j));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], qy), _mm256_set1_epi16(sc[j])));
    }
    return sumi;
}

// sum_j m[j] * (bsums[2j] + bsums[2j+1]) in 4 int32 lanes (exact); mins = the 8 m[j] as int16.
ERT_INLINE __m128i msum_kquant(__m128i mins, const BlockQ8_K& yb) {
    const __m256i bs = _mm256_loadu_si256((const __m256i*)yb.bsums);
    const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(pairs, mins);
}

// How ggml's AVX2 vec_dot keeps the mins term (-dmin * dy * msum per super-block) apart from the 8 lanes of
// scale sums: Q4_K in 4 float lanes, acc_m = fma(-dmin * dy, float(msum lanes), acc_m), reduced as
// (m0 + m2) + (m1 + m3); Q5_K in one float, summs = fma(-dmin * dy, float(msum total), summs) (its
// summs += dmin * x, contracted by GCC). Either is added to the lanes' hsum8 at the end.
enum class MinsAcc { Lanes4, Scalar };

template <int NA, class Block, MinsAcc Mins, class Decode>
ERT_INLINE void rows_kquant_min(int64_t n, const void* w, const void* a, size_t stride, float* out,
                                const Decode& decode) {
    const auto* x = static_cast<const Block*>(w);
    const BlockQ8_K* y[NA];
    __m256 acc[NA];
    __m128 acc_m[NA];
    float summs[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
        acc[r] = _mm256_setzero_ps();
        acc_m[r] = _mm_setzero_ps();
        summs[r] = 0.f;
    }
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const Block& xb = x[b];
        uint32_t sm[4];
        q4k_unpack_scales(xb.scales, sm);
        const uint8_t* sc = reinterpret_cast<const uint8_t*>(sm);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)(sc + 8)));
        const float d = h2f(xb.d), dmin = h2f(xb.dmin);
        __m256i q[8];
        decode(xb, q);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_K& yb = y[r][b];
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum_kquant(q, sc, yb)), _mm256_set1_ps(d * yb.d), acc[r]);
            const __m128i pm = msum_kquant(mins, yb);  // 4 x int32, sum = sum_j m[j]*bsum pair j
            if constexpr (Mins == MinsAcc::Lanes4) {
                acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(-dmin * yb.d), _mm_cvtepi32_ps(pm), acc_m[r]);
            } else {
                __m128i t = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, _MM_SHUFFLE(1, 0, 3, 2)));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
                summs[r] = std::fma(-dmin * yb.d, (float)_mm_cvtsi128_si32(t), summs[r]);
            }
        }
    }
    for (int r = 0; r < NA; ++r) {
        float m = summs[r];
        if constexpr (Mins == MinsAcc::Lanes4) {
            __m128 s = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            m = _mm_cvtss_f32(s);
        }
        out[r] = hsum8(acc[r]) + m;
    }
}

template <int NA>
void q4_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_kquant_min<NA, BlockQ4_K, MinsAcc::Lanes4>(n, w, a, stride, out, decode_q4_K);
}
ERT_DEFINE_DOTS(q4_K)

template <int NA>
void q5_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_kquant_min<NA, BlockQ5_K, MinsAcc::Scalar>(n, w, a, stride, out, decode_q5_K);
}
ERT_DEFINE_DOTS(q5_K)

template <int NA>
void q6_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_groups16<NA, BlockQ6_K, 5>(n, w, a, stride, out, decode_q6_K);
}
ERT_DEFINE_DOTS(q6_K)

// ------------------------------------------------------------------ K-quants, Tiled order (kernels.h)
// The integers above (each super-block's exact sums, lanes reduced), then llama.cpp's tiled float steps per
// super-block: res = d * float(s1), res = fma(-dmin, float(s2), res) (Q4_K, Q5_K), acc = fma(res, dy, acc).
// The weights of a super-block are decoded once for all n_act rows; the n_act outputs' float steps run in
// the lanes of one register.

// Lane r of the result: the sum of the 8 int32 lanes of s[r], for 8 vectors (a transposing vphaddd tree:
// 9 instructions for the 8 sums, where 8 separate hsums take about 50; integer sums are exact in any order).
ERT_INLINE __m256i sum8_transposed(const __m256i* s) {
    const __m256i s0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256i s4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    // 128-bit lane 0 holds the sums of each vector's lanes 0-3, lane 1 those of lanes 4-7
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                            _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

// The float steps of up to 8 rows in the lanes of one register (vector rounding is scalar rounding).
template <int NA, int Shift, class Block, class Decode>
void rows_tiled_groups16(int64_t n, const void* w, const void* a, size_t stride, float* out, const Decode& decode) {
    const auto* x = static_cast<const Block*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    __m256 acc = _mm256_setzero_ps();  // lane r: activation row r
    for (int64_t b = 0; b < n / QK_K; ++b) {
        Groups16 g;
        decode(x[b], g);
        __m256i sums[8];
        alignas(32) float dy[8] = {};
        for (int r = 0; r < 8; ++r) sums[r] = _mm256_setzero_si256();
        for (int r = 0; r < NA; ++r) {
            sums[r] = isum_groups16<Shift>(g, y[r][b]);
            dy[r] = y[r][b].d;
        }
        const __m256 res = _mm256_mul_ps(_mm256_set1_ps(h2f(x[b].d)), _mm256_cvtepi32_ps(sum8_transposed(sums)));
        acc = _mm256_fmadd_ps(res, _mm256_load_ps(dy), acc);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (int r = 0; r < NA; ++r) out[r] = lanes[r];
}

template <int NA, class Block, class Decode>
void rows_tiled_kquant_min(int64_t n, const void* w, const void* a, size_t stride, float* out, const Decode& decode) {
    const auto* x = static_cast<const Block*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    __m256 acc = _mm256_setzero_ps();  // lane r: activation row r
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const Block& xb = x[b];
        uint32_t sm[4];
        q4k_unpack_scales(xb.scales, sm);
        const uint8_t* sc = reinterpret_cast<const uint8_t*>(sm);
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)(sc + 8)));
        __m256i q[8];
        decode(xb, q);
        __m256i sums[8], min_sums[8];
        alignas(32) float dy[8] = {};
        for (int r = 0; r < 8; ++r) sums[r] = min_sums[r] = _mm256_setzero_si256();
        for (int r = 0; r < NA; ++r) {
            sums[r] = isum_kquant(q, sc, y[r][b]);
            min_sums[r] = _mm256_zextsi128_si256(msum_kquant(mins, y[r][b]));
            dy[r] = y[r][b].d;
        }
        __m256 res = _mm256_mul_ps(_mm256_set1_ps(h2f(xb.d)), _mm256_cvtepi32_ps(sum8_transposed(sums)));
        res = _mm256_fmadd_ps(_mm256_set1_ps(-h2f(xb.dmin)), _mm256_cvtepi32_ps(sum8_transposed(min_sums)), res);
        acc = _mm256_fmadd_ps(res, _mm256_load_ps(dy), acc);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (int r = 0; r < NA; ++r) out[r] = lanes[r];
}

template <int NA>
void q3_K_tiled_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_tiled_groups16<NA, 2, BlockQ3_K>(n, w, a, stride, out, decode_q3_K);
}
template <int NA>
void q4_K_tiled_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_tiled_kquant_min<NA, BlockQ4_K>(n, w, a, stride, out, decode_q4_K);
}
template <int NA>
void q5_K_tiled_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_tiled_kquant_min<NA, BlockQ5_K>(n, w, a, stride, out, decode_q5_K);
}
template <int NA>
void q6_K_tiled_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_tiled_groups16<NA, 5, BlockQ6_K>(n, w, a, stride, out, decode_q6_K);
}
ERT_DEFINE_DOTS(q3_K_tiled)
ERT_DEFINE_DOTS(q4_K_tiled)
ERT_DEFINE_DOTS(q5_K_tiled)
ERT_DEFINE_DOTS(q6_K_tiled)

// ------------------------------------------------------------------ float types (vec_dot only)
// Products and sums in fp32 with 4 independent accumulators (ggml's SIMD semantics); tails scalar.

template <class Load, class Tail>
ERT_INLINE float dot_float(int64_t n, const Load& load, const Tail& tail) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load(0, i), load(1, i), s0);
        s1 = _mm256_fmadd_ps(load(0, i + 8), load(1, i + 8), s1);
        s2 = _mm256_fmadd_ps(load(0, i + 16), load(1, i + 16), s2);
        s3 = _mm256_fmadd_ps(load(0, i + 24), load(1, i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load(0, i), load(1, i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; ++i) s += tail(i);
    return s;
}

float f32_dot(int64_t n, const void* w, const void* a) {
    const float* p[2] = {static_cast<const float*>(w), static_cast<const float*>(a)};
    return dot_float(
        n, [&](int k, int64_t i) { return _mm256_loadu_ps(p[k] + i); }, [&](int64_t i) { return p[0][i] * p[1][i]; });
}

float f16_dot(int64_t n, const void* w, const void* a) {
    const fp16_t* p[2] = {static_cast<const fp16_t*>(w), static_cast<const fp16_t*>(a)};
    return dot_float(
        n, [&](int k, int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p[k] + i))); },
        [&](int64_t i) { return h2f(p[0][i]) * h2f(p[1][i]); });
}

float bf16_dot(int64_t n, const void* w, const void* a) {
    const bf16_t* p[2] = {static_cast<const bf16_t*>(w), static_cast<const bf16_t*>(a)};
    return dot_float(
        n,
        [&](int k, int64_t i) {
            const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(p[k] + i)));
            return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        },
        [&](int64_t i) { return bf16_to_fp32(p[0][i]) * bf16_to_fp32(p[1][i]); });
}

void f16_quantize(const float* x, void* y, int64_t n) {
    auto* o = static_cast<fp16_t*>(y);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i*)(o + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) o[i] = fp32_to_fp16(x[i]);
}

// ------------------------------------------------------------------ activation quantizers
// Bit-identical to the scalar twin: same d = amax/127 and id = 127/amax, rounding to nearest even.

ERT_INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// 4 x 8 int32 (elements 0..31 in order) -> 32 int8, saturating.
ERT_INLINE __m256i pack32(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    const __m256i a = _mm256_packs_epi32(i0, i1);
    const __m256i b = _mm256_packs_epi32(i2, i3);
    const __m256i c = _mm256_packs_epi16(a, b);
    return _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Quantizes 32 floats with multiplier id; returns the packed int8 and (optionally) their sum.
ERT_INLINE __m256i quant32(const float* x, __m256 id, int* sum) {
    __m256i i[4];
    for (int k = 0; k < 4; ++k)
        i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (sum) *sum = hsum8_epi32(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
    return pack32(i[0], i[1], i[2], i[3]);
}

ERT_INLINE float amax32(const float* x) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_and_ps(_mm256_loadu_ps(x), abs_mask);
    for (int k = 1; k < 4; ++k) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs_mask));
    return hmax8(m);
}

void q8_0_quantize(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(vy);
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        const float amax = amax32(x);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = fp32_to_fp16(d);
        _mm256_storeu_si256((__m256i*)y[b].qs, quant32(x, _mm256_set1_ps(id), nullptr));
    }
}

void q8_1_quantize(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(vy);
    for (int64_t b = 0; b < n / QK8_1; ++b, x += QK8_1) {
        const float amax = amax32(x);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = fp32_to_fp16(d);
        int sum;
        _mm256_storeu_si256((__m256i*)y[b].qs, quant32(x, _mm256_set1_ps(id), &sum));
        y[b].s = fp32_to_fp16((float)sum * d);
    }
}

// q8_K: ties-to-even rounding (ggml's nearest_int), the signed max of largest magnitude (first one).
void q8_K_quantize(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_K*>(vy);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < QK_K; k += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask));
        const float amax = hmax8(m);
        if (amax == 0.f) {
            std::memset(&y[b], 0, sizeof(BlockQ8_K));
            continue;
        }
        float max = 0.f;
        const __m256 va = _mm256_set1_ps(amax);
        for (int k = 0; k < QK_K; k += 8) {
            const int mask =
                _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask), va, _CMP_EQ_OQ));
            if (mask) {
                max = x[k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int g = 0; g < QK_K / 32; ++g) {
            __m256i i[4];
            for (int k = 0; k < 4; ++k) {
                const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * k), vs);
                i[k] = _mm256_min_epi32(
                    _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                    _mm256_set1_epi32(127));
            }
            _mm256_storeu_si256((__m256i*)(y[b].qs + 32 * g), pack32(i[0], i[1], i[2], i[3]));
            y[b].bsums[2 * g] = (int16_t)hsum8_epi32(_mm256_add_epi32(i[0], i[1]));
            y[b].bsums[2 * g + 1] = (int16_t)hsum8_epi32(_mm256_add_epi32(i[2], i[3]));
        }
        y[b].d = 1.f / iscale;
    }
}

// ------------------------------------------------------------------ ggml vector ops (kernels.h)
// ggml-cpu's own AVX2 code (vec.h ggml_v_expf / ggml_v_silu, vec.cpp ggml_vec_swiglu_f32 and
// ggml_vec_soft_max_f32, GGML_F32x8_REDUCE, llamafile tinyBLAS), so the bits are llama.cpp's.

ERT_INLINE __m256 ggml_v_expf(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b =
        _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256i c =
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(126), _CMP_GT_OQ));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(_mm256_castsi256_ps(c))) return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256i d =
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192), _CMP_GT_OQ));
    return _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            _mm256_castsi256_ps(d),
            _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                         _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

void ggml_swiglu_avx2(const float* x, const float* g, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 7 < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 silu =
            _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1), ggml_v_expf(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(g + i)));
    }
    for (; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

double ggml_softmax_exp_avx2(const float* x, float* y, int64_t n, float max) {
    double sum = 0.0;
    const __m256 vmax = _mm256_set1_ps(max);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = ggml_v_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(y + i, v);
        sum += (double)hsum8(v);
    }
    if (i < n) {  // the masked lanes of ggml's padded row: exp(-inf) = 0
        float t[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        std::memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        const __m256 v = ggml_v_expf(_mm256_sub_ps(_mm256_loadu_ps(t), vmax));
        _mm256_storeu_ps(t, v);
        std::memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
        sum += (double)hsum8(v);
    }
    return sum;
}

ERT_INLINE __m256 load_f16x8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }

float ggml_dot_f16_tinyblas_avx2(int64_t n, const uint16_t* x, const uint16_t* y) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), acc);
    if (i < n) {
        uint16_t tx[8] = {}, ty[8] = {};
        std::memcpy(tx, x + i, (size_t)(n - i) * 2);
        std::memcpy(ty, y + i, (size_t)(n - i) * 2);
        acc = _mm256_fmadd_ps(load_f16x8(tx), load_f16x8(ty), acc);
    }
    return hsum8(acc);
}

// Key row j widened once (D / 8 vectors, D <= 256 kept on the stack), then each query's 8-lane fma chain
// in element order and hsum8: each output is ggml_dot_f16_tinyblas_avx2(D, k_j, q_i) exactly.
void ggml_kq_tinyblas_avx2(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                           float* out, int64_t out_stride) {
    const int64_t chunks = D / 8;
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        for (int i = 0; i < nq; ++i) {
            const float* qi = q + i * D;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t c = 0; c < chunks; ++c)
                acc = _mm256_fmadd_ps(load_f16x8(kr + 8 * c), _mm256_loadu_ps(qi + 8 * c), acc);
            out[i * out_stride + j] = hsum8(acc);
        }
    }
}

// ggml_dot_f16_avx2(D, k_j, q_i, D) for every position: 4 accumulators over steps of 32, GGML_F32x8_REDUCE,
// the elements past the last whole step in double.
void ggml_kq_ggml_avx2(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                       float* out, int64_t out_stride) {
    const int64_t np = D & ~(int64_t)31;
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        for (int i = 0; i < nq; ++i) {
            const float* qi = q + i * D;
            __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t e = 0; e < np; e += 32)
                for (int c = 0; c < 4; ++c)
                    s[c] = _mm256_fmadd_ps(load_f16x8(kr + e + 8 * c), _mm256_loadu_ps(qi + e + 8 * c), s[c]);
            s[0] = _mm256_add_ps(s[0], s[2]);
            s[1] = _mm256_add_ps(s[1], s[3]);
            s[0] = _mm256_add_ps(s[0], s[1]);
            const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s[0]), _mm256_extractf128_ps(s[0], 1));
            const __m128 t1 = _mm_hadd_ps(t0, t0);
            double sum = (double)_mm_cvtss_f32(_mm_hadd_ps(t1, t1));
            for (int64_t e = np; e < D; ++e) sum += (double)(h2f(kr[e]) * qi[e]);
            out[i * out_stride + j] = (float)sum;
        }
    }
}

// One V row (d) widened 8 positions at a time against up to 8 probability rows: np accumulators.
void ggml_pv_tinyblas_avx2(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p, int64_t p_stride,
                           int np, float* out) {
    for (int64_t d = 0; d < D; ++d) {
        const uint16_t* vr = v + d * v_stride;
        __m256 acc[8];
        for (int i = 0; i < np; ++i) acc[i] = _mm256_setzero_ps();
        int64_t e = 0;
        for (; e + 8 <= n; e += 8) {
            const __m256 vv = load_f16x8(vr + e);
            for (int i = 0; i < np; ++i) acc[i] = _mm256_fmadd_ps(vv, _mm256_loadu_ps(p + i * p_stride + e), acc[i]);
        }
        if (e < n) {
            uint16_t tail[8] = {};
            std::memcpy(tail, vr + e, (size_t)(n - e) * 2);
            const __m256 vv = load_f16x8(tail);
            for (int i = 0; i < np; ++i) acc[i] = _mm256_fmadd_ps(vv, _mm256_loadu_ps(p + i * p_stride + e), acc[i]);
        }
        for (int i = 0; i < np; ++i) out[i * D + d] = hsum8(acc[i]);
    }
}

float ggml_dot_f16_avx2(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    const int64_t np = n_total & ~(int64_t)31;
    const int64_t m = n < np ? n : np;
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= m; i += 32)
        for (int j = 0; j < 4; ++j) s[j] = _mm256_fmadd_ps(load_f16x8(x + i + 8 * j), load_f16x8(y + i + 8 * j), s[j]);
    if (i < m) {
        uint16_t tx[32] = {}, ty[32] = {};
        std::memcpy(tx, x + i, (size_t)(m - i) * 2);
        std::memcpy(ty, y + i, (size_t)(m - i) * 2);
        for (int j = 0; j < 4; ++j) s[j] = _mm256_fmadd_ps(load_f16x8(tx + 8 * j), load_f16x8(ty + 8 * j), s[j]);
    }
    // GGML_F32x8_REDUCE
    s[0] = _mm256_add_ps(s[0], s[2]);
    s[1] = _mm256_add_ps(s[1], s[3]);
    s[0] = _mm256_add_ps(s[0], s[1]);
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s[0]), _mm256_extractf128_ps(s[0], 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    double sum = (double)_mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    for (int64_t k = np; k < n; ++k) sum += (double)(h2f(x[k]) * h2f(y[k]));
    return (float)sum;
}

// ------------------------------------------------------------------ Q4_0, Blockwise order (kernels.h)

// One plain row: exact integer block sums (hsum of the 8 int32 lanes), then one scalar fma per block.
void q4_0_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, int /*n_gemm*/,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    for (int j = 0; j < n_act; ++j) {
        const auto* y = reinterpret_cast<const BlockQ8_0*>(act_row(a, a_stride, j));
        float acc = 0.f;
        for (int64_t b = 0; b < n / QK4_0; ++b) {
            const __m256i qx = DecQ4_0::q(x[b]);
            const __m256i qy = _mm256_loadu_si256((const __m256i*)y[b].qs);
            const int isum = hsum8_epi32(dot_u8i8(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx)));
            acc = std::fma((float)isum, h2f(x[b].d) * h2f(y[b].d), acc);
        }
        out[j] = acc;
    }
}

// One Q4_K super-block as llama.cpp's 4-row gemm adds it: per 64-element chunk c (sub-blocks 2c, 2c + 1),
// acc = fma(sc . dot, d * dy, acc) and acc_min = fma(m . bsum pairs, dmin * dy, acc_min).
ERT_INLINE void q4_K_chunks_fma(const BlockQ4_K& xb, const BlockQ8_K& yb, float& acc, float& acc_min) {
    uint32_t sm[4];
    q4k_unpack_scales(xb.scales, sm);
    const uint8_t* sc = reinterpret_cast<const uint8_t*>(sm);
    const float d = h2f(xb.d) * yb.d, dmin = h2f(xb.dmin) * yb.d;
    for (int k = 0; k < 4; ++k) {
        const __m256i raw = _mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k));
        const __m256i lo = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
        const __m256i y0 = _mm256_loadu_si256((const __m256i*)(yb.qs + 64 * k));
        const __m256i y1 = _mm256_loadu_si256((const __m256i*)(yb.qs + 64 * k + 32));
        const __m256i s =
            _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16(sc[2 * k])),
                             _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16(sc[2 * k + 1])));
        const int mins = sc[8 + 2 * k] * (yb.bsums[4 * k] + yb.bsums[4 * k + 1]) +
                         sc[9 + 2 * k] * (yb.bsums[4 * k + 2] + yb.bsums[4 * k + 3]);
        acc = std::fma((float)hsum8_epi32(s), d, acc);
        acc_min = std::fma((float)mins, dmin, acc_min);
    }
}

// Q4_K, one plain row: exact integer sums (as rows_kquant_min), then the two scalar fmas per super-block
// (gemv rows) or per 64-element chunk (gemm rows: q4_K_chunks_fma).
void q4_K_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, int n_gemm,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_K*>(w);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(act_row(a, a_stride, r));
        float acc = 0.f, acc_min = 0.f;
        for (int64_t b = 0; b < n / QK_K; ++b) {
            const BlockQ4_K& xb = x[b];
            const BlockQ8_K& yb = y[b];
            if (r < n_gemm) {
                q4_K_chunks_fma(xb, yb, acc, acc_min);
                continue;
            }
            uint32_t sm[4];
            q4k_unpack_scales(xb.scales, sm);
            const uint8_t* sc = reinterpret_cast<const uint8_t*>(sm);
            __m256i sumi = _mm256_setzero_si256();
            for (int k = 0; k < 4; ++k) {
                const __m256i raw = _mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k));
                const __m256i lo = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
                const __m256i y0 = _mm256_loadu_si256((const __m256i*)(yb.qs + 64 * k));
                const __m256i y1 = _mm256_loadu_si256((const __m256i*)(yb.qs + 64 * k + 32));
                sumi = _mm256_add_epi32(sumi,
                                        _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16(sc[2 * k])));
                sumi = _mm256_add_epi32(
                    sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16(sc[2 * k + 1])));
            }
            const __m256i bs = _mm256_loadu_si256((const __m256i*)yb.bsums);
            const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)(sc + 8)));
            __m128i pm = _mm_madd_epi16(pairs, mins);
            pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, _MM_SHUFFLE(1, 0, 3, 2)));
            pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, _MM_SHUFFLE(2, 3, 0, 1)));
            acc = std::fma((float)hsum8_epi32(sumi), h2f(xb.d) * yb.d, acc);
            acc_min = std::fma((float)_mm_cvtsi128_si32(pm), h2f(xb.dmin) * yb.d, acc_min);
        }
        out[r] = acc - acc_min;
    }
}

// NA activation rows against one x8 group. Per block: the 4 x 32 weight bytes give 8 vectors of 4
// elements x 8 rows (low / high nibbles, unsigned 0..15); each meets the activation's same 4 elements
// broadcast to all lanes (vpmaddubsw: i16 pairs <= 2 * 15 * 127, the 8 products' sum <= 30480, no
// saturation), one vpmaddwd folds each lane's pair: lane c = sum q * y of row c. Minus 8 * sum y gives
// the signed Q4_0 integer sum, exact, then acc = fma(sum, dx * dy, acc) per lane as ggml's gemm.
template <int NA>
ERT_INLINE void q4_0_gemm_x8_rows(int64_t n, const uint8_t* group, const uint8_t* a, size_t a_stride,
                                  const int16_t* a_sums, float* out, size_t out_stride) {
    const int64_t nb = n / QK4_0;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NA];
    for (int r = 0; r < NA; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* g = group + b * kQ4_0x8BlockBytes;
        const __m256 dx = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)g));
        __m256i lo[4], hi[4];
        for (int k = 0; k < 4; ++k) {
            const __m256i v = _mm256_loadu_si256((const __m256i*)(g + 16 + 32 * k));
            lo[k] = _mm256_and_si256(v, low4);
            hi[k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        }
        for (int r = 0; r < NA; ++r) {
            const auto* y = reinterpret_cast<const BlockQ8_0*>(a + (size_t)r * a_stride) + b;
            int32_t y4[8];
            std::memcpy(y4, y->qs, 32);
            __m256i p = _mm256_maddubs_epi16(lo[0], _mm256_set1_epi32(y4[0]));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[1], _mm256_set1_epi32(y4[1])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[2], _mm256_set1_epi32(y4[2])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[3], _mm256_set1_epi32(y4[3])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[0], _mm256_set1_epi32(y4[4])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[1], _mm256_set1_epi32(y4[5])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[2], _mm256_set1_epi32(y4[6])));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[3], _mm256_set1_epi32(y4[7])));
            const __m256i isum =
                _mm256_sub_epi32(_mm256_madd_epi16(p, ones), _mm256_set1_epi32(8 * a_sums[(size_t)r * nb + b]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dx, _mm256_set1_ps(h2f(y->d))), acc[r]);
        }
    }
    for (int r = 0; r < NA; ++r) _mm256_storeu_ps(out + (size_t)r * out_stride, acc[r]);
}

void q4_0_gemm_x8(int64_t n, const void* group, const void* a, size_t a_stride, const int16_t* a_sums, int n_act,
                  int /*n_gemm*/, float* out, size_t out_stride) {
    const auto* g = static_cast<const uint8_t*>(group);
    const auto* ap = static_cast<const uint8_t*>(a);
    const int64_t nb = n / QK4_0;
    for (int j = 0; j < n_act;) {
        const int k = n_act - j >= 4 ? 4 : n_act - j;
        const uint8_t* aj = ap + (size_t)j * a_stride;
        const int16_t* sj = a_sums + (size_t)j * nb;
        float* oj = out + (size_t)j * out_stride;
        switch (k) {
            case 1: q4_0_gemm_x8_rows<1>(n, g, aj, a_stride, sj, oj, out_stride); break;
            case 2: q4_0_gemm_x8_rows<2>(n, g, aj, a_stride, sj, oj, out_stride); break;
            case 3: q4_0_gemm_x8_rows<3>(n, g, aj, a_stride, sj, oj, out_stride); break;
            default: q4_0_gemm_x8_rows<4>(n, g, aj, a_stride, sj, oj, out_stride); break;
        }
        j += k;
    }
}

// Q4_K against one x8 group, one activation row at a time (the group's 1152 bytes per super-block stay in
// L1 across the rows). Per 64-element chunk k: 8 vectors of 4 bytes x 8 rows; low nibbles meet the
// activation's sub-block 2k, high nibbles sub-block 2k + 1, 4 bytes broadcast per vpmaddubsw (i16 sums of
// 8 <= 8 * 2 * 15 * 127, no saturation); vpmaddwd with each row's 6-bit scale in both i16 halves gives
// sc * dot per lane, exact. Mins: the chunk's two bsum pairs (i16) against each row's two mins.
// NR (1..4) activation rows of a run; rows r < n_gemm are gemm rows (see gemm_x8).
template <int NR>
void q4_K_x8_run(int64_t n, const uint8_t* group, const uint8_t* ap, size_t a_stride, int n_gemm, float* out,
                 size_t out_stride) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const int64_t nb = n / QK_K;
    const BlockQ8_K* y[NR];
    __m256 acc[NR], acc_min[NR];
    for (int r = 0; r < NR; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_K*>(ap + (size_t)r * a_stride);
        acc[r] = acc_min[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* g = group + b * kQ4_Kx8BlockBytes;
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)g));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(g + 16)));
        Q4KChunkScales s[4];
        q4_K_x8_scales(g, s);
        __m256i sumi[NR], summ[NR];  // gemv rows: the super-block's integer sums
        for (int r = 0; r < NR; ++r) sumi[r] = summ[r] = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
            // Byte group gi unpacked once and met by the rows' activation bytes in turn (12 registers
            // live; unpacking per row cost a third of the kernel's instructions).
            const uint8_t* q = g + 128 + 256 * k;
            __m256i plo[NR], phi[NR];
            for (int r = 0; r < NR; ++r) plo[r] = phi[r] = _mm256_setzero_si256();
            for (int gi = 0; gi < 8; ++gi) {
                const __m256i v = _mm256_loadu_si256((const __m256i*)(q + 32 * gi));
                const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                for (int r = 0; r < NR; ++r) {
                    int32_t y_lo, y_hi;
                    std::memcpy(&y_lo, y[r][b].qs + 64 * k + 4 * gi, 4);
                    std::memcpy(&y_hi, y[r][b].qs + 64 * k + 32 + 4 * gi, 4);
                    plo[r] = _mm256_add_epi16(plo[r], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(y_lo)));
                    phi[r] = _mm256_add_epi16(phi[r], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(y_hi)));
                }
            }
            for (int r = 0; r < NR; ++r) {
                const BlockQ8_K& yb = y[r][b];
                const __m256i chunk =
                    _mm256_add_epi32(_mm256_madd_epi16(plo[r], s[k].sc_lo), _mm256_madd_epi16(phi[r], s[k].sc_hi));
                const int pair0 = yb.bsums[4 * k] + yb.bsums[4 * k + 1],
                          pair1 = yb.bsums[4 * k + 2] + yb.bsums[4 * k + 3];
                const __m256i chunk_min = _mm256_madd_epi16(
                    _mm256_set1_epi32((int)((uint32_t)(uint16_t)pair0 | (uint32_t)pair1 << 16)), s[k].mins);
                if (r < n_gemm) {  // a gemm row: a float term per chunk
                    const __m256 dy = _mm256_set1_ps(yb.d);
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk), _mm256_mul_ps(d, dy), acc[r]);
                    acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk_min), _mm256_mul_ps(dmin, dy), acc_min[r]);
                } else {
                    sumi[r] = _mm256_add_epi32(sumi[r], chunk);
                    summ[r] = _mm256_add_epi32(summ[r], chunk_min);
                }
            }
        }
        for (int r = 0; r < NR; ++r) {
            if (r < n_gemm) continue;
            const __m256 dy = _mm256_set1_ps(y[r][b].d);  // a gemv row: one float term per super-block
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_mul_ps(d, dy), acc[r]);
            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ[r]), _mm256_mul_ps(dmin, dy), acc_min[r]);
        }
    }
    for (int r = 0; r < NR; ++r) _mm256_storeu_ps(out + (size_t)r * out_stride, _mm256_sub_ps(acc[r], acc_min[r]));
}

void q4_K_gemm_x8(int64_t n, const void* group, const void* a, size_t a_stride, const int16_t* /*a_sums*/, int n_act,
                  int n_gemm, float* out, size_t out_stride) {
    const auto* g = static_cast<const uint8_t*>(group);
    const auto* ap = static_cast<const uint8_t*>(a);
    for (int r0 = 0; r0 < n_act; r0 += 4) {
        const uint8_t* run = ap + (size_t)r0 * a_stride;
        float* o = out + (size_t)r0 * out_stride;
        const int gemm = n_gemm - r0;
        switch (n_act - r0 < 4 ? n_act - r0 : 4) {
            case 1: q4_K_x8_run<1>(n, g, run, a_stride, gemm, o, out_stride); break;
            case 2: q4_K_x8_run<2>(n, g, run, a_stride, gemm, o, out_stride); break;
            case 3: q4_K_x8_run<3>(n, g, run, a_stride, gemm, o, out_stride); break;
            default: q4_K_x8_run<4>(n, g, run, a_stride, gemm, o, out_stride); break;
        }
    }
}

// ------------------------------------------------------------------ table

struct Avx2Table {
    WeightKernels k[31] = {};
    bool present[31] = {};
    void add(GgmlType w, GgmlType act, int64_t abe, int64_t abb, void (*q)(const float*, void*, int64_t),
             float (*dot)(int64_t, const void*, const void*),
             void (*rows)(int64_t, const void*, const void*, size_t, int, float*)) {
        k[(int)w] = WeightKernels{w,       act,     abe,     abb,     q,       dot,     rows,    nullptr,
                                  nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        present[(int)w] = true;
    }
    Avx2Table() {
        using T = GgmlType;
        add(T::F32, T::F32, 1, 4, nullptr, f32_dot, nullptr);
        add(T::F16, T::F16, 1, 2, f16_quantize, f16_dot, nullptr);
        add(T::BF16, T::BF16, 1, 2, nullptr, bf16_dot, nullptr);
        add(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize, q8_0_dot, q8_0_dot_rows);
        add(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize, q4_0_dot, q4_0_dot_rows);
        add(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_quantize, q5_0_dot, q5_0_dot_rows);
        add(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q8_1_quantize, q4_1_dot, q4_1_dot_rows);
        add(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q8_1_quantize, q5_1_dot, q5_1_dot_rows);
        add(T::Q3_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q8_K_quantize, q3_K_dot, q3_K_dot_rows);
        add(T::Q4_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q8_K_quantize, q4_K_dot, q4_K_dot_rows);
        add(T::Q5_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q8_K_quantize, q5_K_dot, q5_K_dot_rows);
        add(T::Q6_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q8_K_quantize, q6_K_dot, q6_K_dot_rows);
        k[(int)T::Q8_0].vec_dot_rows_scaled = q8_0_dot_rows_scaled;
        k[(int)T::Q4_0].vec_dot_rows_scaled = q4_0_dot_rows_scaled;
        k[(int)T::Q5_0].vec_dot_rows_scaled = q5_0_dot_rows_scaled;
        k[(int)T::Q4_0].dot_rows_blockwise = q4_0_dot_rows_blockwise;
        k[(int)T::Q4_0].gemm_x8 = q4_0_gemm_x8;
        k[(int)T::Q4_K].dot_rows_blockwise = q4_K_dot_rows_blockwise;
        k[(int)T::Q4_K].gemm_x8 = q4_K_gemm_x8;
        k[(int)T::Q3_K].dot_rows_tiled = q3_K_tiled_dot_rows;
        k[(int)T::Q4_K].dot_rows_tiled = q4_K_tiled_dot_rows;
        k[(int)T::Q5_K].dot_rows_tiled = q5_K_tiled_dot_rows;
        k[(int)T::Q6_K].dot_rows_tiled = q6_K_tiled_dot_rows;
    }
};

}  // namespace

const GgmlVecOps* avx2_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops{ggml_swiglu_avx2,
                                ggml_softmax_exp_avx2,
                                ggml_dot_f16_tinyblas_avx2,
                                ggml_dot_f16_avx2,
                                ggml_geglu,
                                ggml_kq_tinyblas_avx2,
                                ggml_pv_tinyblas_avx2,
                                ggml_kq_ggml_avx2,
                                8};
    return &ops;
}

const WeightKernels* avx2_weight_kernels(GgmlType type) noexcept {
    static const Avx2Table t;
    const int i = (int)type;
    return (i >= 0 && i < 31 && t.present[i]) ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
