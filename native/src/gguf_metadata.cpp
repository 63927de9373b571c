// Typed access to a parsed GGUF file's metadata (GgufFile::get_*), value-type names and the value
// helpers the parser shares (gguf_values.h). Every mismatch is Error(ModelFormat) naming the key.
#include <limits>
#include <string>

#include "edge_rt/error.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/ggml_types.h"
#include "gguf_values.h"

namespace edge_rt {

bool is_integer_type(GgufValueType t) {
    switch (t) {
        case GgufValueType::UINT8:
        case GgufValueType::INT8:
        case GgufValueType::UINT16:
        case GgufValueType::INT16:
        case GgufValueType::UINT32:
        case GgufValueType::INT32:
        case GgufValueType::UINT64:
        case GgufValueType::INT64: return true;
        default: return false;
    }
}

bool is_float_type(GgufValueType t) { return t == GgufValueType::FLOAT32 || t == GgufValueType::FLOAT64; }

std::string full_type_name(const GgufValue& v) {
    if (v.type != GgufValueType::ARRAY) return gguf_value_type_name(v.type);
    return std::string("ARRAY[") + gguf_value_type_name(v.array_type) + "]";
}

std::string printable(const char* p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = static_cast<unsigned char>(p[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string quoted(const std::string& s) { return "'" + printable(s.data(), s.size()) + "'"; }

const char* gguf_value_type_name(GgufValueType t) noexcept {
    switch (t) {
        case GgufValueType::UINT8: return "UINT8";
        case GgufValueType::INT8: return "INT8";
        case GgufValueType::UINT16: return "UINT16";
        case GgufValueType::INT16: return "INT16";
        case GgufValueType::UINT32: return "UINT32";
        case GgufValueType::INT32: return "INT32";
        case GgufValueType::FLOAT32: return "FLOAT32";
        case GgufValueType::BOOL: return "BOOL";
        case GgufValueType::STRING: return "STRING";
        case GgufValueType::ARRAY: return "ARRAY";
        case GgufValueType::UINT64: return "UINT64";
        case GgufValueType::INT64: return "INT64";
        case GgufValueType::FLOAT64: return "FLOAT64";
    }
    return "UNKNOWN";
}

bool GgufValue::is_integer() const noexcept { return is_integer_type(type); }

uint64_t GgufValue::array_size() const noexcept {
    if (type != GgufValueType::ARRAY) return 0;
    if (array_type == GgufValueType::STRING) return strings.size();
    if (is_float_type(array_type)) return floats.size();
    return ints.size();
}

const GgufValue* GgufFile::find(const std::string& key) const noexcept {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const noexcept {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

[[noreturn]] void missing_key(const std::string& key) {
    fail(ErrorKind::ModelFormat, "[gguf] key " + quoted(key) + ": required key is missing");
}

[[noreturn]] void wrong_type(const std::string& key, const char* expected, const GgufValue& v) {
    fail(ErrorKind::ModelFormat,
         "[gguf] key " + quoted(key) + ": expected " + expected + ", found " + full_type_name(v));
}

int64_t as_int(const std::string& key, const GgufValue& v) {
    if (!v.is_integer()) wrong_type(key, "an integer", v);
    if (v.type == GgufValueType::UINT64 && v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(ErrorKind::ModelFormat, "[gguf] key " + quoted(key) + ": value " + std::to_string(v.u) +
                                         " does not fit in a signed 64-bit integer");
    }
    return v.i;
}

double as_float(const std::string& key, const GgufValue& v) {
    if (is_float_type(v.type)) return v.f;
    if (v.type == GgufValueType::UINT64) return static_cast<double>(v.u);
    if (v.is_integer()) return static_cast<double>(v.i);
    wrong_type(key, "a number", v);
}

}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    return as_int(key, *v);
}

int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
    const GgufValue* v = find(key);
    return v ? as_int(key, *v) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    return as_float(key, *v);
}

double GgufFile::get_float_or(const std::string& key, double fallback) const {
    const GgufValue* v = find(key);
    return v ? as_float(key, *v) : fallback;
}

std::string GgufFile::get_string(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    if (v->type != GgufValueType::STRING) wrong_type(key, "STRING", *v);
    return v->s;
}

std::string GgufFile::get_string_or(const std::string& key, const std::string& fallback) const {
    const GgufValue* v = find(key);
    if (!v) return fallback;
    if (v->type != GgufValueType::STRING) wrong_type(key, "STRING", *v);
    return v->s;
}

bool GgufFile::get_bool_or(const std::string& key, bool fallback) const {
    const GgufValue* v = find(key);
    if (!v) return fallback;
    if (v->type != GgufValueType::BOOL) wrong_type(key, "BOOL", *v);
    return v->i != 0;
}

const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    if (v->type != GgufValueType::ARRAY || v->array_type != GgufValueType::STRING) {
        wrong_type(key, "ARRAY[STRING]", *v);
    }
    return v->strings;
}

const std::vector<int64_t>& GgufFile::get_int_array(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    if (v->type != GgufValueType::ARRAY || !(is_integer_type(v->array_type) || v->array_type == GgufValueType::BOOL)) {
        wrong_type(key, "an ARRAY of integers", *v);
    }
    return v->ints;
}

const std::vector<double>& GgufFile::get_float_array(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) missing_key(key);
    if (v->type != GgufValueType::ARRAY || !is_float_type(v->array_type)) {
        wrong_type(key, "an ARRAY of FLOAT32/FLOAT64", *v);
    }
    return v->floats;
}

}  // namespace edge_rt
