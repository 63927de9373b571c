#include "edge_rt/model_config.h"

#include <cmath>
#include <sstream>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"
#include "models/registry.h"

namespace edge_rt {

namespace {

std::string shape_str(const int64_t* ne, int n) {
    std::ostringstream os;
    os << "[";
    for (int i = 0; i < n; ++i) os << (i ? ", " : "") << ne[i];
    os << "]";
    return os.str();
}

// Reads a positive-or-zero integer hyperparameter, naming the key on any problem.
int64_t hparam(const GgufFile& f, const std::string& key, int64_t min_value, int64_t max_value) {
    const int64_t v = f.get_int(key);
    if (v < min_value || v > max_value) {
        std::ostringstream os;
        os << "[model] key '" << key << "': value " << v << " out of range [" << min_value << ", " << max_value << "]";
        fail(ErrorKind::ModelFormat, os.str());
    }
    return v;
}

int64_t hparam_or(const GgufFile& f, const std::string& key, int64_t fallback, int64_t min_value, int64_t max_value) {
    return f.find(key) ? hparam(f, key, min_value, max_value) : fallback;
}

// Checks presence, shape and compute type of one tensor. n_expected dims; an empty name is optional.
void check_tensor(const GgufFile& f, const std::string& name, std::initializer_list<int64_t> shape, bool required,
                  const std::string& why) {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t) {
        if (required) fail(ErrorKind::ModelFormat, "[model] required tensor '" + name + "' is missing");
        return;
    }
    const int n = (int)shape.size();
    bool ok = (int)t->n_dims <= n;
    int i = 0;
    for (int64_t d : shape) ok = ok && t->ne[i++] == d;
    for (int k = n; k < 4; ++k) ok = ok && t->ne[k] == 1;
    if (!ok) {
        fail(ErrorKind::ModelFormat, "[model] tensor '" + name + "': shape " + shape_str(t->ne, (int)t->n_dims) +
                                         " disagrees with the metadata (expected " + shape_str(std::data(shape), n) +
                                         " from " + why + ")");
    }
    if (!is_compute_type(t->type)) {
        fail(ErrorKind::UnsupportedType, std::string("[model] tensor '") + name + "': type " + type_name(t->type) +
                                             " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
                                             "Q5_0, Q5_1, Q3_K, Q4_K, Q5_K, Q6_K)");
    }
    // Matrix rows are dotted with activations in the weight type's activation format (Q8_K for the
    // K-quants), whose block must divide the row.
    if (n >= 2) {
        const WeightKernels* k = weight_kernels(t->type, Isa::Scalar);
        if (!k || t->ne[0] % k->act_block_elems != 0) {
            fail(ErrorKind::ModelFormat, "[model] tensor '" + name + "': row length " + std::to_string(t->ne[0]) +
                                             " is not a multiple of the " + type_name(t->type) + " activation block");
        }
    }
}

void check_tokenizer_arrays(const GgufFile& f) {
    struct Expect {
        const char* key;
        const char* kind;
    };
    static const Expect expected[] = {
        {"tokenizer.ggml.tokens", "STRING"},
        {"tokenizer.ggml.merges", "STRING"},
        {"tokenizer.ggml.scores", "FLOAT32"},
        {"tokenizer.ggml.token_type", "INT32"},
    };
    for (const auto& e : expected) {
        const GgufValue* v = f.find(e.key);
        if (!v) continue;
        const bool is_array = v->type == GgufValueType::ARRAY;
        bool ok = is_array;
        if (ok) {
            const GgufValueType at = v->array_type;
            if (std::string(e.kind) == "STRING")
                ok = at == GgufValueType::STRING;
            else if (std::string(e.kind) == "FLOAT32")
                ok = at == GgufValueType::FLOAT32 || at == GgufValueType::FLOAT64;
            else
                ok = at != GgufValueType::STRING && at != GgufValueType::FLOAT32 && at != GgufValueType::FLOAT64 &&
                     at != GgufValueType::BOOL;
        }
        if (!ok) {
            const std::string got = is_array ? std::string("ARRAY[") + gguf_value_type_name(v->array_type) + "]"
                                             : gguf_value_type_name(v->type);
            fail(ErrorKind::ModelFormat,
                 std::string("[model] key '") + e.key + "': expected ARRAY[" + e.kind + "], found " + got);
        }
    }
    const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
    const uint64_t n_tokens = tokens ? tokens->array_size() : 0;
    for (const char* key : {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
        const GgufValue* v = f.find(key);
        if (v && tokens && v->array_size() != n_tokens) {
            fail(ErrorKind::ModelFormat, std::string("[model] key '") + key + "': length " +
                                             std::to_string(v->array_size()) + " != " + std::to_string(n_tokens) +
                                             " tokens");
        }
    }
}

// phi3's hyperparameters beyond llama's, as llama.cpp's llama_model_phi3 reads them. Its
// attention.sliding_window is ignored: llama.cpp disables SWA for phi3 (ggml-org/llama.cpp#13676).
void check_phi3(const GgufFile& f, ModelConfig& c) {
    const std::string p = c.arch + ".";
    if (c.n_expert > 0) {
        fail(ErrorKind::ModelFormat,
             "[model] key '" + p + "expert_count': architecture phi3 has no experts (that is phimoe)");
    }
    // llama.cpp builds q and the output projection n_embd wide.
    if (c.q_dim() != c.n_embd) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "attention.key_length': head_count * key_length " +
                                         std::to_string(c.q_dim()) + " must equal " + p + "embedding_length " +
                                         std::to_string(c.n_embd) + " for phi3");
    }
    c.query_scale = 1.0f / std::sqrt((float)c.head_dim);
    c.n_ctx_orig = hparam_or(f, p + "rope.scaling.original_context_length", c.n_ctx_train, 1, int64_t(1) << 24);
    const GgufTensorInfo* lng = f.find_tensor("rope_factors_long.weight");
    const GgufTensorInfo* sht = f.find_tensor("rope_factors_short.weight");
    if (!lng && !sht) return;
    for (const GgufTensorInfo* t : {lng, sht}) {
        if (!t) {
            fail(ErrorKind::ModelFormat, std::string("[model] required tensor '") +
                                             (lng ? "rope_factors_short.weight" : "rope_factors_long.weight") +
                                             "' is missing (rope factors come in a long and a short set)");
        }
        if (t->type != GgmlType::F32 || t->n_dims != 1 || t->ne[0] != c.n_rot / 2) {
            fail(ErrorKind::ModelFormat, "[model] tensor '" + t->name + "' must be F32 of shape [" +
                                             std::to_string(c.n_rot / 2) + "] (rope.dimension_count / 2)");
        }
    }
    c.has_rope_long_short = true;
}

