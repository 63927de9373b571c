// The C++ tokenizer behind the C ABI (edge_rt.h): GGUF vocabularies tokenized and detokenized as
// edge_rt's Python tokenizer (edge_rt/tokenizer/, the reference, which follows llama.cpp) does, for apps
// that have no Python (JNI, cffi without the extension).
//
// Contract:
//  * from_gguf(file) reads tokenizer.ggml.* and validates it as edge_rt.tokenizer.Vocabulary does (the same
//    checks, Error(ModelFormat) naming the key; an unknown tokenizer model is UnsupportedArchitecture).
//  * Coverage: every vocabulary loads and detokenizes. tokenize() runs 'llama' (SentencePiece BPE)
//    vocabularies and 'gpt2' (byte-level BPE) ones whose pre-tokenizer is one of llama.cpp's hand-written
//    splitters: GPT-2's (gpt-2 and its aliases, also after splitting digits: starcoder, smollm, command-r,
//    ...), Llama 3's (llama-bpe, ...) and Qwen 2's / Qwen 3.5's (pre_tokenizers() lists the names). Any other
//    pre-tokenizer (the regex ones: default, deepseek-*, falcon, gpt-4o, ...) throws
//    Error(UnsupportedArchitecture) naming it from tokenize(): those exist only in Python so far
//    (edge_rt/tokenizer/pretokenize.py).
//  * tokenize(text): text is UTF-8; each invalid part becomes one U+FFFD, as Python's
//    bytes.decode("utf-8", "replace") makes them (Unicode's maximal-subpart practice).
//    add_special: BOS/EOS where the vocabulary asks; parse_special: control-token text becomes the token
//    (user-defined tokens always do).
//  * token_to_piece / detokenize: the bytes as Tokenizer.token_to_piece_bytes / detokenize_bytes give.
//    Ids outside [0, n_vocab()) throw Error(InvalidArgument).
//  * Immutable after construction; safe to use from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "edge_rt/gguf_reader.h"

namespace edge_rt {

class Tokenizer {
public:
    // llama.cpp token attributes (llama_token_attr), as edge_rt.tokenizer's ATTR_* constants.
    enum Attr : uint32_t {
        kAttrUnknown = 1u << 0,
        kAttrUnused = 1u << 1,
        kAttrNormal = 1u << 2,
        kAttrControl = 1u << 3,
        kAttrUserDefined = 1u << 4,
        kAttrByte = 1u << 5,
        kAttrLstrip = 1u << 7,
        kAttrRstrip = 1u << 8,
    };

    // How a 'gpt2' vocabulary's text is cut into words before merging (pretokenize.py's custom splitters).
    enum class PreSplit {
        Gpt2,        // unicode_regex_split_custom_gpt2
        DigitsGpt2,  // every \p{N} its own word, then GPT-2's splitter
        Llama3,      // unicode_regex_split_custom_llama3 (digits in groups of 3)
        Qwen2,       // llama3's with single digits
        Qwen35,      // qwen2's with combining marks in letter runs
    };
    // A tokenizer.ggml.pre name tokenize() runs, with the settings llama.cpp gives it.
    struct PreTokenizer {
        const char* name;
        PreSplit split;
        bool ignore_merges;  // a word that is itself a token is that token
        bool add_bos;        // default of tokenizer.ggml.add_bos_token
        bool bos_is_null;    // no default BOS id
    };
    static const std::vector<PreTokenizer>& pre_tokenizers();

    static Tokenizer from_gguf(const GgufFile& file);

    std::vector<int32_t> tokenize(const std::string& text, bool add_special, bool parse_special) const;
    std::string token_to_piece(int32_t id, bool special) const;
    std::string detokenize(const int32_t* ids, size_t n, bool special) const;

    int32_t n_vocab() const noexcept { return (int32_t)texts_.size(); }
    bool is_eog(int32_t id) const noexcept { return eog_.count(id) != 0; }
    int32_t bos_id() const noexcept { return bos_; }  // -1: none
    int32_t eos_id() const noexcept { return eos_; }  // -1: none
    bool can_tokenize() const noexcept { return unsupported_pre_.empty(); }
    const std::string& model() const noexcept { return model_; }  // "llama" | "gpt2"
    const std::string& pre() const noexcept { return pre_; }

private:
    // Text pieces and special tokens of the input, in order (llama.cpp tokenizer_st_partition).
    struct Fragment {
        std::string text;  // empty when token >= 0
        int32_t token = -1;
    };
    std::vector<Fragment> partition(const std::string& text, bool parse_special) const;
    void spm(const std::string& text, std::vector<int32_t>& out) const;  // text has spaces escaped
    using Words = std::vector<std::pair<size_t, size_t>>;                // [start, end) code point ranges
    Words pre_split(const std::vector<uint32_t>& cps) const;             // the pre-tokenizer's words of a text fragment
    void bpe_word(const std::string& word, std::vector<int32_t>& out) const;  // word GPT-2 byte-encoded
    int32_t byte_token(uint8_t b) const;
    int32_t find(const std::string& text) const;  // -1: no such token
    uint32_t check_id(int32_t id) const;

    std::string model_;
    std::string pre_;
    std::string unsupported_pre_;  // non-empty: tokenize() throws, naming this pre-tokenizer
    PreSplit pre_split_ = PreSplit::Gpt2;
    bool ignore_merges_ = false;
    bool escaped_spaces_ = false;  // U+2581 stands for a space in pieces (SPM; whitespace-escaping BPE)
    std::vector<std::string> texts_;
    std::vector<float> scores_;
    std::vector<uint32_t> attrs_;
    std::unordered_map<std::string, int32_t> ids_;
    std::unordered_map<std::string, int32_t> ranks_;  // "left right" (as in tokenizer.ggml.merges) -> rank
    std::vector<int32_t> special_cache_;              // control/user-defined/unknown ids, longest text first
    std::unordered_set<int32_t> eog_;
    int32_t bos_ = -1;
    int32_t eos_ = -1;
    bool add_bos_ = false;
    bool add_eos_ = false;
    bool add_space_prefix_ = false;
};

}  // namespace edge_rt
