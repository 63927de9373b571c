// Integer kernels (edge_rt/int_kernels.h): every ISA's table equals the scalar twin bit for bit, on random
// codes and on the extremes (codes 0 and 2^b - 1, zero points at both ends, K not a multiple of the SIMD
// width, K past the AVX2 kernel's int32 chunk, A16 x W8 at K = 4096 where int32 overflows); the scalar
// GEMM accumulator against a naive int64 sum; the fixed-point helpers against hand-computed values.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edge_rt/cpu_features.h"
#include "edge_rt/error.h"
#include "edge_rt/int_kernels.h"

using namespace edge_rt;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        ++g_checks;                                                   \
        if (!(cond)) {                                                \
            ++g_failures;                                             \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                        \
            std::fprintf(stderr, "\n");                               \
        }                                                             \
    } while (0)

std::mt19937_64 g_rng(20261207);

int64_t rand_in(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g_rng); }

const char* type_name(CodeType t) {
    switch (t) {
        case CodeType::U8: return "u8";
        case CodeType::U16: return "u16";
        case CodeType::I8: return "i8";
        case CodeType::I4: return "i4";
    }
    return "?";
}

// Codes of a (rows, K) matrix; `mode` 0 random, 1 all at the top code, 2 all at the bottom code, 3 random
// between the two extremes only.
std::vector<uint8_t> make_codes(CodeType t, int64_t rows, int64_t K, int mode) {
    int64_t lo = 0, hi = 0;
    switch (t) {
        case CodeType::U8: hi = 255; break;
        case CodeType::U16: hi = 65535; break;
        case CodeType::I8: lo = -127, hi = 127; break;
        case CodeType::I4: lo = -7, hi = 7; break;
    }
    auto pick = [&] {
        return mode == 1 ? hi : mode == 2 ? lo : mode == 3 ? (rand_in(0, 1) ? hi : lo) : rand_in(lo, hi);
    };
    std::vector<uint8_t> out;
    if (t == CodeType::I4) {
        const int64_t row = (K + 1) / 2;
        out.assign((size_t)(rows * row), 0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = 0; k < K; ++k)
                out[(size_t)(r * row + k / 2)] |= (uint8_t)((pick() & 0xF) << (4 * (k & 1)));
        return out;
    }
    const size_t size = t == CodeType::U16 ? 2 : 1;
    out.resize((size_t)(rows * K) * size);
    for (int64_t i = 0; i < rows * K; ++i) {
        const int64_t v = pick();
        if (size == 2) {
            const uint16_t u = (uint16_t)v;
            std::memcpy(&out[(size_t)i * 2], &u, 2);
        } else {
            out[(size_t)i] = (uint8_t)(int8_t)v;
        }
    }
    return out;
}

int64_t naive_code(const CodeMatrix& x, int64_t row, int64_t K, int64_t k) {
    switch (x.type) {
        case CodeType::U8: return static_cast<const uint8_t*>(x.data)[row * K + k];
        case CodeType::U16: return static_cast<const uint16_t*>(x.data)[row * K + k];
        case CodeType::I8: return static_cast<const int8_t*>(x.data)[row * K + k];
        case CodeType::I4: {
            const int v = (static_cast<const uint8_t*>(x.data)[row * ((K + 1) / 2) + k / 2] >> (4 * (k & 1))) & 0xF;
            return v >= 8 ? v - 16 : v;
        }
    }
    return 0;
}

std::vector<Isa> simd_isas() {
    std::vector<Isa> v;
    for (Isa i : {Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDotprod, Isa::NeonI8mm})
        if (isa_compiled(i) && cpu_supports(i)) v.push_back(i);
    return v;
}