// A phi3 layer's attention and FFN tensors: q, k, v fused in attn_qkv ([n_embd, q_dim + 2 kv_dim], rows
// q then k then v) and ffn_up holding the gate rows then the up rows ([n_embd, 2 n_ff]), as llama.cpp's
// converter writes them. Separate q/k/v, biases and ffn_gate are tensors llama.cpp does not read here.
void check_phi3_layer(const GgufFile& f, const ModelConfig& c, const std::string& b) {
    const std::string p = c.arch + ".";
    for (const char* part : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.bias", "attn_q.bias",
                             "attn_k.bias", "attn_v.bias", "ffn_gate.weight"}) {
        if (f.find_tensor(b + part)) {
            fail(ErrorKind::ModelFormat, "[model] tensor '" + b + part +
                                             "' is not supported for phi3 (its q, k, v are the fused "
                                             "attn_qkv.weight, its gate is the first half of ffn_up.weight)");
        }
    }
    check_tensor(f, b + "attn_qkv.weight", {c.n_embd, c.q_dim() + 2 * c.kv_dim()}, true,
                 p + "embedding_length, " + p + "attention.head_count, head_count_kv: q, k and v rows");
    const std::string ffn_why = p + "embedding_length, " + p + "feed_forward_length: gate and up rows";
    check_tensor(f, b + "ffn_norm.weight", {c.n_embd}, true, p + "embedding_length");
    check_tensor(f, b + "ffn_up.weight", {c.n_embd, 2 * c.n_ff}, true, ffn_why);
    check_tensor(f, b + "ffn_down.weight", {c.n_ff, c.n_embd}, true,
                 p + "embedding_length, " + p + "feed_forward_length");
}

