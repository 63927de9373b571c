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
// kernels_avx512vnni.cpp, kernels_neon.cpp, kernels_neon_dotprod.cpp, kernels_neon_i8mm.cpp) compiled with
// that ISA's flags only; which one runs is decided at run time.
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

    // ---- Blockwise order (see SumOrder); nullptr for types llama.cpp never repacks.
    // out[j] = w . a_j for j in [0, n_act), 1 <= n_act <= 8, w one row in the file's layout. The first
    // n_gemm of the rows are summed as llama.cpp's 4-row gemm sums them, the others as its gemv (they
    // differ for Q4_K: the gemm adds each 64-element chunk's float term, the gemv each super-block's).
    void (*dot_rows_blockwise)(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, int n_gemm,
                               float* out);
    // 8 consecutive rows of n elements (row_bytes apart) -> one interleaved group of the same total size
    // (the type's x8 layout, below). src and group must not overlap.
    void (*interleave_x8)(const void* src, size_t row_bytes, int64_t n, void* group);
    // One interleaved group of 8 weight rows times n_act activation rows: out[j * out_stride + c] for
    // row c of the group and activation row j, bit for bit dot_rows_blockwise (n_gemm likewise). a_sums
    // (Q8_0 activations only, else unused): per activation row, its n / 32 block sums of the int8 values
    // (act_block_sums), rows n / 32 apart.
    void (*gemm_x8)(int64_t n, const void* group, const void* a, size_t a_stride, const int16_t* a_sums, int n_act,
                    int n_gemm, float* out, size_t out_stride);

    // ---- Tiled order (see takes_tiled); nullptr for types llama.cpp's tiled matmul does not take.
    // out[j] = w . a_j for j in [0, n_act), 1 <= n_act <= 8, summed as llama.cpp's tiled K-quant matmul
    // sums one output (below).
    void (*dot_rows_tiled)(int64_t n, const void* w, const void* a, size_t a_stride, int n_act, float* out);

    // ---- Prompt batches of Q8_0-activation types (Lanes order); nullptr where a type has none.
    // vec_dot_rows, bit for bit, with the activations' block scales already in fp32: a_scales[j *
    // scale_stride + b] is block b's scale of activation row j (act_block_scales), converted once per
    // batch instead of once per weight row and token (the fp16 conversions were 4 of the inner loop's 10
    // instructions). Pairs with the vec_dot_rows of its own ISA's table.
    void (*vec_dot_rows_scaled)(int64_t n, const void* w, const void* a, size_t a_stride, const float* a_scales,
                                size_t scale_stride, int n_act, float* out);
    // vec_dot_rows_scaled of two weight rows at once, w and w + w_stride: out[i * 8 + j] = row i . a_j for
    // i < 2, j < n_act <= 8, each bit for bit what vec_dot_rows_scaled gives for that row (an ISA whose
    // registers hold two rows' lanes side by side shares each activation load between them). nullptr
    // where an ISA has none: callers then take rows one at a time.
    void (*vec_dot2_rows_scaled)(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride,
                                 const float* a_scales, size_t scale_stride, int n_act, float* out);
    // gemm_x8 of two consecutive interleaved groups (groups, and groups + the 8 rows' bytes):
    // out[j * out_stride + c] for c < 16 (c < 8: the first group's rows), each group's gemm_x8 bits.
    // nullptr where an ISA has none: callers then take groups one at a time. (The Blockwise order is one
    // per type, so a level may add this over its parent's gemm_x8.)
    void (*gemm_x16)(int64_t n, const void* groups, const void* a, size_t a_stride, const int16_t* a_sums, int n_act,
                     int n_gemm, float* out, size_t out_stride);
    // dot_rows_tiled of two weight rows at once, w and w + w_stride: out[i * 8 + j] = row i . a_j for
    // i < 2, j < n_act <= 8, each
    // dot_rows_tiled's bits (the Tiled order's sums are exact integers, one order per type, so a level may
    // add this over its parent's dot_rows_tiled). nullptr where an ISA has none.
    void (*dot2_rows_tiled)(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, int n_act,
                            float* out);

    size_t act_row_bytes(int64_t n) const noexcept { return (size_t)(n / act_block_elems * act_block_bytes); }
};

