// AVX512 (F, BW, VL, DQ) + VNNI kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mavx512vnni -mavx2 -mfma -mf16c; reached only through avx512vnni_weight_kernels() after
// cpu_features confirmed the CPU and OS support. Reference twin: kernels_scalar.cpp.
//
// 32-element block types use vpdpbusd on 256-bit registers (one block per register: blocks of 18..34
// bytes do not align to 64-byte loads, and the per-block scale is applied per register anyway), except
// Q4_0 / Q8_0 with 2..8 activation rows (prefill), which pair two blocks per 512-bit register
// (rows_pair512).
// K-quants (Q3_K, Q4_K, Q5_K, Q6_K) use 512-bit registers (two 32-element sub-blocks at a time), vpmaddubsw
// for the 8-bit products and vpdpwssd to apply the sub-block scales and accumulate in one instruction.
// Entries left nullptr (quantizers, float types, dequantize) fall back to the AVX2 table.
// GCC 12's AVX-512 headers seed some intrinsics with _mm512_undefined_*(), which -Wuninitialized
// reports at every inlined call site (GCC bug 105593); the values are fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"
#include "x86_simd_common.h"

namespace edge_rt {

namespace {

// AVX512-VNNI integer dot: one vpdpbusd (u8 x i8, groups of 4 summed into int32).
struct DotVnni {
    static ERT_INLINE __m256i u8i8(__m256i u, __m256i y) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y); }
};

// ---- Two blocks per 512-bit register, several activation rows (the prefill hot path).
//
// For one weight block pair (b, b+1) the weights W are decoded once into 64 signed int8 and reused for
// every activation row. vpdpbusd needs an unsigned left operand, so the activation bytes are offset
// instead of the weights: (y ^ 0x80) = y + 128 as u8, and sum (y + 128) * w = sum y * w + 128 * sum w.
// The correction -128 * sum w depends on the weights only; it is computed once per pair (per int32
// lane) and seeds the accumulator, so each activation row costs one xor and one vpdpbusd per 64 MACs,
// and the per-lane block sums stay exact for every int8 value. Lanes 0..7 hold block b, 8..15 block
// b+1; the scales dx * dy of the pair for all rows are gathered and converted as one vector, and each
// row picks its two scales out of it with one vpermps.
struct PairQ4_0 {
    using Block = BlockQ4_0;
    // W = q - 8 for blocks b, b+1; neg_c = -128 * sum of W per int32 lane.
    static ERT_INLINE __m512i w(const Block* x, __m512i& neg_c) {
        const __m512i shifts = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                                 0x0004000400040004LL, 0x0004000400040004LL);
        const __m256i qa = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)x[0].qs));
        const __m256i qb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)x[1].qs));
        const __m512i q = _mm512_and_si512(
            _mm512_srlv_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(qa), qb, 1), shifts), _mm512_set1_epi8(0x0F));
        // -128 * sum(q - 8) over 4 bytes = 4096 + sum q * (-128)
        neg_c = _mm512_dpbusd_epi32(_mm512_set1_epi32(4096), q, _mm512_set1_epi8((char)0x80));
        return _mm512_sub_epi8(q, _mm512_set1_epi8(8));
    }
};
struct PairQ8_0 {
    using Block = BlockQ8_0;
    static ERT_INLINE __m512i w(const Block* x, __m512i& neg_c) {
        const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)x[0].qs)),
                                             _mm256_loadu_si256((const __m256i*)x[1].qs), 1);
        // -128 * sum w over 4 bytes = 65536 + sum (w + 128) * (-128); exact for w = -128 too
        neg_c = _mm512_dpbusd_epi32(_mm512_set1_epi32(65536), _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80)),
                                    _mm512_set1_epi8((char)0x80));
        return q;
    }
};

