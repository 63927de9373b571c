// Expert prediction for providers that read MoE experts ahead of the router: layer il_target's router
// applied to the current residual stream (after that layer's FFN norm) -- for next-layer prediction
// corrected by the fitted predictor when one is loaded (expert_predictor.h) -- and the union over
// tokens of each one's top-w experts handed to the provider's prefetch_experts. Uses only the
// prediction buffers of Scratch: it cannot change the values the forward pass computes.
#pragma once

#include "forward.h"

namespace edge_rt {

void predict_experts(ForwardPass& f, int il_target, PredictionSource source);

}  // namespace edge_rt
