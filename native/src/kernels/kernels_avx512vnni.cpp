// AVX512-VNNI kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma
// -mf16c; reached only through avx512vnni_weight_kernels() after cpu_features confirmed the CPU and OS
// support. Reference twin: kernels_scalar.cpp.
//
// Every ISA computes the bits of llama.cpp's AVX2 build (kernels.h), and llama.cpp's AVX-512 build still
// sums its quantized dot products in the AVX2 code's order: vpdpbusd on 256-bit registers replaces only
// the integer part (vpmaddubsw + vpmaddwd), whose block sums are exact either way. So this table holds the
// 32-element block formats' single- and multi-row dots (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1) and their
// fp32-scaled prompt dots in that order, and prompt kernels that put two weight rows (Q8_0, Q4_0, Q5_0:
// vec_dot2_rows_scaled; Q6_K: dot2_rows_tiled) or two repacked Q4_K groups (gemm_x16) in one 512-bit
// register, each in its AVX2 lanes, so every output keeps the AVX2 kernels' bits.
// Everything else falls back to the AVX2 table (kernel_dispatch.cpp overlays per entry). Wider kernels
// that paired two blocks in one 512-bit register, or summed K-quant and F16 rows in 16 lanes, were faster
// but changed the float sums (the golden digests of Q8_0, Q4_0, Q6_K and F16 models differed from AVX2's)
// and were removed: two rows, not two blocks, per register keeps the bits.
// The float vector ops outside the matmuls are where llama.cpp's AVX-512 build does differ (16 lanes, its
// own expf): this file also holds that flavour of GgmlVecOps, which the avx512vnni ISA runs.
// GCC 12's AVX-512 headers seed some intrinsics with _mm512_undefined_*(), which -Wuninitialized
// reports at every inlined call site (GCC bug 105593); the values are fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"
#include "x86_simd_common.h"

namespace edge_rt {

namespace {

// AVX512-VNNI integer dot: one vpdpbusd (u8 x i8, groups of 4 summed into int32).
struct DotVnni {
    static ERT_INLINE __m256i u8i8(__m256i u, __m256i y) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y); }
};

template <int NA>
void q8_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ8_0, DotVnni>(n, w, a, s, o);
}
template <int NA>
void q4_0_rows(int64_t n, const void* w, const void* a, size_t s, float* o) {
    rows_q8_0_act<NA, DecQ4_0, DotVnni>(n, w, a, s, o);
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
ERT_DEFINE_DOTS(q4_0)
ERT_DEFINE_DOTS(q5_0)
ERT_DEFINE_DOTS(q4_1)
ERT_DEFINE_DOTS(q5_1)

// Prompt rows with fp32 activation scales, one weight row at a time (vec_dot_rows_scaled: a matrix's odd
// last row), in the AVX2 kernel's order with vpdpbusd.
ERT_DEFINE_SCALED_DOTS(q8_0, DecQ8_0, DotVnni)
ERT_DEFINE_SCALED_DOTS(q4_0, DecQ4_0, DotVnni)
ERT_DEFINE_SCALED_DOTS(q5_0, DecQ5_0, DotVnni)

// Two weight rows against NA activation rows (vec_dot2_rows_scaled): lanes 0-7 are weight row 0's AVX2
// lanes, lanes 8-15 row 1's, each doing what rows_q8_0_act_scaled's lanes do (the exact 4-product sums,
// dx * dy, one fma per block into the pair's accumulator), so each row's half summed by hsum8 is the
// AVX2 kernel's output bit for bit. Each activation block is loaded once, broadcast to both halves, for
// two weight rows. (Pairing two activation rows instead, with one weight row, measured 38.9 G weights/s
// against this kernel's 57.9 and the AVX2 kernel's 35: every activation block was loaded again per
// weight row, and each pair's scales took an insert.)
template <int NA, class D>
ERT_INLINE void rows2_scaled(int64_t n, const void* w, size_t w_stride, const void* a, size_t stride,
                             const float* scales, size_t scale_stride, float* out) {
    const auto* x0 = static_cast<const typename D::Block*>(w);
    const auto* x1 = reinterpret_cast<const typename D::Block*>(static_cast<const uint8_t*>(w) + w_stride);
    const BlockQ8_0* y[NA];
    const float* dy[NA];
    __m512 acc[NA];
    for (int r = 0; r < NA; ++r) {
        y[r] = reinterpret_cast<const BlockQ8_0*>(act_row(a, stride, r));
        dy[r] = scales + (size_t)r * scale_stride;
        acc[r] = _mm512_setzero_ps();
    }
    const int64_t nb = n / QK8_0;
    for (int64_t b = 0; b < nb; ++b) {
        const __m512i qx = _mm512_inserti64x4(_mm512_castsi256_si512(D::q(x0[b])), D::q(x1[b]), 1);
        const __m512i ax = _mm512_abs_epi8(qx);
        const __mmask64 negative = _mm512_movepi8_mask(qx);
        const __m512 dx = _mm512_insertf32x8(_mm512_set1_ps(h2f(x0[b].d)), _mm256_set1_ps(h2f(x1[b].d)), 1);
        for (int r = 0; r < NA; ++r) {
            const __m512i qy = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)y[r][b].qs));
            const __m512i sy = _mm512_mask_sub_epi8(qy, negative, _mm512_setzero_si512(), qy);
            const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dx, _mm512_set1_ps(dy[r][b])), acc[r]);
        }
    }
    for (int r = 0; r < NA; ++r) {
        out[r] = hsum8(_mm512_castps512_ps256(acc[r]));
        out[8 + r] = hsum8(_mm512_extractf32x8_ps(acc[r], 1));
    }
}

