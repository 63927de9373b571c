// GGUF v2/v3 reader. Every number read from the file is treated as hostile: counts and lengths are
// checked against the bytes left before anything is allocated or read, products are overflow-checked,
// and every error names the header field, key or tensor it concerns.
//
// File layout (little-endian):
//   header:       char magic[4] = "GGUF"; u32 version; u64 n_tensors; u64 n_kv
//   n_kv times:   string key; u32 value_type; value
//                 string = u64 length + bytes (no terminator)
//                 array  = u32 elem_type + u64 count + count elements (arrays of arrays rejected)
//   n_tensors x:  string name; u32 n_dims; u64 ne[n_dims]; u32 ggml_type; u64 offset (relative to data)
//   padding to general.alignment, then the data section.

// 64-bit off_t for pread/fstat on 32-bit targets (Raspberry Pi OS armhf): models exceed 2 GiB.
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "edge_rt/gguf_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>

#include "edge_rt/error.h"
#include "edge_rt/memory_budget.h"
#include "gguf_values.h"

namespace edge_rt {

namespace {

constexpr uint64_t kMaxKeyLen = 65535;        // keys are short dotted names; anything longer is junk
constexpr uint64_t kMaxTensorNameLen = 256;   // ggml allows 64; converted models stay well below 256
constexpr uint64_t kMaxAlignment = 1u << 20;  // 1 MiB
constexpr uint64_t kDefaultAlignment = 32;
// The key/value and tensor lists are reserved up to this many elements from a count read from the file;
// beyond it they grow only as elements are actually parsed, so a lying count cannot make us allocate up
// front. (Arrays are reserved whole, but only after their size has been charged to the metadata limit.)
constexpr uint64_t kMaxReserve = 1u << 16;

// Smallest encodings, used to bound counts by the bytes left: a key/value is at least an 8-byte key
// length, a 1-byte key, a 4-byte type and a 1-byte value; a tensor info at least an 8-byte name length,
// a 1-byte name, n_dims, one dimension, type and offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

// Metadata RAM: a std::string keeps up to 15 bytes inline (libstdc++) and allocates length + 1 beyond,
// which malloc rounds up to a 16-byte chunk with an 8-byte header (glibc; measured: the estimate is
// within 10% of the RSS growth on llama.cpp's vocabularies). An unordered_map node holds the key
// string, the index and a next pointer (plus its bucket slot).
uint64_t string_heap_bytes(uint64_t len) { return len > 15 ? (len + 1 + 8 + 15) / 16 * 16 : 0; }
constexpr uint64_t kIndexNodeBytes = sizeof(std::string) + 3 * sizeof(void*);

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

// Encoded size of one scalar element; STRING gives its minimum (the length prefix), ARRAY 0.
uint64_t min_value_bytes(GgufValueType t) {
    switch (t) {
        case GgufValueType::UINT8:
        case GgufValueType::INT8:
        case GgufValueType::BOOL: return 1;
        case GgufValueType::UINT16:
        case GgufValueType::INT16: return 2;
        case GgufValueType::UINT32:
        case GgufValueType::INT32:
        case GgufValueType::FLOAT32: return 4;
        case GgufValueType::UINT64:
        case GgufValueType::INT64:
        case GgufValueType::FLOAT64:
        case GgufValueType::STRING: return 8;
        case GgufValueType::ARRAY: return 4 + 8;
    }
    return 1;
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

}  // namespace

// Reads the header region through a bounded, buffered cursor: pread in chunks, never past file_size.
class GgufParser {
public:
    GgufParser(GgufFile& out, int fd, uint64_t file_size, uint64_t max_metadata_bytes)
        : out_(out), fd_(fd), size_(file_size) {
        uint64_t ceiling = file_size > (UINT64_MAX - kMetadataSlackBytes) / kMaxMetadataExpansion
                               ? UINT64_MAX
                               : file_size * kMaxMetadataExpansion + kMetadataSlackBytes;
        limit_ = max_metadata_bytes ? std::min(max_metadata_bytes, ceiling) : ceiling;
    }

