// Kernel tests: every SIMD kernel against its scalar reference twin, under named error limits, for
// every compute type and every ISA that is both compiled in and supported by this CPU; plus
// hand-computed dequantization blocks and the scalar dot/dequantize consistency.
//
//   test_kernels            run the tests (ctest); exit code 0 on success
//   test_kernels --bench [MB]  vec_dot throughput in GB/s of weight bytes per type/ISA over an MB-sized
//                              weight matrix (default 64), next to a plain read-bandwidth loop
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edge_rt/cpu_features.h"
#include "edge_rt/fp16.h"
#include "edge_rt/ggml_types.h"
#include "edge_rt/kernels.h"

using namespace edge_rt;

namespace {

// ---------------------------------------------------------------- named error limits
//
// SIMD and scalar kernels compute the same exact integer sum per block; they differ only in the order
// in which per-block float terms (and, for float types, per-element products) are added. A recursive
// fp32 sum of m terms has worst-case error (m - 1) * u * sum|terms|, u = 2^-24. The largest rows here
// have 5632 elements = 176 blocks of 32, and both sides round, so the bound is about
// 2 * 176 * 6e-8 = 2.1e-5 relative to S = sum_i |w_i * a_i|.
constexpr double kBlockDotRelTol = 3e-5;
// K-quants add two terms per super-block (d part and dmin part) that can cancel, so their sum of
// magnitudes can exceed S; 22 super-blocks only, but allow 4x headroom for the cancellation.
constexpr double kKQuantDotRelTol = 1.2e-4;
// Float types: scalar sums fp32 products in double; SIMD sums 32 fp32 lanes of <= n/32 products each,
// i.e. the same worst-case chain length (176) as above.
constexpr double kFloatDotRelTol = 3e-5;
// Absolute floor for rows whose S is ~0 (all-zero activation blocks).
constexpr double kDotAbsTol = 1e-6;
// Scalar vec_dot vs. double-precision dot of the dequantized weight row and dequantized activation:
// the same fp32 chain argument, one side only.
constexpr double kRefConsistencyRelTol = 2e-5;
// Q8_1 activations carry s = fp16(d_fp32 * sum q) while decoding uses fp16(d) * q; each fp16
// rounding is <= 2^-11 relative, so the min term m * s may differ by up to 2^-10 * |m * s| per block.
constexpr double kQ8_1SumRelTol = 1.0 / 1024;
// Activation quantizers: SIMD variants reproduce the reference formula (d = amax/127, id = 127/amax,
// ties-to-even for q8_0/q8_1 as llama.cpp's x86 quantizer; iscale = -127/max, ties-to-even for q8_K)
// operation for operation,
// so the encoded bytes must be bit-identical (0 differing int8 values allowed). Should a future ISA
// use a different rounding instruction, raise this to 1 (one step of int rounding at exact ties).
constexpr int kQuantActMaxIntDiff = 0;

int g_failures = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            ++g_failures;                                             \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                        \
            std::fprintf(stderr, "\n");                               \
        }                                                             \
    } while (0)

struct TypeInfo {
    GgmlType type;
    const char* name;
    int64_t block_elems;
    int64_t block_bytes;
};

const TypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},       {GgmlType::F16, "F16", 1, 2},       {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::Q8_0, "Q8_0", 32, 34},   {GgmlType::Q4_0, "Q4_0", 32, 18},   {GgmlType::Q4_1, "Q4_1", 32, 20},
    {GgmlType::Q5_0, "Q5_0", 32, 22},   {GgmlType::Q5_1, "Q5_1", 32, 24},   {GgmlType::Q3_K, "Q3_K", 256, 110},
    {GgmlType::Q4_K, "Q4_K", 256, 144}, {GgmlType::Q5_K, "Q5_K", 256, 176}, {GgmlType::Q6_K, "Q6_K", 256, 210},
};

bool is_k(GgmlType t) {
    return t == GgmlType::Q3_K || t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K;
}
bool is_float(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

const WeightKernels* isa_table(GgmlType t, Isa isa) {
    switch (isa) {
        case Isa::Scalar: return scalar_weight_kernels(t);
        case Isa::Avx2: return avx2_weight_kernels(t);
        case Isa::Avx512Vnni: return avx512vnni_weight_kernels(t);
        case Isa::Neon: return neon_weight_kernels(t);
        case Isa::NeonDotprod: return neon_dotprod_weight_kernels(t);
        case Isa::NeonI8mm: return neon_i8mm_weight_kernels(t);
    }
    return nullptr;
}

constexpr Isa kSimdIsas[] = {Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDotprod, Isa::NeonI8mm};

std::vector<Isa> runnable_simd_isas() {
    std::vector<Isa> v;
    for (Isa i : kSimdIsas)
        if (isa_compiled(i) && cpu_supports(i)) v.push_back(i);
    return v;
}

// Which ISA's file provides `fn` in the merged table of `isa`: the lowest of isa and its ancestors
// whose own table holds that very function.
template <class Fn>
const char* provider(GgmlType t, Isa isa, Fn WeightKernels::* field) {
    const Fn fn = weight_kernels(t, isa)->*field;
    if (fn == nullptr) return "-";
    const char* name = "?";
    for (Isa i = isa;; i = isa_parent(i)) {
        const WeightKernels* own = isa_table(t, i);
        if (own && own->*field == fn) name = isa_name(i);
        if (i == Isa::Scalar) break;
    }
    return name;
}

// The kernel table dispatch chose on this CPU (what runs under EDGE_RT_ISA unset): per type, the ISA whose
// kernel each entry is (tools/cross_aarch64.sh shows it for every emulated CPU model).
void print_dispatch_table() {
    const Isa isa = active_isa();
    std::printf("dispatch (%s): type quantize_act vec_dot vec_dot_rows dot_rows_blockwise gemm_x8 dot_rows_tiled\n",
                isa_name(isa));
    for (const TypeInfo& ti : kTypes)
        std::printf(
            "  %-5s %s %s %s %s %s %s\n", ti.name, provider(ti.type, isa, &WeightKernels::quantize_act),
            provider(ti.type, isa, &WeightKernels::vec_dot), provider(ti.type, isa, &WeightKernels::vec_dot_rows),
            provider(ti.type, isa, &WeightKernels::dot_rows_blockwise), provider(ti.type, isa, &WeightKernels::gemm_x8),
            provider(ti.type, isa, &WeightKernels::dot_rows_tiled));
    const GgmlVecOps& ops = ggml_vec_ops(isa);
    std::printf("  vec ops (%s flavour) %s\n", vec_ops_flavour_name(vec_ops_flavour()),
                &ops == scalar_ggml_vec_ops()          ? "scalar"
                : &ops == scalar_avx512_ggml_vec_ops() ? "scalar (avx512 flavour)"
                : &ops == avx2_ggml_vec_ops()          ? "avx2"
                : &ops == avx512_ggml_vec_ops()        ? "avx512"
                : &ops == neon_ggml_vec_ops()          ? "neon"
                                                       : "?");
}

// Random but valid weight rows: random quantized bits, scales of realistic magnitude.
std::vector<uint8_t> random_weights(const TypeInfo& ti, int64_t n, std::mt19937& rng) {
    const int64_t nb = n / ti.block_elems;
    std::vector<uint8_t> w((size_t)(nb * ti.block_bytes));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    for (auto& b : w) b = (uint8_t)byte(rng);
    auto put16 = [&](size_t off, uint16_t v) { std::memcpy(&w[off], &v, 2); };
    for (int64_t b = 0; b < nb; ++b) {
        const size_t o = (size_t)(b * ti.block_bytes);
        switch (ti.type) {
            case GgmlType::F32: {
                float f = uni(rng);
                std::memcpy(&w[o], &f, 4);
                break;
            }
            case GgmlType::F16: put16(o, fp32_to_fp16(uni(rng))); break;
            case GgmlType::BF16: put16(o, fp32_to_bf16(uni(rng))); break;
            case GgmlType::Q8_0:
                put16(o, fp32_to_fp16(0.01f * uni(rng)));
                for (int j = 0; j < 32; ++j)
                    if (w[o + 2 + j] == 0x80) w[o + 2 + j] = 0x81;  // [-127, 127] as ggml
                break;
            case GgmlType::Q4_0:
            case GgmlType::Q5_0: put16(o, fp32_to_fp16(0.02f * uni(rng))); break;
            case GgmlType::Q4_1:
            case GgmlType::Q5_1:
                put16(o, fp32_to_fp16(0.02f * std::fabs(uni(rng))));
                put16(o + 2, fp32_to_fp16(-0.1f * std::fabs(uni(rng))));
                break;
            case GgmlType::Q4_K:
            case GgmlType::Q5_K:
                put16(o, fp32_to_fp16(0.002f * std::fabs(uni(rng))));
                put16(o + 2, fp32_to_fp16(0.002f * std::fabs(uni(rng))));
                break;
            case GgmlType::Q3_K: put16(o + 108, fp32_to_fp16(0.002f * uni(rng))); break;  // d after 108 bytes
            case GgmlType::Q6_K: {
                put16(o + 208, fp32_to_fp16(0.001f * uni(rng)));
                for (int j = 0; j < 16; ++j)
                    if (w[o + 192 + j] == 0x80) w[o + 192 + j] = 0x81;
                break;
            }
            default: break;
        }
    }
    return w;
}

std::vector<float> random_acts(int64_t n, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x((size_t)n);
    for (auto& v : x) v = nd(rng);
    if (n >= 64) {
        x[(size_t)(n / 3)] = 9.5f;                                   // an outlier, as real activations have
        for (int j = 0; j < 32; ++j) x[(size_t)(n - 32 + j)] = 0.f;  // and an all-zero trailing block
    }
    return x;
}

// Decodes an activation row in its act_type encoding back to floats (test-side reference).
std::vector<double> decode_act(const WeightKernels& k, const std::vector<uint8_t>& a, int64_t n) {
    std::vector<double> y((size_t)n);
    const uint8_t* p = a.data();
    switch (k.act_type) {
        case GgmlType::F32:
            for (int64_t i = 0; i < n; ++i) {
                float f;
                std::memcpy(&f, p + 4 * i, 4);
                y[i] = f;
            }
            break;
        case GgmlType::F16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                y[i] = fp16_to_fp32(h);
            }
            break;
        case GgmlType::BF16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                y[i] = bf16_to_fp32(h);
            }
            break;
        case GgmlType::Q8_0: {
            const auto* b = reinterpret_cast<const BlockQ8_0*>(p);
            for (int64_t i = 0; i < n; ++i) y[i] = (double)fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
            break;
        }
        case GgmlType::Q8_1: {
            const auto* b = reinterpret_cast<const BlockQ8_1*>(p);
            for (int64_t i = 0; i < n; ++i) y[i] = (double)fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
            break;
        }
        case GgmlType::Q8_K: {
            const auto* b = reinterpret_cast<const BlockQ8_K*>(p);
            for (int64_t i = 0; i < n; ++i) y[i] = (double)b[i / 256].d * b[i / 256].qs[i % 256];
            break;
        }
        default: break;
    }
    return y;
}

