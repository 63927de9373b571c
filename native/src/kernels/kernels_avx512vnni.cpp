// AVX512-VNNI kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma
// -mf16c; reached only through avx512vnni_weight_kernels() after cpu_features confirmed the CPU and OS
// support. Reference twin: kernels_scalar.cpp.
//
// Every ISA computes the bits of llama.cpp's AVX2 build (kernels.h), and llama.cpp's AVX-512 build still
// sums its quantized dot products in the AVX2 code's order: vpdpbusd on 256-bit registers replaces only
// the integer part (vpmaddubsw + vpmaddwd), whose block sums are exact either way. So this table holds the
// 32-element block formats' single-row dots (Q8_0, Q4_0, Q5_0) and their multi-row prompt dots where those
// keep the AVX2 order (Q5_0, Q4_1, Q5_1); everything else falls back to the AVX2 table (kernel_dispatch.cpp
// overlays per entry). Wider kernels that paired two blocks in one 512-bit register, or summed K-quant and
// F16 rows in 16 lanes, were faster but changed the float sums (the golden digests of Q8_0, Q4_0, Q6_K and
// F16 models differed from AVX2's) and were removed; a 512-bit kernel must put two rows, not two blocks,
// in a register to keep the bits.

#include <immintrin.h>

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
ERT_DEFINE_DOTS(q5_0)
ERT_DEFINE_DOTS(q4_1)
ERT_DEFINE_DOTS(q5_1)

// Q8_0 and Q4_0 prompts keep the AVX2 table's multi-row kernels, which take the activations' block scales
// already in fp32 (vec_dot_rows_scaled) and are faster than these would be.
float q8_0_dot(int64_t n, const void* w, const void* a) {
    float o;
    q8_0_rows<1>(n, w, a, 0, &o);
    return o;
}
float q4_0_dot(int64_t n, const void* w, const void* a) {
    float o;
    q4_0_rows<1>(n, w, a, 0, &o);
    return o;
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
        add(T::Q8_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q8_0_dot, nullptr);
        add(T::Q4_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q4_0_dot, nullptr);
        add(T::Q5_0, T::Q8_0, QK8_0, sizeof(BlockQ8_0), q5_0_dot, q5_0_dot_rows);
        add(T::Q4_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q4_1_dot, q4_1_dot_rows);
        add(T::Q5_1, T::Q8_1, QK8_1, sizeof(BlockQ8_1), q5_1_dot, q5_1_dot_rows);
    }
};

}  // namespace

const WeightKernels* avx512vnni_weight_kernels(GgmlType type) noexcept {
    static const Avx512Table t;
    const int i = (int)type;
    return (i >= 0 && i < 31 && t.present[i]) ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
