// Tokenizer::tokenize / detokenize: ports of edge_rt/tokenizer/tokenizer.py, spm.py, bpe.py, decode.py and
// pretokenize.py's GPT-2 splitter (each a port of llama.cpp's), step for step, so the ids are the same.
// Text is handled as UTF-8 bytes where that gives the same answer as code points (special-token search,
// C-space stripping) and as code points where it does not (merging symbols, pre-tokenizing).
#include <queue>
#include <tuple>

#include "edge_rt/error.h"
#include "edge_rt/tokenizer.h"
#include "unicode_flags.h"
#include "utf8.h"

namespace edge_rt {

namespace {

const char* const kEscapedSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's stand-in for a space

bool is_c_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// Code points of valid UTF-8 (sanitize_utf8's output), with each one's byte offset; offsets has one more
// entry, the total length.
void decode_utf8(const std::string& s, std::vector<uint32_t>& cps, std::vector<size_t>& offsets) {
    cps.clear();
    offsets.clear();
    for (size_t i = 0; i < s.size();) {
        const uint8_t b = (uint8_t)s[i];
        const size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : 4;
        uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
        for (size_t k = 1; k < len; ++k) cp = (cp << 6) | ((uint8_t)s[i + k] & 0x3F);
        cps.push_back(cp);
        offsets.push_back(i);
        i += len;
    }
    offsets.push_back(s.size());
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// GPT-2's reversible byte <-> printable code point table (bpe.py _bytes_to_unicode).
struct ByteTable {
    uint32_t enc[256];
    std::unordered_map<uint32_t, uint8_t> dec;
    ByteTable() {
        bool keep[256] = {};
        for (int b = 0x21; b < 0x7F; ++b) keep[b] = true;
        for (int b = 0xA1; b < 0xAD; ++b) keep[b] = true;
        for (int b = 0xAE; b < 0x100; ++b) keep[b] = true;
        uint32_t extra = 0;
        for (int b = 0; b < 256; ++b) enc[b] = keep[b] ? (uint32_t)b : 256 + extra++;
        for (int b = 0; b < 256; ++b) dec[enc[b]] = (uint8_t)b;
    }
};

const ByteTable& byte_table() {
    static const ByteTable table;
    return table;
}

using Segments = std::vector<std::pair<size_t, size_t>>;  // [start, end) code point ranges

// One segment's code points and flags, with a 0 flag after its end (what llama.cpp's splitters read past the
// end of a segment), so the splitters below index them without bounds checks (positions relative to ini).
struct Segment {
    std::vector<uint32_t> t;
    std::vector<uint32_t> f;
    Segment(const std::vector<uint32_t>& cps, const std::vector<uint32_t>& flags, size_t ini, size_t end)
        : t(cps.begin() + (ptrdiff_t)ini, cps.begin() + (ptrdiff_t)end),
          f(flags.begin() + (ptrdiff_t)ini, flags.begin() + (ptrdiff_t)end) {
        f.push_back(0);
    }
};

// pretokenize.py _split_gpt2 (llama.cpp unicode_regex_split_custom_gpt2).
Segments split_gpt2(const std::vector<uint32_t>& cps, const std::vector<uint32_t>& flags, const Segments& in) {
    const uint32_t wln = kCptWhitespace | kCptLetter | kCptNumber;
    Segments out;
    for (const auto& [ini, end] : in) {
        const Segment seg(cps, flags, ini, end);
        const std::vector<uint32_t>& t = seg.t;
        const std::vector<uint32_t>& fl = seg.f;
        const size_t n = end - ini;
        size_t pos = 0;
        auto add = [&out, ini = ini](size_t a, size_t b) { out.emplace_back(ini + a, ini + b); };
        while (pos < n) {
            const uint32_t c = t[pos];
            if (c == '\'' && pos + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d
                const uint32_t c1 = t[pos + 1];
                if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                    add(pos, pos + 2);
                    pos += 2;
                    continue;
                }
                if (pos + 2 < n) {
                    const uint32_t c2 = t[pos + 2];
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                        add(pos, pos + 3);
                        pos += 3;
                        continue;
                    }
                }
            }
            const size_t start = pos;
            const uint32_t f2 = c == ' ' ? fl[pos + 1] : fl[pos];
            if (f2 & kCptLetter) {  // ' ?\p{L}+'
                pos += c == ' ';
                while (fl[pos] & kCptLetter) ++pos;
            } else if (f2 & kCptNumber) {  // ' ?\p{N}+'
                pos += c == ' ';
                while (fl[pos] & kCptNumber) ++pos;
            } else if (f2 && !(f2 & wln)) {  // ' ?[^\s\p{L}\p{N}]+'
                pos += c == ' ';
                while (fl[pos] && !(fl[pos] & wln)) ++pos;
            } else {
                size_t nws = 0;
                while (fl[pos + nws] & kCptWhitespace) ++nws;
                if (nws > 1 && pos + nws < n) {  // \s+(?!\S)
                    pos += nws - 1;
                } else if (nws > 0) {  // \s+
                    pos += nws;
                } else {  // no match: one character
                    pos += 1;
                }
            }
            add(start, pos);
        }
    }
    return out;
}

// The regex \p{N} through llama.cpp's unicode_regex_split: every number code point a word of its own, and the
// stretches between them words too.
Segments split_digits(const std::vector<uint32_t>& flags, const Segments& in) {
    Segments out;
    for (const auto& [ini, end] : in) {
        size_t last = ini;
        for (size_t i = ini; i < end; ++i) {
            if (!(flags[i] & kCptNumber)) continue;
            if (i > last) out.emplace_back(last, i);
            out.emplace_back(i, i + 1);
            last = i + 1;
        }
        if (last < end) out.emplace_back(last, end);
    }
    return out;
}

bool ascii_lower_is(uint32_t c, char lower) { return c == (uint32_t)lower || c == (uint32_t)(lower - 'a' + 'A'); }

// End of a case-insensitive 's 't 're 've 'm 'll 'd at pos (t[pos] is '), else 0 (pretokenize.py
// _contraction_end: llama.cpp's unicode_tolower maps no other character to these ASCII letters).
size_t contraction_end(const std::vector<uint32_t>& t, size_t pos, size_t n) {
    if (pos + 1 < n) {
        const uint32_t c1 = t[pos + 1];
        if (ascii_lower_is(c1, 's') || ascii_lower_is(c1, 't') || ascii_lower_is(c1, 'm') || ascii_lower_is(c1, 'd'))
            return pos + 2;
        if (pos + 2 < n) {
            const uint32_t c2 = t[pos + 2];
            if ((ascii_lower_is(c1, 'r') && ascii_lower_is(c2, 'e')) ||
                (ascii_lower_is(c1, 'v') && ascii_lower_is(c2, 'e')) ||
                (ascii_lower_is(c1, 'l') && ascii_lower_is(c2, 'l')))
                return pos + 3;
        }
    }
    return 0;
}

// End of the llama3-family whitespace word at pos: \s*[\r\n]+ | \s+(?!\S) | \s+ | one char.
size_t whitespace_end(const std::vector<uint32_t>& t, const std::vector<uint32_t>& fl, size_t pos, size_t n) {
    size_t nws = 0, last_rn = 0;
    while (fl[pos + nws] & kCptWhitespace) {
        if (t[pos + nws] == '\r' || t[pos + nws] == '\n') last_rn = pos + nws + 1;
        ++nws;
    }
    if (last_rn > 0) return last_rn;
    if (nws > 1 && pos + nws < n) return pos + nws - 1;
    if (nws > 0) return pos + nws;
    return pos + 1;
}

// pretokenize.py _split_llama3 (llama.cpp unicode_regex_split_custom_llama3, digits in groups of `group`);
// group 1 is unicode_regex_split_custom_qwen2, and with marks also _qwen35 (letter runs take in \p{M}).
Segments split_llama3(const std::vector<uint32_t>& cps, const std::vector<uint32_t>& flags, const Segments& in,
                      size_t group, bool marks) {
    const uint32_t letter = kCptLetter | (marks ? kCptMark : 0);
    const uint32_t not_punct = kCptWhitespace | kCptLetter | kCptNumber | (marks ? kCptMark : 0);
    Segments out;
    for (const auto& [ini, end] : in) {
        const Segment seg(cps, flags, ini, end);
        const std::vector<uint32_t>& t = seg.t;
        const std::vector<uint32_t>& fl = seg.f;
        const size_t n = end - ini;
        auto add = [&out, ini = ini](size_t a, size_t b) { out.emplace_back(ini + a, ini + b); };
        size_t pos = 0;
        while (pos < n) {
            const uint32_t c = t[pos];
            const uint32_t f = fl[pos];
            if (c == '\'') {  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
                const size_t e = contraction_end(t, pos, n);
                if (e) {
                    add(pos, e);
                    pos = e;
                    continue;
                }
            }
            size_t start = pos;
            // [^\r\n\p{L}\p{N}]?\p{L}+  (qwen35: [\p{L}\p{M}]+)
            if (((f & letter) || (fl[pos + 1] & letter)) && !(c == '\r' || c == '\n' || (f & kCptNumber))) {
                ++pos;
                while (fl[pos] & letter) ++pos;
                add(start, pos);
                continue;
            }
            if (f & kCptNumber) {  // \p{N}{1,3}  (qwen2, qwen35: \p{N})
                while (fl[pos] & kCptNumber) {
                    ++pos;
                    if (pos - start >= group) {
                        add(start, pos);
                        start = pos;
                    }
                }
                if (pos > start) add(start, pos);
                continue;
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            const uint32_t f2 = c == ' ' ? fl[pos + 1] : f;
            if (f && !(f2 & not_punct)) {
                pos += c == ' ';
                while (fl[pos] && !(fl[pos] & not_punct)) ++pos;
                while (pos < n && (t[pos] == '\r' || t[pos] == '\n')) ++pos;
            } else {
                pos = whitespace_end(t, fl, pos, n);
            }
            add(start, pos);
        }
    }
    return out;
}

// The symbols (one string per code point) of valid UTF-8 text.
std::vector<std::string> code_point_symbols(const std::string& text) {
    std::vector<uint32_t> cps;
    std::vector<size_t> off;
    decode_utf8(text, cps, off);
    std::vector<std::string> sym(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) sym[i] = text.substr(off[i], off[i + 1] - off[i]);
    return sym;
}

}  // namespace

int32_t Tokenizer::find(const std::string& text) const {
    auto it = ids_.find(text);
    return it == ids_.end() ? -1 : it->second;
}

uint32_t Tokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        fail(ErrorKind::InvalidArgument, "[tokenizer] token id " + std::to_string(id) +
                                             " is outside the vocabulary (0.." + std::to_string(n_vocab() - 1) + ")");
    }
    return (uint32_t)id;
}