// Compares two encoded activation rows; returns the number of int8 values that differ by more than
// kQuantActMaxIntDiff plus scale mismatches.
int compare_act(GgmlType act, const uint8_t* a, const uint8_t* b, int64_t n, std::string* what) {
    int bad = 0;
    auto cmp_q = [&](const int8_t* x, const int8_t* y, int m, int64_t blk) {
        for (int j = 0; j < m; ++j)
            if (std::abs(x[j] - y[j]) > kQuantActMaxIntDiff) {
                if (!bad)
                    *what = "block " + std::to_string(blk) + " q[" + std::to_string(j) + "] " + std::to_string(x[j]) +
                            " vs " + std::to_string(y[j]);
                ++bad;
            }
    };
    switch (act) {
        case GgmlType::Q8_0:
            for (int64_t i = 0; i < n / 32; ++i) {
                const auto* x = reinterpret_cast<const BlockQ8_0*>(a) + i;
                const auto* y = reinterpret_cast<const BlockQ8_0*>(b) + i;
                if (x->d != y->d) {
                    if (!bad) *what = "d of block " + std::to_string(i);
                    ++bad;
                }
                cmp_q(x->qs, y->qs, 32, i);
            }
            break;
        case GgmlType::Q8_1:
            for (int64_t i = 0; i < n / 32; ++i) {
                const auto* x = reinterpret_cast<const BlockQ8_1*>(a) + i;
                const auto* y = reinterpret_cast<const BlockQ8_1*>(b) + i;
                if (x->d != y->d || x->s != y->s) {
                    if (!bad) *what = "d/s of block " + std::to_string(i);
                    ++bad;
                }
                cmp_q(x->qs, y->qs, 32, i);
            }
            break;
        case GgmlType::Q8_K:
            for (int64_t i = 0; i < n / 256; ++i) {
                const auto* x = reinterpret_cast<const BlockQ8_K*>(a) + i;
                const auto* y = reinterpret_cast<const BlockQ8_K*>(b) + i;
                if (x->d != y->d) {
                    if (!bad) *what = "d of block " + std::to_string(i);
                    ++bad;
                }
                cmp_q(x->qs, y->qs, 256, i);
                if (kQuantActMaxIntDiff == 0 && std::memcmp(x->bsums, y->bsums, sizeof(x->bsums)) != 0) {
                    if (!bad) *what = "bsums of block " + std::to_string(i);
                    ++bad;
                }
            }
            break;
        default: {
            const size_t bytes = act == GgmlType::F32 ? 4 : 2;
            if (std::memcmp(a, b, (size_t)n * bytes) != 0) {
                *what = "encoded floats differ";
                ++bad;
            }
        }
    }
    return bad;
}