    void parse() {
        parse_header();
        parse_kv();
        parse_tensor_infos();
        if (over_limit_) refuse_metadata();
        place_data();
    }

private:
    GgufFile& out_;
    int fd_;
    uint64_t size_;
    uint64_t pos_ = 0;
    // Read-ahead buffer covering [buf_start_, buf_start_ + buf_len_).
    std::vector<char> buf_;
    uint64_t buf_start_ = 0;
    size_t buf_len_ = 0;
    // What is being parsed, for messages: "header", "key 'x'", "tensor #3", "tensor 'x'".
    std::string subject_ = "header";
    uint64_t n_tensors_ = 0;
    uint64_t n_kv_ = 0;
    // Metadata RAM accounting (the contract in gguf_reader.h). Once the count passes limit_, values are
    // no longer stored, only measured and skipped, so that the error can state the whole need.
    uint64_t limit_ = 0;
    bool over_limit_ = false;
    std::string first_over_;  // the subject whose allocation crossed the limit

    uint64_t left() const { return size_ - pos_; }

    // Counts `bytes` of metadata RAM about to be allocated; true when they may be (under the limit).
    bool charge(uint64_t bytes) {
        uint64_t& used = out_.metadata_bytes_;
        used = bytes > UINT64_MAX - used ? UINT64_MAX : used + bytes;
        if (!over_limit_ && used > limit_) {
            over_limit_ = true;
            first_over_ = subject_;
        }
        return !over_limit_;
    }

    [[noreturn]] void refuse_metadata() const {
        fail(ErrorKind::OutOfMemory,
             "[gguf] '" + out_.path_ + "': the metadata needs " + std::to_string(out_.metadata_bytes_) + " bytes (" +
                 format_bytes(out_.metadata_bytes_) + ") of RAM, more than the " + std::to_string(limit_) + " bytes (" +
                 format_bytes(limit_) + ") allowed (the memory budget, at most " +
                 std::to_string(kMaxMetadataExpansion) + "x the file size + " + format_bytes(kMetadataSlackBytes) +
                 "); the limit was crossed at " + first_over_);
    }

    void skip(uint64_t n, const char* what) {
        if (n > left()) {
            bad(std::string("file truncated while reading ") + what + " at offset " + std::to_string(pos_) +
                " (needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left)");
        }
        pos_ += n;
    }

    [[noreturn]] void bad(const std::string& msg) const {
        fail(ErrorKind::ModelFormat, "[gguf] " + subject_ + ": " + msg);
    }

    void fill(uint64_t at) {
        constexpr size_t kChunk = 1 << 20;
        if (buf_.size() < kChunk) buf_.resize(kChunk);
        size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, size_ - at));
        size_t got = 0;
        while (got < want) {
            ssize_t r = ::pread(fd_, buf_.data() + got, want - got, static_cast<off_t>(at + got));
            if (r < 0) {
                if (errno == EINTR) continue;
                int e = errno;
                fail(ErrorKind::Io, "[gguf] read of '" + out_.path_ + "' at offset " + std::to_string(at + got) +
                                        " failed: " + std::strerror(e));
            }
            if (r == 0) {
                // The file shrank under us after fstat.
                fail(ErrorKind::Io, "[gguf] '" + out_.path_ + "' ended at offset " + std::to_string(at + got) +
                                        " while " + std::to_string(size_) + " bytes were expected (file changed?)");
            }
            got += static_cast<size_t>(r);
        }
        buf_start_ = at;
        buf_len_ = want;
    }

    // Copies n bytes at the cursor into dst; truncation is a ModelFormat error naming what was read.
    void read(void* dst, uint64_t n, const char* what) {
        if (n > left()) {
            bad(std::string("file truncated while reading ") + what + " at offset " + std::to_string(pos_) +
                " (needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left in a file of " +
                std::to_string(size_) + " bytes)");
        }
        char* d = static_cast<char*>(dst);
        while (n > 0) {
            if (pos_ < buf_start_ || pos_ >= buf_start_ + buf_len_) fill(pos_);
            size_t off = static_cast<size_t>(pos_ - buf_start_);
            size_t take = static_cast<size_t>(std::min<uint64_t>(n, buf_len_ - off));
            std::memcpy(d, buf_.data() + off, take);
            d += take;
            pos_ += take;
            n -= take;
        }
    }