int32_t Tokenizer::byte_token(uint8_t b) const {
    static const char* const kHex = "0123456789ABCDEF";
    const std::string text = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    int32_t id = find(text);
    if (id < 0 && b < 0x80) id = find(std::string(1, char(b)));
    if (id < 0) {
        fail(ErrorKind::ModelFormat,
             "[tokenizer] key 'tokenizer.ggml.tokens': no byte token " + text + " for byte fallback");
    }
    return id;
}

std::vector<Tokenizer::Fragment> Tokenizer::partition(const std::string& text, bool parse_special) const {
    std::vector<Fragment> frags;
    if (text.empty()) return frags;
    frags.push_back({text, -1});
    for (int32_t tid : special_cache_) {
        const uint32_t attr = attrs_[tid];
        if (!parse_special && (attr & (kAttrControl | kAttrUnknown))) continue;
        const std::string& tok = texts_[tid];
        std::vector<Fragment> next;
        for (Fragment& frag : frags) {
            if (frag.token >= 0 || frag.text.find(tok) == std::string::npos) {
                next.push_back(std::move(frag));
                continue;
            }
            const std::string& s = frag.text;
            size_t start = 0;
            for (size_t m = s.find(tok, start); m != std::string::npos; m = s.find(tok, start)) {
                size_t left_end = m;
                if (attr & kAttrLstrip)
                    while (left_end > start && is_c_space(s[left_end - 1])) --left_end;
                if (left_end > start) next.push_back({s.substr(start, left_end - start), -1});
                next.push_back({std::string(), tid});
                start = m + tok.size();
                if (attr & kAttrRstrip)
                    while (start < s.size() && is_c_space(s[start])) ++start;
            }
            if (start < s.size()) next.push_back({s.substr(start), -1});
        }
        frags = std::move(next);
    }
    return frags;
}