// The 32-element block formats' scalar twins emulate the AVX2 kernels' lanes (kernels_scalar.cpp LaneSum),
// so the two agree bit for bit: the scalar ISA then computes what llama.cpp's AVX2 build computes. The
// avx512vnni weight kernels keep the AVX2 lanes (kernels_avx512vnni.cpp), so they are held to it too.
bool bitwise_twin(GgmlType t, Isa isa) {
    const bool lanes_isa = isa == Isa::Avx2 || isa == Isa::Avx512Vnni || isa == Isa::Neon || isa == Isa::NeonDotprod ||
                           isa == Isa::NeonI8mm;
    return lanes_isa && (t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q4_1 ||
                         t == GgmlType::Q5_1);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void test_type(const TypeInfo& ti, std::mt19937& rng) {
    const WeightKernels* ref = scalar_weight_kernels(ti.type);
    CHECK(ref != nullptr, "%s: no scalar kernels", ti.name);
    if (!ref) return;
    CHECK(ref->quantize_act && ref->vec_dot && ref->dequantize_row, "%s: scalar table incomplete", ti.name);
    const std::vector<int64_t> sizes = is_k(ti.type)       ? std::vector<int64_t>{256, 512, 2048, 5632}
                                       : is_float(ti.type) ? std::vector<int64_t>{1, 7, 32, 37, 64, 100, 2048, 5632}
                                                           : std::vector<int64_t>{32, 64, 96, 2048, 5632};
    const double dot_tol = is_k(ti.type) ? kKQuantDotRelTol : is_float(ti.type) ? kFloatDotRelTol : kBlockDotRelTol;
    double worst_ratio = 0.0;
    for (int64_t n : sizes) {
        const auto w = random_weights(ti, n, rng);
        constexpr int kActs = 8;
        std::vector<std::vector<float>> xs;
        const size_t arb = ref->act_row_bytes(n);
        std::vector<uint8_t> acts(arb * kActs);
        for (int r = 0; r < kActs; ++r) {
            xs.push_back(random_acts(n, rng));
            ref->quantize_act(xs[r].data(), acts.data() + r * arb, n);
        }
        std::vector<float> wd((size_t)n);
        ref->dequantize_row(w.data(), wd.data(), n);

        // Scalar reference: dot vs dequantized dot, and the error scale S per activation row.
        std::vector<float> ref_dot(kActs);
        std::vector<double> scale(kActs);
        for (int r = 0; r < kActs; ++r) {
            std::vector<uint8_t> a1(acts.begin() + r * arb, acts.begin() + (r + 1) * arb);
            const auto ad = decode_act(*ref, a1, n);
            double exact = 0, s = 0;
            for (int64_t i = 0; i < n; ++i) {
                exact += (double)wd[i] * ad[i];
                s += std::fabs((double)wd[i] * ad[i]);
            }
            ref_dot[r] = ref->vec_dot(n, w.data(), a1.data());
            scale[r] = s;
            double extra = 0;
            if (ref->act_type == GgmlType::Q8_1) {
                const size_t wb = (size_t)ti.block_bytes;
                for (int64_t b = 0; b < n / 32; ++b) {
                    uint16_t m;
                    std::memcpy(&m, w.data() + b * wb + 2, 2);  // Q4_1/Q5_1: m follows d
                    const auto* yb = reinterpret_cast<const BlockQ8_1*>(a1.data()) + b;
                    extra += kQ8_1SumRelTol * std::fabs((double)fp16_to_fp32(m) * fp16_to_fp32(yb->s));
                }
            }
            const double err = std::fabs(ref_dot[r] - exact);
            CHECK(err <= kRefConsistencyRelTol * s + kDotAbsTol + extra,
                  "%s n=%lld: scalar vec_dot %.9g vs dequantized dot %.9g (S=%.3g)", ti.name, (long long)n, ref_dot[r],
                  exact, s);
        }

        for (Isa isa : runnable_simd_isas()) {
            const WeightKernels* k = isa_table(ti.type, isa);
            const WeightKernels* merged = weight_kernels(ti.type, isa);
            CHECK(merged && merged->quantize_act && merged->vec_dot && merged->dequantize_row,
                  "%s/%s: merged table has null entries", ti.name, isa_name(isa));
            if (!k) continue;
            CHECK(k->act_type == ref->act_type && k->act_block_bytes == ref->act_block_bytes &&
                      k->act_block_elems == ref->act_block_elems,
                  "%s/%s: activation format differs from the scalar table", ti.name, isa_name(isa));
            if (k->quantize_act) {
                for (int r = 0; r < kActs; ++r) {
                    std::vector<uint8_t> mine(arb);
                    k->quantize_act(xs[r].data(), mine.data(), n);
                    std::string what;
                    const int bad = compare_act(ref->act_type, acts.data() + r * arb, mine.data(), n, &what);
                    CHECK(bad == 0, "%s/%s n=%lld: quantize_act differs from scalar in %d places (first: %s)", ti.name,
                          isa_name(isa), (long long)n, bad, what.c_str());
                }
            }
            if (k->dequantize_row) {
                std::vector<float> mine((size_t)n);
                k->dequantize_row(w.data(), mine.data(), n);
                CHECK(std::memcmp(mine.data(), wd.data(), (size_t)n * 4) == 0, "%s/%s n=%lld: dequantize_row differs",
                      ti.name, isa_name(isa), (long long)n);
            }
            if (k->vec_dot) {
                for (int r = 0; r < kActs; ++r) {
                    const float got = k->vec_dot(n, w.data(), acts.data() + r * arb);
                    const double err = std::fabs((double)got - ref_dot[r]);
                    const double lim = dot_tol * scale[r] + kDotAbsTol;
                    worst_ratio = std::fmax(worst_ratio, err / lim);
                    CHECK(err <= lim, "%s/%s n=%lld: vec_dot %.9g vs scalar %.9g (err %.3g > limit %.3g)", ti.name,
                          isa_name(isa), (long long)n, got, ref_dot[r], err, lim);
                    CHECK(!bitwise_twin(ti.type, isa) || same_bits(got, ref_dot[r]),
                          "%s/%s n=%lld: vec_dot %.9g is not the scalar twin's %.9g bit for bit", ti.name,
                          isa_name(isa), (long long)n, got, ref_dot[r]);
                }
            }
            if (k->vec_dot_rows) {
                for (int na = 1; na <= kActs; ++na) {
                    float out[kActs];
                    k->vec_dot_rows(n, w.data(), acts.data(), arb, na, out);
                    for (int r = 0; r < na; ++r) {
                        const double err = std::fabs((double)out[r] - ref_dot[r]);
                        const double lim = dot_tol * scale[r] + kDotAbsTol;
                        worst_ratio = std::fmax(worst_ratio, err / lim);
                        CHECK(err <= lim, "%s/%s n=%lld: vec_dot_rows(n_act=%d)[%d] %.9g vs scalar %.9g", ti.name,
                              isa_name(isa), (long long)n, na, r, out[r], ref_dot[r]);
                        CHECK(!bitwise_twin(ti.type, isa) || same_bits(out[r], ref_dot[r]),
                              "%s/%s n=%lld: vec_dot_rows(n_act=%d)[%d] %.9g is not the scalar twin's %.9g bit for bit",
                              ti.name, isa_name(isa), (long long)n, na, r, out[r], ref_dot[r]);
                    }
                }
            }
            if (k->vec_dot_rows_scaled) {  // vec_dot_rows' bits, whatever the row count
                CHECK(k->vec_dot_rows, "%s/%s: vec_dot_rows_scaled without vec_dot_rows", ti.name, isa_name(isa));
                const int64_t nb = n / QK8_0;
                std::vector<float> scales((size_t)(kActs * nb));
                for (int r = 0; r < kActs; ++r) act_block_scales(acts.data() + r * arb, n, &scales[(size_t)(r * nb)]);
                for (int na = 1; na <= kActs; ++na) {
                    float want[kActs], got[kActs];
                    k->vec_dot_rows(n, w.data(), acts.data(), arb, na, want);
                    k->vec_dot_rows_scaled(n, w.data(), acts.data(), arb, scales.data(), (size_t)nb, na, got);
                    for (int r = 0; r < na; ++r)
                        CHECK(same_bits(got[r], want[r]),
                              "%s/%s n=%lld: vec_dot_rows_scaled(n_act=%d)[%d] %.9g is not vec_dot_rows' %.9g", ti.name,
                              isa_name(isa), (long long)n, na, r, got[r], want[r]);
                }
                if (k->vec_dot2_rows_scaled) {       // two rows at once: each row's vec_dot_rows_scaled bits
                    std::mt19937 rng2((unsigned)n);  // its own generator: the other tests' draws stay the same
                    std::vector<uint8_t> two_rows = w;
                    const auto w1 = random_weights(ti, n, rng2);
                    two_rows.insert(two_rows.end(), w1.begin(), w1.end());
                    for (int na = 1; na <= kActs; ++na) {
                        float want[2][kActs], got[16];
                        for (int i = 0; i < 2; ++i)
                            k->vec_dot_rows_scaled(n, two_rows.data() + (size_t)i * w.size(), acts.data(), arb,
                                                   scales.data(), (size_t)nb, na, want[i]);
                        k->vec_dot2_rows_scaled(n, two_rows.data(), w.size(), acts.data(), arb, scales.data(),
                                                (size_t)nb, na, got);
                        for (int i = 0; i < 2; ++i)
                            for (int r = 0; r < na; ++r)
                                CHECK(same_bits(got[i * 8 + r], want[i][r]),
                                      "%s/%s n=%lld: vec_dot2_rows_scaled(n_act=%d) row %d [%d] %.9g is not "
                                      "vec_dot_rows_scaled's %.9g",
                                      ti.name, isa_name(isa), (long long)n, na, i, r, got[i * 8 + r], want[i][r]);
                    }
                }
            }
        }
    }
    std::printf("  %-5s ok-so-far; worst SIMD dot error = %.3f of its limit\n", ti.name, worst_ratio);
}

// Hand-computed blocks (values worked out from the ggml layout descriptions in ggml_types.h).
void test_known_blocks() {
    const uint16_t h1 = 0x3C00, h05 = 0x3800, h025 = 0x3400;  // 1.0, 0.5, 0.25 in fp16
    {  // Q4_0: d = 0.5; qs[0] = 0x1F -> elem 0 = (15 - 8) * 0.5, elem 16 = (1 - 8) * 0.5; 0x88 -> 0
        BlockQ4_0 b;
        b.d = h05;
        std::memset(b.qs, 0x88, sizeof(b.qs));
        b.qs[0] = 0x1F;
        float y[32];
        scalar_weight_kernels(GgmlType::Q4_0)->dequantize_row(&b, y, 32);
        CHECK(y[0] == 3.5f && y[16] == -3.5f && y[1] == 0.f && y[31] == 0.f, "Q4_0 known block: %g %g %g", y[0], y[16],
              y[1]);
    }
    {  // Q8_0: d = 0.25; q[0] = -4 -> -1, q[31] = 127 -> 31.75
        BlockQ8_0 b;
        b.d = h025;
        std::memset(b.qs, 0, sizeof(b.qs));
        b.qs[0] = -4;
        b.qs[31] = 127;
        float y[32];
        scalar_weight_kernels(GgmlType::Q8_0)->dequantize_row(&b, y, 32);
        CHECK(y[0] == -1.f && y[31] == 31.75f && y[5] == 0.f, "Q8_0 known block: %g %g", y[0], y[31]);
    }
    {  // Q4_K: d = 1, dmin = 0.5. scales: s[0] = 0x42 -> sc0 = 2 (and top bits 1 for sc4),
        // s[4] = 0x83 -> m0 = 3 (top bits 2 for m4), s[8] = 0x25 -> sc4 = 5 | 1<<4 = 21, m4 = 2 | 2<<4 = 34.
        // qs[0] = 0x97: elem 0 = 1*2*7 - 0.5*3 = 12.5; elem 32 (sub-block 1, sc = m = 0) = 0.
        // qs[64] = 0x03: elem 128 (sub-block 4) = 21*3 - 0.5*34 = 46; elem 160 (sub-block 5) = 0.
        BlockQ4_K b;
        std::memset(&b, 0, sizeof(b));
        b.d = h1;
        b.dmin = h05;
        b.scales[0] = 0x42;
        b.scales[4] = 0x83;
        b.scales[8] = 0x25;
        b.qs[0] = 0x97;
        b.qs[64] = 0x03;
        float y[256];
        scalar_weight_kernels(GgmlType::Q4_K)->dequantize_row(&b, y, 256);
        CHECK(y[0] == 12.5f && y[32] == 0.f && y[128] == 46.f && y[160] == 0.f && y[1] == -1.5f && y[129] == -17.f,
              "Q4_K known block: %g %g %g %g %g %g", y[0], y[32], y[128], y[160], y[1], y[129]);
    }
    {  // Q3_K: d = 1. Scales (s - 32): s[0]: low nibble scales[0] = 2, high bits 0..1 of scales[8] = 2 -> 34 -> 2;
        // s[1]: low 0, bits 0..1 of scales[9] = 1 -> 16 -> -16; s[13]: high nibble of scales[5] = 7, bits 6..7
        // of scales[9] = 2 -> 39 -> 7; s[2]: all zero -> -32. Values q = low2 + 4 * hbit - 4:
        // elem 0 (h 0, t 0, l 0): qs[0] bits 0..1 = 3, hmask[0] bit 0 set -> 3 -> 2 * 3 = 6;
        // elem 1: 0, hbit clear -> -4 -> -8; elem 16 (group 1): -4 -> -16 * -4 = 64;
        // elem 32 (t 1, group 2): qs[0] bits 2..3 = 0, hmask[0] bit 1 clear -> -4 -> -32 * -4 = 128;
        // elem 208 (h 1, t 2, l 16, group 13): qs[48] bits 4..5 = 2, hmask[16] bit 6 set -> 2 -> 7 * 2 = 14.
        BlockQ3_K b;
        std::memset(&b, 0, sizeof(b));
        b.d = h1;
        b.scales[0] = 0x02;
        b.scales[8] = 0x02;
        b.scales[5] = 0x70;
        b.scales[9] = 0x81;
        b.qs[0] = 0x03;
        b.hmask[0] = 0x01;
        b.qs[48] = 0x20;
        b.hmask[16] = 0x40;
        float y[256];
        scalar_weight_kernels(GgmlType::Q3_K)->dequantize_row(&b, y, 256);
        CHECK(y[0] == 6.f && y[1] == -8.f && y[16] == 64.f && y[32] == 128.f && y[208] == 14.f,
              "Q3_K known block: %g %g %g %g %g", y[0], y[1], y[16], y[32], y[208]);
    }
    {  // Q5_K: scales as the Q4_K block above plus s[1] = 0x01 -> sc1 = 1, m1 = 0.
        // qh[0] = 0x13 (bits 0, 1, 4), qh[1] = 0x10 (bit 4): bit j of qh[l] is bit 4 of element l of sub-block j.
        // elem 0: 7 | 16 = 23 -> 2*23 - 1.5 = 44.5; elem 32: 9 | 16 = 25 -> 25; elem 1: 0 -> -1.5;
        // elem 128 (sub-block 4): 3 | 16 = 19 -> 21*19 - 17 = 382; elem 129: 0 | 16 -> 21*16 - 17 = 319;
        // elem 160 (sub-block 5, sc = m = 0) -> 0; elem 33: qh[1] bit 1 clear, nibble 0 -> 0.
        BlockQ5_K b;
        std::memset(&b, 0, sizeof(b));
        b.d = h1;
        b.dmin = h05;
        b.scales[0] = 0x42;
        b.scales[1] = 0x01;
        b.scales[4] = 0x83;
        b.scales[8] = 0x25;
        b.qs[0] = 0x97;
        b.qs[64] = 0x03;
        b.qh[0] = 0x13;
        b.qh[1] = 0x10;
        float y[256];
        scalar_weight_kernels(GgmlType::Q5_K)->dequantize_row(&b, y, 256);
        CHECK(y[0] == 44.5f && y[32] == 25.f && y[1] == -1.5f && y[128] == 382.f && y[129] == 319.f && y[160] == 0.f &&
                  y[33] == 0.f,
              "Q5_K known block: %g %g %g %g %g %g %g", y[0], y[32], y[1], y[128], y[129], y[160], y[33]);
    }
    {  // Q6_K: d = 1; scales[0] = 2, scales[5] = -1; all other bits 0 -> q = -32.
        // elem 0: ql[0] low nibble 5, qh[0] bits 0-1 = 2 -> 37 - 32 = 5 -> 2 * 5 = 10; elem 1 -> 2 * -32.
        // elem 80 (half 0, t = 2, l = 16): ql[16] high nibble 10, qh[16] bits 4-5 = 1 -> 26 - 32 = -6,
        // scale 5 -> 6; elem 85 -> -1 * -32 = 32; elem 16 (scale 1 = 0) -> 0.
        BlockQ6_K b;
        std::memset(&b, 0, sizeof(b));
        b.d = h1;
        b.scales[0] = 2;
        b.scales[5] = -1;
        b.ql[0] = 0x05;
        b.qh[0] = 0x02;
        b.ql[16] = 0xA0;
        b.qh[16] = 0x10;
        float y[256];
        scalar_weight_kernels(GgmlType::Q6_K)->dequantize_row(&b, y, 256);
        CHECK(y[0] == 10.f && y[1] == -64.f && y[80] == 6.f && y[85] == 32.f && y[16] == 0.f,
              "Q6_K known block: %g %g %g %g %g", y[0], y[1], y[80], y[85], y[16]);
    }
    {  // q8_K reference semantics: the largest magnitude maps to -127 (iscale = -127/max), d = 1/iscale.
        float x[256] = {};
        x[3] = 2.f;
        x[7] = -1.f;
        BlockQ8_K q;
        scalar_weight_kernels(GgmlType::Q4_K)->quantize_act(x, &q, 256);
        CHECK(q.qs[3] == -127 && q.qs[7] == 64 && q.bsums[0] == -63 && std::fabs(q.d * -127.f - 2.f) < 1e-6f,
              "q8_K known: q3=%d q7=%d bsum0=%d d=%g", q.qs[3], q.qs[7], q.bsums[0], q.d);
    }
}

// ---------------------------------------------------------------- benchmark

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int bench(double mb) {
    std::mt19937 rng(7);
    const int64_t n = 4096;  // row length (TinyLlama's hidden size is 2048, FFN 5632; 4096 is typical)
    std::printf("vec_dot throughput over a %.0f MB weight matrix, single thread, best of 5 (GB/s of weight bytes)\n",
                mb);
    {  // plain read bandwidth for comparison (compiler-vectorized sum, baseline ISA)
        const size_t words = (size_t)(mb * 1e6 / 8);
        std::vector<uint64_t> buf(words, 1);
        double best = 1e30;
        volatile uint64_t sink = 0;
        for (int rep = 0; rep < 5; ++rep) {
            const double t0 = now_s();
            uint64_t s = 0;
            for (size_t i = 0; i < words; ++i) s += buf[i];
            sink = sink + s;
            best = std::fmin(best, now_s() - t0);
        }
        std::printf("%-6s %-11s %8.1f\n", "read", "baseline", words * 8 / best / 1e9);
    }
    std::vector<Isa> isas = {Isa::Scalar};
    for (Isa i : runnable_simd_isas()) isas.push_back(i);
    for (const TypeInfo& ti : kTypes) {
        const int64_t row_bytes = n / ti.block_elems * ti.block_bytes;
        const int64_t rows = (int64_t)(mb * 1e6) / row_bytes;
        const auto w = random_weights(ti, n * rows, rng);  // one long row = rows rows back to back
        const auto x = random_acts(n * 8, rng);
        const WeightKernels* ref = scalar_weight_kernels(ti.type);
        std::vector<uint8_t> a(ref->act_row_bytes(n) * 8);
        for (int r = 0; r < 8; ++r) ref->quantize_act(x.data() + r * n, a.data() + r * ref->act_row_bytes(n), n);
        std::vector<float> out((size_t)rows * 8);
        for (Isa isa : isas) {
            const WeightKernels* k = weight_kernels(ti.type, isa);
            double best = 1e30, best_rows = 1e30;
            const int reps = isa == Isa::Scalar ? 2 : 5;
            for (int rep = 0; rep < reps; ++rep) {
                const double t0 = now_s();
                for (int64_t r = 0; r < rows; ++r) out[r] = k->vec_dot(n, w.data() + r * row_bytes, a.data());
                best = std::fmin(best, now_s() - t0);
                if (k->vec_dot_rows && isa != Isa::Scalar) {
                    const double t1 = now_s();
                    for (int64_t r = 0; r < rows; ++r)
                        k->vec_dot_rows(n, w.data() + r * row_bytes, a.data(), ref->act_row_bytes(n), 8, &out[r * 8]);
                    best_rows = std::fmin(best_rows, now_s() - t1);
                }
            }
            std::printf("%-6s %-11s %8.1f", ti.name, isa_name(isa), rows * row_bytes / best / 1e9);
            if (best_rows < 1e29)
                std::printf("   vec_dot_rows x8: %6.1f GB/s of weights (= %.1f GB/s x 8 dots)",
                            rows * row_bytes / best_rows / 1e9, 8 * rows * row_bytes / best_rows / 1e9);
            std::printf("\n");
        }
    }
    return 0;
}

// The attention kernels (kq_tinyblas, pv_tinyblas, kq_ggml) against the twin, head dims with and without a
// tail past whole SIMD steps, causal-length probability rows zero past their length.
void test_attention_vec_ops(Isa isa, const GgmlVecOps& ops, const GgmlVecOps& ref, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    auto same = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
    const int64_t n_pos = 37, stride = 48;  // stride: n_pos rounded up to 16
    for (int64_t D : {64, 80, 96, 128}) {
        std::vector<uint16_t> k((size_t)(n_pos * D)), v((size_t)(D * n_pos));
        std::vector<float> q((size_t)(8 * D)), p((size_t)(8 * stride), 0.0f);
        for (auto& h : k) h = fp32_to_fp16(nd(rng));
        for (auto& h : v) h = fp32_to_fp16(nd(rng));
        for (auto& f : q) f = fp16_to_fp32(fp32_to_fp16(nd(rng)));
        for (int i = 0; i < 8; ++i)
            for (int64_t e = 0; e < n_pos - 7 + i; ++e)
                p[(size_t)(i * stride + e)] = fp16_to_fp32(fp32_to_fp16(nd(rng)));
        std::vector<float> a((size_t)(8 * n_pos)), b((size_t)(8 * n_pos));
        if (D % ops.tinyblas_lanes == 0) {
            ref.kq_tinyblas(D, k.data(), D, n_pos, q.data(), 8, a.data(), n_pos);
            ops.kq_tinyblas(D, k.data(), D, n_pos, q.data(), 8, b.data(), n_pos);
            for (size_t i = 0; i < a.size(); ++i)
                CHECK(same(a[i], b[i]), "kq_tinyblas %s D=%lld i=%zu: %g vs %g", isa_name(isa), (long long)D, i, a[i],
                      b[i]);
        }
        ref.kq_ggml(D, k.data(), D, n_pos, q.data(), 8, a.data(), n_pos);
        ops.kq_ggml(D, k.data(), D, n_pos, q.data(), 8, b.data(), n_pos);
        for (size_t i = 0; i < a.size(); ++i)
            CHECK(same(a[i], b[i]), "kq_ggml %s D=%lld i=%zu: %g vs %g", isa_name(isa), (long long)D, i, a[i], b[i]);
        std::vector<float> oa((size_t)(8 * D)), ob((size_t)(8 * D));
        ref.pv_tinyblas(n_pos, v.data(), n_pos, D, p.data(), stride, 8, oa.data());
        ops.pv_tinyblas(n_pos, v.data(), n_pos, D, p.data(), stride, 8, ob.data());
        for (size_t i = 0; i < oa.size(); ++i)
            CHECK(same(oa[i], ob[i]), "pv_tinyblas %s D=%lld i=%zu: %g vs %g", isa_name(isa), (long long)D, i, oa[i],
                  ob[i]);
    }
}

constexpr VecOpsFlavour kVecOpsFlavours[] = {VecOpsFlavour::Avx2, VecOpsFlavour::Avx512};

// ggml vector ops: every ISA, for either flavour, must return that flavour's scalar twin's bits exactly
// (kernels.h GgmlVecOps): an ISA without the flavour's SIMD code runs the twin itself.
void test_ggml_vec_ops(std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    auto same = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
    for (Isa isa : runnable_simd_isas())
        for (VecOpsFlavour flavour : kVecOpsFlavours) {
            const GgmlVecOps& ops = ggml_vec_ops(isa, flavour);
            const GgmlVecOps& ref = ggml_vec_ops_scalar_twin(flavour);
            CHECK(ops.tinyblas_lanes == ref.tinyblas_lanes, "%s: tinyblas_lanes %d vs its twin's %d", isa_name(isa),
                  ops.tinyblas_lanes, ref.tinyblas_lanes);
            test_attention_vec_ops(isa, ops, ref, rng);
            for (int64_t n : {1, 7, 8, 13, 15, 16, 17, 31, 32, 33, 64, 65, 100, 1536}) {
                std::vector<float> x((size_t)n), g((size_t)n), y0((size_t)n), y1((size_t)n);
                std::vector<uint16_t> hx((size_t)n), hy((size_t)n);
                for (int64_t i = 0; i < n; ++i) {
                    // wide range: exp over/underflow and the special-case lanes (|n| > 126, > 192)
                    x[(size_t)i] = nd(rng) * (i % 5 == 0 ? 60.f : 4.f);
                    g[(size_t)i] = nd(rng);
                    hx[(size_t)i] = fp32_to_fp16(nd(rng));
                    hy[(size_t)i] = fp32_to_fp16(std::fabs(nd(rng)));
                }
                ref.swiglu(x.data(), g.data(), y0.data(), n);
                ops.swiglu(x.data(), g.data(), y1.data(), n);
                for (int64_t i = 0; i < n; ++i)
                    CHECK(same(y0[(size_t)i], y1[(size_t)i]), "swiglu %s n=%lld i=%lld: %g vs %g", isa_name(isa),
                          (long long)n, (long long)i, y0[(size_t)i], y1[(size_t)i]);
                std::vector<float> sx(x);
                if (n > 1) sx[0] = -INFINITY;  // a masked score (a row always keeps its own position)
                const float mx = *std::max_element(sx.begin(), sx.end());
                const double s0 = ref.softmax_exp(sx.data(), y0.data(), n, mx),
                             s1 = ops.softmax_exp(sx.data(), y1.data(), n, mx);
                CHECK(s0 == s1, "softmax_exp %s n=%lld: sum %.17g vs %.17g", isa_name(isa), (long long)n, s0, s1);
                for (int64_t i = 0; i < n; ++i)
                    CHECK(same(y0[(size_t)i], y1[(size_t)i]), "softmax_exp %s n=%lld i=%lld", isa_name(isa),
                          (long long)n, (long long)i);
                const float t0 = ref.dot_f16_tinyblas(n, hx.data(), hy.data()),
                            t1 = ops.dot_f16_tinyblas(n, hx.data(), hy.data());
                CHECK(same(t0, t1), "dot_f16_tinyblas %s n=%lld: %g vs %g", isa_name(isa), (long long)n, t0, t1);
                ref.geglu(x.data(), g.data(), y0.data(), n);
                ops.geglu(x.data(), g.data(), y1.data(), n);
                for (int64_t i = 0; i < n; ++i)
                    CHECK(same(y0[(size_t)i], y1[(size_t)i]), "geglu %s n=%lld i=%lld", isa_name(isa), (long long)n,
                          (long long)i);
                for (int64_t n_total : {n, (n + 31) / 32 * 32, (n + 63) / 64 * 64, (int64_t)256}) {
                    if (n_total < n) continue;
                    const float d0 = ref.dot_f16_ggml(n, hx.data(), hy.data(), n_total);
                    const float d1 = ops.dot_f16_ggml(n, hx.data(), hy.data(), n_total);
                    CHECK(same(d0, d1), "dot_f16_ggml %s n=%lld n_total=%lld: %g vs %g", isa_name(isa), (long long)n,
                          (long long)n_total, d0, d1);
                }
            }
        }
}

// geglu as ggml_vec_geglu_f32: the saturated ranges, and table entries read from llama-cpp-python
// 0.3.36's libggml-cpu (ggml_table_gelu_f16). The entry of x = -1.999 (fp16 0xbfff) is the one that
// needs ggml's fused 1 + (0.044715 x) x: unfused it rounds to 0xa9d4.
void test_geglu() {
    const GgmlVecOps& ref = *scalar_ggml_vec_ops();
    struct Case {
        float x, g, want;
    };
    const Case cases[] = {
        {10.0f, 0.5f, 5.0f},                                        // x >= 10: x * g
        {-10.0f, 3.0f, 0.0f},                                       // x <= -10: 0
        {fp16_to_fp32(0xbfff), 1.0f, fp16_to_fp32(0xa9d3)},         // ggml's table entry 0xbfff
        {fp16_to_fp32(0x3c00), 2.0f, 2.0f * fp16_to_fp32(0x3abb)},  // gelu(1) = 0.8413 in fp16, times g
    };
    for (const Case& c : cases) {
        float y = 0.0f;
        ref.geglu(&c.x, &c.g, &y, 1);
        CHECK(y == c.want, "geglu(%a) * %g = %a, want %a", c.x, c.g, y, c.want);
    }
}

}  // namespace

