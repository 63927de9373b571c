// Scalar reference kernels (the twin every SIMD kernel is tested against) and the per-ISA dispatch.
//
// Semantics follow ggml's reference code: activations are quantized exactly like
// quantize_row_q8_0/q8_1/q8_K_ref, dot products sum integers per block and scale once per block.
// Integer block sums are exact. The 32-element block formats add the scaled block terms in the AVX2
// kernels' order (LaneSum, and Q4_0's Blockwise order), so those are the AVX2 bits exactly; the
// K-quant and float twins differ from the SIMD variants by float summation order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "edge_rt/fp16.h"
#include "edge_rt/kernels.h"

namespace edge_rt {

namespace {

// Round to nearest, ties to even, for |x| < 2^22 (ggml's nearest_int trick, written out).
inline int nearest_int(float x) {
    float v = x + 12582912.f;  // 1.5 * 2^23: the mantissa then holds round(x) + 2^22
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// ---------------------------------------------------------------- activation quantizers

void quantize_f32(const float* x, void* y, int64_t n) { std::memcpy(y, x, (size_t)n * sizeof(float)); }

void quantize_f16(const float* x, void* y, int64_t n) {
    auto* o = static_cast<fp16_t*>(y);
    for (int64_t i = 0; i < n; ++i) o[i] = fp32_to_fp16(x[i]);
}

void quantize_bf16(const float* x, void* y, int64_t n) {
    auto* o = static_cast<bf16_t*>(y);
    for (int64_t i = 0; i < n; ++i) o[i] = fp32_to_bf16(x[i]);
}

// q8_0: d = amax / 127, q = round_half_even(x * 127 / amax). This is what llama.cpp computes on x86
// (its AVX quantizer: id = 127/amax, _mm256_round_ps to nearest even), not ggml's portable reference
// (id = 1/d, roundf ties away): the peer we match token for token runs the former, and a different
// rounding of one activation flips int8 values and moves logits by ~1e-2.
void quantize_q8_0(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(vy);
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        float amax = 0.f;
        for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[b].qs[j] = (int8_t)nearest_int(x[j] * id);
    }
}

// q8_1: as q8_0 plus s = d * sum(q) (d in fp32 before its fp16 rounding, as ggml).
void quantize_q8_1(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(vy);
    for (int64_t b = 0; b < n / QK8_1; ++b, x += QK8_1) {
        float amax = 0.f;
        for (int j = 0; j < QK8_1; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        y[b].d = fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            const int q = nearest_int(x[j] * id);
            y[b].qs[j] = (int8_t)q;
            sum += q;
        }
        y[b].s = fp32_to_fp16((float)sum * d);
    }
}

// q8_K: iscale = -127 / max where max is the signed value of largest magnitude (so that value maps to
// -127 exactly); q = nearest_int(iscale * x) clamped to 127; d = 1 / iscale; bsums of 16.
void quantize_q8_K(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<BlockQ8_K*>(vy);
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        float amax = 0.f, max = 0.f;
        for (int j = 0; j < QK_K; ++j) {
            const float ax = std::fabs(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.f) {
            y[b].d = 0.f;
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            std::memset(y[b].bsums, 0, sizeof(y[b].bsums));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) {
            const int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += y[b].qs[g * 16 + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.f / iscale;
    }
}

// ---------------------------------------------------------------- dequantizers

void dequant_f32(const void* w, float* y, int64_t n) { std::memcpy(y, w, (size_t)n * sizeof(float)); }

void dequant_f16(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const fp16_t*>(w);
    for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void dequant_bf16(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const bf16_t*>(w);
    for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

void dequant_q8_0(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ8_0*>(w);
    for (int64_t b = 0; b < n / QK8_0; ++b, y += QK8_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = d * (float)x[b].qs[j];
    }
}

void dequant_q4_0(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    for (int64_t b = 0; b < n / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * (float)((x[b].qs[j] & 0x0F) - 8);
            y[j + 16] = d * (float)((x[b].qs[j] >> 4) - 8);
        }
    }
}

void dequant_q4_1(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ4_1*>(w);
    for (int64_t b = 0; b < n / QK4_1; ++b, y += QK4_1) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = (float)(x[b].qs[j] & 0x0F) * d + m;
            y[j + 16] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

// 5-bit value j of a Q5 block: low nibble from qs, bit 4 from bit j of the little-endian qh word.
inline void q5_values(const uint8_t* qh4, const uint8_t* qs, int* lo, int* hi) {
    uint32_t qh;
    std::memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; ++j) {
        lo[j] = (qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
        hi[j] = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
    }
}

void dequant_q5_0(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ5_0*>(w);
    for (int64_t b = 0; b < n / QK5_0; ++b, y += QK5_0) {
        const float d = fp16_to_fp32(x[b].d);
        int lo[16], hi[16];
        q5_values(x[b].qh, x[b].qs, lo, hi);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * (float)(lo[j] - 16);
            y[j + 16] = d * (float)(hi[j] - 16);
        }
    }
}

void dequant_q5_1(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ5_1*>(w);
    for (int64_t b = 0; b < n / QK5_1; ++b, y += QK5_1) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        int lo[16], hi[16];
        q5_values(x[b].qh, x[b].qs, lo, hi);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)lo[j] * d + m;
            y[j + 16] = (float)hi[j] * d + m;
        }
    }
}

// Q4_K: 8 sub-blocks of 32 with 6-bit scale sc[j] and min m[j] packed in 12 bytes:
// j < 4: sc = s[j] & 63, m = s[j+4] & 63; j >= 4: low 4 bits in s[j+4] (sc low nibble, m high
// nibble), top 2 bits in the top 2 bits of s[j-4] (sc) and s[j] (m).
inline void q4k_scale_min(int j, const uint8_t* s, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q4_K element order: each 32-byte run of qs holds sub-block 2k in its low nibbles and 2k+1 in its high.
void dequant_q4_K(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ4_K*>(w);
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        const uint8_t* q = x[b].qs;
        for (int k = 0; k < 4; ++k, q += 32) {
            int sc0, m0, sc1, m1;
            q4k_scale_min(2 * k, x[b].scales, &sc0, &m0);
            q4k_scale_min(2 * k + 1, x[b].scales, &sc1, &m1);
            const float d0 = d * (float)sc0, mm0 = dmin * (float)m0;
            const float d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; ++l) *y++ = d0 * (float)(q[l] & 0x0F) - mm0;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] >> 4) - mm1;
        }
    }
}

