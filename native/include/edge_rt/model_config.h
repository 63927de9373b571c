// Hyperparameters of a llama-family model, read from GGUF metadata and checked against the tensors.
//
// Contract: ModelConfig::from_gguf() throws Error(UnsupportedArchitecture) listing the supported
// architectures, and Error(ModelFormat) naming the key or tensor for any missing, out-of-range or
// contradictory value (zero heads, heads not divisible by KV heads, a tensor shape that disagrees with
// the metadata, a required tensor missing, a tokenizer array of the wrong type), and
// Error(UnsupportedType) naming the tensor for element types the kernels do not compute with.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edge_rt/gguf_reader.h"

namespace edge_rt {

enum class RopeKind { Normal, NeoX };  // Normal: rotate pairs (2i, 2i+1); NeoX: pairs (i, i + n_rot/2)

struct ModelConfig {
    std::string arch;     // "llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "phi3", "gemma3"
    int64_t n_vocab = 0;  // rows of the output head (and of token_embd)
    int64_t n_embd = 0;
    int64_t n_layer = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t head_dim = 0;  // attention.key_length (== value_length), default n_embd / n_head
    int64_t n_ff = 0;
    int64_t n_ctx_train = 0;
    int64_t n_rot = 0;  // rope.dimension_count, default head_dim
    float rms_eps = 1e-5f;
    float rope_freq_base = 10000.0f;
    float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
    RopeKind rope_kind = RopeKind::Normal;
    // rope_freqs.weight (Llama 3.1+ files): n_rot/2 F32 divisors of the RoPE frequencies, pair i's
    // angle pos * freq_scale * base^(-2i/n_rot) / factor[i] (llama only, as llama.cpp reads it).
    bool has_rope_freqs = false;
    // rope.scaling.attn_factor (phi3 128k files): RoPE's cos and sin are multiplied by it, as ggml's
    // mscale; llama.cpp reads it for every architecture.
    float rope_attn_factor = 1.0f;
    bool has_qkv_bias = false;  // qwen2 (optional for llama)
    bool has_qk_norm = false;   // qwen3
    bool tied_output = false;   // output.weight absent: the token embedding is the output head
    // Not from the file: the engine's ModelParams::repack, copied here by Engine before its weight
    // providers bind tensors (every TensorView they make takes its sum order from it).
    bool repack = true;

    // Gemma 3 (as llama.cpp's gemma3 graph; query_scale for phi3 too). The embedding rows are multiplied by embedding_scale
    // (sqrt(n_embd); 1 elsewhere). Sliding-window attention: layers with is_swa(il) see only the
    // n_swa most recent positions (position p masked for a token at q when q - p >= n_swa) and rotate
    // with rope_freq_base_swa / rope_freq_scale_swa; the other (global) layers see every position and
    // use rope_freq_base / rope_freq_scale. query_scale > 0: q is multiplied by it after RoPE (ggml_scale
    // in fp32, before its fp16 conversion) and the scores are not scaled again; 0: scores are scaled by
    // 1 / sqrt(head_dim). has_post_norms: the attention and FFN outputs are RMS-normed
    // (post_attention_norm, post_ffw_norm) before their residual adds. final_logit_softcap > 0: logits
    // become cap * tanh(logits / cap).
    float embedding_scale = 1.0f;
    int64_t n_swa = 0;               // <arch>.attention.sliding_window; 0 = every layer global
    std::vector<uint8_t> swa_layer;  // n_layer flags (empty when n_swa == 0)
    float rope_freq_base_swa = 10000.0f;
    float rope_freq_scale_swa = 1.0f;
    float query_scale = 0.0f;
    bool has_post_norms = false;
    float final_logit_softcap = 0.0f;

    // Mixture of experts (0 experts = a dense SwiGLU FFN per layer). Routing follows llama.cpp:
    // probabilities = softmax(router logits), the expert_used_count largest are selected (ties: lower
    // id first), their probabilities optionally renormalized to sum 1 and scaled.
    int64_t n_expert = 0;       // <arch>.expert_count
    int64_t n_expert_used = 0;  // <arch>.expert_used_count (top-k)
    int64_t n_ff_exp = 0;       // rows of one expert's gate/up: expert_feed_forward_length (llama: feed_forward_length)
    int64_t n_ff_shexp = 0;     // shared expert (qwen2moe), 0 = none
    bool expert_weights_norm = false;   // renormalize the selected probabilities (llama, qwen3moe: yes; qwen2moe: no)
    float expert_weights_scale = 0.0f;  // multiply the expert weights by this when not 0 or 1

    // phi3 (Phi-3 / Phi-3.5): q, k, v are one fused tensor (attn_qkv) and ffn_up holds gate and up rows.
    // As llama.cpp, q is multiplied by 1/sqrt(head_dim) after RoPE and the scores are not scaled again
    // (query_scale, above). The 128k files carry rope_factors_long.weight and
    // rope_factors_short.weight (n_rot/2 F32 divisors each, shared by all layers) and
    // rope.scaling.original_context_length (n_ctx_orig); see rope_factors_tensor().
    bool has_rope_long_short = false;
    int64_t n_ctx_orig = 0;  // rope.scaling.original_context_length, default n_ctx_train

    // The per-dimension RoPE factor tensor the engine reads for a context of n_ctx positions, or ""
    // for none: rope_freqs.weight; for phi3, as llama.cpp chooses, rope_factors_long.weight when its
    // context (n_ctx rounded up to a multiple of 256, as llama.cpp allocates it) exceeds n_ctx_orig,
    // else rope_factors_short.weight.
    std::string rope_factors_tensor(int64_t n_ctx) const;

    bool is_moe() const noexcept { return n_expert > 0; }

    int64_t q_dim() const noexcept { return n_head * head_dim; }
    int64_t kv_dim() const noexcept { return n_head_kv * head_dim; }

    bool is_swa(int64_t il) const noexcept { return n_swa > 0 && swa_layer[(size_t)il] != 0; }
    float rope_base(int64_t il) const noexcept { return is_swa(il) ? rope_freq_base_swa : rope_freq_base; }
    float rope_scale(int64_t il) const noexcept { return is_swa(il) ? rope_freq_scale_swa : rope_freq_scale; }

    static ModelConfig from_gguf(const GgufFile& file);
    static const std::vector<std::string>& supported_architectures();
};

}  // namespace edge_rt