// Dispatch asked for every ISA, the CPU's or not, must hand back kernels this CPU runs: building the
// merged table used to run the AVX-512 table's static initializer (AVX-512 stores) on every CPU, so
// the first weight_kernels() call died with SIGILL on an AVX2-only machine.
// Q4_0 in Blockwise order (kernels.h SumOrder): the definition (one fma per block, in block order), the
// plain-layout rows kernel and the x8 gemm over interleaved groups, at every ISA, all bit for bit.
void test_q4_0_blockwise(std::mt19937& rng) {
    const TypeInfo& ti = kTypes[4];
    CHECK(ti.type == GgmlType::Q4_0, "kTypes[4] is not Q4_0");
    CHECK(sum_order_for(GgmlType::Q4_0, 64) == SumOrder::Blockwise, "Q4_0 with 64 rows should be Blockwise");
    CHECK(sum_order_for(GgmlType::Q4_0, 12) == SumOrder::Lanes, "Q4_0 with 12 rows should be Lanes");
    CHECK(sum_order_for(GgmlType::Q8_0, 64) == SumOrder::Lanes, "Q8_0 is never repacked by llama.cpp");
    const WeightKernels* ref = scalar_weight_kernels(GgmlType::Q4_0);
    for (int64_t n : {32, 64, 256, 2048}) {
        const int64_t nb = n / 32;
        const size_t rb = (size_t)(nb * ti.block_bytes);
        const auto w = random_weights(ti, 8 * n, rng);  // 8 rows back to back
        constexpr int kActs = 11;                       // past the AVX2 kernel's runs of 4
        const size_t arb = ref->act_row_bytes(n);
        std::vector<uint8_t> acts(arb * kActs);
        std::vector<int16_t> sums((size_t)(nb * kActs));
        for (int r = 0; r < kActs; ++r) {
            ref->quantize_act(random_acts(n, rng).data(), acts.data() + r * arb, n);
            act_block_sums(acts.data() + r * arb, n, sums.data() + r * nb);
        }
        // the definition
        float want[kActs][8];
        for (int r = 0; r < kActs; ++r)
            for (int c = 0; c < 8; ++c) {
                const auto* x = reinterpret_cast<const BlockQ4_0*>(w.data() + c * rb);
                const auto* y = reinterpret_cast<const BlockQ8_0*>(acts.data() + r * arb);
                float acc = 0.f;
                for (int64_t b = 0; b < nb; ++b) {
                    int isum = 0;
                    for (int j = 0; j < 16; ++j)
                        isum += ((x[b].qs[j] & 15) - 8) * y[b].qs[j] + ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
                    acc = std::fma((float)isum, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d), acc);
                }
                want[r][c] = acc;
            }
        std::vector<uint8_t> group(8 * rb);
        ref->interleave_x8(w.data(), rb, n, group.data());
        std::vector<Isa> isas = runnable_simd_isas();
        isas.insert(isas.begin(), Isa::Scalar);
        for (Isa isa : isas) {
            const WeightKernels* k = weight_kernels(GgmlType::Q4_0, isa);
            CHECK(k->dot_rows_blockwise && k->interleave_x8 && k->gemm_x8, "Q4_0/%s: Blockwise kernels missing",
                  isa_name(isa));
            for (int na = 1; na <= kActs; ++na) {
                float out[kActs * 8];
                k->gemm_x8(n, group.data(), acts.data(), arb, sums.data(), na, 0, out, 8);
                for (int r = 0; r < na; ++r)
                    for (int c = 0; c < 8; ++c)
                        CHECK(same_bits(out[r * 8 + c], want[r][c]),
                              "Q4_0/%s n=%lld gemm_x8(n_act=%d)[%d][%d] %.9g != %.9g", isa_name(isa), (long long)n, na,
                              r, c, out[r * 8 + c], want[r][c]);
            }
            for (int c = 0; c < 8; ++c) {
                float out[8];
                k->dot_rows_blockwise(n, w.data() + c * rb, acts.data(), arb, 8, 8, out);
                for (int r = 0; r < 8; ++r)
                    CHECK(same_bits(out[r], want[r][c]), "Q4_0/%s n=%lld dot_rows_blockwise row %d act %d %.9g != %.9g",
                          isa_name(isa), (long long)n, c, r, out[r], want[r][c]);
            }
        }
    }
    std::printf("  Q4_0 Blockwise order: rows and x8 kernels ok-so-far\n");
}

