// GGUF v2/v3 reader: header, metadata key/values and tensor infos, parsed from a hostile file.
//
// Contract:
//  * open() reads only the header region with bounded reads (pread); it never maps the file and never
//    allocates more than the bytes left in the file could justify. Every count, string length, array
//    length, n_dims, dimension, type id, alignment and offset is validated before use, every size
//    product is overflow-checked, and each error is an Error(ModelFormat) whose message names the key
//    or tensor, e.g. "[gguf] key 'tokenizer.ggml.tokens': array length 1e12 exceeds bytes left (900)".
//    An unopenable file is Error(Io).
//  * Rules beyond the format itself: keys are unique; arrays of arrays are rejected; tensor names are
//    unique and non-empty; n_dims in 1..4; every dimension >= 1; ne[0] a multiple of the type's block
//    size; general.alignment (u32) a power of two in [1, 1 MiB] (default 32); tensor offsets aligned,
//    data ranges inside the file and not overlapping one another.
//  * Metadata is held in RAM: metadata_bytes() is what the parsed key/values and tensor infos hold
//    (objects, heap strings, widened array elements: an int64 per integer element, a double per float,
//    a std::string per string). The parser counts it as it goes and refuses, with Error(OutOfMemory)
//    naming the key, before the allocation that would take it past GgufOpenLimits::max_metadata_bytes,
//    or past kMaxMetadataExpansion times the file's size plus kMetadataSlackBytes (a backstop: by
//    construction the widening stays below 8x the encoded bytes, see gguf_reader.cpp).
//  * A GgufFile is immutable after open() and safe to read from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "edge_rt/ggml_types.h"

namespace edge_rt {

enum class GgufValueType : uint32_t {
    UINT8 = 0,
    INT8 = 1,
    UINT16 = 2,
    INT16 = 3,
    UINT32 = 4,
    INT32 = 5,
    FLOAT32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    UINT64 = 10,
    INT64 = 11,
    FLOAT64 = 12,
};

const char* gguf_value_type_name(GgufValueType t) noexcept;

// One metadata value. Scalars use exactly one of the scalar fields (by type); arrays keep their element
// type and the elements in the vector matching it (integers and bools widened into ints, floats into
// floats, strings into strings). Nested arrays are rejected at parse time.
struct GgufValue {
    GgufValueType type = GgufValueType::UINT8;
    int64_t i = 0;   // all integer types except UINT64 values above INT64_MAX, and BOOL (0/1)
    uint64_t u = 0;  // UINT64 (also filled for non-negative integers of other types)
    double f = 0.0;  // FLOAT32 / FLOAT64
    std::string s;   // STRING
    GgufValueType array_type = GgufValueType::UINT8;  // ARRAY only
    std::vector<int64_t> ints;                        // ARRAY of integer or BOOL elements
    std::vector<double> floats;                       // ARRAY of FLOAT32/FLOAT64 elements
    std::vector<std::string> strings;                 // ARRAY of STRING elements

    bool is_integer() const noexcept;      // any scalar integer type (not BOOL)
    uint64_t array_size() const noexcept;  // 0 for scalars
};

struct GgufTensorInfo {
    std::string name;
    uint32_t n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (innermost) dimension, as in ggml
    GgmlType type = GgmlType::F32;
    uint64_t offset = 0;  // absolute byte offset of the data in the file (data section + relative offset)
    uint64_t n_elements = 0;
    uint64_t n_bytes = 0;                 // exact data size: n_elements / block_elems * block_bytes
    uint64_t row_bytes() const noexcept;  // bytes of one ne[0] row
};

// Ceiling on the RAM the parsed metadata may hold, whatever the limit asked for: this many times the
// file's size, plus kMetadataSlackBytes (the containers' fixed costs).
constexpr uint64_t kMaxMetadataExpansion = 8;
constexpr uint64_t kMetadataSlackBytes = 1u << 20;

struct GgufOpenLimits {
    uint64_t max_metadata_bytes = 0;  // 0 = only the expansion ceiling above (e.g. the memory budget)
};

class GgufFile {
public:
    // Parses and validates; throws Error (ModelFormat or Io) on any problem, Error(OutOfMemory) when
    // the metadata would need more than `limits` allow (see the contract above).
    static std::shared_ptr<const GgufFile> open(const std::string& path, const GgufOpenLimits& limits = {});

    const std::string& path() const noexcept { return path_; }
    uint32_t version() const noexcept { return version_; }
    uint64_t file_size() const noexcept { return file_size_; }
    uint64_t alignment() const noexcept { return alignment_; }
    uint64_t data_offset() const noexcept { return data_offset_; }  // absolute start of the data section

    // Metadata in file order.
    const std::vector<std::pair<std::string, GgufValue>>& metadata() const noexcept { return kv_; }
    const GgufValue* find(const std::string& key) const noexcept;

    // Typed getters: throw Error(ModelFormat) naming the key if it is missing (the *_or forms return
    // the fallback instead) or holds the wrong type. Integer getters accept any integer type whose value
    // fits; float getters accept FLOAT32/FLOAT64 and integers.
    int64_t get_int(const std::string& key) const;
    int64_t get_int_or(const std::string& key, int64_t fallback) const;
    double get_float(const std::string& key) const;
    double get_float_or(const std::string& key, double fallback) const;
    std::string get_string(const std::string& key) const;
    std::string get_string_or(const std::string& key, const std::string& fallback) const;
    bool get_bool_or(const std::string& key, bool fallback) const;
    // Array getters check the element type class and throw naming the key otherwise.
    const std::vector<std::string>& get_string_array(const std::string& key) const;
    const std::vector<int64_t>& get_int_array(const std::string& key) const;
    const std::vector<double>& get_float_array(const std::string& key) const;

    const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }
    const GgufTensorInfo* find_tensor(const std::string& name) const noexcept;

    // Bytes of RAM the metadata and tensor infos hold (see the contract; an estimate of the heap
    // blocks, never below what was allocated for the elements themselves).
    uint64_t metadata_bytes() const noexcept { return metadata_bytes_; }

private:
    GgufFile() = default;
    friend class GgufParser;
    std::string path_;
    uint32_t version_ = 0;
    uint64_t file_size_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    uint64_t metadata_bytes_ = 0;
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<GgufTensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace edge_rt