// 1 <= na <= 8 (the entry's contract): one run, no row offsets.
template <class D>
void dot2_rows_scaled(int64_t n, const void* w, size_t w_stride, const void* a, size_t st, const float* sc, size_t sst,
                      int na, float* out) {
    switch (na) {
        case 1: return rows2_scaled<1, D>(n, w, w_stride, a, st, sc, sst, out);
        case 2: return rows2_scaled<2, D>(n, w, w_stride, a, st, sc, sst, out);
        case 3: return rows2_scaled<3, D>(n, w, w_stride, a, st, sc, sst, out);
        case 4: return rows2_scaled<4, D>(n, w, w_stride, a, st, sc, sst, out);
        case 5: return rows2_scaled<5, D>(n, w, w_stride, a, st, sc, sst, out);
        case 6: return rows2_scaled<6, D>(n, w, w_stride, a, st, sc, sst, out);
        case 7: return rows2_scaled<7, D>(n, w, w_stride, a, st, sc, sst, out);
        default: return rows2_scaled<8, D>(n, w, w_stride, a, st, sc, sst, out);
    }
}

// Lane i * 8 + r of the result: the sum of the 8 int32 lanes of half i (256 bits) of s[r], for 8 vectors
// s[0..7]. A transposing add tree (22 instructions for the 16 sums, where 16 separate hsums take about 100):
// integer sums are exact, so any order gives the same values.
ERT_INLINE __m512i sum_halves_transposed(const __m512i* s) {
    auto pair_sums = [](__m512i a, __m512i b) {  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
        return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    };
    auto quad_sums = [](__m512i ab, __m512i cd) {  // per 128-bit lane: [sum a, sum b, sum c, sum d]
        return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    };
    const __m512i r0123 = quad_sums(pair_sums(s[0], s[1]), pair_sums(s[2], s[3]));
    const __m512i r4567 = quad_sums(pair_sums(s[4], s[5]), pair_sums(s[6], s[7]));
    // 128-bit lanes 0-1 are half 0, lanes 2-3 half 1: [h0 r0-3, h1 r0-3, h0 r4-7, h1 r4-7] ...
    const __m512i mixed = _mm512_add_epi32(_mm512_shuffle_i32x4(r0123, r4567, _MM_SHUFFLE(2, 0, 2, 0)),
                                           _mm512_shuffle_i32x4(r0123, r4567, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_shuffle_i32x4(mixed, mixed, _MM_SHUFFLE(3, 1, 2, 0));  // ... to [h0 r0-7, h1 r0-7]
}

// Q6_K prompts in the Tiled order (dot2_rows_tiled), two weight rows per 512-bit register: each row's
// super-block is decoded as the AVX2 kernel decodes it (decode_q6_K) and the two put side by side; each
// activation chunk, broadcast to both halves, meets both rows in one vpmaddubsw + vpmaddwd. The integer
// sum of each half is the row's exact super-block sum; the 16 sums of a super-block (2 weight rows x up to
// 8 activation rows) are reduced together (sum_halves_transposed) and take the AVX2 kernel's float steps
// per output in the 16 lanes of one register (res = d * float(sum), acc = fma(res, dy, acc): vector
// rounding is scalar rounding), so each output is dot_rows_tiled's bit for bit.
template <int NA>
ERT_INLINE void q6_K_tiled_rows2(int64_t n, const void* w, size_t w_stride, const void* a, size_t stride, float* out) {
    const auto* x0 = static_cast<const BlockQ6_K*>(w);
    const auto* x1 = reinterpret_cast<const BlockQ6_K*>(static_cast<const uint8_t*>(w) + w_stride);
    auto pair = [](__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); };
    const BlockQ8_K* y[NA];
    for (int r = 0; r < NA; ++r) y[r] = reinterpret_cast<const BlockQ8_K*>(act_row(a, stride, r));
    __m512 acc = _mm512_setzero_ps();  // lane i * 8 + r: weight row i times activation row r
    for (int64_t b = 0; b < n / QK_K; ++b) {
        Groups16 g0, g1;
        decode_q6_K(x0[b], g0);
        decode_q6_K(x1[b], g1);
        // Chunk c of both rows paired once and met by each activation row in turn: NA accumulators live.
        __m512i sums[8];
        alignas(32) float dy[8] = {};
        for (int r = 0; r < 8; ++r) sums[r] = _mm512_setzero_si512();
        for (int c = 0; c < 8; ++c) {
            const __m512i q = pair(g0.q[c], g1.q[c]), scv = pair(g0.scv[c], g1.scv[c]);
            for (int r = 0; r < NA; ++r) {
                const __m512i qy = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(y[r][b].qs + 32 * c)));
                sums[r] = _mm512_dpwssd_epi32(sums[r], _mm512_maddubs_epi16(q, qy), scv);  // madd + add, exact
            }
        }
        const __m512i sc16 = pair(g0.sc16, g1.sc16);
        for (int r = 0; r < NA; ++r) {
            const BlockQ8_K& yb = y[r][b];
            const __m512i corr =
                _mm512_madd_epi16(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)yb.bsums)), sc16);
            sums[r] = _mm512_sub_epi32(sums[r], _mm512_slli_epi32(corr, 5));
            dy[r] = yb.d;
        }
        const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(h2f(x0[b].d)), _mm256_set1_ps(h2f(x1[b].d)), 1);
        const __m512 res = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum_halves_transposed(sums)));
        acc = _mm512_fmadd_ps(res, _mm512_broadcast_f32x8(_mm256_load_ps(dy)), acc);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    for (int r = 0; r < NA; ++r) {
        out[r] = lanes[r];
        out[8 + r] = lanes[8 + r];
    }
}

