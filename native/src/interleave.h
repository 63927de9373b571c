// Rearranging a provider's own weight bytes into the x8 layout the gemm_x8 kernels read (kernels.h).
// Only layout changes here, never numerics: a Blockwise matrix gives the same bits interleaved or not.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edge_rt/kernels.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

// Interleaves one matrix of `rows` rows (a multiple of 8) of `row_bytes` each, `ne0` elements per row, in
// place: each group of 8 rows is copied into `scratch` (8 * row_bytes bytes) and written back interleaved.
// What the engine does to a streamed layer after its read, and what the profile times (kernel_rate.cpp).
void interleave_groups_in_place(const WeightKernels& k, uint8_t* m, size_t row_bytes, int64_t ne0, int64_t rows,
                                uint8_t* scratch);

// Interleaves v in place (every expert's matrix of a 3-D tensor) when it is a Blockwise matrix whose
// kernels on the active ISA have gemm_x8; sets v.interleaved. v.data must point into memory the caller
// owns and may write. Returns whether it did.
bool interleave_in_place(TensorView& v);

// Every matrix of a layer.
void interleave_layer(LayerWeights& w);

}  // namespace edge_rt
