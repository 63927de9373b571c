// The ops of docs/integer_spec.md over the per-ISA integer kernels: argument checks, the multipliers
// (load-time float64 arithmetic, in the same order as edge_rt.quantize.intref), the per-row fixed point of
// RMSNorm and softmax, and the call into the ISA's table.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/int_kernels.h"

namespace edge_rt {

namespace {

[[noreturn]] void bad(const std::string& op, const std::string& what) {
    fail(ErrorKind::InvalidArgument, "[int_kernels] " + op + ": " + what);
}

void check_encoding(const std::string& op, const char* name, const QuantEncoding& e) {
    if (e.bits != 8 && e.bits != 16)
        bad(op, std::string(name) + " bits must be 8 or 16, got " + std::to_string(e.bits));
    if (!(e.scale > 0) || !std::isfinite(e.scale)) bad(op, std::string(name) + " scale must be positive and finite");
    if (e.zero_point < 0 || e.zero_point >= ((int64_t)1 << e.bits))
        bad(op, std::string(name) + " zero point " + std::to_string(e.zero_point) + " outside its " +
                    std::to_string(e.bits) + "-bit range");
}

void check_count(const std::string& op, const char* name, int64_t n, int64_t max = (int64_t)1 << 40) {
    if (n < 1 || n > max)
        bad(op, std::string(name) + " = " + std::to_string(n) + " outside [1, " + std::to_string(max) + "]");
}

CodeType act_type(int bits) { return bits == 16 ? CodeType::U16 : CodeType::U8; }

uint64_t max_abs_code(int bits) { return ((uint64_t)1 << bits) - 1; }

// r * m rounded to `width` bits: mu ~= r * m * 2^-b (spec: RMSNorm / Softmax row multipliers).
void row_scale(uint64_t r, uint64_t m, int width, int64_t* mu, int* b) {
    const uint64_t prod = r * m;  // < 2^63 for the callers' ranges
    *b = bit_length(prod) - width;
    *mu = (int64_t)((prod + ((uint64_t)1 << (*b - 1))) >> *b);
}

// Weight codes outside the symmetric range would break the accumulator bound the multiplier relies on.
void check_weights(const std::string& op, const void* w, CodeType type, int bits, int64_t N, int64_t K) {
    const int64_t qmax = ((int64_t)1 << (bits - 1)) - 1;
    if (type == CodeType::I4) {
        const auto* p = static_cast<const uint8_t*>(w);
        const int64_t row = (K + 1) / 2;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) {
                const uint8_t nib = (p[n * row + k / 2] >> (4 * (k & 1))) & 0xF;
                if (nib == 8) bad(op, "int4 weight code -8 at row " + std::to_string(n) + " (codes are in [-7, 7])");
            }
        return;
    }
    const auto* p = static_cast<const int8_t*>(w);
    for (int64_t i = 0; i < N * K; ++i)
        if (p[i] > qmax || p[i] < -qmax)
            bad(op, "weight code " + std::to_string(p[i]) + " at row " + std::to_string(i / K) + " outside [-" +
                        std::to_string(qmax) + ", " + std::to_string(qmax) + "]");
}

}  // namespace

void int_gemm(const void* a, const QuantEncoding& ea, const void* w, CodeType w_type, int w_bits, const float* s_w,
              int64_t M, int64_t N, int64_t K, const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "gemm";
    check_encoding(op, "input", ea);
    check_encoding(op, "output", ey);
    check_count(op, "M", M);
    check_count(op, "N", N);
    check_count(op, "K", K, ((int64_t)1 << 31) - 1);
    if (w_bits != 8 && w_bits != 4) bad(op, "weight bits must be 8 or 4, got " + std::to_string(w_bits));
    if (w_type != CodeType::I8 && !(w_type == CodeType::I4 && w_bits == 4))
        bad(op, "weights must be int8 codes, or packed int4 codes of 4-bit weights");
    check_weights(op, w, w_type, w_bits, N, K);
    const uint64_t bound = (uint64_t)K * max_abs_code(ea.bits) * (((uint64_t)1 << (w_bits - 1)) - 1);
    const int p = precision_for(bound);
    std::vector<int64_t> m(N);
    std::vector<int32_t> s(N);
    for (int64_t n = 0; n < N; ++n) {
        if (!(s_w[n] > 0) || !std::isfinite(s_w[n]))
            bad(op, "weight scale of row " + std::to_string(n) + " is not positive");
        const FixedMultiplier f = fixed_multiplier(ea.scale * (double)s_w[n] / ey.scale, p);
        m[n] = f.m;
        s[n] = f.s;
    }
    const IntKernels& k = int_kernels(isa);
    std::vector<int64_t> acc(M * N);
    k.matmul_acc({a, act_type(ea.bits), ea.zero_point}, {w, w_type, 0}, M, N, K, acc.data());
    k.requant_rows(acc.data(), M, N, m.data(), s.data(), ey.zero_point, ey.bits, y);
}