// Every type with Blockwise kernels: each ISA's dot_rows_blockwise is the scalar twin's bits, for rows
// summed as llama.cpp's gemm (the first n_gemm) and as its gemv (the rest).
void test_blockwise_rows_match_twin(std::mt19937& rng) {
    for (const TypeInfo& ti : kTypes) {
        const WeightKernels* ref = scalar_weight_kernels(ti.type);
        if (!ref->dot_rows_blockwise) continue;
        CHECK(sum_order_for(ti.type, 16) == SumOrder::Blockwise, "%s has Blockwise kernels but is not Blockwise",
              ti.name);
        for (int64_t n : {256, 512, 2048}) {
            const auto w = random_weights(ti, n, rng);
            const size_t arb = ref->act_row_bytes(n);
            std::vector<uint8_t> acts(arb * 8);
            for (int r = 0; r < 8; ++r) ref->quantize_act(random_acts(n, rng).data(), acts.data() + r * arb, n);
            // 8 weight rows for the x8 kernels: the interleaved group against each row's twin
            if (ref->gemm_x8) {
                const auto w8 = random_weights(ti, 8 * n, rng);
                const size_t rb = (size_t)(n / ti.block_elems * ti.block_bytes);
                std::vector<uint8_t> group(8 * rb);
                ref->interleave_x8(w8.data(), rb, n, group.data());
                std::vector<int16_t> sums((size_t)(8 * n / 32));
                if (ref->act_type == GgmlType::Q8_0)
                    for (int r = 0; r < 8; ++r) act_block_sums(acts.data() + r * arb, n, sums.data() + r * (n / 32));
                // n_gemm 3 splits a pair of activation rows (the i8mm kernels take two at a time), n_act 7
                // leaves an odd last row
                for (int na : {8, 7})
                    for (int n_gemm : {0, 3, 4, 8}) {
                        float want[8][8];
                        for (int c = 0; c < 8; ++c) {
                            float col[8];
                            ref->dot_rows_blockwise(n, w8.data() + c * rb, acts.data(), arb, 8, n_gemm, col);
                            for (int r = 0; r < 8; ++r) want[r][c] = col[r];
                        }
                        std::vector<Isa> isas = runnable_simd_isas();
                        isas.insert(isas.begin(), Isa::Scalar);
                        for (Isa isa : isas) {
                            const WeightKernels* k = weight_kernels(ti.type, isa);
                            float got[64];
                            k->gemm_x8(n, group.data(), acts.data(), arb, sums.data(), na, n_gemm, got, 8);
                            for (int r = 0; r < na; ++r)
                                for (int c = 0; c < 8; ++c)
                                    CHECK(same_bits(got[r * 8 + c], want[r][c]),
                                          "%s/%s n=%lld n_gemm=%d gemm_x8[%d][%d] %.9g != twin %.9g", ti.name,
                                          isa_name(isa), (long long)n, n_gemm, r, c, got[r * 8 + c], want[r][c]);
                        }
                    }
                // two groups at once (gemm_x16, where an ISA has it): each group's gemm_x8 bits
                std::mt19937 rng2((unsigned)n + 16);  // its own generator: the other tests' draws stay the same
                const auto w16 = random_weights(ti, 16 * n, rng2);
                std::vector<uint8_t> groups(16 * rb);
                for (int h = 0; h < 2; ++h)
                    ref->interleave_x8(w16.data() + h * 8 * rb, rb, n, groups.data() + h * 8 * rb);
                for (Isa isa : runnable_simd_isas()) {
                    const WeightKernels* k = weight_kernels(ti.type, isa);
                    if (!k->gemm_x16) continue;
                    for (int na : {8, 7, 5})
                        for (int n_gemm : {0, 3, 4, 8}) {
                            float want[2][64], got[8 * 16];
                            for (int h = 0; h < 2; ++h)
                                k->gemm_x8(n, groups.data() + h * 8 * rb, acts.data(), arb, sums.data(), na, n_gemm,
                                           want[h], 8);
                            k->gemm_x16(n, groups.data(), acts.data(), arb, sums.data(), na, n_gemm, got, 16);
                            for (int r = 0; r < na; ++r)
                                for (int c = 0; c < 16; ++c)
                                    CHECK(same_bits(got[r * 16 + c], want[c / 8][r * 8 + c % 8]),
                                          "%s/%s n=%lld n_gemm=%d gemm_x16[%d][%d] %.9g != gemm_x8's %.9g", ti.name,
                                          isa_name(isa), (long long)n, n_gemm, r, c, got[r * 16 + c],
                                          want[c / 8][r * 8 + c % 8]);
                        }
                }
            }
            for (int n_gemm : {0, 3, 8}) {
                float want[8];
                ref->dot_rows_blockwise(n, w.data(), acts.data(), arb, 8, n_gemm, want);
                for (Isa isa : runnable_simd_isas()) {
                    float got[8];
                    weight_kernels(ti.type, isa)->dot_rows_blockwise(n, w.data(), acts.data(), arb, 8, n_gemm, got);
                    for (int r = 0; r < 8; ++r)
                        CHECK(same_bits(got[r], want[r]), "%s/%s n=%lld n_gemm=%d row %d: %.9g != twin %.9g", ti.name,
                              isa_name(isa), (long long)n, n_gemm, r, got[r], want[r]);
                }
            }
        }
    }
}

