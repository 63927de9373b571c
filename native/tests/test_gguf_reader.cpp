// Unit tests of the GGUF reader and the ggml type tables: writes small valid and invalid GGUF files to
// a temporary directory and checks what open() makes of them. Plain executable for ctest: prints each
// failure and returns non-zero if any.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/ggml_types.h"
#include "edge_rt/gguf_reader.h"

using namespace edge_rt;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        ++g_checks;                                                                       \
        if (!(cond)) {                                                                    \
            ++g_failures;                                                                 \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                                 \
    } while (0)

// Little-endian byte writer for hand-made GGUF files.
struct Bytes {
    std::vector<uint8_t> b;
    template <typename T>
    Bytes& pod(T v) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof(T));
        return *this;
    }
    Bytes& u8(uint8_t v) { return pod(v); }
    Bytes& u32(uint32_t v) { return pod(v); }
    Bytes& u64(uint64_t v) { return pod(v); }
    Bytes& i32(int32_t v) { return pod(v); }
    Bytes& f32(float v) { return pod(v); }
    Bytes& str(const std::string& s) {
        u64(s.size());
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    Bytes& raw(const std::string& s) {
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    }
    Bytes& pad_to(size_t alignment) {
        while (b.size() % alignment) b.push_back(0);
        return *this;
    }
    Bytes& zeros(size_t n) {
        b.insert(b.end(), n, 0);
        return *this;
    }
    // Tensor info with up to 4 dims.
    Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name).u32(static_cast<uint32_t>(ne.size()));
        for (uint64_t d : ne) u64(d);
        return u32(type).u64(offset);
    }
};

std::string g_dir;
int g_file_counter = 0;

std::string write_file(const Bytes& bytes) {
    std::string path = g_dir + "/t" + std::to_string(g_file_counter++) + ".gguf";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
        std::perror("fopen");
        std::exit(2);
    }
    if (!bytes.b.empty()) std::fwrite(bytes.b.data(), 1, bytes.b.size(), f);
    std::fclose(f);
    return path;
}

// Expects open() to throw an Error of `kind` whose message contains every string in `needles`.
void expect_error(const char* label, const std::string& path, ErrorKind kind, std::vector<std::string> needles) {
    ++g_checks;
    try {
        GgufFile::open(path);
        ++g_failures;
        std::fprintf(stderr, "[%s] expected an error, open() succeeded\n", label);
    } catch (const Error& e) {
        bool ok = e.kind() == kind;
        for (const auto& n : needles) ok = ok && std::strstr(e.what(), n.c_str()) != nullptr;
        if (!ok) {
            ++g_failures;
            std::fprintf(stderr, "[%s] wrong error (kind %d, expected %d): %s\n", label, static_cast<int>(e.kind()),
                         static_cast<int>(kind), e.what());
        }
    } catch (const std::exception& e) {
        ++g_failures;
        std::fprintf(stderr, "[%s] unexpected exception type: %s\n", label, e.what());
    }
}

void expect_bad(const char* label, const Bytes& bytes, std::vector<std::string> needles) {
    expect_error(label, write_file(bytes), ErrorKind::ModelFormat, std::move(needles));
}

template <typename F>
void expect_throw(const char* label, F&& f, ErrorKind kind, const std::string& needle) {
    ++g_checks;
    try {
        f();
        ++g_failures;
        std::fprintf(stderr, "[%s] expected an error\n", label);
    } catch (const Error& e) {
        if (e.kind() != kind || std::strstr(e.what(), needle.c_str()) == nullptr) {
            ++g_failures;
            std::fprintf(stderr, "[%s] wrong error: %s\n", label, e.what());
        }
    }
}

// A valid v3 file: 8 metadata keys of assorted types, two tensors (F32 [8,2] and Q8_0 [64]).
Bytes valid_file(uint32_t alignment = 32) {
    Bytes b;
    b.header(2, 8);
    b.str("general.architecture").u32(8).str("llama");
    b.str("general.alignment").u32(4).u32(alignment);
    b.str("llama.block_count").u32(5).i32(-7);
    b.str("some.u64").u32(10).u64(0xFFFFFFFFFFFFFFFFull);
    b.str("some.float").u32(6).f32(1.5f);
    b.str("some.bool").u32(7).u8(1);
    b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(3).str("<s>").str("a").str("");
    b.str("tokenizer.ggml.scores").u32(9).u32(6).u64(2).f32(0.25f).f32(-1.0f);
    b.tensor("w.f32", {8, 2}, 0, 0);
    b.tensor("w.q8", {64}, 8, alignment * ((64 + alignment - 1) / alignment));
    b.pad_to(alignment);
    b.zeros(64);  // w.f32: 16 floats
    b.pad_to(alignment);
    b.zeros(68);  // w.q8: 2 blocks of 34
    return b;
}