void int_matmul(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t M, int64_t N,
                int64_t K, const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "matmul";
    check_encoding(op, "left input", ea);
    check_encoding(op, "right input", eb);
    check_encoding(op, "output", ey);
    check_count(op, "M", M);
    check_count(op, "N", N);
    check_count(op, "K", K, ((int64_t)1 << 31) - 1);
    const uint64_t bound = (uint64_t)K * max_abs_code(ea.bits) * max_abs_code(eb.bits);
    if (bound / max_abs_code(ea.bits) / max_abs_code(eb.bits) != (uint64_t)K) bad(op, "K too large");
    const FixedMultiplier f = fixed_multiplier(ea.scale * eb.scale / ey.scale, precision_for(bound));
    const IntKernels& k = int_kernels(isa);
    std::vector<int64_t> acc(M * N);
    k.matmul_acc({a, act_type(ea.bits), ea.zero_point}, {b, act_type(eb.bits), eb.zero_point}, M, N, K, acc.data());
    std::vector<int64_t> m(N, f.m);
    std::vector<int32_t> s(N, f.s);
    k.requant_rows(acc.data(), M, N, m.data(), s.data(), ey.zero_point, ey.bits, y);
}

namespace {
// The arguments of an elementwise op of two inputs (add, mul).
void check_binary(const std::string& op, const QuantEncoding& ea, const QuantEncoding& eb, const QuantEncoding& ey,
                  int64_t n) {
    check_encoding(op, "left input", ea);
    check_encoding(op, "right input", eb);
    check_encoding(op, "output", ey);
    check_count(op, "n", n);
}
}  // namespace

void int_add(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t n,
             const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "add";
    check_binary(op, ea, eb, ey, n);
    const FixedMultiplier fa = fixed_multiplier(ea.scale / ey.scale, 31);
    const double mb = std::nearbyint(std::ldexp(eb.scale / ey.scale, fa.s));
    if (!(mb < std::ldexp(1.0, 46))) bad(op, "scale ratio of the inputs is too large");
    int_kernels(isa).add(a, ea.bits, ea.zero_point, fa.m, b, eb.bits, eb.zero_point, (int64_t)mb, fa.s, ey.zero_point,
                         ey.bits, y, n);
}

void int_mul(const void* a, const QuantEncoding& ea, const void* b, const QuantEncoding& eb, int64_t n,
             const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "mul";
    check_binary(op, ea, eb, ey, n);
    const FixedMultiplier f = fixed_multiplier(ea.scale * eb.scale / ey.scale, 30);
    int_kernels(isa).mul(a, ea.bits, ea.zero_point, b, eb.bits, eb.zero_point, f.m, f.s, ey.zero_point, ey.bits, y, n);
}

void int_requantize(const void* a, const QuantEncoding& ea, int64_t n, const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "requantize";
    check_encoding(op, "input", ea);
    check_encoding(op, "output", ey);
    check_count(op, "n", n);
    const FixedMultiplier f = fixed_multiplier(ea.scale / ey.scale, 31);
    int_kernels(isa).requantize(a, ea.bits, ea.zero_point, f.m, f.s, ey.zero_point, ey.bits, y, n);
}