// Gemma 3's hyperparameters as llama.cpp's gemma3 loader reads them (c's common fields already read).
void read_gemma3(const GgufFile& f, ModelConfig& c) {
    const std::string p = c.arch + ".";
    if (c.is_moe()) {  // llama.cpp's gemma3 builds a dense GeGLU FFN in every layer
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "expert_count': architecture gemma3 has no experts");
    }
    c.embedding_scale = std::sqrt((float)c.n_embd);
    c.has_post_norms = true;
    // llama.cpp ignores query_pre_attn_scalar: 1/sqrt(head_dim), except for the 62-layer 27B model,
    // whose query_pre_attn_scalar is n_embd / n_head (integer division, as there).
    c.query_scale =
        c.n_layer == 62 ? 1.0f / std::sqrt((float)(c.n_embd / c.n_head)) : 1.0f / std::sqrt((float)c.head_dim);
    c.final_logit_softcap = (float)f.get_float_or(p + "final_logit_softcapping", 0.0);
    if (!(c.final_logit_softcap >= 0.0f) || !std::isfinite(c.final_logit_softcap)) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "final_logit_softcapping' must be a non-negative number");
    }
    c.n_swa = hparam_or(f, p + "attention.sliding_window", 0, 0, int64_t(1) << 24);
    if (c.n_swa == 0) return;  // no window: every layer attends globally
    // Which layers slide: an array of n_layer flags, or a period n (layer il slides unless il % n == n - 1;
    // n == 0: every layer), by default 6 (five local layers, then one global).
    const std::string pattern_key = p + "attention.sliding_window_pattern";
    c.swa_layer.assign((size_t)c.n_layer, 0);
    const GgufValue* pattern = f.find(pattern_key);
    if (pattern && pattern->type == GgufValueType::ARRAY) {
        const std::vector<int64_t>& flags = f.get_int_array(pattern_key);
        if ((int64_t)flags.size() != c.n_layer) {
            fail(ErrorKind::ModelFormat, "[model] key '" + pattern_key + "': " + std::to_string(flags.size()) +
                                             " flags for " + std::to_string(c.n_layer) + " layers");
        }
        for (int64_t il = 0; il < c.n_layer; ++il) c.swa_layer[(size_t)il] = flags[(size_t)il] != 0;
    } else {
        const int64_t period = hparam_or(f, pattern_key, 6, 0, int64_t(1) << 20);
        for (int64_t il = 0; il < c.n_layer; ++il) c.swa_layer[(size_t)il] = period == 0 || il % period < period - 1;
    }
    // The local layers' RoPE: their own base (llama.cpp's default 10000, Gemma 3's local base), unscaled.
    c.rope_freq_base_swa = (float)f.get_float_or(p + "rope.freq_base_swa", 10000.0);
    if (!(c.rope_freq_base_swa > 0.0f) || !std::isfinite(c.rope_freq_base_swa)) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "rope.freq_base_swa' must be a positive number");
    }
}

}  // namespace

std::string ModelConfig::rope_factors_tensor(int64_t n_ctx) const {
    if (has_rope_freqs) return "rope_freqs.weight";
    if (!has_rope_long_short) return "";
    const int64_t llama_cpp_ctx = (n_ctx + 255) / 256 * 256;
    return llama_cpp_ctx > n_ctx_orig ? "rope_factors_long.weight" : "rope_factors_short.weight";
}

