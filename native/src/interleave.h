// Rearranging a provider's own weight bytes into the x8 layout the gemm_x8 kernels read (kernels.h).
// Only layout changes here, never numerics: a Blockwise matrix gives the same bits interleaved or not.
#pragma once

#include "edge_rt/weight_provider.h"

namespace edge_rt {

// Interleaves v in place (every expert's matrix of a 3-D tensor) when it is a Blockwise matrix whose
// kernels on the active ISA have gemm_x8; sets v.interleaved. v.data must point into memory the caller
// owns and may write. Returns whether it did.
bool interleave_in_place(TensorView& v);

// Every matrix of a layer.
void interleave_layer(LayerWeights& w);

}  // namespace edge_rt