    template <typename T>
    T read_pod(const char* what) {
        T v;
        read(&v, sizeof(T), what);
        return v;
    }

    // A GGUF string: u64 length then bytes. max_len caps it below the bytes left. A value string past
    // the metadata limit is skipped (returned empty); names (`name`: keys, tensor names) are always kept.
    std::string read_string(const char* what, uint64_t max_len = std::numeric_limits<uint64_t>::max(),
                            bool name = false) {
        std::string len_what = std::string(what) + " length";
        uint64_t len = read_pod<uint64_t>(len_what.c_str());
        if (len > left()) {
            bad(std::string(what) + " length " + std::to_string(len) + " exceeds the bytes left in the file (" +
                std::to_string(left()) + ")");
        }
        if (len > max_len) {
            bad(std::string(what) + " length " + std::to_string(len) + " exceeds the limit of " +
                std::to_string(max_len) + " bytes");
        }
        if (len > static_cast<uint64_t>(std::numeric_limits<size_t>::max() / 2)) {
            bad(std::string(what) + " length " + std::to_string(len) + " exceeds this platform's address space");
        }
        if (!charge(string_heap_bytes(len)) && !name) {
            skip(len, what);
            return std::string();
        }
        std::string s(static_cast<size_t>(len), '\0');
        read(&s[0], len, what);
        return s;
    }

    void parse_header() {
        subject_ = "header";
        if (size_ == 0) bad("file is empty (0 bytes); expected the GGUF magic");
        char magic[4];
        read(magic, 4, "magic");
        if (std::memcmp(magic, "GGUF", 4) != 0) {
            bad("bad magic '" + printable(magic, 4) + "' (expected 'GGUF'); not a GGUF file");
        }
        uint32_t version = read_pod<uint32_t>("version");
        if (version != 2 && version != 3) {
            uint32_t swapped = __builtin_bswap32(version);
            std::string hint;
            if (swapped == 2 || swapped == 3)
                hint = "; the file appears to be big-endian, which is not supported";
            else if (version == 1)
                hint = "; GGUF v1 is obsolete, re-convert the model";
            bad("unsupported version " + std::to_string(version) + " (edge_rt reads GGUF v2 and v3" + hint + ")");
        }
        out_.version_ = version;
        n_tensors_ = read_pod<uint64_t>("tensor count");
        n_kv_ = read_pod<uint64_t>("metadata key/value count");
        // Each count alone must fit in the bytes left; the tensor bound is checked again once the
        // metadata has been consumed.
        if (n_kv_ > left() / kMinKvBytes) {
            bad("metadata key/value count " + std::to_string(n_kv_) + " cannot fit in the " + std::to_string(left()) +
                " bytes left (each needs at least " + std::to_string(kMinKvBytes) + ")");
        }
        if (n_tensors_ > left() / kMinTensorInfoBytes) {
            bad("tensor count " + std::to_string(n_tensors_) + " cannot fit in the " + std::to_string(left()) +
                " bytes left (each tensor info needs at least " + std::to_string(kMinTensorInfoBytes) + ")");
        }
    }

    void read_scalar(GgufValueType t, GgufValue& v, const char* what) {
        switch (t) {
            case GgufValueType::UINT8: v.i = read_pod<uint8_t>(what); break;
            case GgufValueType::INT8: v.i = read_pod<int8_t>(what); break;
            case GgufValueType::UINT16: v.i = read_pod<uint16_t>(what); break;
            case GgufValueType::INT16: v.i = read_pod<int16_t>(what); break;
            case GgufValueType::UINT32: v.i = read_pod<uint32_t>(what); break;
            case GgufValueType::INT32: v.i = read_pod<int32_t>(what); break;
            case GgufValueType::INT64: v.i = read_pod<int64_t>(what); break;
            case GgufValueType::UINT64: {
                v.u = read_pod<uint64_t>(what);
                v.i = v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(v.u) : 0;
                return;
            }
            case GgufValueType::FLOAT32: v.f = read_pod<float>(what); return;
            case GgufValueType::FLOAT64: v.f = read_pod<double>(what); return;
            case GgufValueType::BOOL: {
                uint8_t b = read_pod<uint8_t>(what);
                if (b > 1) bad("bool value " + std::to_string(b) + " is neither 0 nor 1");
                v.i = b;
                v.u = b;
                return;
            }
            case GgufValueType::STRING: v.s = read_string(what); return;
            case GgufValueType::ARRAY: bad("internal: array passed to read_scalar");
        }
        if (v.i >= 0) v.u = static_cast<uint64_t>(v.i);
    }