// 1 <= na <= 8 (the entry's contract): one run, no row offsets.
void q6_K_tiled_dot2_rows(int64_t n, const void* w, size_t w_stride, const void* a, size_t st, int na, float* out) {
    switch (na) {
        case 1: return q6_K_tiled_rows2<1>(n, w, w_stride, a, st, out);
        case 2: return q6_K_tiled_rows2<2>(n, w, w_stride, a, st, out);
        case 3: return q6_K_tiled_rows2<3>(n, w, w_stride, a, st, out);
        case 4: return q6_K_tiled_rows2<4>(n, w, w_stride, a, st, out);
        case 5: return q6_K_tiled_rows2<5>(n, w, w_stride, a, st, out);
        case 6: return q6_K_tiled_rows2<6>(n, w, w_stride, a, st, out);
        case 7: return q6_K_tiled_rows2<7>(n, w, w_stride, a, st, out);
        default: return q6_K_tiled_rows2<8>(n, w, w_stride, a, st, out);
    }
}

// Repacked Q4_K prompts, two interleaved groups (16 weight rows) per 512-bit register (gemm_x16), runs
// of 4 prompt rows that are all gemm rows. Lanes 0-7 are the first group's lanes of the AVX2 gemm_x8,
// lanes 8-15 the second's, each computing the same exact integer chunk sums and the same float steps in
// the same order (the scale d * dy is recomputed per chunk, the same product), so each group's half is
// gemm_x8's output bit for bit. A chunk's nibbles are unpacked once for the 4 rows (AVX-512's 32
// registers; the AVX2 kernel unpacks them per row), and each row's chunk sum is 16 vpdpbusd with the
// activation's 4 bytes broadcast to all 16 lanes (16 weight rows each), times the sub-block scales (in
// float, exactly: see there; vpmulld took 2 uops of port 0, the port vpdpbusd needs). This CPU runs 512-bit vpdpbusd at about two thirds of the 256-bit rate: 1.33x the products
// per second. (A 256-bit version of the same kernel, 8 rows per vpdpbusd, measured 60.9 G weights/s
// against this one's 103.7 and the AVX2 kernel's 46.0.)
void q4_K_gemm_x16_runs_of_4(int64_t n, const uint8_t* groups, const void* a, size_t a_stride, int n_rows, float* out,
                             size_t out_stride) {
    const __m512i low4 = _mm512_set1_epi8(0x0F), low16 = _mm512_set1_epi32(0xFFFF);
    const int64_t nb = n / QK_K;
    const uint8_t* second = groups + (size_t)nb * kQ4_Kx8BlockBytes;
    const auto* ap = static_cast<const uint8_t*>(a);
    auto pair = [](__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); };
    for (int r0 = 0; r0 + 4 <= n_rows; r0 += 4) {
        const BlockQ8_K* y[4];
        __m512 acc[4], acc_min[4];
        for (int r = 0; r < 4; ++r) {
            y[r] = reinterpret_cast<const BlockQ8_K*>(ap + (size_t)(r0 + r) * a_stride);
            acc[r] = acc_min[r] = _mm512_setzero_ps();
        }
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* g0 = groups + b * kQ4_Kx8BlockBytes;
            const uint8_t* g1 = second + b * kQ4_Kx8BlockBytes;
            const __m512 d = _mm512_cvtph_ps(_mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)g0)), _mm_loadu_si128((const __m128i*)g1), 1));
            const __m512 dmin = _mm512_cvtph_ps(
                _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(g0 + 16))),
                                        _mm_loadu_si128((const __m128i*)(g1 + 16)), 1));
            Q4KChunkScales s0[4], s1[4];
            q4_K_x8_scales(g0, s0);
            q4_K_x8_scales(g1, s1);
            for (int k = 0; k < 4; ++k) {
                // Byte group gi of the chunk's weights unpacked once and met by the 4 rows' activation
                // bytes in turn: 8 integer accumulators live, no spills (unpacking all 8 groups first
                // kept 16 more registers live and spilled).
                __m512i plo[4], phi[4];
                for (int r = 0; r < 4; ++r) plo[r] = phi[r] = _mm512_setzero_si512();
                for (int gi = 0; gi < 8; ++gi) {
                    const __m512i v = pair(_mm256_loadu_si256((const __m256i*)(g0 + 128 + 256 * k + 32 * gi)),
                                           _mm256_loadu_si256((const __m256i*)(g1 + 128 + 256 * k + 32 * gi)));
                    const __m512i lo = _mm512_and_si512(v, low4);
                    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                    for (int r = 0; r < 4; ++r) {
                        int32_t y_lo, y_hi;
                        std::memcpy(&y_lo, y[r][b].qs + 64 * k + 4 * gi, 4);
                        std::memcpy(&y_hi, y[r][b].qs + 64 * k + 32 + 4 * gi, 4);
                        plo[r] = _mm512_dpbusd_epi32(plo[r], lo, _mm512_set1_epi32(y_lo));
                        phi[r] = _mm512_dpbusd_epi32(phi[r], hi, _mm512_set1_epi32(y_hi));
                    }
                }
                const __m512 sc_lo = _mm512_cvtepi32_ps(_mm512_and_si512(pair(s0[k].sc_lo, s1[k].sc_lo), low16));
                const __m512 sc_hi = _mm512_cvtepi32_ps(_mm512_and_si512(pair(s0[k].sc_hi, s1[k].sc_hi), low16));
                const __m512i mins = pair(s0[k].mins, s1[k].mins);
                for (int r = 0; r < 4; ++r) {
                    const BlockQ8_K& yb = y[r][b];
                    // plo * sc_lo + phi * sc_hi in float, exact: |plo|, |phi| <= 32 * 15 * 128 < 2^16 and
                    // sc < 2^6, so every product and the sum are integers below 2^24 (no vpmulld).
                    const __m512 chunk = _mm512_fmadd_ps(_mm512_cvtepi32_ps(plo[r]), sc_lo,
                                                         _mm512_mul_ps(_mm512_cvtepi32_ps(phi[r]), sc_hi));
                    const int pair0 = yb.bsums[4 * k] + yb.bsums[4 * k + 1],
                              pair1 = yb.bsums[4 * k + 2] + yb.bsums[4 * k + 3];
                    const __m512i chunk_min = _mm512_madd_epi16(
                        _mm512_set1_epi32((int)((uint32_t)(uint16_t)pair0 | (uint32_t)pair1 << 16)), mins);
                    const __m512 dy = _mm512_set1_ps(yb.d);
                    acc[r] = _mm512_fmadd_ps(chunk, _mm512_mul_ps(d, dy), acc[r]);
                    acc_min[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_min), _mm512_mul_ps(dmin, dy), acc_min[r]);
                }
            }
        }
        for (int r = 0; r < 4; ++r)
            _mm512_storeu_ps(out + (size_t)(r0 + r) * out_stride, _mm512_sub_ps(acc[r], acc_min[r]));
    }
}

