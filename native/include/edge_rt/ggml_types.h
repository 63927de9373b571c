// Tensor element types and quantization block layouts, bit-compatible with ggml (llama.cpp).
//
// Every block struct below is the exact byte layout found in GGUF tensor data; the static_asserts pin
// the sizes so a compiler or edit that changes padding fails the build instead of corrupting weights.
// A row of n elements of a block type occupies (n / block_elems) * block_bytes bytes; n must be a
// multiple of block_elems.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edge_rt {

using fp16_t = uint16_t;  // IEEE-754 binary16 bits
using bf16_t = uint16_t;  // bfloat16 bits (upper half of an fp32)

// Type ids as stored in GGUF tensor infos (ggml_type). Ids not listed are rejected by the reader.
enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
};

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK8_1 = 32;
constexpr int QK_K = 256;  // super-block size of the K-quants
constexpr int K_SCALE_SIZE = 12;

// x[i] = d * (q[i] - 8); q[i] in 0..15: element j in the low nibble of qs[j], element j+16 in the high nibble.
struct BlockQ4_0 {
    fp16_t d;
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "BlockQ4_0 layout");

// x[i] = d * q[i] + m; nibble order as Q4_0.
struct BlockQ4_1 {
    fp16_t d;
    fp16_t m;
    uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "BlockQ4_1 layout");

// x[i] = d * (q[i] - 16); q = 4 low bits from qs (as Q4_0) | bit 4 from qh (bit j of the 32-bit qh word).
struct BlockQ5_0 {
    fp16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "BlockQ5_0 layout");

// x[i] = d * q[i] + m; bits as Q5_0.
struct BlockQ5_1 {
    fp16_t d;
    fp16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "BlockQ5_1 layout");

// x[i] = d * qs[i].
struct BlockQ8_0 {
    fp16_t d;
    int8_t qs[QK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 layout");

// Activation format paired with Q4_1/Q5_1 weights: s = d * sum(qs).
struct BlockQ8_1 {
    fp16_t d;
    fp16_t s;
    int8_t qs[QK8_1];
};
static_assert(sizeof(BlockQ8_1) == 36, "BlockQ8_1 layout");

// Super-block of 16 sub-blocks of 16: x = d * (s[j] - 32) * q, q in -4..3, s[j] 6-bit (j = e / 16).
// Element e = 128h + 32t + l (h = 0..1, t = 0..3, l = 0..31): low 2 bits are bits 2t..2t+1 of
// qs[32h + l]; bit 2 is bit 4h + t of hmask[l], and q = low + 4 * bit - 4 (a clear bit subtracts 4).
// s[j]: low 4 bits in scales[j] (j < 8, low nibble) or scales[j - 8] (high nibble); high 2 bits are
// bits 2(j / 4)..2(j / 4)+1 of scales[8 + j % 4].
struct BlockQ3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[K_SCALE_SIZE];
    fp16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "BlockQ3_K layout");

// Super-block of 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j]; 6-bit sc/m packed in scales.
struct BlockQ4_K {
    fp16_t d;
    fp16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "BlockQ4_K layout");

// Super-block of 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q 5-bit in 0..31; sc/m packed as
// Q4_K. The low 4 bits follow Q4_K's nibble order (byte 32k + l of qs: sub-block 2k in the low nibble,
// 2k+1 in the high nibble, element l); bit 4 of element l of sub-block j is bit j of qh[l].
struct BlockQ5_K {
    fp16_t d;
    fp16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "BlockQ5_K layout");

// Super-block of 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q 6-bit from ql (low 4) and qh (high 2).
struct BlockQ6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    fp16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "BlockQ6_K layout");

// Activation format paired with K-quant weights: bsums[j] = sum of qs[16j .. 16j+15].
struct BlockQ8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "BlockQ8_K layout");

struct TypeTraits {
    const char* name;     // ggml's name, e.g. "Q4_K"
    int64_t block_elems;  // elements per block (1 for plain types)
    int64_t block_bytes;  // bytes per block
};

// Returns nullptr for an id that is not a ggml type the reader knows how to size.
const TypeTraits* type_traits(uint32_t type_id) noexcept;
const TypeTraits& type_traits(GgmlType type);  // throws Error(Internal) for an unknown enum value
const char* type_name(GgmlType type) noexcept;

// True for the types the kernels compute with (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q3_K, Q4_K,
// Q5_K, Q6_K).
bool is_compute_type(GgmlType type) noexcept;

}  // namespace edge_rt