void test_type_tables() {
    CHECK(type_traits(0u) && type_traits(0u)->block_bytes == 4);
    CHECK(type_traits(4u) == nullptr);
    CHECK(type_traits(29u) == nullptr);
    CHECK(type_traits(31u) == nullptr);
    CHECK(type_traits(1000u) == nullptr);
    CHECK(type_traits(GgmlType::Q2_K).block_bytes == 84);
    CHECK(type_traits(GgmlType::Q3_K).block_bytes == 110);
    CHECK(type_traits(GgmlType::Q4_K).block_bytes == 144);
    CHECK(type_traits(GgmlType::Q5_K).block_bytes == 176);
    CHECK(type_traits(GgmlType::Q6_K).block_bytes == 210);
    CHECK(type_traits(GgmlType::Q8_K).block_bytes == 292);
    CHECK(type_traits(GgmlType::Q4_0).block_elems == 32 && type_traits(GgmlType::Q4_0).block_bytes == 18);
    CHECK(type_traits(GgmlType::Q5_1).block_bytes == 24);
    CHECK(type_traits(GgmlType::BF16).block_bytes == 2);
    CHECK(type_traits(GgmlType::F64).block_bytes == 8);
    CHECK(std::string(type_name(GgmlType::Q6_K)) == "Q6_K");
    CHECK(std::string(type_name(GgmlType::I16)) == "I16");
    CHECK(std::string(type_name(static_cast<GgmlType>(99))) == "UNKNOWN");
    CHECK(is_compute_type(GgmlType::Q4_K) && is_compute_type(GgmlType::BF16) && is_compute_type(GgmlType::Q5_1));
    CHECK(is_compute_type(GgmlType::Q5_K) && type_traits(GgmlType::Q5_K).block_bytes == sizeof(BlockQ5_K));
    CHECK(is_compute_type(GgmlType::Q3_K) && type_traits(GgmlType::Q3_K).block_bytes == sizeof(BlockQ3_K));
    CHECK(!is_compute_type(GgmlType::Q8_1) && !is_compute_type(GgmlType::Q2_K) && !is_compute_type(GgmlType::I32));
    expect_throw("type_traits(bad enum)", [] { type_traits(static_cast<GgmlType>(5)); }, ErrorKind::Internal, "5");
}