template <int NA, class P>
ERT_INLINE void rows_pair512(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    static_assert(NA >= 2 && NA <= 8, "rows_pair512 serves 2..8 rows");
    const auto* x = static_cast<const typename P::Block*>(w);
    const uint8_t* a8 = static_cast<const uint8_t*>(a);
    const int64_t nb = n / QK8_0, np = nb / 2;
    constexpr int U = NA <= 3 ? 2 : 1;  // independent accumulator sets to hide FMA latency
    // Gather offsets of the activation scales: lane r -> row r at block b, lane 8 + r -> row r at b + 1
    // (rows >= NA repeat row NA - 1; their lanes are never picked).
    alignas(64) int32_t off[16];
    for (int r = 0; r < 8; ++r) {
        const int rr = r < NA ? r : NA - 1;
        off[r] = (int32_t)((size_t)rr * stride);
        off[8 + r] = off[r] + (int32_t)sizeof(BlockQ8_0);
    }
    const __m512i gidx = _mm512_load_si512((const void*)off);
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const __m512i hi8 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
    const __m512i one8 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 acc[U][NA];
    for (int u = 0; u < U; ++u)
        for (int r = 0; r < NA; ++r) acc[u][r] = _mm512_setzero_ps();
    // Weight scales of 8 pairs (16 blocks) at a time: gathered and converted once; pair j then takes
    // lanes 2j (x8) and 2j + 1 (x8) with one vpermps.
    const __m512i widx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)sizeof(typename P::Block)));
    __m512 dx16 = _mm512_setzero_ps();
    auto pair = [&](int64_t p, __m512* ac) {
        const int64_t b = 2 * p;
        if ((p & 7) == 0) {
            const int64_t left = nb - b;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, widx, (const void*)(x + b), 1);
            dx16 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        }
        __m512i neg_c;
        const __m512i wq = P::w(x + b, neg_c);
        const __m512 dx = _mm512_permutexvar_ps(_mm512_add_epi32(one8, _mm512_set1_epi32((int)(b & 15))), dx16);
        const uint8_t* ab = a8 + (size_t)b * sizeof(BlockQ8_0);
        const __m512i g = _mm512_i32gather_epi32(gidx, (const void*)ab, 1);
        const __m512 dy = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        const __m512 s = _mm512_mul_ps(dy, dx);  // dx lanes: 0..7 dx_b, 8..15 dx_{b+1}
        for (int r = 0; r < NA; ++r) {
            const uint8_t* yr = ab + (size_t)r * stride + 2;
            const __m512i qy = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)yr)),
                                                  _mm256_loadu_si256((const __m256i*)(yr + sizeof(BlockQ8_0))), 1);
            const __m512i sum = _mm512_dpbusd_epi32(neg_c, _mm512_xor_si512(qy, k80), wq);
            const __m512 sr = _mm512_permutexvar_ps(_mm512_add_epi32(hi8, _mm512_set1_epi32(r)), s);
            ac[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), sr, ac[r]);
        }
    };
    int64_t p = 0;
    for (; p + U <= np; p += U)
        for (int u = 0; u < U; ++u) pair(p + u, acc[u]);
    for (; p < np; ++p) pair(p, acc[0]);
    for (int r = 0; r < NA; ++r) {
        __m512 t = acc[0][r];
        for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[u][r]);
        out[r] = _mm512_reduce_add_ps(t);
    }
    if (nb & 1) {  // one trailing block, 256-bit
        const int64_t b = nb - 1;
        __m512i neg_c;
        const typename P::Block two[2] = {x[b], x[b]};
        const __m256i wq = _mm512_castsi512_si256(P::w(two, neg_c));
        const __m256i nc = _mm512_castsi512_si256(neg_c);
        const float dx = h2f(x[b].d);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_0& yb = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r))[b];
            const __m256i qy = _mm256_loadu_si256((const __m256i*)yb.qs);
            const __m256i sum = _mm256_dpbusd_epi32(nc, _mm256_xor_si256(qy, _mm256_set1_epi8((char)0x80)), wq);
            out[r] += (float)hsum8_epi32(sum) * (dx * h2f(yb.d));
        }
    }
}

