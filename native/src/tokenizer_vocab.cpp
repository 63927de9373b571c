// Tokenizer::from_gguf: tokenizer.ggml.* read and validated as edge_rt/tokenizer/vocab.py's
// Vocabulary.from_metadata does (which follows llama.cpp's llama_vocab::load), in the same order, so a
// vocabulary the Python tokenizer rejects is rejected here and the special ids, attributes and
// end-of-generation set come out the same.
#include <algorithm>
#include <cstring>

#include "edge_rt/error.h"
#include "edge_rt/tokenizer.h"
#include "utf8.h"

namespace edge_rt {

namespace {

const char* const kPrefix = "tokenizer.ggml.";

// Pre-tokenizers whose vocabularies write spaces as U+2581 (pieces turn it back into a space).
const char* const kEscapingPre[] = {"gemma4", "granite-embed-multi-311m", "sarvam-moe"};

const char* const kEotTexts[] = {"<|eot_id|>",
                                 "<|im_end|>",
                                 "<|end|>",
                                 "<end_of_turn>",
                                 "<|endoftext|>",
                                 "<|end_of_text|>",
                                 "<EOT>",
                                 "_<EOT>",
                                 "[EOT]",
                                 "<\xEF\xBD\x9C"
                                 "end\xE2\x96\x81"
                                 "of\xE2\x96\x81"
                                 "sentence\xEF\xBD\x9C>",
                                 "<end_of_utterance>"};
const char* const kFimPad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
const char* const kFimRep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
const char* const kFimSep[] = {"<|file_sep|>"};
const char* const kFimPre[] = {"<|fim_prefix|>",
                               "<fim-prefix>",
                               "<fim_prefix>",
                               "<\xEF\xBD\x9C"
                               "fim\xE2\x96\x81"
                               "begin\xEF\xBD\x9C>",
                               "<PRE>",
                               "\xE2\x96\x81<PRE>",
                               "<|code_prefix|>",
                               "<|prefix|>"};
const char* const kFimSuf[] = {"<|fim_suffix|>",
                               "<fim-suffix>",
                               "<fim_suffix>",
                               "<\xEF\xBD\x9C"
                               "fim\xE2\x96\x81"
                               "hole\xEF\xBD\x9C>",
                               "<SUF>",
                               "\xE2\x96\x81<SUF>",
                               "<|code_suffix|>",
                               "<|suffix|>"};
const char* const kFimMid[] = {"<|fim_middle|>",
                               "<fim-middle>",
                               "<fim_middle>",
                               "<\xEF\xBD\x9C"
                               "fim\xE2\x96\x81"
                               "end\xEF\xBD\x9C>",
                               "<MID>",
                               "\xE2\x96\x81<MID>",
                               "<|code_middle|>",
                               "<|middle|>"};
const char* const kEogTexts[] = {"<|eot_id|>",
                                 "<|im_end|>",
                                 "<|end|>",
                                 "<|return|>",
                                 "<|call|>",
                                 "<|flush|>",
                                 "<|calls|>",
                                 "<end_of_turn>",
                                 "<|endoftext|>",
                                 "</s>",
                                 "<|eom_id|>",
                                 "<EOT>",
                                 "_<EOT>",
                                 "[EOT]",
                                 "[EOS]",
                                 "<|end_of_text|>",
                                 "<end_of_utterance>",
                                 "<eos>",
                                 "<turn|>",
                                 "<|tool_response>",
                                 "<\xEF\xBD\x9C"
                                 "end\xE2\x96\x81"
                                 "of\xE2\x96\x81"
                                 "sentence\xEF\xBD\x9C>",
                                 "[e~["};

[[noreturn]] void bad_key(const std::string& key, const std::string& what) {
    fail(ErrorKind::ModelFormat, "[tokenizer] key '" + key + "': " + what);
}

const GgufValue* find_key(const GgufFile& f, const char* suffix) { return f.find(std::string(kPrefix) + suffix); }

bool get_bool(const GgufFile& f, const char* suffix, bool fallback) {
    const GgufValue* v = find_key(f, suffix);
    if (!v) return fallback;
    if (v->type != GgufValueType::BOOL)
        bad_key(std::string(kPrefix) + suffix, std::string("expected a bool, got ") + gguf_value_type_name(v->type));
    return v->i != 0;
}

// A token id key: absent -> false; not an integer -> error; else *out = its value (range checked by the caller).
bool get_id(const GgufFile& f, const std::string& key, int64_t* out) {
    const GgufValue* v = f.find(key);
    if (!v) return false;
    if (!v->is_integer())
        bad_key(key, std::string("expected an integer token id, got ") + gguf_value_type_name(v->type));
    if (v->type == GgufValueType::UINT64 && v->u > (uint64_t)INT64_MAX) {
        *out = INT64_MAX;  // out of any vocabulary's range
    } else {
        *out = v->i;
    }
    return true;
}

bool is_byte_token_text(const std::string& t) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
    return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

template <size_t N>
bool contains(const char* const (&list)[N], const std::string& s) {
    for (const char* e : list)
        if (s == e) return true;
    return false;
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return s;
}

}  // namespace

// pretokenize.py's PRE_TYPES entries whose regexes are one of llama.cpp's hand-written splitters (and whose
// other settings are the defaults); tests/test_capi.py checks this table against PRE_TYPES.
const std::vector<Tokenizer::PreTokenizer>& Tokenizer::pre_tokenizers() {
    using S = PreSplit;
    static const std::vector<PreTokenizer> table = {
        {"gpt-2", S::Gpt2, false, false, false},
        {"phi-2", S::Gpt2, false, false, false},
        {"jina-es", S::Gpt2, false, false, false},
        {"jina-de", S::Gpt2, false, false, false},
        {"gigachat", S::Gpt2, false, false, false},
        {"jina-v2-es", S::Gpt2, false, false, false},
        {"jina-v2-de", S::Gpt2, false, false, false},
        {"a.x-4.0", S::Gpt2, false, false, false},
        {"mellum", S::Gpt2, false, false, false},
        {"modern-bert", S::Gpt2, false, false, false},
        {"exaone4", S::Gpt2, false, false, false},
        {"jina-v1-en", S::Gpt2, false, false, false},
        {"jina-v2-code", S::Gpt2, false, false, false},
        {"roberta-bpe", S::Gpt2, false, false, false},
        {"mpt", S::Gpt2, false, false, false},
        {"olmo", S::Gpt2, false, false, false},
        {"jais", S::Gpt2, false, false, false},
        {"trillion", S::Gpt2, false, false, false},
        {"granite-docling", S::Gpt2, false, false, false},
        {"starcoder", S::DigitsGpt2, false, false, false},
        {"refact", S::DigitsGpt2, false, false, false},
        {"command-r", S::DigitsGpt2, false, false, false},
        {"smollm", S::DigitsGpt2, false, false, false},
        {"codeshell", S::DigitsGpt2, false, false, false},
        {"exaone", S::DigitsGpt2, false, false, false},
        {"minerva-7b", S::DigitsGpt2, false, false, false},
        {"mellum2", S::DigitsGpt2, false, false, false},
        {"llama3", S::Llama3, true, true, false},
        {"llama-v3", S::Llama3, true, true, false},
        {"llama-bpe", S::Llama3, true, true, false},
        {"falcon3", S::Llama3, true, true, false},
        {"falcon-h1", S::Llama3, true, true, false},
        {"pixtral", S::Llama3, true, true, false},
        {"midm-2.0", S::Llama3, true, true, false},
        {"lfm2", S::Llama3, true, true, false},
        {"jina-v5-nano", S::Llama3, true, true, false},
        {"dbrx", S::Llama3, false, false, false},
        {"smaug-bpe", S::Llama3, false, false, false},
        {"chatglm-bpe", S::Llama3, false, false, true},
        {"glm4", S::Llama3, true, false, true},
        {"glm5", S::Llama3, true, false, true},
        {"qwen2", S::Qwen2, false, false, false},
        {"deepseek-r1-qwen", S::Qwen2, false, false, false},
        {"kormo", S::Qwen2, false, false, false},
        {"f2llmv2", S::Qwen2, false, false, false},
        {"megrez", S::Qwen2, false, false, false},
        {"stablelm2", S::Qwen2, false, false, false},
        {"hunyuan", S::Qwen2, false, false, false},
        {"solar-open", S::Qwen2, false, false, false},
        {"grok-2", S::Qwen2, false, false, false},
        {"qwen35", S::Qwen35, false, false, false},
    };
    return table;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
    Tokenizer t;
    const std::string k_model = std::string(kPrefix) + "model";
    const GgufValue* model = f.find(k_model);
    if (!model) bad_key(k_model, "missing");
    if (model->type != GgufValueType::STRING) bad_key(k_model, "expected a string");
    if (model->s != "llama" && model->s != "gpt2") {
        fail(ErrorKind::UnsupportedArchitecture, "[tokenizer] key '" + k_model + "': tokenizer model '" + model->s +
                                                     "' is not supported (edge_rt supports 'llama' and 'gpt2')");
    }
    t.model_ = model->s;
    const bool is_spm = t.model_ == "llama";

    const std::string k_tokens = std::string(kPrefix) + "tokens";
    if (!f.find(k_tokens)) bad_key(k_tokens, "missing");
    t.texts_ = f.get_string_array(k_tokens);
    const size_t n = t.texts_.size();
    if (n == 0) bad_key(k_tokens, "empty vocabulary");
    if (n > (size_t)INT32_MAX) bad_key(k_tokens, "more than 2^31-1 tokens");
    t.ids_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        if (!is_valid_utf8(t.texts_[i])) bad_key(k_tokens, "entry " + std::to_string(i) + " is not valid UTF-8");
        if (t.texts_[i].empty()) t.texts_[i] = "[EMPTY_" + std::to_string(i) + "]";
        auto ins = t.ids_.emplace(t.texts_[i], (int32_t)i);
        if (!ins.second) {
            bad_key(k_tokens, "duplicate token '" + t.texts_[i] + "' at ids " + std::to_string(ins.first->second) +
                                  " and " + std::to_string(i));
        }
    }