void test_valid() {
    auto f = GgufFile::open(write_file(valid_file()));
    CHECK(f->version() == 3);
    CHECK(f->alignment() == 32);
    CHECK(f->metadata().size() == 8);
    CHECK(f->metadata()[0].first == "general.architecture");
    CHECK(f->get_string("general.architecture") == "llama");
    CHECK(f->get_int("llama.block_count") == -7);
    CHECK(f->find("llama.block_count")->is_integer());
    CHECK(f->find("some.bool")->is_integer() == false);
    CHECK(f->get_bool_or("some.bool", false) == true);
    CHECK(f->get_bool_or("absent", true) == true);
    CHECK(f->get_float("some.float") == 1.5);
    CHECK(f->get_float("llama.block_count") == -7.0);
    CHECK(f->find("some.u64")->u == 0xFFFFFFFFFFFFFFFFull);
    CHECK(f->get_int_or("absent", 42) == 42);
    CHECK(f->get_string_or("absent", "x") == "x");
    CHECK(f->get_float_or("absent", 2.5) == 2.5);
    const auto& toks = f->get_string_array("tokenizer.ggml.tokens");
    CHECK(toks.size() == 3 && toks[0] == "<s>" && toks[1] == "a" && toks[2].empty());
    CHECK(f->find("tokenizer.ggml.tokens")->array_size() == 3);
    CHECK(f->find("general.architecture")->array_size() == 0);
    const auto& scores = f->get_float_array("tokenizer.ggml.scores");
    CHECK(scores.size() == 2 && scores[0] == 0.25 && scores[1] == -1.0);

    // Header size: everything before the first pad; data section starts at the next multiple of 32.
    CHECK(f->data_offset() % 32 == 0);
    CHECK(f->tensors().size() == 2);
    const GgufTensorInfo* a = f->find_tensor("w.f32");
    const GgufTensorInfo* q = f->find_tensor("w.q8");
    CHECK(a && q && !f->find_tensor("nope"));
    if (a && q) {
        CHECK(a->offset == f->data_offset());
        CHECK(a->n_dims == 2 && a->ne[0] == 8 && a->ne[1] == 2 && a->ne[2] == 1);
        CHECK(a->n_elements == 16 && a->n_bytes == 64 && a->row_bytes() == 32);
        CHECK(q->type == GgmlType::Q8_0 && q->n_bytes == 68 && q->row_bytes() == 68);
        CHECK(q->offset == f->data_offset() + 64);
        CHECK(q->offset + q->n_bytes == f->file_size());
    }

    // Typed getters name the key and both types.
    expect_throw(
        "get_int on string", [&] { f->get_int("general.architecture"); }, ErrorKind::ModelFormat,
        "key 'general.architecture': expected an integer, found STRING");
    expect_throw("get_int on huge u64", [&] { f->get_int("some.u64"); }, ErrorKind::ModelFormat, "some.u64");
    expect_throw(
        "get_string missing", [&] { f->get_string("llama.context_length"); }, ErrorKind::ModelFormat,
        "key 'llama.context_length'");
    expect_throw(
        "get_string_array on floats", [&] { f->get_string_array("tokenizer.ggml.scores"); }, ErrorKind::ModelFormat,
        "expected ARRAY[STRING], found ARRAY[FLOAT32]");
    expect_throw(
        "get_int_array on strings", [&] { f->get_int_array("tokenizer.ggml.tokens"); }, ErrorKind::ModelFormat,
        "tokenizer.ggml.tokens");
    expect_throw("get_float on bool", [&] { f->get_float("some.bool"); }, ErrorKind::ModelFormat, "found BOOL");
    expect_throw(
        "get_bool_or on int", [&] { f->get_bool_or("llama.block_count", false); }, ErrorKind::ModelFormat,
        "expected BOOL");

    // Larger alignment moves the data section.
    auto g = GgufFile::open(write_file(valid_file(256)));
    CHECK(g->alignment() == 256 && g->data_offset() % 256 == 0);

    // Version 2, no keys, no tensors: valid and empty (vocab-only style files have no data section).
    Bytes e;
    e.header(0, 0, 2);
    auto h = GgufFile::open(write_file(e));
    CHECK(h->version() == 2 && h->metadata().empty() && h->tensors().empty() && h->alignment() == 32);
}

