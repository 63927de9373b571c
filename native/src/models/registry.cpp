#include "registry.h"

namespace edge_rt {

const std::vector<Architecture>& architectures() {
    // qwen2 / qwen3 differ from llama only in what their tensors and metadata say (QKV bias, q/k
    // norm, NeoX RoPE), which the llama recipe's ops read from the config and the layer's views.
    static const std::vector<Architecture> list = {
        {"llama", llama_block},
        {"qwen2", llama_block},
        {"qwen3", llama_block},
        {"qwen2moe", llama_block},
        {"qwen3moe", llama_block},
        // views into its fused q/k/v and gate/up tensors, then the llama block
        {"phi3", phi3_block},
        {"gemma3", gemma3_block},
    };
    return list;
}

BlockRecipe block_recipe(const std::string& arch) {
    for (const Architecture& a : architectures())
        if (arch == a.name) return a.block;
    return nullptr;
}

}  // namespace edge_rt