// Tiled order (kernels.h takes_tiled): which matrices llama.cpp's tiled matmul takes, and every type with a
// tiled kernel: each ISA's dot_rows_tiled is the scalar twin's bits for every n_act, and the twin is the
// same dot product as vec_dot (only the float steps differ: within a few ulps of the sum's magnitude).
void test_tiled_rows_match_twin(std::mt19937& rng) {
    CHECK(takes_tiled(GgmlType::Q6_K, SumOrder::Lanes, kTiledMinRows), "Q6_K with 8 rows should be tiled");
    CHECK(!takes_tiled(GgmlType::Q6_K, SumOrder::Lanes, kTiledMinRows - 1), "Q6_K with 7 rows is vec_dot");
    CHECK(takes_tiled(GgmlType::Q4_K, SumOrder::Lanes, 33), "Q4_K not repacked (rows %% 8 != 0) is tiled");
    CHECK(!takes_tiled(GgmlType::Q4_K, SumOrder::Blockwise, 33), "repacked Q4_K never reaches the tiled path");
    CHECK(!takes_tiled(GgmlType::Q4_0, SumOrder::Lanes, 33), "Q4_0 has no tiled path");
    CHECK(!takes_tiled(GgmlType::Q8_0, SumOrder::Lanes, 33), "Q8_0 has no tiled path");
    int n_types = 0;
    for (const TypeInfo& ti : kTypes) {
        const WeightKernels* ref = scalar_weight_kernels(ti.type);
        if (!ref->dot_rows_tiled) continue;
        ++n_types;
        for (int64_t n : {256, 512, 2048}) {
            const auto w = random_weights(ti, n, rng);
            const size_t arb = ref->act_row_bytes(n);
            std::vector<uint8_t> acts(arb * 8);
            for (int r = 0; r < 8; ++r) ref->quantize_act(random_acts(n, rng).data(), acts.data() + r * arb, n);
            float want[8];
            ref->dot_rows_tiled(n, w.data(), acts.data(), arb, 8, want);
            for (int r = 0; r < 8; ++r) {
                const float lanes = ref->vec_dot(n, w.data(), acts.data() + r * arb);
                CHECK(std::fabs(want[r] - lanes) <= 1e-5f * (std::fabs(lanes) + 1.f),
                      "%s n=%lld row %d: tiled twin %.9g far from vec_dot %.9g", ti.name, (long long)n, r, want[r],
                      lanes);
            }
            std::vector<Isa> isas = runnable_simd_isas();
            isas.insert(isas.begin(), Isa::Scalar);
            for (Isa isa : isas) {
                const WeightKernels* k = weight_kernels(ti.type, isa);
                CHECK(k->dot_rows_tiled != nullptr, "%s/%s: tiled kernel missing", ti.name, isa_name(isa));
                if (!k->dot_rows_tiled) continue;
                for (int na = 1; na <= 8; ++na) {
                    float got[8];
                    k->dot_rows_tiled(n, w.data(), acts.data() + (8 - na) * arb, arb, na, got);
                    for (int r = 0; r < na; ++r)
                        CHECK(same_bits(got[r], want[8 - na + r]), "%s/%s n=%lld n_act=%d row %d: %.9g != twin %.9g",
                              ti.name, isa_name(isa), (long long)n, na, r, got[r], want[8 - na + r]);
                }
                if (k->dot2_rows_tiled) {                // two rows at once: each row's dot_rows_tiled bits
                    std::mt19937 rng2((unsigned)n + 2);  // its own generator: the other tests' draws stay the same
                    std::vector<uint8_t> two_rows = w;
                    const auto w1 = random_weights(ti, n, rng2);
                    two_rows.insert(two_rows.end(), w1.begin(), w1.end());
                    for (int na = 1; na <= 8; ++na) {
                        float want2[2][8], got[16];
                        for (int i = 0; i < 2; ++i)
                            k->dot_rows_tiled(n, two_rows.data() + (size_t)i * w.size(), acts.data(), arb, na,
                                              want2[i]);
                        k->dot2_rows_tiled(n, two_rows.data(), w.size(), acts.data(), arb, na, got);
                        for (int i = 0; i < 2; ++i)
                            for (int r = 0; r < na; ++r)
                                CHECK(
                                    same_bits(got[i * 8 + r], want2[i][r]),
                                    "%s/%s n=%lld: dot2_rows_tiled(n_act=%d) row %d [%d] %.9g != dot_rows_tiled's %.9g",
                                    ti.name, isa_name(isa), (long long)n, na, i, r, got[i * 8 + r], want2[i][r]);
                    }
                }
            }
        }
    }
    CHECK(n_types == 4, "tiled kernels for %d types, want Q3_K, Q4_K, Q5_K, Q6_K", n_types);
    std::printf("  Tiled order: %d types, every ISA the twin's bits\n", n_types);
}