    void read_array(GgufValue& v) {
        uint32_t et = read_pod<uint32_t>("array element type");
        if (!is_known_value_type(et)) bad("unknown array element type " + std::to_string(et));
        v.array_type = static_cast<GgufValueType>(et);
        if (v.array_type == GgufValueType::ARRAY) bad("nested arrays (ARRAY of ARRAY) are not supported");
        uint64_t count = read_pod<uint64_t>("array length");
        uint64_t elem_min = min_value_bytes(v.array_type);
        if (count > left() / elem_min) {
            bad("array length " + std::to_string(count) + " of " + gguf_value_type_name(v.array_type) +
                " exceeds the bytes left in the file (" + std::to_string(left()) + ")");
        }
        // Every element's slot is counted before any is allocated (count <= left() / elem_min, so the
        // product cannot overflow); a string's heap block before that string is. Once counted and within
        // the limit, the whole array is reserved at once: growing it by doubling would leave freed
        // buffers behind in the heap (measured: +45% RSS on a one-million-token vocabulary).
        const uint64_t slot = v.array_type == GgufValueType::STRING ? sizeof(std::string)
                              : is_float_type(v.array_type)         ? sizeof(double)
                                                                    : sizeof(int64_t);
        const size_t reserve = charge(count * slot) ? static_cast<size_t>(count) : 0;
        if (v.array_type == GgufValueType::STRING) {
            v.strings.reserve(reserve);
            for (uint64_t k = 0; k < count; ++k) {
                if (left() < 8) {
                    bad("file truncated while reading array element " + std::to_string(k) + " of " +
                        std::to_string(count) + " at offset " + std::to_string(pos_));
                }
                uint64_t len;
                read(&len, 8, "array string length");
                if (len > left()) {
                    bad("array element " + std::to_string(k) + ": string length " + std::to_string(len) +
                        " exceeds the bytes left in the file (" + std::to_string(left()) + ")");
                }
                if (!charge(string_heap_bytes(len))) {
                    skip(len, "array string");
                    continue;
                }
                v.strings.emplace_back(static_cast<size_t>(len), '\0');
                read(&v.strings.back()[0], len, "array string");
            }
            return;
        }
        if (over_limit_) {
            skip(count * min_value_bytes(v.array_type), "array elements");
            return;
        }
        // Numeric arrays: count * elem_min <= left() was checked above, so no read below can run short.
        GgufValue tmp;
        if (is_float_type(v.array_type)) {
            v.floats.reserve(reserve);
            for (uint64_t k = 0; k < count; ++k) {
                read_scalar(v.array_type, tmp, "array element");
                v.floats.push_back(tmp.f);
            }
        } else {
            v.ints.reserve(reserve);
            for (uint64_t k = 0; k < count; ++k) {
                read_scalar(v.array_type, tmp, "array element");
                // UINT64 elements are kept as their bit pattern (consumers reinterpret via array_type).
                v.ints.push_back(v.array_type == GgufValueType::UINT64 ? static_cast<int64_t>(tmp.u) : tmp.i);
            }
        }
    }

