// Integer kernels of docs/integer_spec.md: the ops of an exported QDQ graph on codes only, bit for bit
// the NumPy reference (edge_rt.quantize.intref).
//
// Codes: activations are unsigned, uint8_t (8 bits) or uint16_t (16 bits), real = scale * (q - zero_point);
// weights are signed symmetric codes, |w| <= 2^(bits-1) - 1, one int8_t per code (CodeType::I8, for int8
// and int4 values alike) or two int4 codes per byte (CodeType::I4, low nibble first, each row padded to
// whole bytes: (K + 1) / 2 bytes per row). All tensors are row-major and contiguous.
//
// Two layers:
//  * ops (int_gemm, int_matmul, int_add, ...): take the float scales, derive the spec's multipliers
//    (fixed_multiplier, in float64 exactly as intref does; the exp and sigmoid tables are inputs built by
//    intref), validate every argument (edge_rt::Error InvalidArgument, message "[int_kernels] ..."),
//    and run the ISA's kernels;
//  * IntKernels: the per-ISA table of inner loops (int_kernels_scalar.cpp, int_kernels_<isa>.cpp), merged
//    over the scalar table like WeightKernels; every entry computes exact integers, so each ISA's result
//    equals the scalar twin's bit for bit (native/tests/test_int_kernels.cpp checks it).
//
// AVX512-VNNI: matmul_acc with vpdpbusd for unsigned activations times signed weights
// (int_kernels_avx512vnni.cpp); its other entries are the AVX2 ones. NEON (every ARM level): every entry
// but lut (int_kernels_neon.cpp: the GEMM on int16 planes, the requantizing ops in int64 lanes); the
// dotprod level runs it as is; i8mm: matmul_acc with USDOT for unsigned activations times signed weights
// (int_kernels_neon_i8mm.cpp), the other entries NEON's. The u8 x s8 GEMM of both byte-dot ISAs is
// int_byte_planes.h's.
//
// Thread-safety: all functions are pure; call them from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edge_rt/cpu_features.h"