// The leading gemm rows in runs of 4 as above; the rest (fewer than 4, or gemv rows, a decode step among
// them) through the AVX2 gemm_x8, one group at a time.
void q4_K_gemm_x16(int64_t n, const void* groups, const void* a, size_t a_stride, const int16_t* a_sums, int n_act,
                   int n_gemm, float* out, size_t out_stride) {
    const auto* g = static_cast<const uint8_t*>(groups);
    const int n4 = std::min(n_act, n_gemm) / 4 * 4;
    q4_K_gemm_x16_runs_of_4(n, g, a, a_stride, n4, out, out_stride);
    if (n4 == n_act) return;
    const uint8_t* rest = static_cast<const uint8_t*>(a) + (size_t)n4 * a_stride;
    const WeightKernels* avx2 = avx2_weight_kernels(GgmlType::Q4_K);
    for (int h = 0; h < 2; ++h)
        avx2->gemm_x8(n, g + (size_t)h * (n / QK_K) * kQ4_Kx8BlockBytes, rest, a_stride,
                      a_sums ? a_sums + (size_t)n4 * (size_t)(n / 32) : nullptr, n_act - n4, std::max(0, n_gemm - n4),
                      out + (size_t)n4 * out_stride + 8 * h, out_stride);
}

// ------------------------------------------------------------------ ggml vector ops, AVX-512 flavour
// llama.cpp built on an AVX-512 CPU (kernels.h GgmlVecOps): ggml-cpu vec.h's AVX-512 ggml_v_expf and
// ggml_v_silu, vec.cpp's 16-lane ggml_vec_swiglu_f32 / ggml_vec_soft_max_f32 / ggml_vec_dot_f16
// (GGML_F32x16_REDUCE), tinyBLAS<16, __m512>. Scalar twin: vec_ops_scalar.cpp (*_scalar_avx512).

