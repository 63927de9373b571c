// The architectures the engine runs: each GGUF `general.architecture` name with the block recipe
// that computes one of its layers. Adding an architecture is one recipe file in this folder plus one
// entry in registry.cpp (and its metadata in ModelConfig::from_gguf).
#pragma once

#include <string>
#include <vector>

#include "../forward.h"
#include "edge_rt/engine.h"

namespace edge_rt {

// A BlockRecipe (engine.h) computes one transformer layer over the micro-batch: it reads and updates
// the residual stream f.s.x in place; w stays acquired for the duration of the call.

struct Architecture {
    const char* name;  // general.architecture
    BlockRecipe block;
};

// Every supported architecture, in the order errors list them.
const std::vector<Architecture>& architectures();

// The recipe of arch, or nullptr when the architecture is not supported.
BlockRecipe block_recipe(const std::string& arch);

// The recipes (one file each in this folder).
void llama_block(ForwardPass& f, int il, const LayerWeights& w);   // llama, qwen2, qwen3 and their MoE forms
void phi3_block(ForwardPass& f, int il, const LayerWeights& w);    // phi3 (fused q/k/v and gate/up tensors)
void gemma3_block(ForwardPass& f, int il, const LayerWeights& w);  // gemma3

}  // namespace edge_rt