// Q3_K signed 6-bit scale j (0..15) minus its offset: s - 32 in -32..31 (layout in ggml_types.h).
inline int q3k_scale(const uint8_t* s12, int j) {
    const int low = (j < 8) ? (s12[j] & 0x0F) : (s12[j - 8] >> 4);
    const int high = (s12[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (low | (high << 4)) - 32;
}

// Q3_K value of element e (0..255) in -4..3: two low bits from qs, bit 2 from hmask (clear -> -4).
inline int q3k_value(const BlockQ3_K& x, int e) {
    const int h = e / 128, t = (e % 128) / 32, l = e % 32;
    const int low = (x.qs[32 * h + l] >> (2 * t)) & 3;
    const int high = (x.hmask[l] >> (4 * h + t)) & 1;
    return low + 4 * high - 4;
}

void dequant_q3_K(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ3_K*>(w);
    for (int64_t b = 0; b < n / QK_K; ++b, y += QK_K) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float dl = d * (float)q3k_scale(x[b].scales, j);
            for (int l = 0; l < 16; ++l) y[16 * j + l] = dl * (float)q3k_value(x[b], 16 * j + l);
        }
    }
}

// Q5_K: Q4_K's nibbles and scales plus a fifth bit: element l of sub-block j (0..7) has bit 4 equal
// to bit j of qh[l], so one qh byte carries the top bits of element l of all 8 sub-blocks.
inline int q5k_value(const BlockQ5_K& x, int j, int l) {
    const uint8_t byte = x.qs[32 * (j / 2) + l];
    const int low = (j & 1) ? (byte >> 4) : (byte & 0x0F);
    return low | (((x.qh[l] >> j) & 1) << 4);
}

void dequant_q5_K(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ5_K*>(w);
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int j = 0; j < 8; ++j) {
            int sc, m;
            q4k_scale_min(j, x[b].scales, &sc, &m);
            const float dj = d * (float)sc, mj = dmin * (float)m;
            for (int l = 0; l < 32; ++l) *y++ = dj * (float)q5k_value(x[b], j, l) - mj;
        }
    }
}