    const std::string k_scores = std::string(kPrefix) + "scores";
    t.scores_.assign(n, 0.0f);
    if (f.find(k_scores)) {
        const std::vector<double>& s = f.get_float_array(k_scores);
        if (s.size() != n)
            bad_key(k_scores, "length " + std::to_string(s.size()) + " != " + std::to_string(n) + " tokens");
        for (size_t i = 0; i < n; ++i) t.scores_[i] = (float)s[i];  // llama.cpp keeps float32
    }

    const std::string k_types = std::string(kPrefix) + "token_type";
    t.attrs_.assign(n, kAttrNormal);
    if (f.find(k_types)) {
        const std::vector<int64_t>& types = f.get_int_array(k_types);
        if (types.size() != n)
            bad_key(k_types, "length " + std::to_string(types.size()) + " != " + std::to_string(n) + " tokens");
        for (size_t i = 0; i < n; ++i) {
            switch (types[i]) {  // LLAMA_TOKEN_TYPE_* -> llama_token_attr
                case 1: t.attrs_[i] = kAttrNormal; break;
                case 2: t.attrs_[i] = kAttrUnknown; break;
                case 3: t.attrs_[i] = kAttrControl; break;
                case 4: t.attrs_[i] = kAttrUserDefined; break;
                case 5: t.attrs_[i] = kAttrUnused; break;
                case 6: t.attrs_[i] = kAttrByte; break;
                default: t.attrs_[i] = 0; break;
            }
            if ((t.attrs_[i] & kAttrByte) && !is_byte_token_text(t.texts_[i]))
                bad_key(k_types, "token " + std::to_string(i) + " ('" + t.texts_[i] +
                                     "') has type BYTE but is not of the form <0xXX>");
        }
    }