void test_matmul_acc() {
    const CodeType lefts[] = {CodeType::U8, CodeType::U16};
    const CodeType rights[] = {CodeType::U8, CodeType::U16, CodeType::I8, CodeType::I4};
    const int64_t Ks[] = {1, 7, 15, 16, 17, 33, 100, 257};
    for (CodeType ta : lefts)
        for (CodeType tb : rights)
            for (int64_t K : Ks)
                for (int mode = 0; mode < 4; ++mode) {
                    const int64_t M = 3, N = 6;  // N past one 4-row block
                    const int64_t amax = ta == CodeType::U16 ? 65535 : 255;
                    const int64_t bmax = tb == CodeType::U16 ? 65535 : 255;
                    const bool signed_b = tb == CodeType::I8 || tb == CodeType::I4;
                    const int64_t zas[] = {0, amax, rand_in(0, amax)};
                    for (int64_t za : zas) {
                        const int64_t zb = signed_b ? 0 : (mode == 3 ? bmax : rand_in(0, bmax));
                        auto a = make_codes(ta, M, K, mode), b = make_codes(tb, N, K, mode == 3 ? 0 : mode);
                        const CodeMatrix A{a.data(), ta, za}, B{b.data(), tb, zb};
                        std::vector<int64_t> ref(M * N), got(M * N);
                        int_kernels(Isa::Scalar).matmul_acc(A, B, M, N, K, ref.data());
                        for (int64_t i = 0; i < M; ++i)
                            for (int64_t j = 0; j < N; ++j) {
                                int64_t s = 0;
                                for (int64_t k = 0; k < K; ++k)
                                    s += (naive_code(A, i, K, k) - za) * (naive_code(B, j, K, k) - zb);
                                CHECK(ref[i * N + j] == s, "scalar matmul_acc %s x %s K=%lld mode %d", type_name(ta),
                                      type_name(tb), (long long)K, mode);
                            }
                        for (Isa isa : simd_isas()) {
                            int_kernels(isa).matmul_acc(A, B, M, N, K, got.data());
                            CHECK(got == ref, "%s matmul_acc %s x %s K=%lld mode %d za=%lld differs from scalar",
                                  isa_name(isa), type_name(ta), type_name(tb), (long long)K, mode, (long long)za);
                        }
                    }
                }
}

// A16 x W8 at K = 4096: |acc| reaches 65535 * 127 * 4096 > 2^31 (the spec's int64 row); and K past the
// AVX2 kernel's int32 chunk (131072 codes) and the AVX512-VNNI one's (524288 codes) with every product at
// its maximum.
void test_wide_accumulators() {
    struct Case {
        CodeType ta, tb;
        int64_t K, expect;
    };
    const Case cases[] = {{CodeType::U16, CodeType::I8, 4096, 65535LL * 127 * 4096},
                          {CodeType::U16, CodeType::U16, 4096, 65535LL * 65535 * 4096},
                          {CodeType::U8, CodeType::U8, 140000, 255LL * 255 * 140000},
                          {CodeType::U8, CodeType::I8, 600000, 255LL * 127 * 600000},
                          {CodeType::U16, CodeType::I4, 600000, 65535LL * 7 * 600000}};
    for (const Case& c : cases) {
        auto a = make_codes(c.ta, 1, c.K, 1), b = make_codes(c.tb, 1, c.K, 1);
        const CodeMatrix A{a.data(), c.ta, 0}, B{b.data(), c.tb, 0};
        for (Isa isa : std::vector<Isa>{Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonI8mm}) {
            int64_t acc = 0;
            int_kernels(isa).matmul_acc(A, B, 1, 1, c.K, &acc);
            CHECK(acc == c.expect, "%s %s x %s K=%lld: %lld != %lld", isa_name(isa), type_name(c.ta), type_name(c.tb),
                  (long long)c.K, (long long)acc, (long long)c.expect);
        }
    }
    // the GEMM op at that width: zero point at the bottom, output range covering the largest accumulator
    const int64_t K = 4096;
    auto a = make_codes(CodeType::U16, 2, K, 3);
    auto w = make_codes(CodeType::I8, 3, K, 3);
    const float s_w[3] = {1.0f, 0.5f, 0.25f};
    const QuantEncoding ea{1e-3, 0, 16}, ey{65535.0 * 127 * K * 1e-3 / 65535, 0, 16};
    std::vector<uint16_t> ref(6), got(6);
    int_gemm(a.data(), ea, w.data(), CodeType::I8, 8, s_w, 2, 3, K, ey, ref.data(), Isa::Scalar);
    for (Isa isa : simd_isas()) {
        int_gemm(a.data(), ea, w.data(), CodeType::I8, 8, s_w, 2, 3, K, ey, got.data(), isa);
        CHECK(got == ref, "%s A16 x W8 K=4096 gemm differs from scalar", isa_name(isa));
    }
}

template <class T>
std::vector<T> rand_codes(int64_t n, int bits, int extremes) {
    std::vector<T> v((size_t)n);
    const int64_t hi = ((int64_t)1 << bits) - 1;
    for (auto& x : v) x = (T)(extremes ? (rand_in(0, 1) ? hi : 0) : rand_in(0, hi));
    return v;
}