// Q6_K 6-bit value for element e (0..255) of a super-block; scale index is e / 16.
// Each half of 128 uses 64 bytes of ql and 32 of qh: element 32*t + l (t = 0..3, l = 0..31) takes
// byte ql[l + 32*(t & 1)] (low nibble for t < 2, high nibble for t >= 2) and bits 2t..2t+1 of qh[l].
inline int q6k_value(const BlockQ6_K& x, int e) {
    const int half = e / 128, r = e % 128, t = r / 32, l = r % 32;
    const uint8_t* ql = x.ql + 64 * half;
    const uint8_t* qh = x.qh + 32 * half;
    const uint8_t lowbyte = ql[l + 32 * (t & 1)];
    const int low = (t < 2) ? (lowbyte & 0x0F) : (lowbyte >> 4);
    const int high = (qh[l] >> (2 * t)) & 3;
    return (low | (high << 4)) - 32;
}

void dequant_q6_K(const void* w, float* y, int64_t n) {
    const auto* x = static_cast<const BlockQ6_K*>(w);
    for (int64_t b = 0; b < n / QK_K; ++b, y += QK_K) {
        const float d = fp16_to_fp32(x[b].d);
        for (int e = 0; e < QK_K; ++e) y[e] = d * (float)x[b].scales[e / 16] * (float)q6k_value(x[b], e);
    }
}

// ---------------------------------------------------------------- dot products
// Plain types: fp32 products summed in double (ggml's scalar ggml_float accumulator).

float dot_f32(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const float*>(w);
    const auto* y = static_cast<const float*>(a);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += (double)(x[i] * y[i]);
    return (float)s;
}

float dot_f16(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const fp16_t*>(w);
    const auto* y = static_cast<const fp16_t*>(a);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return (float)s;
}

float dot_bf16(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const bf16_t*>(w);
    const auto* y = static_cast<const bf16_t*>(a);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += (double)(bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]));
    return (float)s;
}

// The 32-element block formats sum a row as the AVX2 kernels do (x86_simd_common.h rows_q8_0_act /
// rows_q8_1_act, themselves ggml's AVX2 vec_dot order): lane j of an 8-float accumulator takes, block by
// block, fma(float(sum of the products of elements 4j..4j+3), dx*dy, lane j); the lanes are reduced as
// hsum8. Integer sums are exact, so emulating the lanes makes these twins the AVX2 results bit for bit
// rather than only close: a last-bit difference flips int8 roundings of the next layer's activations,
// which trained weights amplify (SmolLM2-135M Q4_1: 0.11-0.29 std of the logits with per-block sums).
struct LaneSum {
    float lane[8] = {};
    // q[i] * y[i] for the block's 32 elements in element order
    void add_block(const int* wq, const int8_t* yq, float scale) {
        for (int j = 0; j < 8; ++j) {
            const int p = wq[4 * j] * yq[4 * j] + wq[4 * j + 1] * yq[4 * j + 1] + wq[4 * j + 2] * yq[4 * j + 2] +
                          wq[4 * j + 3] * yq[4 * j + 3];
            lane[j] = std::fma((float)p, scale, lane[j]);
        }
    }
    // hsum8: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
    float total() const {
        return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    }
};

