// Positional file readers for weight streaming.
//
// One interface, three implementations:
//   DirectFileReader    O_DIRECT: bypasses the page cache, so streamed model bytes never silently
//                       live in RAM outside the memory budget. Offsets, sizes and buffers must be
//                       multiples of kDirectAlign (callers read whole aligned spans).
//   BufferedFileReader  pread + posix_fadvise(DONTNEED) after each read, for filesystems that refuse
//                       O_DIRECT (tmpfs, some Android storage): the page cache is dropped behind us.
//   FaultInjectingReader wraps another reader and fails on purpose (short read or EIO after a byte
//                       count) so tests can exercise the error paths.
// open_model_reader() picks direct when the filesystem accepts it, else buffered.
//
// Contract: read(dst, n, offset, n_required) reads n bytes, or at least n_required when the file ends
// first (an aligned direct read may extend past the last byte), or throws Error(Io) naming the file and
// offset (Error(ModelFormat) when the file ended before n_required: truncated or replaced).
// Thread-safe: several I/O threads read concurrently from one reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace edge_rt {

constexpr size_t kDirectAlign = 4096;

// x rounded down / up to a multiple of kDirectAlign (the bounds of an aligned span around a range).
inline uint64_t align_down_direct(uint64_t x) noexcept { return x / kDirectAlign * kDirectAlign; }
inline uint64_t align_up_direct(uint64_t x) noexcept { return (x + kDirectAlign - 1) / kDirectAlign * kDirectAlign; }

class FileReader {
public:
    virtual ~FileReader() = default;
    virtual void read(void* dst, size_t n, uint64_t offset, size_t n_required) = 0;
    void read_exact(void* dst, size_t n, uint64_t offset) { read(dst, n, offset, n); }
    virtual bool direct() const noexcept = 0;       // true when reads bypass the page cache
    virtual const char* kind() const noexcept = 0;  // "direct", "buffered", "fault-injecting(...)"
};

enum class IoMode { Auto, Direct, Buffered };

// Throws Error(Io) if the file cannot be opened (or, for IoMode::Direct, if O_DIRECT is refused).
std::unique_ptr<FileReader> open_model_reader(const std::string& path, IoMode mode);

// Fails the read that would cross `fail_after_bytes` of cumulative traffic: with EIO (Error(Io)) or,
// when short_read is true, as if the file ended there (Error(ModelFormat)).
std::unique_ptr<FileReader> make_fault_injecting_reader(std::unique_ptr<FileReader> inner, uint64_t fail_after_bytes,
                                                        bool short_read);

IoMode parse_io_mode(const std::string& name);  // "auto" | "direct" | "buffered"; InvalidArgument otherwise

}  // namespace edge_rt