ERT_INLINE __m512 ggml_v_expf512(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b =
        _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (d == 0) return res;
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(d, res, alt);
}

// GCC's _mm512_reduce_add_ps, written out so the tree does not depend on this file's compiler: the
// upper 8 lanes onto the lower, 4 onto 4, then (0 + 2) + (1 + 3).
ERT_INLINE float hsum16(__m512 v) {
    const __m256 t3 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, _MM_SHUFFLE(1, 1, 1, 1)));
}

ERT_INLINE __m512 load_f16x16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }

void ggml_swiglu_avx512(const float* x, const float* g, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 15 < n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512 silu =
            _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1), ggml_v_expf512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(silu, _mm512_loadu_ps(g + i)));
    }
    for (; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

double ggml_softmax_exp_avx512(const float* x, float* y, int64_t n, float max) {
    double sum = 0.0;
    const __m512 vmax = _mm512_set1_ps(max);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = ggml_v_expf512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
        _mm512_storeu_ps(y + i, v);
        sum += (double)hsum16(v);
    }
    if (i < n) {  // the masked lanes of ggml's padded row: exp(-inf) = 0
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 t = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i);
        const __m512 v = ggml_v_expf512(_mm512_sub_ps(t, vmax));
        _mm512_mask_storeu_ps(y + i, m, v);
        sum += (double)hsum16(v);
    }
    return sum;
}