// One block's 32 weights as integers in element order (low nibbles are elements 0..15, high 16..31).
inline void nibbles(const uint8_t* qs, int offset, int* q) {
    for (int j = 0; j < 16; ++j) {
        q[j] = (qs[j] & 0x0F) - offset;
        q[j + 16] = (qs[j] >> 4) - offset;
    }
}
inline void q5_block(const uint8_t* qh, const uint8_t* qs, int offset, int* q) {
    int lo[16], hi[16];
    q5_values(qh, qs, lo, hi);
    for (int j = 0; j < 16; ++j) {
        q[j] = lo[j] - offset;
        q[j + 16] = hi[j] - offset;
    }
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ8_0*>(w);
    const auto* y = static_cast<const BlockQ8_0*>(a);
    LaneSum acc;
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int q[QK8_0];
        for (int j = 0; j < QK8_0; ++j) q[j] = x[b].qs[j];
        acc.add_block(q, y[b].qs, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    return acc.total();
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    const auto* y = static_cast<const BlockQ8_0*>(a);
    LaneSum acc;
    for (int64_t b = 0; b < n / QK4_0; ++b) {
        int q[QK4_0];
        nibbles(x[b].qs, 8, q);
        acc.add_block(q, y[b].qs, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    return acc.total();
}

// sum (d q + m) * dy qy = d dy sum(q qy) + m * (dy sum(qy)) = ... + m * s; the m * s terms summed in
// order in one float, added after the lanes (as the AVX2 kernel and ggml's).
float dot_q4_1(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ4_1*>(w);
    const auto* y = static_cast<const BlockQ8_1*>(a);
    LaneSum acc;
    float ms = 0.f;
    for (int64_t b = 0; b < n / QK4_1; ++b) {
        int q[QK4_1];
        nibbles(x[b].qs, 0, q);
        acc.add_block(q, y[b].qs, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
        ms += fp16_to_fp32(x[b].m) * fp16_to_fp32(y[b].s);
    }
    return acc.total() + ms;
}

float dot_q5_0(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ5_0*>(w);
    const auto* y = static_cast<const BlockQ8_0*>(a);
    LaneSum acc;
    for (int64_t b = 0; b < n / QK5_0; ++b) {
        int q[QK5_0];
        q5_block(x[b].qh, x[b].qs, 16, q);
        acc.add_block(q, y[b].qs, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    return acc.total();
}

float dot_q5_1(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ5_1*>(w);
    const auto* y = static_cast<const BlockQ8_1*>(a);
    LaneSum acc;
    float ms = 0.f;
    for (int64_t b = 0; b < n / QK5_1; ++b) {
        int q[QK5_1];
        q5_block(x[b].qh, x[b].qs, 0, q);
        acc.add_block(q, y[b].qs, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
        ms += fp16_to_fp32(x[b].m) * fp16_to_fp32(y[b].s);
    }
    return acc.total() + ms;
}

// ---- Q4_0 in Blockwise order (kernels.h SumOrder): one float accumulator per output, block by block.

inline int q4_0_block_isum(const uint8_t* qs, const int8_t* yq) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += ((qs[j] & 0x0F) - 8) * yq[j] + ((qs[j] >> 4) - 8) * yq[j + 16];
    return sumi;
}

void q4_0_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, int /*n_gemm*/,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_0*>(w);
    for (int j = 0; j < n_act; ++j) {
        const auto* y = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(a) + (size_t)j * a_stride);
        float acc = 0.f;
        for (int64_t b = 0; b < n / QK4_0; ++b)
            acc = std::fma((float)q4_0_block_isum(x[b].qs, y[b].qs), fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d), acc);
        out[j] = acc;
    }
}

void q4_0_interleave_x8(const void* src, size_t row_bytes, int64_t n, void* group) {
    auto* g = static_cast<uint8_t*>(group);
    for (int64_t b = 0; b < n / QK4_0; ++b, g += kQ4_0x8BlockBytes) {
        for (int c = 0; c < 8; ++c) {
            const auto& blk = reinterpret_cast<const BlockQ4_0*>(static_cast<const uint8_t*>(src) + c * row_bytes)[b];
            std::memcpy(g + 2 * c, &blk.d, 2);
            for (int k = 0; k < 4; ++k) std::memcpy(g + 16 + 32 * k + 4 * c, blk.qs + 4 * k, 4);
        }
    }
}

// Reads the x8 layout; the a_sums path is the AVX2 kernel's (sum q * y - 8 * sum y), the same integers.
void q4_0_gemm_x8(int64_t n, const void* group, const void* a, size_t a_stride, const int16_t* a_sums, int n_act,
                  int /*n_gemm*/, float* out, size_t out_stride) {
    const int64_t nb = n / QK4_0;
    for (int j = 0; j < n_act; ++j) {
        const auto* y = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(a) + (size_t)j * a_stride);
        for (int c = 0; c < 8; ++c) {
            const uint8_t* g = static_cast<const uint8_t*>(group);
            float acc = 0.f;
            for (int64_t b = 0; b < nb; ++b, g += kQ4_0x8BlockBytes) {
                int sumi = 0;
                for (int k = 0; k < 4; ++k)
                    for (int i = 0; i < 4; ++i) {
                        const uint8_t q = g[16 + 32 * k + 4 * c + i];
                        sumi += (q & 0x0F) * y[b].qs[4 * k + i] + (q >> 4) * y[b].qs[16 + 4 * k + i];
                    }
                sumi -= 8 * a_sums[(size_t)j * nb + b];
                fp16_t d;
                std::memcpy(&d, g + 2 * c, 2);
                acc = std::fma((float)sumi, fp16_to_fp32(d) * fp16_to_fp32(y[b].d), acc);
            }
            out[(size_t)j * out_stride + c] = acc;
        }
    }
}

// Q4_K: sum = d*dy*sum_j sc[j]*dot_j(q, qy) - dmin*dy*sum_j m[j]*(bsums[2j] + bsums[2j+1]).
float dot_q4_K(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ4_K*>(w);
    const auto* y = static_cast<const BlockQ8_K*>(a);
    float s = 0.f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const uint8_t* q = x[b].qs;
        const int8_t* qy = y[b].qs;
        int32_t sumi = 0, summ = 0;
        for (int k = 0; k < 4; ++k, q += 32, qy += 64) {
            int sc0, m0, sc1, m1;
            q4k_scale_min(2 * k, x[b].scales, &sc0, &m0);
            q4k_scale_min(2 * k + 1, x[b].scales, &sc1, &m1);
            int d0 = 0, d1 = 0;
            for (int l = 0; l < 32; ++l) {
                d0 += (q[l] & 0x0F) * qy[l];
                d1 += (q[l] >> 4) * qy[l + 32];
            }
            sumi += sc0 * d0 + sc1 * d1;
            summ +=
                m0 * (y[b].bsums[4 * k] + y[b].bsums[4 * k + 1]) + m1 * (y[b].bsums[4 * k + 2] + y[b].bsums[4 * k + 3]);
        }
        s += fp16_to_fp32(x[b].d) * y[b].d * (float)sumi - fp16_to_fp32(x[b].dmin) * y[b].d * (float)summ;
    }
    return s;
}

// Q4_K in Blockwise order (kernels.h SumOrder), as ggml_gemv/gemm_q4_K_8x8_q8_K: per output two float
// accumulators, acc = fma(sum_j sc[j] * dot_j, d * dy, acc) and acc_min = fma(sum_j m[j] * bsum pair j,
// dmin * dy, acc_min) super-block by super-block (gemv), or per 64-element chunk of sub-blocks j = 2c,
// 2c + 1 (gemm rows); the output is acc - acc_min.
void q4_K_dot_rows_blockwise(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, int n_gemm,
                             float* out) {
    const auto* x = static_cast<const BlockQ4_K*>(w);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + (size_t)r * a_stride);
        const int step = r < n_gemm ? 2 : 8;  // sub-blocks per float term
        float acc = 0.f, acc_min = 0.f;
        for (int64_t b = 0; b < n / QK_K; ++b) {
            int32_t sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
                int sc, m;
                q4k_scale_min(j, x[b].scales, &sc, &m);
                const uint8_t* q = x[b].qs + 32 * (j / 2);
                const int8_t* qy = y[b].qs + 32 * j;
                int dj = 0;
                for (int l = 0; l < 32; ++l) dj += (j % 2 ? q[l] >> 4 : q[l] & 0x0F) * qy[l];
                sumi += sc * dj;
                summ += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
                if ((j + 1) % step == 0) {
                    acc = std::fma((float)sumi, fp16_to_fp32(x[b].d) * y[b].d, acc);
                    acc_min = std::fma((float)summ, fp16_to_fp32(x[b].dmin) * y[b].d, acc_min);
                    sumi = summ = 0;
                }
            }
        }
        out[r] = acc - acc_min;
    }
}