template <int NA>
void q8_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    if constexpr (NA == 1)
        rows_q8_0_act<NA, DecQ8_0, DotVnni>(n, w, a, s, o);
    else if ((size_t)(NA - 1) * s + 2 * sizeof(BlockQ8_0) > (size_t)INT32_MAX)
        rows_q8_0_act<NA, DecQ8_0, DotVnni>(n, w, a, s, o);
    else
        rows_pair512<NA, PairQ8_0>(n, w, a, s, o);
}
template <int NA>
void q4_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    if constexpr (NA == 1)
        rows_q8_0_act<NA, DecQ4_0, DotVnni>(n, w, a, s, o);
    else if ((size_t)(NA - 1) * s + 2 * sizeof(BlockQ8_0) > (size_t)INT32_MAX)
        rows_q8_0_act<NA, DecQ4_0, DotVnni>(n, w, a, s, o);
    else
        rows_pair512<NA, PairQ4_0>(n, w, a, s, o);
}
template <int NA>
void q5_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ5_0, DotVnni>(n, w, a, s, o);
}
template <int NA>
void q4_1_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_1_act<NA, DecQ4_1, DotVnni>(n, w, a, s, o);
}
template <int NA>
void q5_1_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_1_act<NA, DecQ5_1, DotVnni>(n, w, a, s, o);
}
ERT_DEFINE_DOTS(q8_0)
ERT_DEFINE_DOTS(q4_0)  // q4_0_dot (one block per register) is superseded by q4_0_dot_zmm below
ERT_DEFINE_DOTS(q5_0)
ERT_DEFINE_DOTS(q4_1)
ERT_DEFINE_DOTS(q5_1)

// Single-row Q4_0 (the decode hot path): two blocks per 512-bit register and the per-block scales of
// four blocks converted together, which roughly halves the instructions per block against the
// one-block-per-register body above. q is kept unsigned (0..15) so vpdpbusd applies directly; the -8
// offset is subtracted as 8 * sum(qy) via a second vpdpbusd. Integer block sums are exact, as above.
float q4_0_dot_zmm(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    const auto* y = static_cast<const BlockQ8_0*>(a);
    const int64_t nb = n / QK4_0;
    const __m512i shifts = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                             0x0004000400040004LL, 0x0004000400040004LL);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i k8 = _mm512_set1_epi8(8);
    const __m512i idx01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i idx23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    auto pair = [&](int64_t b) {  // blocks b, b+1 -> 16 x int32 block partial sums
        const __m256i qa = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)x[b].qs));
        const __m256i qb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)x[b + 1].qs));
        const __m512i q =
            _mm512_and_si512(_mm512_srlv_epi16(_mm512_inserti64x4(_mm512_zextsi256_si512(qa), qb, 1), shifts), m4);
        const __m512i qy = _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)y[b].qs)),
                                              _mm256_loadu_si256((const __m256i*)y[b + 1].qs), 1);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, qy);
        return _mm512_sub_epi32(p, _mm512_dpbusd_epi32(_mm512_setzero_si512(), k8, qy));
    };
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        const __m128i d16 = _mm_setr_epi16((short)x[b].d, (short)x[b + 1].d, (short)x[b + 2].d, (short)x[b + 3].d,
                                           (short)y[b].d, (short)y[b + 1].d, (short)y[b + 2].d, (short)y[b + 3].d);
        const __m256 df = _mm256_cvtph_ps(d16);
        const __m512 s = _mm512_zextps128_ps512(_mm_mul_ps(_mm256_castps256_ps128(df), _mm256_extractf128_ps(df, 1)));
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair(b)), _mm512_permutexvar_ps(idx01, s), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair(b + 2)), _mm512_permutexvar_ps(idx23, s), acc1);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; b < nb; ++b) {  // at most 3 trailing blocks
        int sumi = 0;
        for (int j = 0; j < 16; ++j)
            sumi += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j] + ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        sum += (float)sumi * (h2f(x[b].d) * h2f(y[b].d));
    }
    return sum;
}