    const GgufValue* pre = find_key(f, "pre");
    t.pre_ = pre && pre->type == GgufValueType::STRING ? pre->s : "";
    t.escaped_spaces_ = is_spm || contains(kEscapingPre, t.pre_);
    bool add_bos_default = is_spm, bos_is_null = false;
    if (!is_spm) {
        const auto& table = pre_tokenizers();
        auto it = std::find_if(table.begin(), table.end(), [&t](const PreTokenizer& p) { return t.pre_ == p.name; });
        if (it == table.end()) {
            t.unsupported_pre_ = t.pre_.empty() ? "(none: 'default')" : t.pre_;
        } else {
            t.pre_split_ = it->split;
            t.ignore_merges_ = it->ignore_merges;
            add_bos_default = it->add_bos;
            bos_is_null = it->bos_is_null;
        }
        const std::string k_merges = std::string(kPrefix) + "merges";
        if (f.find(k_merges)) {
            const std::vector<std::string>& merges = f.get_string_array(k_merges);
            t.ranks_.reserve(merges.size());
            for (size_t i = 0; i < merges.size(); ++i) {
                const std::string& m = merges[i];
                if (!is_valid_utf8(m)) bad_key(k_merges, "entry " + std::to_string(i) + " is not valid UTF-8");
                const size_t sep = m.find(' ', 1);
                if (sep == std::string::npos || sep == 0 || sep == m.size() - 1 ||
                    m.find(' ', sep + 1) != std::string::npos)
                    bad_key(k_merges,
                            "entry " + std::to_string(i) + " '" + m + "' is not two pieces separated by one space");
                t.ranks_.emplace(m, (int32_t)i);  // the first rank of a repeated pair wins
            }
        } else if (t.unsupported_pre_.empty()) {
            bad_key(k_merges, "missing (required by the gpt2 tokenizer model)");
        }
    }