void q4_K_interleave_x8(const void* src, size_t row_bytes, int64_t n, void* group) {
    auto* g = static_cast<uint8_t*>(group);
    for (int64_t b = 0; b < n / QK_K; ++b, g += kQ4_Kx8BlockBytes) {
        for (int c = 0; c < 8; ++c) {
            const auto& blk = reinterpret_cast<const BlockQ4_K*>(static_cast<const uint8_t*>(src) + c * row_bytes)[b];
            std::memcpy(g + 2 * c, &blk.d, 2);
            std::memcpy(g + 16 + 2 * c, &blk.dmin, 2);
            int sc[8], m[8];
            for (int j = 0; j < 8; ++j) q4k_scale_min(j, blk.scales, &sc[j], &m[j]);
            for (int j = 0; j < 8; ++j) g[32 + 8 * j + c] = (uint8_t)((sc[j] & 15) | (m[j] & 15) << 4);
            for (int k = 0; k < 4; ++k)
                g[96 + 8 * k + c] = (uint8_t)((sc[2 * k] >> 4) | (m[2 * k] >> 4) << 2 | (sc[2 * k + 1] >> 4) << 4 |
                                              (m[2 * k + 1] >> 4) << 6);
            for (int k = 0; k < 4; ++k)
                for (int gi = 0; gi < 8; ++gi)
                    std::memcpy(g + 128 + 256 * k + 32 * gi + 4 * c, blk.qs + 32 * k + 4 * gi, 4);
        }
    }
}