// Every op through the public entry points: each ISA's output equals the scalar one.
void test_ops() {
    const int64_t ns[] = {1, 3, 4, 5, 8, 13, 64, 67};
    for (int bits_a : {8, 16})
        for (int bits_b : {8, 16})
            for (int bits_y : {8, 16})
                for (int64_t n : ns)
                    for (int extremes = 0; extremes < 2; ++extremes) {
                        const int64_t ha = ((int64_t)1 << bits_a) - 1, hb = ((int64_t)1 << bits_b) - 1;
                        const int64_t hy = ((int64_t)1 << bits_y) - 1;
                        const QuantEncoding ea{0.01 * (1 + rand_in(0, 100)) / (ha + 1), extremes ? ha : rand_in(0, ha),
                                               bits_a};
                        const QuantEncoding eb{0.02 * (1 + rand_in(0, 100)) / (hb + 1), extremes ? 0 : rand_in(0, hb),
                                               bits_b};
                        const QuantEncoding ey{0.03 * (1 + rand_in(0, 100)) / (hy + 1), rand_in(0, hy), bits_y};
                        auto a8 = rand_codes<uint8_t>(n, 8, extremes);
                        auto a16 = rand_codes<uint16_t>(n, 16, extremes);
                        auto b8 = rand_codes<uint8_t>(n, 8, extremes);
                        auto b16 = rand_codes<uint16_t>(n, 16, extremes);
                        const void* a = bits_a == 16 ? (const void*)a16.data() : a8.data();
                        const void* b = bits_b == 16 ? (const void*)b16.data() : b8.data();
                        std::vector<uint16_t> ref((size_t)n * 4), got((size_t)n * 4);
                        const std::string what = "a" + std::to_string(bits_a) + " b" + std::to_string(bits_b) + " y" +
                                                 std::to_string(bits_y) + " n=" + std::to_string(n);
                        auto run_all = [&](const char* op, auto&& fn) {
                            fn(Isa::Scalar, ref.data());
                            for (Isa isa : simd_isas()) {
                                fn(isa, got.data());
                                CHECK(got == ref, "%s %s: %s differs from scalar", isa_name(isa), op, what.c_str());
                            }
                        };
                        run_all("add", [&](Isa isa, void* y) { int_add(a, ea, b, eb, n, ey, y, isa); });
                        run_all("mul", [&](Isa isa, void* y) { int_mul(a, ea, b, eb, n, ey, y, isa); });
                        run_all("requantize", [&](Isa isa, void* y) { int_requantize(a, ea, n, ey, y, isa); });
                        const QuantEncoding eg{0.5 / 65535, extremes ? 65535 : rand_in(0, 65535), 16};
                        run_all("rmsnorm",
                                [&](Isa isa, void* y) { int_rmsnorm(a, ea, b16.data(), eg, 1e-5, 1, n, ey, y, isa); });
                        std::vector<uint32_t> table((size_t)1 << bits_a);
                        for (size_t d = 0; d < table.size(); ++d)
                            table[d] = d == 0 ? (1u << 30) : (uint32_t)((1u << 30) >> std::min<size_t>(d % 40, 31));
                        run_all("softmax",
                                [&](Isa isa, void* y) { int_softmax(a, bits_a, table.data(), 1, n, ey, y, isa); });
                        std::vector<uint16_t> lut_table((size_t)1 << bits_a);
                        for (auto& v : lut_table) v = (uint16_t)rand_in(0, hy);
                        std::vector<uint8_t> lut8(lut_table.begin(), lut_table.end());
                        run_all("lut", [&](Isa isa, void* y) {
                            int_lut(a, bits_a, bits_y == 16 ? (const void*)lut_table.data() : lut8.data(), bits_y, n, y,
                                    isa);
                        });
                        // act x act MatMul and the GEMM, 3 rows of n codes against 5
                        std::vector<uint16_t> b5 = rand_codes<uint16_t>(5 * n, bits_b, extremes);
                        std::vector<uint8_t> b5_8(b5.begin(), b5.end());
                        std::vector<uint16_t> a3 = rand_codes<uint16_t>(3 * n, bits_a, extremes);
                        std::vector<uint8_t> a3_8(a3.begin(), a3.end());
                        const void* A3 = bits_a == 16 ? (const void*)a3.data() : a3_8.data();
                        const void* B5 = bits_b == 16 ? (const void*)b5.data() : b5_8.data();
                        ref.assign(15, 0);
                        got.assign(15, 0);
                        run_all("matmul", [&](Isa isa, void* y) { int_matmul(A3, ea, B5, eb, 3, 5, n, ey, y, isa); });
                        const float s_w[5] = {0.01f, 0.02f, 0.003f, 0.5f, 0.07f};
                        for (int wb : {8, 4}) {
                            auto w8 = make_codes(CodeType::I8, 5, n, extremes ? 3 : 0);
                            if (wb == 4)
                                for (auto& v : w8) v = (uint8_t)(int8_t)((int8_t)v % 8);
                            run_all(wb == 8 ? "gemm w8" : "gemm w4 (int8 codes)", [&](Isa isa, void* y) {
                                int_gemm(A3, ea, w8.data(), CodeType::I8, wb, s_w, 3, 5, n, ey, y, isa);
                            });
                        }
                        auto w4 = make_codes(CodeType::I4, 5, n, extremes ? 3 : 0);
                        run_all("gemm w4 (packed)", [&](Isa isa, void* y) {
                            int_gemm(A3, ea, w4.data(), CodeType::I4, 4, s_w, 3, 5, n, ey, y, isa);
                        });
                        ref.assign((size_t)n * 4, 0);
                        got.assign((size_t)n * 4, 0);
                    }
}