    auto in_range = [n](int64_t v) { return v >= 0 && v < (int64_t)n; };
    auto by_default = [&](int64_t v) { return in_range(v) ? (int32_t)v : -1; };
    t.bos_ = bos_is_null ? -1 : by_default(is_spm ? 1 : 11);
    t.eos_ = by_default(is_spm ? 2 : 11);
    for (int which = 0; which < 2; ++which) {
        const std::string key = std::string(kPrefix) + (which == 0 ? "bos_token_id" : "eos_token_id");
        int64_t v = 0;
        if (get_id(f, key, &v)) {
            if (!in_range(v))
                bad_key(key, "token id " + std::to_string(v) + " is outside the vocabulary (0.." +
                                 std::to_string(n - 1) + ")");
            (which == 0 ? t.bos_ : t.eos_) = (int32_t)v;
        }
    }
    // Optional ids out of range are ignored (the Python tokenizer warns).
    auto optional_id = [&](const char* suffix) {
        int64_t v = 0;
        return get_id(f, std::string(kPrefix) + suffix, &v) && in_range(v) ? (int32_t)v : -1;
    };
    optional_id("unknown_token_id");  // validated as the Python tokenizer does; the C tokenizer does not use it
    optional_id("padding_token_id");
    int32_t eot = optional_id("eot_token_id"), eom = optional_id("eom_token_id");
    int32_t fim_pre = optional_id("fim_pre_token_id"), fim_suf = optional_id("fim_suf_token_id");
    int32_t fim_mid = optional_id("fim_mid_token_id"), fim_pad = optional_id("fim_pad_token_id");
    int32_t fim_rep = optional_id("fim_rep_token_id"), fim_sep = optional_id("fim_sep_token_id");

    t.add_space_prefix_ = get_bool(f, "add_space_prefix", is_spm);
    t.add_bos_ = get_bool(f, "add_bos_token", add_bos_default);
    t.add_eos_ = get_bool(f, "add_eos_token", false);
    if (t.add_bos_ && t.bos_ < 0)
        bad_key(std::string(kPrefix) + "add_bos_token",
                std::string("true, but '") + kPrefix + "bos_token_id' is not set");
    if (t.add_eos_ && t.eos_ < 0)
        bad_key(std::string(kPrefix) + "add_eos_token",
                std::string("true, but '") + kPrefix + "eos_token_id' is not set");

