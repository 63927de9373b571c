// Scalar integer kernels (IntKernels, edge_rt/int_kernels.h): the reference twin of every ISA's table.
// The accumulator type follows the spec's table: int32 while the GEMM's bound fits it, else int64.
#include <algorithm>
#include <cstdint>

#include "edge_rt/int_kernels.h"

namespace edge_rt {

namespace {

inline int64_t code_at(const void* p, int bits, int64_t i) {
    return bits == 16 ? (int64_t)static_cast<const uint16_t*>(p)[i] : (int64_t)static_cast<const uint8_t*>(p)[i];
}

inline void store_code(void* y, int bits, int64_t i, int64_t v) {
    const int64_t hi = ((int64_t)1 << bits) - 1;
    v = std::min(std::max(v, (int64_t)0), hi);
    if (bits == 16)
        static_cast<uint16_t*>(y)[i] = (uint16_t)v;
    else
        static_cast<uint8_t*>(y)[i] = (uint8_t)v;
}

// Code k of row `row` of a code matrix.
inline int64_t matrix_code(const CodeMatrix& x, int64_t row, int64_t K, int64_t k) {
    switch (x.type) {
        case CodeType::U8: return static_cast<const uint8_t*>(x.data)[row * K + k];
        case CodeType::U16: return static_cast<const uint16_t*>(x.data)[row * K + k];
        case CodeType::I8: return static_cast<const int8_t*>(x.data)[row * K + k];
        case CodeType::I4: {
            const uint8_t byte = static_cast<const uint8_t*>(x.data)[row * ((K + 1) / 2) + k / 2];
            return (int64_t)(((byte >> (4 * (k & 1))) & 0xF) ^ 8) - 8;
        }
    }
    return 0;
}

uint64_t max_abs(CodeType t) {
    switch (t) {
        case CodeType::U8: return 255;
        case CodeType::U16: return 65535;
        case CodeType::I8: return 127;  // weights are symmetric (contract of matmul_acc)
        case CodeType::I4: return 7;
    }
    return 0;
}

template <class Acc>
int64_t dot(const CodeMatrix& a, int64_t i, const CodeMatrix& b, int64_t j, int64_t K) {
    Acc s = 0;
    for (int64_t k = 0; k < K; ++k)
        s += (Acc)(matrix_code(a, i, K, k) - a.zero_point) * (Acc)(matrix_code(b, j, K, k) - b.zero_point);
    return (int64_t)s;
}

void matmul_acc(const CodeMatrix& a, const CodeMatrix& b, int64_t M, int64_t N, int64_t K, int64_t* acc) {
    // |a - z_a| <= max code, |b - z_b| <= max code (weights: symmetric, zero point 0)
    const bool fits_int32 = (uint64_t)K * max_abs(a.type) * max_abs(b.type) < ((uint64_t)1 << 31);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
            acc[i * N + j] = fits_int32 ? dot<int32_t>(a, i, b, j, K) : dot<int64_t>(a, i, b, j, K);
}

void requant_rows(const int64_t* x, int64_t rows, int64_t N, const int64_t* m, const int32_t* s, int64_t z, int bits,
                  void* y) {
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < N; ++j) store_code(y, bits, i * N + j, z + round_shift(x[i * N + j] * m[j], s[j]));
}

void add(const void* a, int a_bits, int64_t z_a, int64_t m_a, const void* b, int b_bits, int64_t z_b, int64_t m_b,
         int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const int64_t acc = m_a * (code_at(a, a_bits, i) - z_a) + m_b * (code_at(b, b_bits, i) - z_b);
        store_code(y, y_bits, i, z_y + round_shift(acc, s));
    }
}

void mul(const void* a, int a_bits, int64_t z_a, const void* b, int b_bits, int64_t z_b, int64_t m, int s, int64_t z_y,
         int y_bits, void* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const int64_t acc = (code_at(a, a_bits, i) - z_a) * (code_at(b, b_bits, i) - z_b);
        store_code(y, y_bits, i, z_y + round_shift(acc * m, s));
    }
}

void requantize(const void* a, int a_bits, int64_t z_a, int64_t m, int s, int64_t z_y, int y_bits, void* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) store_code(y, y_bits, i, z_y + round_shift((code_at(a, a_bits, i) - z_a) * m, s));
}

int64_t sum_squares(const void* a, int a_bits, int64_t z, int64_t n) {
    int64_t s = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t d = code_at(a, a_bits, i) - z;
        s += d * d;
    }
    return s;
}

void scaled_product(const void* a, int a_bits, int64_t z_a, const uint16_t* g, int64_t z_g, int64_t mu, int S,
                    int64_t z_y, int y_bits, void* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const int64_t xg = (code_at(a, a_bits, i) - z_a) * ((int64_t)g[i] - z_g);
        store_code(y, y_bits, i, z_y + round_shift(xg * mu, S));
    }
}

int64_t exp_row(const void* a, int a_bits, const uint32_t* table, int64_t n, int64_t* e) {
    int64_t mx = 0;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, code_at(a, a_bits, i));
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        e[i] = table[mx - code_at(a, a_bits, i)];
        total += e[i];
    }
    return total;
}

void lut(const void* a, int a_bits, const void* table, int y_bits, void* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) store_code(y, y_bits, i, code_at(table, y_bits, code_at(a, a_bits, i)));
}

const IntKernels kScalar = {matmul_acc, requant_rows, add, mul, requantize, sum_squares, scaled_product, exp_row, lut};

}  // namespace

const IntKernels* scalar_int_kernels() noexcept { return &kScalar; }

}  // namespace edge_rt