void Tokenizer::spm(const std::string& text, std::vector<int32_t>& out) const {
    std::vector<std::string> sym = code_point_symbols(text);
    const int n = (int)sym.size();
    if (n == 0) return;
    std::vector<int> nxt(n), prv(n);
    for (int i = 0; i < n; ++i) {
        nxt[i] = i + 1 < n ? i + 1 : -1;
        prv[i] = i - 1;
    }
    // (-score, left, right, size): best score first, leftmost on ties (spm.py's heap order)
    using Item = std::tuple<float, int, int, size_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
    auto push = [&](int left, int right) {
        if (left < 0 || right < 0) return;
        const int32_t tid = find(sym[left] + sym[right]);
        if (tid >= 0) heap.emplace(-scores_[tid], left, right, sym[left].size() + sym[right].size());
    };
    for (int i = 0; i + 1 < n; ++i) push(i, i + 1);
    while (!heap.empty()) {
        const auto [score, left, right, size] = heap.top();
        heap.pop();
        (void)score;
        if (sym[left].empty() || sym[right].empty() || sym[left].size() + sym[right].size() != size) continue;
        sym[left] += sym[right];
        sym[right].clear();
        const int r_next = nxt[right];
        nxt[left] = r_next;
        if (r_next >= 0) prv[r_next] = left;
        push(prv[left], left);
        push(left, r_next);
    }
    for (int i = 0; i != -1; i = nxt[i]) {
        const int32_t tid = find(sym[i]);
        if (tid >= 0) {
            out.push_back(tid);
        } else {  // byte fallback
            for (unsigned char b : sym[i]) out.push_back(byte_token(b));
        }
    }
}