// ------------------------------------------------------------------ K-quants against Q8_K (512-bit)

// Word-index vector: lanes 0..15 take word `lo`, lanes 16..31 word `hi` (for vpermw).
ERT_INLINE __m512i split_index(int lo, int hi) {
    return _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_set1_epi16((short)lo)), _mm256_set1_epi16((short)hi), 1);
}

ERT_INLINE float hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }

// 512-bit variant of run_blocks.
template <int NA, class Block>
ERT_INLINE void run_blocks512(int64_t nb, const Block& block, float* out) {
    constexpr int U = NA == 1 ? 2 : 1;
    __m512 acc[U][NA];
    for (int u = 0; u < U; ++u)
        for (int r = 0; r < NA; ++r) acc[u][r] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + U <= nb; b += U)
        for (int u = 0; u < U; ++u) block(b + u, acc[u]);
    for (; b < nb; ++b) block(b, acc[0]);
    for (int r = 0; r < NA; ++r) {
        __m512 s = acc[0][r];
        for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[u][r]);
        out[r] = hsum16(s);
    }
}

// Q4_K and Q5_K: register k (0..3) holds sub-blocks 2k (lanes 0..31) and 2k+1 (lanes 32..63), which
// matches the 64 contiguous activation bytes qy[64k .. 64k+63]; scales and mins as in the AVX2 file.
// They differ only in how the weights decode: decode(xb, q) fills q[0..3] with unsigned values.
template <int NA, class Block, class Decode>
ERT_INLINE void rows_kquant_min(int64_t n, const void* w, const void* a, size_t stride, float* out,
                                const Decode& decode) {
    const auto* x = static_cast<const Block*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    auto block = [&](int64_t b, __m512* acc) {
        const Block& xb = x[b];
        uint32_t sm[4];
        q4k_unpack_scales(xb.scales, sm);
        const uint8_t* sc = reinterpret_cast<const uint8_t*>(sm);
        const __m512i sc16 = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_loadl_epi64((const __m128i*)sc)));
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)(sc + 8)));
        const float d = h2f(xb.d), dmin = h2f(xb.dmin);
        __m512i q[4], scv[4];
        decode(xb, q);
        for (int k = 0; k < 4; ++k) scv[k] = _mm512_permutexvar_epi16(split_index(2 * k, 2 * k + 1), sc16);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_K& yb = y[r][b];
            __m512i sumi = _mm512_setzero_si512();
            for (int k = 0; k < 4; ++k) {
                const __m512i qy = _mm512_loadu_si512((const void*)(yb.qs + 64 * k));
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[k], qy), scv[k]);
            }
            const __m256i bs = _mm256_loadu_si256((const __m256i*)yb.bsums);
            const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m128i pm = _mm_madd_epi16(pairs, mins);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(d * yb.d), acc[r]);
            const __m512 pmf = _mm512_cvtepi32_ps(_mm512_zextsi128_si512(pm));
            acc[r] = _mm512_fmadd_ps(pmf, _mm512_set1_ps(-dmin * yb.d), acc[r]);
        }
    };
    run_blocks512<NA>(n / QK_K, block, out);
}

// Q4_K: low nibbles in lanes 0..31, high nibbles in lanes 32..63 (one vpsrlvw).
template <int NA>
void q4_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_kquant_min<NA, BlockQ4_K>(n, w, a, stride, out, [](const BlockQ4_K& xb, __m512i* q) {
        const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
        for (int k = 0; k < 4; ++k) {
            const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k)));
            q[k] = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x0F));
        }
    });
}
ERT_DEFINE_DOTS(q4_K)

