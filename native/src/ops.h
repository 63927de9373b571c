// The elementary ops of the forward pass, shared by every block recipe: weight-type kernels, the
// conversion of activations to a weight's vec_dot format, the matrix product, RMSNorm, bias and the
// residual add. Numerics follow ggml (see kernels.h and engine.h).
//
// Rows are token rows: `m` rows of `width` floats, row t at src + t * width.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "edge_rt/kernels.h"
#include "forward.h"

namespace edge_rt {

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// The kernels of w's type; Error(Internal) for a type without kernels (ModelConfig rejects those).
const WeightKernels& kernels_of(const TensorView& w);

// 1-D weights (norms, biases) as F32, dequantizing into tmp when stored in another type.
const float* f32_of(const TensorView& t, std::vector<float>& tmp);

// ggml_rms_norm semantics: squares rounded to float, accumulated in double, mean rounded to float.
// y may alias x.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// dst <- RMSNorm of rows first .. f.n - 1 of src (n_embd wide) with weight w.
void norm_rows(ForwardPass& f, const float* src, const TensorView& w, float* dst, int64_t first = 0);

// The rows layer il's FFN computes, first .. f.n - 1: every row, except in the last layer of a dense model when
// the head reads only some (forward.h last_layer_rows_from). Then llama.cpp's matmuls see those rows alone,
// so while this object lives f.peer_rows is their count (ops.cpp matmul picks its orders from it).
class FfnRows {
public:
    FfnRows(ForwardPass& f, int il);
    ~FfnRows();
    FfnRows(const FfnRows&) = delete;
    FfnRows& operator=(const FfnRows&) = delete;
    int64_t first = 0, count = 0;

private:
    ForwardPass& f_;
    int64_t saved_peer_rows_;
};

// y (f.n rows of width) += bias b; nothing when b is absent.
void add_bias(ForwardPass& f, const TensorView& b, float* y, int64_t width);

// x[i] += y[i] for i < count (the residual add).
void add_into(float* x, const float* y, int64_t count);

// Converts m rows of `width` floats into k's activation format in f.s.act; returns the byte stride of
// one converted row.
size_t quantize_rows(ForwardPass& f, const float* src, int64_t m, int64_t width, const WeightKernels& k);

// y[t * y_stride + r] = W[r] . act[t] for rows r < W.ne1 and tokens t < n_tok, act already converted
// into f.s.act with row stride act_stride.
void matmul(ForwardPass& f, const TensorView& W, const WeightKernels& k, size_t act_stride, int64_t n_tok, float* y,
            int64_t y_stride);

// Reports the m rows of src multiplied by W (expert: the slice of a 3-D expert tensor) to the observer.
void observe_input(ForwardPass& f, int layer, const TensorView& W, int64_t expert, const float* src, int64_t m,
                   int64_t width);

// Several projections of the same input rows (q, k, v; gate, up): converts the input once per
// activation format, observes it once per tensor (views of one fused tensor count once), and writes
// W[i]'s m x W[i].ne1 output to outs[i].
void project(ForwardPass& f, int layer, int64_t expert, const float* in, int64_t m, int64_t width,
             const TensorView* const* W, float* const* outs, int count);

// out (m x W.ne1) <- W . in for m rows of in (width W.ne0), observed.
inline void linear(ForwardPass& f, int layer, const TensorView& W, int64_t expert, const float* in, int64_t m,
                   float* out) {
    const TensorView* w[1] = {&W};
    float* o[1] = {out};
    project(f, layer, expert, in, m, W.ne0, w, o, 1);
}

}  // namespace edge_rt