// Summation order of a weight matrix's dot products. llama.cpp's x86 CPU backend repacks Q4_0 matrices
// whose row count is a multiple of 8 into interleaved groups of 8 rows at load (ggml-cpu/repack.cpp,
// block_q4_0x8; also the output head's duplicate of a tied token embedding) and sums those as
// ggml_gemv/gemm_q4_0_8x8_q8_0 do: one float accumulator per output, acc = fma(float(integer block sum),
// dx * dy, acc) block by block (Blockwise); Q4_K likewise (q4_K_8x8), with a second accumulator for the
// mins, where a prompt's rows in whole groups of 4 (its gemm) add a float term per 64 elements and the
// other rows (its gemv, decode) one per 256. Every other matrix is summed as its vec_dot does (Lanes: 8
// float lanes, then hsum8). The engine mirrors the choice per tensor in every ISA and layout, so a
// matrix streamed in the file's layout and one interleaved in RAM give the same bits.
enum class SumOrder : uint8_t { Lanes, Blockwise };
SumOrder sum_order_for(GgmlType type, int64_t rows) noexcept;

// llama.cpp's tiled K-quant matmul (ggml-cpu/tiled/tiled.cpp, tiled-kernel.cpp; ggml_compute_forward_mul_mat
// tries it before anything else). Which matrices it takes (ggml_tiled_supported, ggml_tiled_min_batch):
// Q2_K..Q6_K (and IQ types edge_rt does not run) whose weights are in a plain buffer (src0->extra == NULL:
// a matrix the repack buffer holds, on x86 AVX2 Q4_0 and Q4_K with rows % 8 == 0, runs the repacked
// kernel instead, SumOrder::Blockwise here), multiplied by a batch of at least kTiledMinRows activation
// rows (src1->ne[1]; for MUL_MAT_ID the rows routed to one expert). A single-token eval and batches of
// 1..7 rows take ggml_vec_dot_*_q8_K (SumOrder::Lanes, vec_dot / vec_dot_rows).
//
// How it computes one output y = w . a (the x86 build compiles tiled_run_microtile_avx2 with __FMA__; an
// AVX2 build without AVX-512 VNNI takes that branch, and its narrow (<= 16 rows) and standard paths run
// the same microtile, one call per 256-element slab, in K order):
//  - activations: the batch is quantized by the q8_K from_float, exactly as for ggml_vec_dot (per
//    256-block: fp32 d, int8 q, int16 bsums of 16); the tiled code only copies them (d, bsums widened).
//  - weights: each super-block is unpacked to unsigned codes, its fp16 d (and dmin) widened to fp32, its
//    scales (and mins) to int32: Q4_K/Q5_K the 6-bit sc[j], m[j] of sub-blocks of 32, codes 0..15/0..31;
//    Q6_K the int8 scales of 16-groups, codes 0..63 with bias 32; Q3_K the 6-bit scales minus 32, codes
//    0..7 with bias 4.
//  - per super-block b, exact int32 sums (vpmaddubsw / vpmaddwd; the activation pre-biased by +128 for
//    Q6_K/Q3_K and the bias removed with a per-row integer correction, so the sums equal):
//      s1 = sum_j scale[j] * sum_{e in sub-block j} (code[e] - bias) * q[e]
//      s2 = sum_j min[j] * (bsums[2j] + bsums[2j+1])                       (Q4_K, Q5_K only)
//  - floats, once per super-block (no per-sub-block or per-lane float terms):
//      res = d_b * float(s1);  res = fma(-dmin_b, float(s2), res)  (Q4_K, Q5_K);  acc = fma(res, dy_b, acc)
//    with acc = 0 before block 0 and the blocks added in order; the output is acc. (ggml_vec_dot instead
//    forms d * dy first and adds 8 float lanes.)
// kTiledMinRows is llama.cpp's floor; batch_rows is the row count llama.cpp's op sees (ops.cpp matmul).
constexpr int64_t kTiledMinRows = 8;
bool takes_tiled(GgmlType type, SumOrder order, int64_t batch_rows) noexcept;