void test_fixed_point() {
    const FixedMultiplier one = fixed_multiplier(1.0, 31);
    CHECK(one.m == (1LL << 30) && one.s == 30, "multiplier(1.0, 31) = (%lld, %d)", (long long)one.m, one.s);
    const FixedMultiplier third = fixed_multiplier(1.0 / 3.0, 16);
    CHECK(third.m == 43691 && third.s == 17, "multiplier(1/3, 16) = (%lld, %d)", (long long)third.m, third.s);
    CHECK(precision_for(65535LL * 127 * 4096) == 27, "A16 x W8 at K = 4096 keeps 27 multiplier bits");
    CHECK(precision_for(1000) == 31, "small bounds keep 31 bits");
    for (uint64_t n : {0ull, 1ull, 3ull, 4ull, 99ull, (1ull << 62) - 1, 1ull << 62, (1ull << 61) + 12345})
        CHECK(isqrt_u64(n) * isqrt_u64(n) <= n && (isqrt_u64(n) + 1) * (isqrt_u64(n) + 1) > n, "isqrt(%llu)",
              (unsigned long long)n);
    bool threw = false;
    try {
        fixed_multiplier(-1.0, 31);
    } catch (const Error& e) {
        threw = e.kind() == ErrorKind::InvalidArgument;
    }
    CHECK(threw, "a negative multiplier is refused");
    threw = false;
    try {
        const int8_t w[2] = {-128, 1};
        const uint8_t a[2] = {1, 2};
        const float s_w[1] = {1.0f};
        uint8_t y[1];
        int_gemm(a, {1.0, 0, 8}, w, CodeType::I8, 8, s_w, 1, 1, 2, {1.0, 0, 8}, y, Isa::Scalar);
    } catch (const Error& e) {
        threw = std::string(e.what()).find("outside [-127, 127]") != std::string::npos;
    }
    CHECK(threw, "an int8 weight code of -128 is refused");
}

}  // namespace

int main() {
    std::printf("ISAs compared with scalar:");
    for (Isa i : simd_isas()) std::printf(" %s", isa_name(i));
    std::printf("\n");
    // the comparisons below would pass vacuously if a SIMD level ran the scalar kernels
    if (isa_compiled(Isa::Avx2) && cpu_supports(Isa::Avx2))
        CHECK(int_kernels(Isa::Avx2).matmul_acc != scalar_int_kernels()->matmul_acc &&
                  int_kernels(Isa::Avx2).requant_rows != scalar_int_kernels()->requant_rows,
              "the avx2 level runs its own integer kernels");
    if (isa_compiled(Isa::Avx512Vnni) && cpu_supports(Isa::Avx512Vnni))
        CHECK(int_kernels(Isa::Avx512Vnni).matmul_acc != int_kernels(Isa::Avx2).matmul_acc,
              "the avx512vnni level runs its own GEMM");
    if (isa_compiled(Isa::Neon) && cpu_supports(Isa::Neon))
        CHECK(int_kernels(Isa::Neon).matmul_acc != scalar_int_kernels()->matmul_acc &&
                  int_kernels(Isa::Neon).requant_rows != scalar_int_kernels()->requant_rows &&
                  int_kernels(Isa::Neon).add != scalar_int_kernels()->add &&
                  int_kernels(Isa::Neon).scaled_product != scalar_int_kernels()->scaled_product,
              "the neon level runs its own integer kernels");
    if (isa_compiled(Isa::NeonI8mm) && cpu_supports(Isa::NeonI8mm))
        CHECK(int_kernels(Isa::NeonI8mm).matmul_acc != int_kernels(Isa::Neon).matmul_acc &&
                  int_kernels(Isa::NeonI8mm).add == int_kernels(Isa::Neon).add,
              "the neon_i8mm level runs its own GEMM over the neon table");
    test_fixed_point();
    test_matmul_acc();
    test_wide_accumulators();
    test_ops();
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