void test_invalid() {
    expect_error("missing file", g_dir + "/does-not-exist.gguf", ErrorKind::Io, {"does-not-exist", "No such file"});
    expect_error("directory", g_dir, ErrorKind::Io, {"directory"});
    expect_bad("empty", Bytes{}, {"header", "empty"});
    expect_bad("bad magic", Bytes{}.raw("GGML").u32(3).u64(0).u64(0), {"header", "magic"});
    expect_bad("version 1", Bytes{}.header(0, 0, 1), {"header", "version 1"});
    expect_bad("version 4", Bytes{}.header(0, 0, 4), {"version 4"});
    expect_bad("big-endian", Bytes{}.header(0, 0, 0x03000000u), {"big-endian"});
    expect_bad("huge n_kv", Bytes{}.header(0, 1ull << 60), {"header", "key/value count"});
    expect_bad("huge n_tensors", Bytes{}.header(1ull << 60, 0), {"header", "tensor count"});
    expect_bad("huge string", Bytes{}.header(0, 1).str("k").u32(8).u64(1ull << 62).zeros(16),
               {"key 'k'", "length", "exceeds"});
    expect_bad("huge array", Bytes{}.header(0, 1).str("arr").u32(9).u32(5).u64(1ull << 40).zeros(16),
               {"key 'arr'", "array length"});
    expect_bad("nested array", Bytes{}.header(0, 1).str("arr").u32(9).u32(9).u64(1).zeros(16), {"key 'arr'", "nested"});
    expect_bad("unknown type", Bytes{}.header(0, 1).str("k").u32(13).zeros(16), {"key 'k'", "unknown value type 13"});
    expect_bad("duplicate key", Bytes{}.header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2),
               {"key 'k'", "duplicate"});
    expect_bad("bool 2", Bytes{}.header(0, 1).str("b").u32(7).u8(2), {"key 'b'", "bool"});
    expect_bad("alignment 3", Bytes{}.header(0, 1).str("general.alignment").u32(4).u32(3),
               {"general.alignment", "power of two"});
    expect_bad("alignment 0", Bytes{}.header(0, 1).str("general.alignment").u32(4).u32(0), {"general.alignment"});
    expect_bad("alignment 2MiB", Bytes{}.header(0, 1).str("general.alignment").u32(4).u32(2u << 20),
               {"general.alignment"});
    expect_bad("alignment u64", Bytes{}.header(0, 1).str("general.alignment").u32(10).u64(32),
               {"general.alignment", "UINT32", "UINT64"});
    expect_bad("truncated value", Bytes{}.header(0, 1).str("k").u32(4).u8(0), {"key 'k'", "truncated", "value"});
    expect_bad("truncated key", Bytes{}.header(0, 1).u64(10).raw("abcdefgh"), {"key #0", "key name length 10"});

    auto with_tensor = [](const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t off, size_t data) {
        Bytes b;
        b.header(1, 0).tensor(name, std::move(ne), type, off).pad_to(32).zeros(data);
        return b;
    };
    expect_bad("n_dims 0", with_tensor("t", {}, 0, 0, 64), {"tensor 't'", "n_dims 0"});
    expect_bad("n_dims 5", with_tensor("t", {1, 1, 1, 1, 1}, 0, 0, 64), {"tensor 't'", "n_dims 5"});
    expect_bad("zero dim", with_tensor("t", {4, 0}, 0, 0, 64), {"tensor 't'", "ne[1]"});
    expect_bad("overflow", with_tensor("t", {1ull << 32, 1ull << 32}, 0, 0, 64), {"tensor 't'", "overflow"});
    expect_bad("bytes overflow", with_tensor("t", {1ull << 62}, 0, 0, 64), {"tensor 't'", "overflow"});
    expect_bad("unknown tensor type", with_tensor("t", {4}, 99, 0, 64), {"tensor 't'", "type id 99"});
    expect_bad("block multiple", with_tensor("t", {33}, 2, 0, 64), {"tensor 't'", "ne[0] = 33", "Q4_0"});
    expect_bad("misaligned", with_tensor("t", {4}, 0, 8, 64), {"tensor 't'", "offset 8", "alignment 32"});
    expect_bad("past eof", with_tensor("t", {64}, 0, 0, 64), {"tensor 't'", "past end of file"});
    expect_bad("long name", with_tensor(std::string(300, 'x'), {4}, 0, 0, 64), {"tensor #0", "300"});
    expect_bad("empty name", with_tensor("", {4}, 0, 0, 64), {"tensor #0", "empty"});
    {
        Bytes b;
        b.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {16}, 0, 32).pad_to(32).zeros(128);
        expect_bad("overlap", b, {"tensor 'b'", "overlaps tensor 'a'"});
    }
    {
        Bytes b;
        b.header(2, 0).tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32).pad_to(32).zeros(128);
        expect_bad("duplicate tensor", b, {"tensor 'a'", "duplicate"});
    }
    {
        Bytes b;
        b.header(1, 0).tensor("tensor.x", {4}, 0, 0);
        b.b.resize(b.b.size() - 3);
        expect_bad("truncated tensor info", b, {"tensor 'tensor.x'", "truncated", "offset"});
    }
    // Truncating the valid file at every byte must give ModelFormat (never a crash or another kind).
    Bytes v = valid_file();
    for (size_t cut = 0; cut < v.b.size(); ++cut) {
        Bytes t;
        t.b.assign(v.b.begin(), v.b.begin() + static_cast<long>(cut));
        std::string label = "cut at " + std::to_string(cut);
        expect_error(label.c_str(), write_file(t), ErrorKind::ModelFormat, {"[gguf] "});
    }
}

}  // namespace

int main() {
    char tmpl[] = "/tmp/edge_rt_gguf_test_XXXXXX";
    if (!mkdtemp(tmpl)) {
        std::perror("mkdtemp");
        return 2;
    }
    g_dir = tmpl;
    test_type_tables();
    test_valid();
    test_invalid();
    // Best-effort cleanup of the files written above.
    for (int k = 0; k < g_file_counter; ++k) std::remove((g_dir + "/t" + std::to_string(k) + ".gguf").c_str());
    rmdir(g_dir.c_str());
    std::printf("test_gguf_reader: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