// Q4_0 x8 layout (interleave_x8): a group of 8 rows is nb = n / 32 blocks of 144 bytes; block b holds the
// 8 rows' fp16 scales d[c] (16 bytes), then qs[k][c][i] for k < 4, c < 8, i < 4 (128 bytes): byte
// 4k + i of row c's block b (low nibble: element 4k + i, high nibble: element 16 + 4k + i). A 32-byte
// load of qs[k] thus holds 4 elements of each of the 8 rows in its 8 lanes of 4 bytes.
constexpr size_t kQ4_0x8BlockBytes = 144;

// Q4_K x8 layout: per super-block 1152 bytes (8 x 144): d[8] and dmin[8] (fp16, 32 bytes); the 16 six-bit
// scales and mins of the 8 rows repacked for vector unpacking (96 bytes): low4[j][c] = (sc[j] & 15) |
// (m[j] & 15) << 4 for sub-block j < 8 and row c < 8 (64 bytes), then high2[k][c] for k < 4 (32 bytes):
// bits 0-1, 2-3, 4-5, 6-7 = sc[2k] >> 4, m[2k] >> 4, sc[2k+1] >> 4, m[2k+1] >> 4; then qs[k][g][c][i] for
// k < 4, g < 8, c < 8, i < 4 (1024 bytes): byte 32k + 4g + i of row c's qs (low nibble:
// element 64k + 4g + i of sub-block 2k, high nibble: element 64k + 32 + 4g + i of sub-block 2k + 1).
constexpr size_t kQ4_Kx8BlockBytes = 1152;

// sums[b] <- sum of the 32 int8 values of Q8_0 activation block b, for b < n / 32 (what gemm_x8 reads).
void act_block_sums(const void* a, int64_t n, int16_t* sums) noexcept;
// scales[b] <- Q8_0 activation block b's fp16 scale as fp32, for b < n / 32 (what vec_dot_rows_scaled reads).
void act_block_scales(const void* a, int64_t n, float* scales) noexcept;

// Kernels for weight type `type` on `isa`. Where `isa` has no specialised kernel for the type the
// next lower ISA's kernel is returned (ultimately Scalar). nullptr when the type is not a compute type.
const WeightKernels* weight_kernels(GgmlType type, Isa isa) noexcept;

// Kernels for the ISA chosen at run time (active_isa()).
inline const WeightKernels* weight_kernels(GgmlType type) noexcept { return weight_kernels(type, active_isa()); }

// Per-ISA tables, each defined in its own translation unit. Index by weight type; nullptr if absent.
const WeightKernels* scalar_weight_kernels(GgmlType type) noexcept;
const WeightKernels* avx2_weight_kernels(GgmlType type) noexcept;          // nullptr when not built
const WeightKernels* avx512vnni_weight_kernels(GgmlType type) noexcept;    // nullptr when not built
const WeightKernels* neon_weight_kernels(GgmlType type) noexcept;          // nullptr when not built
const WeightKernels* neon_dotprod_weight_kernels(GgmlType type) noexcept;  // nullptr when not built
const WeightKernels* neon_i8mm_weight_kernels(GgmlType type) noexcept;     // nullptr when not built

