// UTF-8 validation for the tokenizer: GGUF strings and caller text are bytes that may not be UTF-8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edge_rt {

// The length of the valid UTF-8 sequence at s[i] (1..4), or 0 if it is invalid there (a bad lead or
// continuation byte, a truncated sequence, an overlong form, a surrogate, or a code point past U+10FFFF).
inline size_t utf8_sequence_length(const std::string& s, size_t i) {
    const uint8_t b = (uint8_t)s[i];
    const size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return 0;
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (size_t k = 1; k < len; ++k) {
        const uint8_t c = (uint8_t)s[i + k];
        if ((c & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (c & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (len > 1 && (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    return len;
}

inline bool is_valid_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const size_t len = utf8_sequence_length(s, i);
        if (len == 0) return false;
        i += len;
    }
    return true;
}

// s with every byte that does not start a valid sequence replaced by U+FFFD.
inline std::string sanitize_utf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const size_t len = utf8_sequence_length(s, i);
        if (len) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            i += 1;
        }
    }
    return out;
}

}  // namespace edge_rt