// The batched attention ops are several dot_f16_tinyblas at once, bit for bit, at every ISA (scalar
// included); probability rows zero past their own length give the shorter dot's bits.
void test_batched_attention_ops(std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<Isa> isas = runnable_simd_isas();
    isas.insert(isas.begin(), Isa::Scalar);
    const int64_t D = 64, n_pos = 45, stride = 48, v_stride = 50;
    std::vector<uint16_t> k((size_t)(n_pos * D)), q16((size_t)(5 * D)), v((size_t)(D * v_stride)),
        p16((size_t)(5 * stride));
    std::vector<float> q((size_t)(5 * D)), p((size_t)(5 * stride), 0.f);
    for (auto& h : k) h = fp32_to_fp16(nd(rng));
    for (auto& h : v) h = fp32_to_fp16(nd(rng));
    for (size_t i = 0; i < q16.size(); ++i) q[i] = fp16_to_fp32(q16[i] = fp32_to_fp16(nd(rng)));
    const int64_t lens[5] = {45, 44, 40, 9, 1};
    for (int i = 0; i < 5; ++i)
        for (int64_t j = 0; j < lens[i]; ++j)
            p[(size_t)(i * stride + j)] =
                fp16_to_fp32(p16[(size_t)(i * stride + j)] = fp32_to_fp16(std::fabs(nd(rng))));
    for (Isa isa : isas)
        for (VecOpsFlavour flavour : kVecOpsFlavours) {
            const GgmlVecOps& ops = ggml_vec_ops(isa, flavour);
            std::vector<float> kq((size_t)(5 * stride)), pv((size_t)(5 * D));
            ops.kq_tinyblas(D, k.data(), D, n_pos, q.data(), 5, kq.data(), stride);
            ops.pv_tinyblas(n_pos, v.data(), v_stride, D, p.data(), stride, 5, pv.data());
            for (int64_t Dg : {(int64_t)64, (int64_t)40}) {  // a whole number of 32-steps, and a tail in double
                std::vector<float> kq2((size_t)(2 * n_pos));
                std::vector<float> q2((size_t)(2 * Dg));
                for (int i = 0; i < 2; ++i)
                    for (int64_t e = 0; e < Dg; ++e) q2[(size_t)(i * Dg + e)] = q[(size_t)(i * D + e)];
                ops.kq_ggml(Dg, k.data(), D, n_pos, q2.data(), 2, kq2.data(), n_pos);
                for (int i = 0; i < 2; ++i)
                    for (int64_t j = 0; j < n_pos; ++j) {
                        const float want = ops.dot_f16_ggml(Dg, k.data() + j * D, q16.data() + i * D, Dg);
                        CHECK(same_bits(kq2[(size_t)(i * n_pos + j)], want), "kq_ggml %s D=%lld [%d][%lld]",
                              isa_name(isa), (long long)Dg, i, (long long)j);
                    }
            }
            for (int i = 0; i < 5; ++i) {
                for (int64_t j = 0; j < n_pos; ++j) {
                    const float want = ops.dot_f16_tinyblas(D, k.data() + j * D, q16.data() + i * D);
                    CHECK(same_bits(kq[(size_t)(i * stride + j)], want), "kq_tinyblas %s [%d][%lld]", isa_name(isa), i,
                          (long long)j);
                }
                for (int64_t d = 0; d < D; ++d) {
                    const float want = ops.dot_f16_tinyblas(lens[i], v.data() + d * v_stride, p16.data() + i * stride);
                    CHECK(same_bits(pv[(size_t)(i * D + d)], want), "pv_tinyblas %s [%d][%lld]", isa_name(isa), i,
                          (long long)d);
                }
            }
        }
}