// Reads the x8 layout back (scales, mins, nibbles) and sums as q4_K_dot_rows_blockwise.
void q4_K_gemm_x8(int64_t n, const void* group, const void* a, size_t a_stride, const int16_t* /*a_sums*/, int n_act,
                  int n_gemm, float* out, size_t out_stride) {
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + (size_t)r * a_stride);
        const int step = r < n_gemm ? 2 : 8;
        for (int c = 0; c < 8; ++c) {
            const uint8_t* g = static_cast<const uint8_t*>(group);
            float acc = 0.f, acc_min = 0.f;
            for (int64_t b = 0; b < n / QK_K; ++b, g += kQ4_Kx8BlockBytes) {
                fp16_t d, dmin;
                std::memcpy(&d, g + 2 * c, 2);
                std::memcpy(&dmin, g + 16 + 2 * c, 2);
                int32_t sumi = 0, summ = 0;
                for (int j = 0; j < 8; ++j) {
                    const int hi2 = g[96 + 8 * (j / 2) + c] >> (4 * (j % 2));
                    const int sc = (g[32 + 8 * j + c] & 15) | (hi2 & 3) << 4;
                    const int m = (g[32 + 8 * j + c] >> 4) | ((hi2 >> 2) & 3) << 4;
                    int dj = 0;
                    for (int gi = 0; gi < 8; ++gi)
                        for (int i = 0; i < 4; ++i) {
                            const uint8_t q = g[128 + 256 * (j / 2) + 32 * gi + 4 * c + i];
                            dj += (j % 2 ? q >> 4 : q & 0x0F) * y[b].qs[32 * j + 4 * gi + i];
                        }
                    sumi += sc * dj;
                    summ += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
                    if ((j + 1) % step == 0) {
                        acc = std::fma((float)sumi, fp16_to_fp32(d) * y[b].d, acc);
                        acc_min = std::fma((float)summ, fp16_to_fp32(dmin) * y[b].d, acc_min);
                        sumi = summ = 0;
                    }
                }
            }
            out[(size_t)r * out_stride + c] = acc - acc_min;
        }
    }
}

// Super-blocks of 16 groups of 16 with one signed scale per group (Q3_K, Q6_K):
// d*dy*sum_g scale(g)*dot_g(q, qy), summed as exact integers first.
template <class Block, class Scale, class Value>
float dot_16_groups(int64_t n, const Block* x, const BlockQ8_K* y, Scale scale, Value value) {
    float s = 0.f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t sumi = 0;
        for (int g = 0; g < QK_K / 16; ++g) {
            int dg = 0;
            for (int l = 0; l < 16; ++l) dg += value(x[b], 16 * g + l) * y[b].qs[16 * g + l];
            sumi += scale(x[b], g) * dg;
        }
        s += fp16_to_fp32(x[b].d) * y[b].d * (float)sumi;
    }
    return s;
}

float dot_q3_K(int64_t n, const void* w, const void* a) {
    return dot_16_groups(
        n, static_cast<const BlockQ3_K*>(w), static_cast<const BlockQ8_K*>(a),
        [](const BlockQ3_K& x, int g) { return q3k_scale(x.scales, g); }, q3k_value);
}

// Q5_K: as Q4_K with 5-bit q: d*dy*sum_j sc[j]*dot_j(q, qy) - dmin*dy*sum_j m[j]*(bsums[2j] + bsums[2j+1]).
float dot_q5_K(int64_t n, const void* w, const void* a) {
    const auto* x = static_cast<const BlockQ5_K*>(w);
    const auto* y = static_cast<const BlockQ8_K*>(a);
    float s = 0.f;
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
            int sc, m;
            q4k_scale_min(j, x[b].scales, &sc, &m);
            const int8_t* qy = y[b].qs + 32 * j;
            int dj = 0;
            for (int l = 0; l < 32; ++l) dj += q5k_value(x[b], j, l) * qy[l];
            sumi += sc * dj;
            summ += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        s += fp16_to_fp32(x[b].d) * y[b].d * (float)sumi - fp16_to_fp32(x[b].dmin) * y[b].d * (float)summ;
    }
    return s;
}