// n fp16 values from p, zeros past them (up to 16).
ERT_INLINE __m512 load_f16x16_tail(const uint16_t* p, int64_t n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p));
}

float ggml_dot_f16_tinyblas_avx512(int64_t n, const uint16_t* x, const uint16_t* y) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(load_f16x16(x + i), load_f16x16(y + i), acc);
    if (i < n) acc = _mm512_fmadd_ps(load_f16x16_tail(x + i, n - i), load_f16x16_tail(y + i, n - i), acc);
    return hsum16(acc);
}

// Each output is ggml_dot_f16_tinyblas_avx512(D, k_j, q_i) exactly (D % 16 == 0).
void ggml_kq_tinyblas_avx512(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                             float* out, int64_t out_stride) {
    const int64_t chunks = D / 16;
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        for (int i = 0; i < nq; ++i) {
            const float* qi = q + i * D;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t c = 0; c < chunks; ++c)
                acc = _mm512_fmadd_ps(load_f16x16(kr + 16 * c), _mm512_loadu_ps(qi + 16 * c), acc);
            out[i * out_stride + j] = hsum16(acc);
        }
    }
}

// GGML_F32x16_REDUCE of 4 accumulators into a double.
ERT_INLINE double reduce4x16(__m512* s) {
    s[0] = _mm512_add_ps(s[0], s[2]);
    s[1] = _mm512_add_ps(s[1], s[3]);
    s[0] = _mm512_add_ps(s[0], s[1]);
    return (double)hsum16(s[0]);
}

void ggml_kq_ggml_avx512(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                         float* out, int64_t out_stride) {
    const int64_t np = D & ~(int64_t)63;
    for (int64_t j = 0; j < n_pos; ++j) {
        const uint16_t* kr = k + j * k_stride;
        for (int i = 0; i < nq; ++i) {
            const float* qi = q + i * D;
            __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int64_t e = 0; e < np; e += 64)
                for (int c = 0; c < 4; ++c)
                    s[c] = _mm512_fmadd_ps(load_f16x16(kr + e + 16 * c), _mm512_loadu_ps(qi + e + 16 * c), s[c]);
            double sum = reduce4x16(s);
            for (int64_t e = np; e < D; ++e) sum += (double)(h2f(kr[e]) * qi[e]);
            out[i * out_stride + j] = (float)sum;
        }
    }
}

// One V row (d) widened 16 positions at a time against up to 8 probability rows.
void ggml_pv_tinyblas_avx512(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p,
                             int64_t p_stride, int np, float* out) {
    for (int64_t d = 0; d < D; ++d) {
        const uint16_t* vr = v + d * v_stride;
        __m512 acc[8];
        for (int i = 0; i < np; ++i) acc[i] = _mm512_setzero_ps();
        int64_t e = 0;
        for (; e + 16 <= n; e += 16) {
            const __m512 vv = load_f16x16(vr + e);
            for (int i = 0; i < np; ++i) acc[i] = _mm512_fmadd_ps(vv, _mm512_loadu_ps(p + i * p_stride + e), acc[i]);
        }
        if (e < n) {  // p rows are zero past n up to p_stride (a multiple of 16)
            const __m512 vv = load_f16x16_tail(vr + e, n - e);
            for (int i = 0; i < np; ++i) acc[i] = _mm512_fmadd_ps(vv, _mm512_loadu_ps(p + i * p_stride + e), acc[i]);
        }
        for (int i = 0; i < np; ++i) out[i * D + d] = hsum16(acc[i]);
    }
}

