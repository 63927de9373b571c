// The engine's one observation hook (the role of llama.cpp's cb_eval): what calibration statistics,
// routing traces and debugging tools need from a forward pass, without the core knowing about them.
//
// Contract:
//  * Engine::set_observer(o) installs o (nullptr removes it). Each eval() calls begin_eval() once,
//    then observe() for every value the observer wants(), then end_eval(completed): completed is false
//    when the eval failed or was interrupted (n_past was rolled back; an observer that accumulates
//    should drop what it saw since begin_eval).
//  * Calls come from the engine's thread, between parallel sections, in forward order: for each
//    micro-batch, layer 0's values first, the output head's last (layer == n_layer).
//  * Observation::data is rows x cols floats, row-major, valid only during the call.
//  * An observer that throws aborts the eval (end_eval(false) is still called).
//  * With no observer installed the forward pass does one pointer test per site.
#pragma once

#include <cstdint>

#include "edge_rt/gguf_reader.h"

namespace edge_rt {

enum class Observed : int {
    MatmulInput = 0,  // the rows multiplied by `weight` (expert: which slice of a 3-D expert tensor)
    RouterProbs = 1,  // MoE: each token's router probabilities (rows = tokens, cols = n_expert)
    FfnInput = 2,     // the residual stream entering a layer's FFN, before its norm (rows x n_embd)
};
constexpr int kObservedKinds = 3;

struct Observation {
    Observed kind = Observed::MatmulInput;
    int layer = 0;                           // n_layer for the output head
    const GgufTensorInfo* weight = nullptr;  // MatmulInput: the weight; else nullptr
    int64_t expert = 0;                      // MatmulInput of a 3-D expert tensor: the expert; else 0
    const float* data = nullptr;
    int64_t rows = 0, cols = 0;
};

class EvalObserver {
public:
    virtual ~EvalObserver() = default;
    virtual bool wants(Observed kind) const = 0;
    virtual void begin_eval(int64_t n_past, int64_t n_tokens) {}
    virtual void observe(const Observation& o) = 0;
    virtual void end_eval(bool completed) {}
};

}  // namespace edge_rt