float dot_q6_K(int64_t n, const void* w, const void* a) {
    return dot_16_groups(
        n, static_cast<const BlockQ6_K*>(w), static_cast<const BlockQ8_K*>(a),
        [](const BlockQ6_K& x, int g) { return (int)x.scales[g]; }, q6k_value);
}

// ---- Tiled order (kernels.h takes_tiled): llama.cpp's tiled K-quant matmul, per output. Per super-block the
// exact integer sums s1 = sum_j scale[j] * dot_j(q, qy) and (types with mins) s2 = sum_j m[j] * bsum pair j;
// then res = d * float(s1), res = fma(-dmin, float(s2), res), acc = fma(res, dy, acc).
template <class Block, bool HasMin, class Ints>
void dot_rows_tiled(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out, Ints ints) {
    const auto* x = static_cast<const Block*>(w);
    for (int r = 0; r < n_act; ++r) {
        const auto* y = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + (size_t)r * a_stride);
        float acc = 0.f;
        for (int64_t b = 0; b < n / QK_K; ++b) {
            int32_t s1 = 0, s2 = 0;
            ints(x[b], y[b], &s1, &s2);
            float res = fp16_to_fp32(x[b].d) * (float)s1;
            if constexpr (HasMin) res = std::fma(-fp16_to_fp32(x[b].dmin), (float)s2, res);
            acc = std::fma(res, y[b].d, acc);
        }
        out[r] = acc;
    }
}

// Sum over the 16 groups of 16 with one signed scale each (Q3_K, Q6_K); no mins.
template <class Block, class Scale, class Value>
int32_t isum_16_groups(const Block& x, const BlockQ8_K& y, Scale scale, Value value) {
    int32_t sumi = 0;
    for (int g = 0; g < QK_K / 16; ++g) {
        int dg = 0;
        for (int l = 0; l < 16; ++l) dg += value(x, 16 * g + l) * y.qs[16 * g + l];
        sumi += scale(x, g) * dg;
    }
    return sumi;
}

// Q4_K / Q5_K: sub-blocks of 32 with 6-bit scales and mins; value(x, j, l) is element l of sub-block j.
template <class Block, class Value>
void isums_kquant_min(const Block& x, const BlockQ8_K& y, int32_t* s1, int32_t* s2, Value value) {
    for (int j = 0; j < 8; ++j) {
        int sc, m;
        q4k_scale_min(j, x.scales, &sc, &m);
        int dj = 0;
        for (int l = 0; l < 32; ++l) dj += value(x, j, l) * y.qs[32 * j + l];
        *s1 += sc * dj;
        *s2 += m * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
    }
}

void q3_K_dot_rows_tiled(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out) {
    dot_rows_tiled<BlockQ3_K, false>(
        n, w, a, a_stride, n_act, out, [](const BlockQ3_K& x, const BlockQ8_K& y, int32_t* s1, int32_t*) {
            *s1 = isum_16_groups(x, y, [](const BlockQ3_K& b, int g) { return q3k_scale(b.scales, g); }, q3k_value);
        });
}

void q4_K_dot_rows_tiled(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out) {
    dot_rows_tiled<BlockQ4_K, true>(n, w, a, a_stride, n_act, out,
                                    [](const BlockQ4_K& x, const BlockQ8_K& y, int32_t* s1, int32_t* s2) {
                                        isums_kquant_min(x, y, s1, s2, [](const BlockQ4_K& b, int j, int l) {
                                            const uint8_t q = b.qs[32 * (j / 2) + l];
                                            return j % 2 ? q >> 4 : q & 0x0F;
                                        });
                                    });
}

void q5_K_dot_rows_tiled(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out) {
    dot_rows_tiled<BlockQ5_K, true>(n, w, a, a_stride, n_act, out,
                                    [](const BlockQ5_K& x, const BlockQ8_K& y, int32_t* s1, int32_t* s2) {
                                        isums_kquant_min(x, y, s1, s2, q5k_value);
                                    });
}

void q6_K_dot_rows_tiled(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out) {
    dot_rows_tiled<BlockQ6_K, false>(
        n, w, a, a_stride, n_act, out, [](const BlockQ6_K& x, const BlockQ8_K& y, int32_t* s1, int32_t*) {
            *s1 = isum_16_groups(x, y, [](const BlockQ6_K& b, int g) { return (int)b.scales[g]; }, q6k_value);
        });
}