// Q5_K: as Q4_K; the fifth bit of sub-block j is bit j of each qh byte: one vptestmb against
// (1 << 2k | 1 << 2k+1 per half) selects the lanes that get +16.
template <int NA>
void q5_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    rows_kquant_min<NA, BlockQ5_K>(n, w, a, stride, out, [](const BlockQ5_K& xb, __m512i* q) {
        const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
        const __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)xb.qh));
        const __m512i sixteen = _mm512_set1_epi8(16);
        for (int k = 0; k < 4; ++k) {
            const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(xb.qs + 32 * k)));
            const __m512i lo = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x0F));
            const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1u << (2 * k))),
                                                   _mm256_set1_epi8((char)(1u << (2 * k + 1))), 1);
            q[k] = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(hb, bit), lo, sixteen);
        }
    });
}
ERT_DEFINE_DOTS(q5_K)

// Word lanes 0..7: scale 4i, 8..15: 4i+1, 16..23: 4i+2, 24..31: 4i+3 (a vpermw index; one 64-byte
// register of 4 groups of 16 after vpmaddubsw).
ERT_INLINE __m512i group16_index(int i) {
    return _mm512_inserti64x4(
        _mm512_zextsi256_si512(_mm256_set_m128i(_mm_set1_epi16((short)(4 * i + 1)), _mm_set1_epi16((short)(4 * i)))),
        _mm256_set_m128i(_mm_set1_epi16((short)(4 * i + 3)), _mm_set1_epi16((short)(4 * i + 2))), 1);
}

// Q3_K: register i holds chunks 2i (lanes 0..31) and 2i+1 (32..63), chunk c = 4h + t covering elements
// 32c..32c+31 with q + 4 in 0..7: bits 2t..2t+1 of qs[32h + l] (one vpsrlvw per half) and +4 where bit
// 4h + t of hmask[l] is set (one vptestmb). The -4 offset is applied through the bsums, as in AVX2.
template <int NA>
void q3_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    auto block = [&](int64_t b, __m512* acc) {
        const BlockQ3_K& xb = x[b];
        const __m256i sc16 = _mm256_cvtepi8_epi16(q3k_unpack_scales(xb.scales));
        const __m512i sc512 = _mm512_zextsi256_si512(sc16);
        const __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)xb.hmask));
        const __m512i m3 = _mm512_set1_epi8(0x03), four = _mm512_set1_epi8(4);
        __m512i q[4], scv[4];
        for (int i = 0; i < 4; ++i) {
            const int h = i >> 1, t = 2 * (i & 1);  // chunks 4h + t and 4h + t + 1
            const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(xb.qs + 32 * h)));
            const __m512i shift =
                _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * t)), _mm256_set1_epi16((short)(2 * t + 2)), 1);
            const __m512i lo = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), m3);
            const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1u << (4 * h + t))),
                                                   _mm256_set1_epi8((char)(1u << (4 * h + t + 1))), 1);
            q[i] = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(hm, bit), lo, four);
            scv[i] = _mm512_permutexvar_epi16(group16_index(i), sc512);
        }
        const float d = h2f(xb.d);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_K& yb = y[r][b];
            __m512i sumi = _mm512_setzero_si512();
            for (int i = 0; i < 4; ++i) {
                const __m512i qy = _mm512_loadu_si512((const void*)(yb.qs + 64 * i));
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[i], qy), scv[i]);
            }
            const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)yb.bsums), sc16);
            sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 2)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(d * yb.d), acc[r]);
        }
    };
    run_blocks512<NA>(n / QK_K, block, out);
}
ERT_DEFINE_DOTS(q3_K)

