// Dot-product kernels between a quantized weight row and an activation row, per weight type and ISA.
//
// As in ggml, each weight type has an activation format ("vec_dot type") that activations are
// converted to before the integer (or half-precision) dot product:
//   F32  -> F32      F16 -> F16     BF16 -> BF16
//   Q4_0, Q5_0, Q8_0 -> Q8_0 (int8 per 32-block, fp16 scale)
//   Q4_1, Q5_1       -> Q8_1 (int8 per 32-block, fp16 scale and fp16 d*sum)
//   Q3_K, Q4_K, Q5_K, Q6_K -> Q8_K (int8 per 256-block, fp32 scale, int16 sums of 16)
// Matching ggml's choice keeps our logits within float rounding of llama.cpp's.
//
// Every ISA variant has the Scalar variant as its reference twin; tests compare them under named
// error limits. Variants live in one source file per ISA (kernels_scalar.cpp, kernels_avx2.cpp,
// kernels_avx512vnni.cpp) compiled with that ISA's flags only; which one runs is decided at run time.
//
// Thread-safety: all functions are pure; call them from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edge_rt/cpu_features.h"
#include "edge_rt/ggml_types.h"

namespace edge_rt {

struct WeightKernels {
    GgmlType weight_type;
    GgmlType act_type;        // activation format, see table above
    int64_t act_block_elems;  // elements per activation block (1 for F32/F16/BF16)
    int64_t act_block_bytes;  // bytes per activation block

    // y <- x[0..n) in act_type encoding; n a multiple of act_block_elems. y holds act_row_bytes(n) bytes.
    void (*quantize_act)(const float* x, void* y, int64_t n);

    // Returns sum_{i<n} w[i] * a[i]; w is one weight row, a one activation row in act_type encoding;
    // n a multiple of both block sizes.
    float (*vec_dot)(int64_t n, const void* w, const void* a);

    // out[j] = vec_dot(n, w, a + j * a_stride) for j in [0, n_act), 1 <= n_act <= 8. Lets prefill reuse
    // one decoded weight row across several tokens. May be nullptr: callers then loop over vec_dot.
    void (*vec_dot_rows)(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out);

    // y[0..n) <- dequantized weight row (reference precision; used for embeddings and tests).
    void (*dequantize_row)(const void* w, float* y, int64_t n);

    size_t act_row_bytes(int64_t n) const noexcept { return (size_t)(n / act_block_elems * act_block_bytes); }
};

// Kernels for weight type `type` on `isa`. Where `isa` has no specialised kernel for the type the
// next lower ISA's kernel is returned (ultimately Scalar). nullptr when the type is not a compute type.
const WeightKernels* weight_kernels(GgmlType type, Isa isa) noexcept;

// Kernels for the ISA chosen at run time (active_isa()).
inline const WeightKernels* weight_kernels(GgmlType type) noexcept { return weight_kernels(type, active_isa()); }

// Per-ISA tables, each defined in its own translation unit. Index by weight type; nullptr if absent.
const WeightKernels* scalar_weight_kernels(GgmlType type) noexcept;
const WeightKernels* avx2_weight_kernels(GgmlType type) noexcept;        // nullptr when not built
const WeightKernels* avx512vnni_weight_kernels(GgmlType type) noexcept;  // nullptr when not built

// ggml's float vector arithmetic outside the weight matmuls, reproduced bit for bit as llama.cpp's x86-64
// AVX2 + FMA build computes it (ggml-cpu vec.h / vec.cpp, llamafile sgemm.cpp). A last-bit difference
// here flips int8 activation roundings in the next quantized matmul, which trained weights amplify (see
// engine.cpp). Every ISA computes the same bits: the scalar twin emulates the AVX2 lanes with std::fma.
struct GgmlVecOps {
    // y[i] = silu(x[i]) * g[i] as ggml_vec_swiglu_f32: ggml_v_silu on whole groups of 8, x/(1+expf(-x))
    // (libm) on the tail. y may alias x.
    void (*swiglu)(const float* x, const float* g, float* y, int64_t n);
    // y[i] = ggml_v_expf(x[i] - max) for i < n; returns their sum as ggml_vec_soft_max_f32 forms it over a
    // row padded with masked (-inf) scores to a multiple of 8: each group of 8 in float, groups in double.
    // y may alias x.
    double (*softmax_exp)(const float* x, float* y, int64_t n, float max);
    // sum_i x[i] * y[i] over n fp16 pairs as tinyBLAS sums one output of a batched F16 x F16 mul_mat:
    // one 8-lane fma accumulator along the row (element i in lane i % 8), then hsum.
    float (*dot_f16_tinyblas)(int64_t n, const uint16_t* x, const uint16_t* y);
    // the same as ggml_vec_dot_f16 sums a row of n_total >= n elements whose products past n are zero:
    // 4 x 8-lane fma accumulators over steps of 32, reduced, then the elements past the last whole step
    // of n_total (if any are below n) in double.
    float (*dot_f16_ggml)(int64_t n, const uint16_t* x, const uint16_t* y, int64_t n_total);
    // y[i] = gelu(x[i]) * g[i] as ggml_vec_geglu_f32 (GGML_GELU_FP16): 0 for x <= -10, x * g for x >= 10,
    // else the tanh GELU of x rounded to fp16 looked up in ggml's fp16 table, times g. ggml runs this
    // scalar loop on every ISA, so every ISA's table holds ggml_geglu. y may alias x.
    void (*geglu)(const float* x, const float* g, float* y, int64_t n);
};

// The geglu of every GgmlVecOps (see there).
void ggml_geglu(const float* x, const float* g, float* y, int64_t n) noexcept;

const GgmlVecOps* scalar_ggml_vec_ops() noexcept;
const GgmlVecOps* avx2_ggml_vec_ops() noexcept;  // nullptr when not built
// The fastest variant `isa` may run (AVX-512 uses the AVX2 one: the bits are those of ggml's AVX2 build).
const GgmlVecOps& ggml_vec_ops(Isa isa) noexcept;
inline const GgmlVecOps& ggml_vec_ops() noexcept { return ggml_vec_ops(active_isa()); }

}  // namespace edge_rt