Tokenizer::Words Tokenizer::pre_split(const std::vector<uint32_t>& cps) const {
    std::vector<uint32_t> flags(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) flags[i] = unicode_cpt_flags(cps[i]);
    const Segments whole = {{0, cps.size()}};
    switch (pre_split_) {
        case PreSplit::Gpt2: return split_gpt2(cps, flags, whole);
        case PreSplit::DigitsGpt2: return split_gpt2(cps, flags, split_digits(flags, whole));
        case PreSplit::Llama3: return split_llama3(cps, flags, whole, 3, false);
        case PreSplit::Qwen2: return split_llama3(cps, flags, whole, 1, false);
        case PreSplit::Qwen35: return split_llama3(cps, flags, whole, 1, true);
    }
    return whole;
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
    if (ignore_merges_) {
        const int32_t whole = find(word);
        if (whole >= 0) {
            out.push_back(whole);
            return;
        }
    }
    std::vector<std::string> sym = code_point_symbols(word);
    const int n = (int)sym.size();
    if (n > 1) {
        std::vector<int> nxt(n), prv(n);
        for (int i = 0; i < n; ++i) {
            nxt[i] = i + 1 < n ? i + 1 : -1;
            prv[i] = i - 1;
        }
        // (rank, left, right, merged): lowest rank first, leftmost on ties (bpe.py's heap order)
        using Item = std::tuple<int32_t, int, int, std::string>;
        std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
        auto push = [&](int left, int right) {
            auto it = ranks_.find(sym[left] + " " + sym[right]);
            if (it != ranks_.end()) heap.emplace(it->second, left, right, sym[left] + sym[right]);
        };
        for (int i = 0; i + 1 < n; ++i) push(i, i + 1);
        while (!heap.empty()) {
            Item top = heap.top();
            heap.pop();
            const int left = std::get<1>(top), right = std::get<2>(top);
            const std::string& merged = std::get<3>(top);
            if (sym[left].empty() || sym[right].empty() || sym[left].size() + sym[right].size() != merged.size() ||
                sym[left] + sym[right] != merged)
                continue;
            sym[left] = merged;
            sym[right].clear();
            const int r_next = nxt[right];
            nxt[left] = r_next;
            if (r_next >= 0) prv[r_next] = left;
            if (prv[left] >= 0) push(prv[left], left);
            if (r_next >= 0) push(left, r_next);
        }
    }
    for (const std::string& s : sym) {
        if (s.empty()) continue;
        const int32_t tid = find(s);
        if (tid >= 0) {
            out.push_back(tid);
            continue;
        }
        // llama.cpp looks up each byte of the symbol as a one-byte token: only ASCII can match
        for (char c : s) {
            if ((unsigned char)c < 0x80) {
                const int32_t t = find(std::string(1, c));
                if (t >= 0) out.push_back(t);
            }
        }
    }
}