// Q6_K: register 2h+p (h = half, p = 0/1) holds chunks 4h+2p (lanes 0..31) and 4h+2p+1 (32..63);
// chunk c covers elements 32c..32c+31 with scales 2c (first 16) and 2c+1; values 0..63 (offset -32
// applied once per super-block through the bsums).
template <int NA>
void q6_K_rows(int64_t n, const void* w, const void* a, size_t stride, float* out) {
    const auto* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    auto block = [&](int64_t b, __m512* acc) {
        const BlockQ6_K& xb = x[b];
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        // Per 256-bit half of the register: chunk t=0 / t=1 (low nibbles) and t=2 / t=3 (high nibbles).
        const __m512i hmask_lo = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
        const __m512i hshl_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
        const __m512i hmask_hi = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xC0), 1);
        const __m512i hshr_hi = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
        __m512i q[4], scv[4];
        for (int h = 0; h < 2; ++h) {
            const __m512i l = _mm512_loadu_si512((const void*)(xb.ql + 64 * h));
            const __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(xb.qh + 32 * h)));
            q[2 * h] =
                _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_sllv_epi16(_mm512_and_si512(hb, hmask_lo), hshl_lo));
            q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                           _mm512_srlv_epi16(_mm512_and_si512(hb, hmask_hi), hshr_hi));
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)xb.scales));
        const __m512i sc512 = _mm512_zextsi256_si512(sc16);
        for (int i = 0; i < 4; ++i) scv[i] = _mm512_permutexvar_epi16(group16_index(i), sc512);
        const float d = h2f(xb.d);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_K& yb = y[r][b];
            __m512i sumi = _mm512_setzero_si512();
            for (int i = 0; i < 4; ++i) {
                const __m512i qy = _mm512_loadu_si512((const void*)(yb.qs + 64 * i));
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[i], qy), scv[i]);
            }
            const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)yb.bsums), sc16);
            sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(d * yb.d), acc[r]);
        }
    };
    run_blocks512<NA>(n / QK_K, block, out);
}
ERT_DEFINE_DOTS(q6_K)

// F16: 16 lanes per step, fp32 products and sums.
float f16_dot(int64_t n, const void* w, const void* a) {
    const fp16_t* x = static_cast<const fp16_t*>(w);
    const fp16_t* y = static_cast<const fp16_t*>(a);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    auto ld = [](const fp16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); };
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(ld(x + i), ld(y + i), s0);
        s1 = _mm512_fmadd_ps(ld(x + i + 16), ld(y + i + 16), s1);
        s2 = _mm512_fmadd_ps(ld(x + i + 32), ld(y + i + 32), s2);
        s3 = _mm512_fmadd_ps(ld(x + i + 48), ld(y + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(ld(x + i), ld(y + i), s0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; ++i) s += h2f(x[i]) * h2f(y[i]);
    return s;
}

// ------------------------------------------------------------------ table

struct Avx512Table {
    WeightKernels k[31] = {};
    bool present[31] = {};
    void add(GgmlType w, GgmlType act, int64_t abe, int64_t abb, float (*dot)(int64_t, const void*, const void*),
             void (*rows)(int64_t, const void*, const void*, size_t, int, float*)) {
        k[(int)w] =
            WeightKernels{w, act, abe, abb, nullptr, dot, rows, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        present[(int)w] = true;
    }
    Avx512Table() {
        using T = GgmlType;
        add(T::F16, T::F16, 1, 2, f16_dot, nullptr);
        add(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_dot, q8_0_dot_rows);
        add(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q4_0_dot_zmm, q4_0_dot_rows);
        add(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q5_0_dot, q5_0_dot_rows);
        add(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q4_1_dot, q4_1_dot_rows);
        add(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q5_1_dot, q5_1_dot_rows);
        add(T::Q3_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q3_K_dot, q3_K_dot_rows);
        add(T::Q4_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q4_K_dot, q4_K_dot_rows);
        add(T::Q5_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q5_K_dot, q5_K_dot_rows);
        add(T::Q6_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), q6_K_dot, q6_K_dot_rows);
    }
};

}  // namespace

const WeightKernels* avx512vnni_weight_kernels(GgmlType type) noexcept {
    static const Avx512Table t;
    const int i = (int)type;
    return (i >= 0 && i < 31 && t.present[i]) ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
