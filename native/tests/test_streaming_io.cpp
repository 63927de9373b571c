// Unit tests of the memory accountant and the file readers (direct, buffered, fault-injecting).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/file_reader.h"
#include "edge_rt/memory_budget.h"

using namespace edge_rt;

static int g_failures = 0;
#define CHECK(cond, msg)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            ++g_failures;                                                      \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, msg); \
        }                                                                      \
    } while (0)

template <class F>
static bool throws_kind(F&& f, ErrorKind kind, const char* fragment) {
    try {
        f();
    } catch (const Error& e) {
        if (e.kind() != kind) return false;
        return std::strstr(e.what(), fragment) != nullptr;
    }
    return false;
}

static void test_accountant() {
    MemoryAccountant a(1000);
    a.reserve(MemClass::KvCache, 400, "KV cache");
    a.reserve(MemClass::Scratch, 100, "scratch");
    CHECK(a.total() == 500, "total after two reservations");
    CHECK(throws_kind([&] { a.reserve(MemClass::WindowSlots, 501, "window slots"); }, ErrorKind::OutOfMemory,
                      "window slots"),
          "over-budget reservation names what it was for");
    CHECK(a.total() == 500, "a failed reservation adds nothing");
    a.reserve(MemClass::WindowSlots, 500, "window slots");
    CHECK(a.total() == 1000, "exactly the budget fits");
    a.release(MemClass::WindowSlots, 200);
    CHECK(a.used(MemClass::WindowSlots) == 300, "release subtracts");
    MemoryAccountant unlimited;
    unlimited.reserve(MemClass::PinnedWeights, 1ull << 40, "weights");
    CHECK(unlimited.total() == 1ull << 40, "budget 0 is unlimited");
    CHECK(format_bytes(1536) == "1.5 KiB", "format_bytes");
}

static std::string write_temp_file(size_t n) {
    char path[] = "/tmp/edge_rt_io_XXXXXX";
    const int fd = mkstemp(path);
    std::vector<uint8_t> data(n);
    for (size_t i = 0; i < n; ++i) data[i] = (uint8_t)(i * 131 + 7);
    if (write(fd, data.data(), n) != (ssize_t)n) std::abort();
    close(fd);
    return path;
}

static void test_readers() {
    const size_t n = 3 * kDirectAlign + 100;  // the last aligned block is partial
    const std::string path = write_temp_file(n);
    for (IoMode mode : {IoMode::Auto, IoMode::Buffered}) {
        auto r = open_model_reader(path, mode);
        void* mem = nullptr;
        if (posix_memalign(&mem, kDirectAlign, 4 * kDirectAlign) != 0) std::abort();
        auto* buf = static_cast<uint8_t*>(mem);
        // An aligned read that runs past the end of the file returns what exists (n_required).
        r->read(buf, 4 * kDirectAlign, 0, n);
        bool same = true;
        for (size_t i = 0; i < n; ++i) same = same && buf[i] == (uint8_t)(i * 131 + 7);
        CHECK(same, "reader returns the file bytes");
        CHECK(throws_kind([&] { r->read(buf, 4 * kDirectAlign, 0, n + 1); }, ErrorKind::ModelFormat, "ended at offset"),
              "reading past the end is a ModelFormat error (truncated file)");
        auto faulty = make_fault_injecting_reader(open_model_reader(path, mode), kDirectAlign, false);
        faulty->read(buf, kDirectAlign, 0, kDirectAlign);
        CHECK(throws_kind([&] { faulty->read(buf, kDirectAlign, kDirectAlign, kDirectAlign); }, ErrorKind::Io,
                          "injected EIO"),
              "fault injection raises EIO after its byte count");
        auto short_reader = make_fault_injecting_reader(open_model_reader(path, mode), 0, true);
        CHECK(throws_kind([&] { short_reader->read(buf, kDirectAlign, 0, kDirectAlign); }, ErrorKind::ModelFormat,
                          "short read"),
              "fault injection can simulate a truncated file");
        std::free(mem);
    }
    CHECK(throws_kind([&] { open_model_reader("/nonexistent/edge_rt", IoMode::Auto); }, ErrorKind::Io, "cannot open"),
          "missing file is an Io error");
    CHECK(throws_kind([&] { parse_io_mode("fast"); }, ErrorKind::InvalidArgument, "io_mode"), "bad io mode");
    unlink(path.c_str());
}

int main() {
    test_accountant();
    test_readers();
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_streaming_io: all checks passed\n");
    return 0;
}
