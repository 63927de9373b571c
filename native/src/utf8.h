// UTF-8 validation for the tokenizer: GGUF strings and caller text are bytes that may not be UTF-8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edge_rt {

// The bytes at s[i] that form one unit of UTF-8 decoding: a well-formed sequence (valid = true), or else
// the maximal subpart of one (a lead byte and the continuation bytes that could still follow it) or a single
// byte that cannot start a sequence (valid = false). Unicode's "maximal subpart" practice (Table 3-7), which
// Python's decoder follows: each invalid unit becomes one U+FFFD, as bytes.decode("utf-8", "replace") does.
struct Utf8Unit {
    size_t length;
    bool valid;
};

inline Utf8Unit utf8_unit(const std::string& s, size_t i) {
    const uint8_t b = (uint8_t)s[i];
    if (b < 0x80) return {1, true};
    size_t need = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte; later bytes are 80..BF
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;  // no overlong forms
        if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
    } else {
        return {1, false};
    }
    size_t k = 1;
    for (; k <= need && i + k < s.size(); ++k) {
        const uint8_t c = (uint8_t)s[i + k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
    }
    return {k, k == need + 1};
}

inline bool is_valid_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const Utf8Unit u = utf8_unit(s, i);
        if (!u.valid) return false;
        i += u.length;
    }
    return true;
}

// s with every invalid unit (see utf8_unit) replaced by U+FFFD.
inline std::string sanitize_utf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const Utf8Unit u = utf8_unit(s, i);
        if (u.valid)
            out.append(s, i, u.length);
        else
            out += "\xEF\xBF\xBD";
        i += u.length;
    }
    return out;
}

}  // namespace edge_rt