void int_rmsnorm(const void* a, const QuantEncoding& ea, const uint16_t* g, const QuantEncoding& eg, double eps,
                 int64_t rows, int64_t D, const QuantEncoding& ey, void* y, Isa isa) {
    const std::string op = "rmsnorm";
    check_encoding(op, "input", ea);
    check_encoding(op, "weight", eg);
    check_encoding(op, "output", ey);
    if (eg.bits != 16) bad(op, "the weight must be 16-bit codes");
    check_count(op, "rows", rows);
    check_count(op, "D", D, ((int64_t)1 << 29) - 1);
    if (!(eps >= 0) || !std::isfinite(eps)) bad(op, "eps must be finite and >= 0");
    const double e_real = std::nearbyint(eps * (double)D / (ea.scale * ea.scale));
    if (!(e_real < std::ldexp(1.0, 61))) bad(op, "eps is too large against the input scale");
    const int64_t e_term = (int64_t)e_real;
    const FixedMultiplier f = fixed_multiplier(eg.scale * std::sqrt((double)D) / ey.scale, 30);
    if (f.s < 2) bad(op, "output multiplier too large (shift < 2)");
    const IntKernels& k = int_kernels(isa);
    const size_t in_size = ea.bits / 8, out_size = ey.bits / 8;
    for (int64_t r = 0; r < rows; ++r) {
        const void* row = static_cast<const uint8_t*>(a) + (size_t)(r * D) * in_size;
        int64_t v = k.sum_squares(row, ea.bits, ea.zero_point, D) + e_term;
        if (v < 1) v = 1;
        const int c = (62 - bit_length((uint64_t)v)) / 2;
        const uint64_t inv = ((uint64_t)1 << 62) / isqrt_u64((uint64_t)v << (2 * c));
        int64_t mu = 0;
        int b = 0;
        row_scale(inv, (uint64_t)f.m, 30, &mu, &b);
        const int S = std::min(62 - c + f.s - b, 63);
        k.scaled_product(row, ea.bits, ea.zero_point, g, eg.zero_point, mu, S, ey.zero_point, ey.bits,
                         static_cast<uint8_t*>(y) + (size_t)(r * D) * out_size, D);
    }
}

void int_softmax(const void* a, int a_bits, const uint32_t* exp_table, int64_t rows, int64_t n, const QuantEncoding& ey,
                 void* y, Isa isa) {
    const std::string op = "softmax";
    check_encoding(op, "output", ey);
    if (a_bits != 8 && a_bits != 16) bad(op, "input bits must be 8 or 16");
    check_count(op, "rows", rows);
    check_count(op, "n", n, ((int64_t)1 << 31) - 1);
    if (exp_table[0] != (1u << 30)) bad(op, "exp table entry 0 must be 2^30 (intref.exp_table)");
    for (int64_t d = 1; d < ((int64_t)1 << a_bits); ++d)
        if (exp_table[d] > (1u << 30)) bad(op, "exp table entries must be at most 2^30");
    const FixedMultiplier f = fixed_multiplier(1.0 / ey.scale, 31);
    const IntKernels& k = int_kernels(isa);
    std::vector<int64_t> e(n);
    std::vector<int64_t> mu(n);
    std::vector<int32_t> shift(n);
    const size_t in_size = a_bits / 8, out_size = ey.bits / 8;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t total =
            k.exp_row(static_cast<const uint8_t*>(a) + (size_t)(r * n) * in_size, a_bits, exp_table, n, e.data());
        const int big = bit_length((uint64_t)total);  // >= 31: the row's maximum contributes 2^30
        const uint64_t inv = ((uint64_t)1 << 61) / ((uint64_t)total >> (big - 31));
        int64_t m = 0;
        int b = 0;
        row_scale(inv, (uint64_t)f.m, 31, &m, &b);
        const int S = std::min(big + 30 + f.s - b, 63);
        // one row of n outputs with one multiplier: requant_rows over a single row of period n
        for (int64_t j = 0; j < n; ++j) {
            mu[j] = m;
            shift[j] = S;
        }
        k.requant_rows(e.data(), 1, n, mu.data(), shift.data(), ey.zero_point, ey.bits,
                       static_cast<uint8_t*>(y) + (size_t)(r * n) * out_size);
    }
}

void int_lut(const void* a, int a_bits, const void* table, int y_bits, int64_t n, void* y, Isa isa) {
    const std::string op = "lut";
    if (a_bits != 8 && a_bits != 16) bad(op, "input bits must be 8 or 16");
    if (y_bits != 8 && y_bits != 16) bad(op, "output bits must be 8 or 16");
    check_count(op, "n", n);
    int_kernels(isa).lut(a, a_bits, table, y_bits, y, n);
}

}  // namespace edge_rt