float ggml_dot_f16_avx512(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total) {
    const int64_t np = n_total & ~(int64_t)63;
    const int64_t m = n < np ? n : np;
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= m; i += 64)
        for (int c = 0; c < 4; ++c)
            s[c] = _mm512_fmadd_ps(load_f16x16(x + i + 16 * c), load_f16x16(y + i + 16 * c), s[c]);
    for (int c = 0; c < 4 && i + 16 * c < m; ++c) {  // a partial step: zero products past m
        const int64_t left = std::min<int64_t>(16, m - i - 16 * c);
        s[c] = _mm512_fmadd_ps(load_f16x16_tail(x + i + 16 * c, left), load_f16x16_tail(y + i + 16 * c, left), s[c]);
    }
    double sum = reduce4x16(s);
    for (int64_t k = np; k < n; ++k) sum += (double)(h2f(x[k]) * h2f(y[k]));
    return (float)sum;
}

// ------------------------------------------------------------------ table

struct Avx512Table {
    WeightKernels k[31] = {};
    bool present[31] = {};
    void add(GgmlType w, GgmlType act, int64_t abe, int64_t abb, float (*dot)(int64_t, const void*, const void*),
             void (*rows)(int64_t, const void*, const void*, size_t, int, float*)) {
        k[(int)w] = WeightKernels{w,       act,     abe,     abb,     nullptr, dot,     rows,    nullptr,
                                  nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        present[(int)w] = true;
    }
    Avx512Table() {
        using T = GgmlType;
        add(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_dot, q8_0_dot_rows);
        add(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q4_0_dot, q4_0_dot_rows);
        add(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q5_0_dot, q5_0_dot_rows);
        k[(int)T::Q8_0].vec_dot_rows_scaled = q8_0_dot_rows_scaled;
        k[(int)T::Q4_0].vec_dot_rows_scaled = q4_0_dot_rows_scaled;
        k[(int)T::Q5_0].vec_dot_rows_scaled = q5_0_dot_rows_scaled;
        k[(int)T::Q8_0].vec_dot2_rows_scaled = dot2_rows_scaled<DecQ8_0>;
        k[(int)T::Q4_0].vec_dot2_rows_scaled = dot2_rows_scaled<DecQ4_0>;
        k[(int)T::Q5_0].vec_dot2_rows_scaled = dot2_rows_scaled<DecQ5_0>;
        add(T::Q4_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), nullptr, nullptr);  // only the two-group prompt gemm
        k[(int)T::Q4_K].gemm_x16 = q4_K_gemm_x16;
        add(T::Q6_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), nullptr, nullptr);  // only the two-row tiled kernel
        k[(int)T::Q6_K].dot2_rows_tiled = q6_K_tiled_dot2_rows;
        add(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q4_1_dot, q4_1_dot_rows);
        add(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q5_1_dot, q5_1_dot_rows);
    }
};

}  // namespace

const GgmlVecOps* avx512_ggml_vec_ops() noexcept {
    static const GgmlVecOps ops{ggml_swiglu_avx512,
                                ggml_softmax_exp_avx512,
                                ggml_dot_f16_tinyblas_avx512,
                                ggml_dot_f16_avx512,
                                ggml_geglu,
                                ggml_kq_tinyblas_avx512,
                                ggml_pv_tinyblas_avx512,
                                ggml_kq_ggml_avx512,
                                16};
    return &ops;
}

const WeightKernels* avx512vnni_weight_kernels(GgmlType type) noexcept {
    static const Avx512Table t;
    const int i = (int)type;
    return (i >= 0 && i < 31 && t.present[i]) ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