// ---------------------------------------------------------------- table

constexpr int kTypeSlots = 31;  // GgmlType ids 0..30

struct ScalarTable {
    WeightKernels k[kTypeSlots];
    bool present[kTypeSlots] = {};
    void add(GgmlType w, GgmlType act, int64_t abe, int64_t abb, void (*q)(const float*, void*, int64_t),
             float (*dot)(int64_t, const void*, const void*), void (*dq)(const void*, float*, int64_t)) {
        const int i = (int)w;
        k[i] = WeightKernels{w,       act,     abe,     abb,     q,       dot,     nullptr, dq,
                             nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
        present[i] = true;
    }
    ScalarTable() {
        using T = GgmlType;
        add(T::F32, T::F32, 1, 4, quantize_f32, dot_f32, dequant_f32);
        add(T::F16, T::F16, 1, 2, quantize_f16, dot_f16, dequant_f16);
        add(T::BF16, T::BF16, 1, 2, quantize_bf16, dot_bf16, dequant_bf16);
        add(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), quantize_q8_0, dot_q8_0, dequant_q8_0);
        add(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), quantize_q8_0, dot_q4_0, dequant_q4_0);
        add(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), quantize_q8_0, dot_q5_0, dequant_q5_0);
        add(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), quantize_q8_1, dot_q4_1, dequant_q4_1);
        add(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), quantize_q8_1, dot_q5_1, dequant_q5_1);
        add(T::Q3_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), quantize_q8_K, dot_q3_K, dequant_q3_K);
        add(T::Q4_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), quantize_q8_K, dot_q4_K, dequant_q4_K);
        add(T::Q5_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), quantize_q8_K, dot_q5_K, dequant_q5_K);
        add(T::Q6_K, T::Q8_K, QK_K, sizeof(BlockQ8_K), quantize_q8_K, dot_q6_K, dequant_q6_K);
        WeightKernels& q4_0 = k[(int)T::Q4_0];
        q4_0.dot_rows_blockwise = q4_0_dot_rows_blockwise;
        q4_0.interleave_x8 = q4_0_interleave_x8;
        q4_0.gemm_x8 = q4_0_gemm_x8;
        k[(int)T::Q4_K].dot_rows_blockwise = q4_K_dot_rows_blockwise;
        k[(int)T::Q4_K].interleave_x8 = q4_K_interleave_x8;
        k[(int)T::Q4_K].gemm_x8 = q4_K_gemm_x8;
        k[(int)T::Q3_K].dot_rows_tiled = q3_K_dot_rows_tiled;
        k[(int)T::Q4_K].dot_rows_tiled = q4_K_dot_rows_tiled;
        k[(int)T::Q5_K].dot_rows_tiled = q5_K_dot_rows_tiled;
        k[(int)T::Q6_K].dot_rows_tiled = q6_K_dot_rows_tiled;
    }
};

const ScalarTable& scalar_table() {
    static const ScalarTable t;
    return t;
}

}  // namespace

SumOrder sum_order_for(GgmlType type, int64_t rows) noexcept {
    return (type == GgmlType::Q4_0 || type == GgmlType::Q4_K) && rows % 8 == 0 ? SumOrder::Blockwise : SumOrder::Lanes;
}

bool takes_tiled(GgmlType type, SumOrder order, int64_t batch_rows) noexcept {
    const bool kquant =
        type == GgmlType::Q3_K || type == GgmlType::Q4_K || type == GgmlType::Q5_K || type == GgmlType::Q6_K;
    return kquant && order == SumOrder::Lanes && batch_rows >= kTiledMinRows;
}

void act_block_sums(const void* a, int64_t n, int16_t* sums) noexcept {
    const auto* y = static_cast<const BlockQ8_0*>(a);
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int s = 0;
        for (int j = 0; j < QK8_0; ++j) s += y[b].qs[j];
        sums[b] = (int16_t)s;
    }
}

void act_block_scales(const void* a, int64_t n, float* scales) noexcept {
    const auto* y = static_cast<const BlockQ8_0*>(a);
    for (int64_t b = 0; b < n / QK8_0; ++b) scales[b] = fp16_to_fp32(y[b].d);
}

const WeightKernels* scalar_weight_kernels(GgmlType type) noexcept {
    const int i = (int)type;
    if (i < 0 || i >= kTypeSlots) return nullptr;
    const ScalarTable& t = scalar_table();
    return t.present[i] ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