namespace edge_rt {

// ---------------------------------------------------------------- fixed point (spec: Fixed-point multipliers)

struct FixedMultiplier {
    int64_t m;  // 2^(P-1) <= m < 2^P
    int s;      // 1 <= s <= 62; real ~= m * 2^-s
};

// (m, s) for a positive finite real at precision P in [16, 31]; throws InvalidArgument outside the spec.
FixedMultiplier fixed_multiplier(double real, int precision);
// P = min(31, 62 - bitlen(bound)); throws InvalidArgument when P < 16.
int precision_for(uint64_t acc_bound);
// floor((x + 2^(s-1)) / 2^s), 1 <= s <= 63, |x| < 2^62 (s = 63 gives 0).
inline int64_t round_shift(int64_t x, int s) { return (x + ((int64_t)1 << (s - 1))) >> s; }
// Number of bits of n >= 0 (0 for 0).
int bit_length(uint64_t n);
// floor(sqrt(n)), exact.
uint64_t isqrt_u64(uint64_t n);

// ---------------------------------------------------------------- the per-ISA inner loops

enum class CodeType { U8, U16, I8, I4 };

struct CodeMatrix {
    const void* data;  // rows x K codes of `type` (I4: (K + 1) / 2 bytes per row)
    CodeType type;
    int64_t zero_point;  // 0 for weights
};

struct IntKernels {
    // acc[i * N + j] = sum_k (a[i, k] - a.zero_point) * (b[j, k] - b.zero_point), exact; a is U8/U16,
    // b any type (I8/I4: symmetric codes, |w| <= 127 / 7, zero point 0); M, N >= 1, 1 <= K < 2^31.
    void (*matmul_acc)(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc);
    // y[i * N + j] = clamp(z + round_shift(x[i * N + j] * m[j], s[j]), 0, 2^bits - 1) for i < rows, j < N;
    // |x * m| < 2^62, 1 <= s <= 63, 0 <= m < 2^32. y is uint8_t (bits 8) or uint16_t (16).
    void (*requant_rows)(const int64_t* x, int64_t rows, int64_t N, const int64_t* m, const int32_t* s, int64_t z,
                         int bits, void* y);
    // y = clamp(z_y + round_shift(m_a (a - z_a) + m_b (b - z_b), s)): m_a < 2^31, m_b < 2^46, 1 <= s <= 62.
    void (*add)(const void* a, int a_bits, int64_t z_a, int64_t m_a, const void* b, int b_bits, int64_t z_b,
                int64_t m_b, int s, int64_t z_y, int y_bits, void* y, int64_t n);
    // y = clamp(z_y + round_shift((a - z_a) (b - z_b) m, s)): m < 2^30, 1 <= s <= 62.
    void (*mul)(const void* a, int a_bits, int64_t z_a, const void* b, int b_bits, int64_t z_b, int64_t m, int s,
                int64_t z_y, int y_bits, void* y, int64_t n);
    // y = clamp(z_y + round_shift((a - z_a) m, s)): m < 2^31, 1 <= s <= 62.
    void (*requantize)(const void* a, int a_bits, int64_t z_a, int64_t m, int s, int64_t z_y, int y_bits, void* y,
                       int64_t n);
    // sum_i (a_i - z)^2 over n codes (exact, int64).
    int64_t (*sum_squares)(const void* a, int a_bits, int64_t z, int64_t n);
    // y_i = clamp(z_y + round_shift((a_i - z_a) (g_i - z_g) mu, S)): mu <= 2^30, 1 <= S <= 63 (RMSNorm's
    // elements).
    void (*scaled_product)(const void* a, int a_bits, int64_t z_a, const uint16_t* g, int64_t z_g, int64_t mu, int S,
                           int64_t z_y, int y_bits, void* y, int64_t n);
    // e_i = table[max_k a_k - a_i] for n 16-bit codes (or 8-bit: a_bits); returns sum_i e_i (softmax's row).
    int64_t (*exp_row)(const void* a, int a_bits, const uint32_t* table, int64_t n, int64_t* e);
    // y_i = table[a_i] (a unary op as its table of output codes; table has 2^a_bits entries).
    void (*lut)(const void* a, int a_bits, const void* table, int y_bits, void* y, int64_t n);
};

const IntKernels* scalar_int_kernels() noexcept;
const IntKernels* avx2_int_kernels() noexcept;        // nullptr where not built
const IntKernels* avx512vnni_int_kernels() noexcept;  // nullptr where not built
const IntKernels* neon_int_kernels() noexcept;        // nullptr where not built
const IntKernels* neon_i8mm_int_kernels() noexcept;   // nullptr where not built
// The table the given ISA runs (lowered by runnable_isa; levels without their own kernels use their parent's).
const IntKernels& int_kernels(Isa isa) noexcept;

// ---------------------------------------------------------------- ops (spec sections of the same names)

struct QuantEncoding {
    double scale;        // > 0 (the manifest's float32 value)
    int64_t zero_point;  // 0 <= zero_point < 2^bits
    int bits;            // 8 or 16 for activations
};

// Projection GEMM: y (M, N) = a (M, K) . w (N, K)^T; w codes of w_bits (8 or 4) stored as w_type (I8 or
// I4), per-row scales s_w (N). a: uint8/uint16 per ea.bits; y: per ey.bits.
void int_gemm(const void* a, const QuantEncoding& ea, const void* w, CodeType w_type, int w_bits, const float* s_w,
              int64_t M, int64_t N, int64_t K, const QuantEncoding& ey, void* y, Isa isa);
// MatMul of two activations: y (M, N) = a (M, K) . b (N, K)^T (b is the right operand transposed).
void int_matmul(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t M, int64_t N,
                int64_t K, const QuantEncoding& ey, void* y, Isa isa);
// Elementwise over n codes (inputs already broadcast to n elements).
void int_add(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t n,
             const QuantEncoding& ey, void* y, Isa isa);
void int_mul(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t n,
             const QuantEncoding& ey, void* y, Isa isa);
void int_requantize(const void* a, const QuantEncoding& ea, int64_t n, const QuantEncoding& ey, void* y, Isa isa);
// RMSNorm over rows of D codes; g: D uint16 weight codes (eg.bits 16).
void int_rmsnorm(const void* a, const QuantEncoding& ea, const uint16_t* g, const QuantEncoding& eg, double eps,
                 int64_t rows, int64_t D, const QuantEncoding& ey, void* y, Isa isa);
// Softmax over rows of n codes of a_bits with the exp table (2^a_bits entries, intref.exp_table).
void int_softmax(const void* a, int a_bits, const uint32_t* exp_table, int64_t rows, int64_t n, const QuantEncoding& ey,
                 void* y, Isa isa);
// y = table[a] over n codes; the table holds 2^a_bits codes of y_bits.
void int_lut(const void* a, int a_bits, const void* table, int y_bits, int64_t n, void* y, Isa isa);

}  // namespace edge_rt