    void parse_kv() {
        out_.kv_.reserve(static_cast<size_t>(std::min(n_kv_, kMaxReserve)));
        for (uint64_t k = 0; k < n_kv_; ++k) {
            subject_ = "key #" + std::to_string(k);
            std::string key = read_string("key name", kMaxKeyLen, true);
            if (key.empty()) bad("empty key name");
            subject_ = "key " + quoted(key);
            auto dup = out_.kv_index_.find(key);
            if (dup != out_.kv_index_.end()) {
                bad("duplicate key (first defined as key #" + std::to_string(dup->second) + ")");
            }
            uint32_t t = read_pod<uint32_t>("value type");
            if (!is_known_value_type(t)) bad("unknown value type " + std::to_string(t));
            // The entry, its index node (a second copy of the key) and the key's heap block.
            charge(sizeof(std::pair<std::string, GgufValue>) + kIndexNodeBytes + 2 * string_heap_bytes(key.size()));
            GgufValue v;
            v.type = static_cast<GgufValueType>(t);
            if (v.type == GgufValueType::ARRAY) {
                read_array(v);
            } else {
                read_scalar(v.type, v, "value");
            }
            if (over_limit_) continue;  // measured only: the load is refused after the tensor infos
            out_.kv_index_.emplace(key, out_.kv_.size());
            out_.kv_.emplace_back(std::move(key), std::move(v));
        }

        out_.alignment_ = kDefaultAlignment;
        if (const GgufValue* a = out_.find("general.alignment")) {
            subject_ = "key 'general.alignment'";
            if (a->type != GgufValueType::UINT32) {
                bad("alignment must be a UINT32, found " + full_type_name(*a));
            }
            uint64_t al = a->u;
            // The GGUF spec asks for a multiple of 8: smaller alignments let F32 data sit at addresses
            // that float loads may not use (undefined behaviour; a fault on strict-alignment CPUs).
            if (al < 8 || al > kMaxAlignment || (al & (al - 1)) != 0) {
                bad("alignment " + std::to_string(al) + " is not a power of two in [8, " +
                    std::to_string(kMaxAlignment) + "]");
            }
            out_.alignment_ = al;
        }
    }