// ggml's float vector arithmetic outside the weight matmuls, reproduced bit for bit as llama.cpp computes
// it (ggml-cpu vec.h / vec.cpp, llamafile sgemm.cpp). A last-bit difference here flips int8 activation
// roundings in the next quantized matmul, which trained weights amplify (see engine.cpp). Two flavours,
// as llama.cpp's x86-64 builds differ here (and only here: their quantized dot products sum alike):
//  - AVX2 + FMA (8 lanes): llama.cpp built on an AVX2 CPU, and on ARM (the NEON code sums alike);
//  - AVX-512 (16 lanes, and an expf that adds the 1 before scaling by 2^n with vscalefps): llama.cpp
//    built on an AVX-512 CPU.
// Which flavour a process computes is a numeric choice, made once (vec_ops_flavour): by default that of
// the llama.cpp a native build on this CPU would be, so that every ISA (scalar and avx2 too) gives the
// same bits on one machine. The ISA only picks how they are computed: the flavour's SIMD code where the
// ISA runs it (AVX2: avx2 and avx512vnni, AVX-512: avx512vnni), else its scalar twin (std::fma emulating
// the lanes). F32/F16/BF16 weight matmuls stay in the AVX2 order at every ISA.
// Each member's comment states the AVX2 flavour; the AVX-512 one has 16 where it says 8 (steps of 64 where
// it says 32), GCC's _mm512_reduce_add_ps tree where it says hsum, and tail elements past whole vectors
// of 16 in swiglu.
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
    // Batched attention, several dot_f16_tinyblas at once with their bits: out[i * out_stride + j] =
    // dot_f16_tinyblas(D, k + j * k_stride, q_i) for j < n_pos and i < nq <= 8, D % 8 == 0, where q_i
    // (q + i * D) holds fp16 values widened to float. One key row is loaded for all nq queries.
    void (*kq_tinyblas)(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq,
                        float* out, int64_t out_stride);
    // out[i * D + d] = dot_f16_tinyblas(n, v + d * v_stride, p_i) for d < D and i < np <= 8, where p_i
    // (p + i * p_stride, p_stride >= n rounded up to 8) holds widened fp16 values, zero past n: a row
    // zero past its own length gives the bits of the shorter dot (zero products leave an fma sum as is).
    void (*pv_tinyblas)(int64_t n, const uint16_t* v, int64_t v_stride, int64_t D, const float* p, int64_t p_stride,
                        int np, float* out);
    // Decode attention scores, dot_f16_ggml's bits: out[i * out_stride + j] = dot_f16_ggml(D, k + j * k_stride,
    // q_i, D) for j < n_pos and i < nq, q_i (q + i * D) widened fp16 values; no call or widening of q per
    // position.
    void (*kq_ggml)(int64_t D, const uint16_t* k, int64_t k_stride, int64_t n_pos, const float* q, int nq, float* out,
                    int64_t out_stride);
    // Lanes of the tinyBLAS accumulators: tinyBLAS takes a batched F16 matmul only when its inner dimension
    // is a multiple of this (else ggml's mul_mat sums it with dot_f16_ggml); 8 (AVX2) or 16 (AVX-512).
    int tinyblas_lanes;
};

// The geglu of every GgmlVecOps (see there).
void ggml_geglu(const float* x, const float* g, float* y, int64_t n) noexcept;

const GgmlVecOps* scalar_ggml_vec_ops() noexcept;         // the AVX2 flavour's scalar twin
const GgmlVecOps* scalar_avx512_ggml_vec_ops() noexcept;  // the AVX-512 flavour's scalar twin
const GgmlVecOps* avx2_ggml_vec_ops() noexcept;           // nullptr when not built
const GgmlVecOps* avx512_ggml_vec_ops() noexcept;         // nullptr when not built
const GgmlVecOps* neon_ggml_vec_ops() noexcept;           // nullptr when not built
enum class VecOpsFlavour : uint8_t { Avx2, Avx512 };
const char* vec_ops_flavour_name(VecOpsFlavour flavour) noexcept;  // "avx2" / "avx512"
// The flavour this process computes, decided once: the environment variable EDGE_RT_VEC_OPS (avx2 or
// avx512; any other value is ignored) when set, else Avx512 where best_isa() is avx512vnni (the CPUs whose
// native llama.cpp build runs the AVX-512 code; on an AVX-512 CPU without VNNI, name it) and Avx2
// elsewhere (ARM included). Thread-safe.
VecOpsFlavour vec_ops_flavour() noexcept;
// The fastest code `isa` has for `flavour`: its SIMD variant (NEON for the AVX2 flavour on ARM) where
// `isa` runs it, else the flavour's scalar twin.
const GgmlVecOps& ggml_vec_ops(Isa isa, VecOpsFlavour flavour) noexcept;
const GgmlVecOps& ggml_vec_ops_scalar_twin(VecOpsFlavour flavour) noexcept;
inline const GgmlVecOps& ggml_vec_ops(Isa isa) noexcept { return ggml_vec_ops(isa, vec_ops_flavour()); }
inline const GgmlVecOps& ggml_vec_ops() noexcept { return ggml_vec_ops(active_isa()); }

}  // namespace edge_rt