const std::vector<std::string>& ModelConfig::supported_architectures() {
    static const std::vector<std::string> archs = [] {
        std::vector<std::string> names;
        for (const Architecture& a : architectures()) names.push_back(a.name);
        return names;
    }();
    return archs;
}

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
    ModelConfig c;
    c.arch = f.get_string("general.architecture");
    bool known = false;
    for (const auto& a : supported_architectures()) known = known || a == c.arch;
    if (!known) {
        std::string list;
        for (const auto& a : supported_architectures()) list += (list.empty() ? "" : ", ") + a;
        fail(ErrorKind::UnsupportedArchitecture, "[model] key 'general.architecture': architecture '" + c.arch +
                                                     "' is not supported (supported: " + list + ")");
    }
    const std::string p = c.arch + ".";
    constexpr int64_t kMaxDim = int64_t(1) << 20;  // far above any real model; keeps products in range
    c.n_embd = hparam(f, p + "embedding_length", 1, kMaxDim);
    c.n_layer = hparam(f, p + "block_count", 1, 4096);
    const bool moe_arch = c.arch == "qwen2moe" || c.arch == "qwen3moe";
    c.n_expert = hparam_or(f, p + "expert_count", 0, 0, 4096);
    // feed_forward_length sizes the dense FFN; MoE-only architectures may omit it.
    c.n_ff = moe_arch ? hparam_or(f, p + "feed_forward_length", 0, 0, kMaxDim)
                      : hparam(f, p + "feed_forward_length", 1, kMaxDim);
    if (moe_arch && c.n_expert == 0) {
        fail(ErrorKind::ModelFormat,
             "[model] required key '" + p + "expert_count' is missing (architecture " + c.arch + ")");
    }
    if (c.n_expert > 0) {
        c.n_expert_used = hparam(f, p + "expert_used_count", 1, c.n_expert);
        // As llama.cpp: llama's experts are feed_forward_length wide; the qwen MoE families read
        // expert_feed_forward_length and fall back to n_ff / n_expert_used.
        const int64_t fallback = c.arch == "llama" ? c.n_ff : c.n_ff / c.n_expert_used;
        c.n_ff_exp = hparam_or(f, p + "expert_feed_forward_length", fallback, 1, kMaxDim);
        if (c.n_ff_exp < 1) {
            fail(ErrorKind::ModelFormat,
                 "[model] key '" + p + "expert_feed_forward_length' is missing and cannot be derived");
        }
        if (c.arch == "qwen2moe")
            c.n_ff_shexp = hparam_or(f, p + "expert_shared_feed_forward_length", c.n_ff, 1, kMaxDim);
        const bool norm_default = c.arch != "qwen2moe";
        c.expert_weights_norm = f.get_bool_or(p + "expert_weights_norm", norm_default);
        c.expert_weights_scale = (float)f.get_float_or(p + "expert_weights_scale", 0.0);
        if (!std::isfinite(c.expert_weights_scale)) {
            fail(ErrorKind::ModelFormat, "[model] key '" + p + "expert_weights_scale' must be a finite number");
        }
    }
    c.n_head = hparam(f, p + "attention.head_count", 1, 4096);
    c.n_head_kv = hparam_or(f, p + "attention.head_count_kv", c.n_head, 1, 4096);
    if (c.n_head % c.n_head_kv != 0) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "attention.head_count_kv': " + std::to_string(c.n_head_kv) +
                                         " does not divide " + p + "attention.head_count (" + std::to_string(c.n_head) +
                                         ")");
    }
    if (!f.find(p + "attention.key_length") && c.n_embd % c.n_head != 0) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "attention.head_count': " + std::to_string(c.n_head) +
                                         " does not divide " + p + "embedding_length (" + std::to_string(c.n_embd) +
                                         ")");
    }
    c.head_dim = hparam_or(f, p + "attention.key_length", c.n_embd / c.n_head, 1, 65536);
    const int64_t v_len = hparam_or(f, p + "attention.value_length", c.head_dim, 1, 65536);
    if (v_len != c.head_dim) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "attention.value_length': " + std::to_string(v_len) +
                                         " differs from attention.key_length " + std::to_string(c.head_dim) +
                                         " (not supported)");
    }
    c.n_ctx_train = hparam_or(f, p + "context_length", 2048, 1, int64_t(1) << 24);
    c.n_rot = hparam_or(f, p + "rope.dimension_count", c.head_dim, 2, c.head_dim);
    if (c.n_rot % 2 != 0) fail(ErrorKind::ModelFormat, "[model] key '" + p + "rope.dimension_count' must be even");
    // llama.cpp's gemma3 requires the epsilon (1e-6 in Gemma 3; the others default to 1e-5).
    if (c.arch == "gemma3" && !f.find(p + "attention.layer_norm_rms_epsilon")) {
        fail(ErrorKind::ModelFormat,
             "[model] required key '" + p + "attention.layer_norm_rms_epsilon' is missing (architecture gemma3)");
    }
    c.rms_eps = (float)f.get_float_or(p + "attention.layer_norm_rms_epsilon", 1e-5);
    if (!(c.rms_eps > 0.0f) || !std::isfinite(c.rms_eps)) {
        fail(ErrorKind::ModelFormat,
             "[model] key '" + p + "attention.layer_norm_rms_epsilon' must be a positive number");
    }
    c.rope_freq_base = (float)f.get_float_or(p + "rope.freq_base", 10000.0);
    if (!(c.rope_freq_base > 0.0f) || !std::isfinite(c.rope_freq_base)) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "rope.freq_base' must be a positive number");
    }
    // Linear RoPE scaling: rope.scaling.type = "linear" with rope.scaling.factor, or the older
    // rope.scale_linear; as llama.cpp, position is multiplied by freq_scale = 1 / factor.
    double factor = 0.0;
    const std::string scaling = f.get_string_or(p + "rope.scaling.type", "");
    if (scaling == "linear")
        factor = f.get_float_or(p + "rope.scaling.factor", 1.0);
    else if (scaling.empty() || scaling == "none")
        factor = f.get_float_or(p + "rope.scale_linear", 0.0);
    else
        fail(ErrorKind::ModelFormat,
             "[model] key '" + p + "rope.scaling.type': '" + scaling + "' is not supported (supported: none, linear)");
    if (factor != 0.0) {
        if (!(factor > 0.0) || !std::isfinite(factor)) {
            fail(ErrorKind::ModelFormat, "[model] key '" + p + "rope.scaling.factor' must be a positive number");
        }
        c.rope_freq_scale = (float)(1.0 / factor);
    }
    c.rope_attn_factor = (float)f.get_float_or(p + "rope.scaling.attn_factor", 1.0);
    if (!(c.rope_attn_factor > 0.0f) || !std::isfinite(c.rope_attn_factor)) {
        fail(ErrorKind::ModelFormat, "[model] key '" + p + "rope.scaling.attn_factor' must be a positive number");
    }
    // As llama.cpp: llama uses the original interleaved rotation, qwen2/qwen3/phi3/gemma3 the NeoX halves.
    c.rope_kind = c.arch == "llama" ? RopeKind::Normal : RopeKind::NeoX;
    c.has_qk_norm = c.arch == "qwen3" || c.arch == "qwen3moe" || c.arch == "gemma3";
    if (c.arch == "gemma3") read_gemma3(f, c);
    if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
        // llama.cpp reads it for llama only; anywhere else it would be silently different math.
        if (c.arch != "llama") {
            fail(ErrorKind::ModelFormat,
                 "[model] tensor 'rope_freqs.weight' (per-dimension RoPE frequencies) is "
                 "read for architecture llama only, not '" +
                     c.arch + "'");
        }
        if (rf->type != GgmlType::F32 || rf->n_dims != 1 || rf->ne[0] != c.n_rot / 2) {
            fail(ErrorKind::ModelFormat, "[model] tensor 'rope_freqs.weight' must be F32 of shape [" +
                                             std::to_string(c.n_rot / 2) + "] (rope.dimension_count / 2)");
        }
        c.has_rope_freqs = true;
    }
    if (c.arch == "phi3") {
        check_phi3(f, c);
    } else {
        for (const char* name : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
            if (f.find_tensor(name)) {
                fail(ErrorKind::ModelFormat, std::string("[model] tensor '") + name +
                                                 "' is read for architecture phi3 only, not '" + c.arch + "'");
            }
        }
    }

    const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
    if (!embd) fail(ErrorKind::ModelFormat, "[model] required tensor 'token_embd.weight' is missing");
    c.n_vocab = embd->ne[1];
    const std::string vocab_why = "token_embd.weight rows";
    check_tensor(f, "token_embd.weight", {c.n_embd, c.n_vocab}, true, p + "embedding_length");
    check_tensor(f, "output_norm.weight", {c.n_embd}, true, p + "embedding_length");
    c.tied_output = f.find_tensor("output.weight") == nullptr;
    if (!c.tied_output)
        check_tensor(f, "output.weight", {c.n_embd, c.n_vocab}, true, p + "embedding_length, " + vocab_why);

    const GgufTensorInfo* bq0 = f.find_tensor("blk.0.attn_q.bias");
    c.has_qkv_bias = c.arch == "qwen2" || c.arch == "qwen2moe" || bq0 != nullptr;
    const std::string attn_why = p + "embedding_length, " + p + "attention.head_count, head_count_kv, key_length";
    for (int64_t il = 0; il < c.n_layer; ++il) {
        const std::string b = "blk." + std::to_string(il) + ".";
        check_tensor(f, b + "attn_norm.weight", {c.n_embd}, true, p + "embedding_length");
        check_tensor(f, b + "attn_output.weight", {c.q_dim(), c.n_embd}, true, attn_why);
        if (c.arch == "phi3") {
            check_phi3_layer(f, c, b);
            continue;
        }
        check_tensor(f, b + "attn_q.weight", {c.n_embd, c.q_dim()}, true, attn_why);
        check_tensor(f, b + "attn_k.weight", {c.n_embd, c.kv_dim()}, true, attn_why);
        check_tensor(f, b + "attn_v.weight", {c.n_embd, c.kv_dim()}, true, attn_why);
        check_tensor(f, b + "attn_q.bias", {c.q_dim()}, c.has_qkv_bias, attn_why);
        check_tensor(f, b + "attn_k.bias", {c.kv_dim()}, c.has_qkv_bias, attn_why);
        check_tensor(f, b + "attn_v.bias", {c.kv_dim()}, c.has_qkv_bias, attn_why);
        check_tensor(f, b + "attn_q_norm.weight", {c.head_dim}, c.has_qk_norm, p + "attention.key_length");
        check_tensor(f, b + "attn_k_norm.weight", {c.head_dim}, c.has_qk_norm, p + "attention.key_length");
        check_tensor(f, b + "ffn_norm.weight", {c.n_embd}, true, p + "embedding_length");
        check_tensor(f, b + "post_attention_norm.weight", {c.n_embd}, c.has_post_norms, p + "embedding_length");
        check_tensor(f, b + "post_ffw_norm.weight", {c.n_embd}, c.has_post_norms, p + "embedding_length");
        const std::string ffn_why = p + "embedding_length, " + p + "feed_forward_length";
        if (!c.is_moe()) {
            check_tensor(f, b + "ffn_gate.weight", {c.n_embd, c.n_ff}, true, ffn_why);
            check_tensor(f, b + "ffn_up.weight", {c.n_embd, c.n_ff}, true, ffn_why);
            check_tensor(f, b + "ffn_down.weight", {c.n_ff, c.n_embd}, true, ffn_why);
            continue;
        }
        const std::string exp_why = p + "embedding_length, " + p + "expert_feed_forward_length, " + p + "expert_count";
        check_tensor(f, b + "ffn_gate_inp.weight", {c.n_embd, c.n_expert}, true,
                     p + "embedding_length, " + p + "expert_count");
        check_tensor(f, b + "ffn_gate_exps.weight", {c.n_embd, c.n_ff_exp, c.n_expert}, true, exp_why);
        check_tensor(f, b + "ffn_up_exps.weight", {c.n_embd, c.n_ff_exp, c.n_expert}, true, exp_why);
        check_tensor(f, b + "ffn_down_exps.weight", {c.n_ff_exp, c.n_embd, c.n_expert}, true, exp_why);
        if (c.n_ff_shexp > 0) {
            const std::string sh_why = p + "embedding_length, " + p + "expert_shared_feed_forward_length";
            check_tensor(f, b + "ffn_gate_inp_shexp.weight", {c.n_embd}, true, p + "embedding_length");
            check_tensor(f, b + "ffn_gate_shexp.weight", {c.n_embd, c.n_ff_shexp}, true, sh_why);
            check_tensor(f, b + "ffn_up_shexp.weight", {c.n_embd, c.n_ff_shexp}, true, sh_why);
            check_tensor(f, b + "ffn_down_shexp.weight", {c.n_ff_shexp, c.n_embd}, true, sh_why);
            continue;
        }
        // No shared expert in this configuration: shared-expert tensors would go unchecked, so a file
        // that carries them is contradictory (the engine never reads them without n_ff_shexp).
        for (const char* part : {"ffn_gate_inp_shexp", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"}) {
            const std::string name = b + part + ".weight";
            if (f.find_tensor(name)) {
                fail(ErrorKind::ModelFormat,
                     "[model] tensor '" + name + "' is a shared expert, but " +
                         (c.arch == "qwen2moe" ? "key '" + p + "expert_shared_feed_forward_length' (or '" + p +
                                                     "feed_forward_length') is missing"
                                               : "architecture " + c.arch + " has no shared expert"));
            }
        }
    }
    check_tokenizer_arrays(f);
    const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
    if (tokens && tokens->array_size() > (uint64_t)c.n_vocab) {
        fail(ErrorKind::ModelFormat, "[model] key 'tokenizer.ggml.tokens': " + std::to_string(tokens->array_size()) +
                                         " tokens but the output head has only " + std::to_string(c.n_vocab) + " rows");
    }
    return c;
}

}  // namespace edge_rt