    void parse_tensor_infos() {
        subject_ = "header";
        if (n_tensors_ > left() / kMinTensorInfoBytes) {
            bad("tensor count " + std::to_string(n_tensors_) + " cannot fit in the " + std::to_string(left()) +
                " bytes left after the metadata (each tensor info needs at least " +
                std::to_string(kMinTensorInfoBytes) + ")");
        }
        out_.tensors_.reserve(static_cast<size_t>(std::min(n_tensors_, kMaxReserve)));
        for (uint64_t k = 0; k < n_tensors_; ++k) {
            subject_ = "tensor #" + std::to_string(k);
            GgufTensorInfo ti;
            ti.name = read_string("tensor name", kMaxTensorNameLen, true);
            if (ti.name.empty()) bad("empty tensor name");
            subject_ = "tensor " + quoted(ti.name);
            auto dup = out_.tensor_index_.find(ti.name);
            if (dup != out_.tensor_index_.end()) {
                bad("duplicate tensor name (also tensor #" + std::to_string(dup->second) + ")");
            }
            ti.n_dims = read_pod<uint32_t>("n_dims");
            if (ti.n_dims < 1 || ti.n_dims > 4) bad("n_dims " + std::to_string(ti.n_dims) + " outside 1..4");
            int64_t n_elements = 1;
            for (uint32_t d = 0; d < ti.n_dims; ++d) {
                uint64_t ne = read_pod<uint64_t>("dimension");
                if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                    bad("dimension ne[" + std::to_string(d) + "] = " + std::to_string(static_cast<int64_t>(ne)) +
                        " is not >= 1");
                }
                ti.ne[d] = static_cast<int64_t>(ne);
                if (__builtin_mul_overflow(n_elements, ti.ne[d], &n_elements)) {
                    bad("element count overflows: product of dimensions up to ne[" + std::to_string(d) +
                        "] exceeds 2^63");
                }
            }
            uint32_t type_id = read_pod<uint32_t>("type");
            const TypeTraits* tt = type_traits(type_id);
            if (!tt) bad("unknown ggml type id " + std::to_string(type_id));
            ti.type = static_cast<GgmlType>(type_id);
            if (ti.ne[0] % tt->block_elems != 0) {
                bad("ne[0] = " + std::to_string(ti.ne[0]) + " is not a multiple of the " + tt->name + " block size " +
                    std::to_string(tt->block_elems));
            }
            ti.n_elements = static_cast<uint64_t>(n_elements);
            uint64_t n_bytes;
            if (__builtin_mul_overflow(ti.n_elements / tt->block_elems, static_cast<uint64_t>(tt->block_bytes),
                                       &n_bytes)) {
                bad("data size overflows 2^64 bytes");
            }
            ti.n_bytes = n_bytes;
            uint64_t rel = read_pod<uint64_t>("offset");
            charge(sizeof(GgufTensorInfo) + kIndexNodeBytes + 2 * string_heap_bytes(ti.name.size()));
            if (over_limit_) continue;  // the alignment key may not have been kept: measure only
            if (rel % out_.alignment_ != 0) {
                bad("offset " + std::to_string(rel) + " is not a multiple of the alignment " +
                    std::to_string(out_.alignment_));
            }
            ti.offset = rel;  // relative until place_data() knows where the data section starts
            out_.tensor_index_.emplace(ti.name, out_.tensors_.size());
            out_.tensors_.push_back(std::move(ti));
        }
    }

    void place_data() {
        uint64_t al = out_.alignment_;
        // pos_ <= size_ and al <= 1 MiB, so this cannot overflow.
        out_.data_offset_ = (pos_ + al - 1) / al * al;
        for (GgufTensorInfo& ti : out_.tensors_) {
            subject_ = "tensor " + quoted(ti.name);
            uint64_t abs, end;
            if (__builtin_add_overflow(out_.data_offset_, ti.offset, &abs) ||
                __builtin_add_overflow(abs, ti.n_bytes, &end) || end > size_) {
                bad("data range [" + std::to_string(out_.data_offset_) + " + " + std::to_string(ti.offset) + ", +" +
                    std::to_string(ti.n_bytes) + " bytes) lies past end of file (" + std::to_string(size_) + " bytes)");
            }
            ti.offset = abs;
        }
        std::vector<size_t> order(out_.tensors_.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::sort(order.begin(), order.end(),
                  [&](size_t a, size_t b) { return out_.tensors_[a].offset < out_.tensors_[b].offset; });
        for (size_t k = 1; k < order.size(); ++k) {
            const GgufTensorInfo& prev = out_.tensors_[order[k - 1]];
            const GgufTensorInfo& cur = out_.tensors_[order[k]];
            if (prev.offset + prev.n_bytes > cur.offset) {
                subject_ = "tensor " + quoted(cur.name);
                bad("data range [" + std::to_string(cur.offset) + ", " + std::to_string(cur.offset + cur.n_bytes) +
                    ") overlaps tensor " + quoted(prev.name) + " at [" + std::to_string(prev.offset) + ", " +
                    std::to_string(prev.offset + prev.n_bytes) + ")");
            }
        }
    }
};

uint64_t GgufTensorInfo::row_bytes() const noexcept {
    const TypeTraits* tt = type_traits(static_cast<uint32_t>(type));
    if (!tt) return 0;
    return static_cast<uint64_t>(ne[0] / tt->block_elems) * static_cast<uint64_t>(tt->block_bytes);
}

std::shared_ptr<const GgufFile> GgufFile::open(const std::string& path, const GgufOpenLimits& limits) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fail(ErrorKind::Io, "[gguf] cannot open '" + path + "': " + std::strerror(e));
    }
    Fd guard(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        fail(ErrorKind::Io, "[gguf] cannot stat '" + path + "': " + std::strerror(e));
    }
    if (S_ISDIR(st.st_mode)) fail(ErrorKind::Io, "[gguf] cannot read '" + path + "': " + std::strerror(EISDIR));
    if (!S_ISREG(st.st_mode)) fail(ErrorKind::Io, "[gguf] cannot read '" + path + "': not a regular file");

    std::shared_ptr<GgufFile> f(new GgufFile());
    f->path_ = path;
    f->file_size_ = static_cast<uint64_t>(st.st_size);
    GgufParser(*f, fd, f->file_size_, limits.max_metadata_bytes).parse();
    return f;
}

}  // namespace edge_rt