    // End-of-turn / FIM tokens recognised by their text are forced to CONTROL (first candidate in list order).
    auto by_text = [&t](int32_t& id, const char* const* list, size_t count) {
        if (id >= 0) return;
        for (size_t i = 0; i < count; ++i) {
            const int32_t found = t.find(list[i]);
            if (found >= 0) {
                id = found;
                t.attrs_[found] |= kAttrControl;
                return;
            }
        }
    };
    static const char* const kEom[] = {"<|eom_id|>"};
    by_text(eot, kEotTexts, std::size(kEotTexts));
    by_text(eom, kEom, 1);
    by_text(fim_pre, kFimPre, std::size(kFimPre));
    by_text(fim_suf, kFimSuf, std::size(kFimSuf));
    by_text(fim_mid, kFimMid, std::size(kFimMid));
    by_text(fim_pad, kFimPad, std::size(kFimPad));
    by_text(fim_rep, kFimRep, std::size(kFimRep));
    by_text(fim_sep, kFimSep, std::size(kFimSep));
    for (size_t i = 0; i < n; ++i)
        if ((t.attrs_[i] & kAttrControl) && t.texts_[i].find("unused") != std::string::npos) t.attrs_[i] |= kAttrUnused;
    for (int32_t id : {fim_pad, fim_rep, fim_sep})
        if (id >= 0) t.eog_.insert(id);
    for (size_t i = 0; i < n; ++i) {
        if (contains(kEogTexts, t.texts_[i])) {
            t.eog_.insert((int32_t)i);
            t.attrs_[i] |= kAttrControl;
        }
    }
    for (const char* gpt_oss : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
        const int32_t id = t.find(gpt_oss);
        if (id >= 0) t.attrs_[id] = kAttrUserDefined;
    }
    for (int32_t id : {t.eos_, eot, eom})
        if (id >= 0) t.eog_.insert(id);
    auto eog_text = [&t](const char* text) {
        const int32_t id = t.find(text);
        return id >= 0 && t.eog_.count(id) ? id : -1;
    };
    const int32_t end = eog_text("<|end|>");
    if (end >= 0 && ((eog_text("<|return|>") >= 0 && eog_text("<|call|>") >= 0) ||
                     (eog_text("<|calls|>") >= 0 && eog_text("<|flush|>") >= 0))) {
        t.eog_.erase(end);
        t.attrs_[end] = kAttrUserDefined;
    }
    const int32_t eos_text = eog_text("</s>");
    if (eog_text("<|tool_response>") >= 0 && eos_text >= 0) {
        t.eog_.erase(eos_text);
        t.attrs_[eos_text] = kAttrNormal;
    }

    for (size_t i = 0; i < n; ++i)
        if (t.attrs_[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) t.special_cache_.push_back((int32_t)i);
    std::stable_sort(t.special_cache_.begin(), t.special_cache_.end(),
                     [&t](int32_t a, int32_t b) { return t.texts_[a].size() > t.texts_[b].size(); });

    // Per-token strip attributes llama.cpp sets by model name (phi-3).
    const GgufValue* name = f.find("general.name");
    const std::string lname = name && name->type == GgufValueType::STRING ? lower(name->s) : "";
    if (lname.find("phi-3") != std::string::npos || lname.find("phi3") != std::string::npos) {
        for (int32_t id : t.special_cache_) t.attrs_[id] |= kAttrRstrip;
        const int32_t eos_piece = t.find("</s>");
        if (eos_piece >= 0) t.attrs_[eos_piece] |= kAttrRstrip;
        for (const char* keep : {"<unk>", "<s>", "<|endoftext|>"}) {
            const int32_t id = t.find(keep);
            if (id >= 0) t.attrs_[id] &= ~kAttrRstrip;
        }
    }
    return t;
}

}  // namespace edge_rt