void test_dispatch_on_this_cpu() {
    const TypeInfo& ti = kTypes[3];  // Q8_0
    std::vector<float> x((size_t)ti.block_elems, 0.5f);
    for (int i = 0; i < kIsaCount; ++i) {  // every name, also the other family's: lowered to a runnable ISA
        const Isa isa = (Isa)i;
        const WeightKernels* k = weight_kernels(ti.type, isa);
        CHECK(k != nullptr && k->quantize_act != nullptr, "%s: no Q8_0 kernels for %s", ti.name, isa_name(isa));
        std::vector<uint8_t> a(k->act_row_bytes(ti.block_elems));
        k->quantize_act(x.data(), a.data(), ti.block_elems);
        std::vector<float> y((size_t)ti.block_elems);
        k->dequantize_row(a.data(), y.data(), ti.block_elems);  // Q8_0 activations are Q8_0 blocks
        CHECK(std::fabs(y[0] - 0.5f) < 1e-2f, "%s via %s: round trip %g", ti.name, isa_name(isa), y[0]);
    }
}

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench(argc > 2 ? std::atof(argv[2]) : 64.0);
    std::printf("best_isa=%s active_isa=%s; SIMD ISAs tested:", isa_name(best_isa()), isa_name(active_isa()));
    for (Isa i : runnable_simd_isas()) std::printf(" %s", isa_name(i));
    std::printf("\n");
    print_dispatch_table();
    test_dispatch_on_this_cpu();
    test_known_blocks();
    std::mt19937 rng(12345);
    for (const TypeInfo& ti : kTypes) test_type(ti, rng);
    test_ggml_vec_ops(rng);
    test_q4_0_blockwise(rng);
    test_blockwise_rows_match_twin(rng);
    test_tiled_rows_match_twin(rng);
    test_batched_attention_ops(rng);
    test_geglu();
    // Non-compute types have no kernels.
    CHECK(weight_kernels(GgmlType::Q2_K, Isa::Scalar) == nullptr, "Q2_K should have no kernels");
    if (g_failures) {
        std::fprintf(stderr, "test_kernels: %d failure(s)\n", g_failures);
        return 1;
    }
    std::printf("test_kernels: all passed\n");
    return 0;
}