std::vector<int32_t> Tokenizer::tokenize(const std::string& raw, bool add_special, bool parse_special) const {
    if (!unsupported_pre_.empty()) {
        fail(ErrorKind::UnsupportedArchitecture,
             "[tokenizer] pre-tokenizer '" + unsupported_pre_ +
                 "' is not implemented in the C tokenizer (it runs 'llama' vocabularies and 'gpt2' ones with the "
                 "'gpt-2' pre-tokenizer); tokenize with edge_rt's Python tokenizer and pass token ids");
    }
    const std::string text = sanitize_utf8(raw);
    const std::vector<Fragment> frags = partition(text, parse_special);
    std::vector<int32_t> out;
    if (add_special && add_bos_) out.push_back(bos_);
    if (model_ == "llama") {
        bool prev_special = true;
        for (const Fragment& f : frags) {
            if (f.token >= 0) {
                out.push_back(f.token);
                prev_special = true;
                continue;
            }
            std::string escaped;
            if (add_space_prefix_ && prev_special) escaped = kEscapedSpace;
            for (char c : f.text) {
                if (c == ' ')
                    escaped += kEscapedSpace;
                else
                    escaped += c;
            }
            spm(escaped, out);
            prev_special = false;
        }
    } else {
        const ByteTable& bt = byte_table();
        std::vector<uint32_t> cps;
        std::vector<size_t> off;
        for (const Fragment& f : frags) {
            if (f.token >= 0) {
                out.push_back(f.token);
                continue;
            }
            decode_utf8(f.text, cps, off);
            for (const auto& [s, e] : pre_split(cps)) {
                std::string encoded;
                for (size_t k = off[s]; k < off[e]; ++k) append_utf8(encoded, bt.enc[(uint8_t)f.text[k]]);
                bpe_word(encoded, out);
            }
        }
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool special) const {
    const uint32_t tid = check_id(id);
    const uint32_t attr = attrs_[tid];
    const std::string& text = texts_[tid];
    if ((attr & (kAttrUnknown | kAttrControl)) && !special) return std::string();
    if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
    if (attr & kAttrNormal) {
        std::string out;
        if (escaped_spaces_) {
            for (size_t i = 0; i < text.size();) {
                if (text.compare(i, 3, kEscapedSpace) == 0) {
                    out += ' ';
                    i += 3;
                } else {
                    out += text[i++];
                }
            }
            return out;
        }
        // llama_decode_text: GPT-2 byte characters back to bytes; others flagged as llama.cpp does
        const ByteTable& bt = byte_table();
        std::vector<uint32_t> cps;
        std::vector<size_t> off;
        decode_utf8(text, cps, off);
        for (size_t i = 0; i < cps.size(); ++i) {
            auto it = bt.dec.find(cps[i]);
            if (it != bt.dec.end()) {
                out += char(it->second);
                continue;
            }
            static const char* const kHex = "0123456789abcdef";
            out += "[UNK_BYTE_0x";
            for (size_t k = off[i]; k < off[i + 1]; ++k) {
                out += kHex[(uint8_t)text[k] >> 4];
                out += kHex[(uint8_t)text[k] & 15];
            }
            out += text + "]";
        }
        return out;
    }
    if (attr & kAttrByte) return std::string(1, char(std::stoi(text.substr(3, 2), nullptr, 16)));
    return std::string();
}

std::string Tokenizer::detokenize(const int32_t* ids, size_t n, bool special) const {
    std::string out;
    bool strip = add_space_prefix_;
    for (size_t i = 0; i < n; ++i) {
        std::string piece = token_to_piece(ids[i], special);
        if (strip && !(i == 0 && ids[i] == bos_)) {
            if (!piece.empty() && piece[0] == ' ') piece.erase(0, 1);
            strip = false;
        }
        out += piece;
    }
    return out;
}

}  // namespace edge_rt
