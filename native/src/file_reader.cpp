#include "edge_rt/file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "edge_rt/error.h"

namespace edge_rt {

namespace {

class PosixReader : public FileReader {
public:
    PosixReader(std::string path, int fd, bool direct) : path_(std::move(path)), fd_(fd), direct_(direct) {}
    ~PosixReader() override { ::close(fd_); }

    void read(void* dst, size_t n, uint64_t offset, size_t n_required) override {
        auto* p = static_cast<uint8_t*>(dst);
        size_t done = 0;
        while (done < n_required) {
            const ssize_t got = ::pread(fd_, p + done, n - done, (off_t)(offset + done));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                fail(ErrorKind::Io, "[io] reading '" + path_ + "' at offset " + std::to_string(offset + done) + ": " +
                                        std::strerror(errno));
            }
            if (got == 0) {
                fail(ErrorKind::ModelFormat, "[io] '" + path_ + "' ended at offset " + std::to_string(offset + done) +
                                                 " while reading " + std::to_string(n) +
                                                 " bytes (file truncated or replaced while in use?)");
            }
            done += (size_t)got;
        }
        if (!direct_) {
            // Drop what we just read from the page cache: streamed weights must not silently stay
            // resident outside the budget. The range is widened to 2 MiB boundaries because the
            // kernel caches files in large folios (2 MiB on ext4 today) and DONTNEED leaves a folio
            // alone unless the range covers all of it; a neighbour's pages dropped early are re-read.
            constexpr uint64_t kFolio = 2ull << 20;
            const uint64_t begin = offset / kFolio * kFolio;
            const uint64_t end = (offset + n + kFolio - 1) / kFolio * kFolio;
            ::posix_fadvise(fd_, (off_t)begin, (off_t)(end - begin), POSIX_FADV_DONTNEED);
        }
    }
    bool direct() const noexcept override { return direct_; }
    const char* kind() const noexcept override { return direct_ ? "direct" : "buffered"; }

private:
    std::string path_;
    int fd_;
    bool direct_;
};

class FaultInjectingReader : public FileReader {
public:
    FaultInjectingReader(std::unique_ptr<FileReader> inner, uint64_t fail_after, bool short_read)
        : inner_(std::move(inner)), fail_after_(fail_after), short_read_(short_read) {}

    void read(void* dst, size_t n, uint64_t offset, size_t n_required) override {
        const uint64_t before = traffic_.fetch_add(n);
        if (before + n > fail_after_) {
            if (short_read_) {
                fail(ErrorKind::ModelFormat, "[io] injected short read at offset " + std::to_string(offset) +
                                                 " (file truncated or replaced while in use?)");
            }
            fail(ErrorKind::Io, "[io] injected EIO at offset " + std::to_string(offset) + ": " + std::strerror(EIO));
        }
        inner_->read(dst, n, offset, n_required);
    }
    bool direct() const noexcept override { return inner_->direct(); }
    const char* kind() const noexcept override {
        return short_read_ ? "fault-injecting(short)" : "fault-injecting(eio)";
    }

private:
    std::unique_ptr<FileReader> inner_;
    uint64_t fail_after_;
    bool short_read_;
    std::atomic<uint64_t> traffic_{0};
};

}  // namespace

IoMode parse_io_mode(const std::string& name) {
    if (name == "auto") return IoMode::Auto;
    if (name == "direct") return IoMode::Direct;
    if (name == "buffered") return IoMode::Buffered;
    fail(ErrorKind::InvalidArgument, "[io] io_mode must be 'auto', 'direct' or 'buffered', got '" + name + "'");
}

std::unique_ptr<FileReader> open_model_reader(const std::string& path, IoMode mode) {
    if (mode != IoMode::Buffered) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (fd >= 0) return std::make_unique<PosixReader>(path, fd, true);
        if (mode == IoMode::Direct) {
            fail(ErrorKind::Io, "[io] cannot open '" + path + "' with O_DIRECT: " + std::strerror(errno));
        }
        // EINVAL: the filesystem refuses O_DIRECT (tmpfs, ...): fall back to buffered reads.
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::Io, "[io] cannot open '" + path + "': " + std::strerror(errno));
    // No kernel readahead: it would pull pages past each read into the cache, behind our DONTNEED.
    // Our requests are large and sequential already.
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    return std::make_unique<PosixReader>(path, fd, false);
}

std::unique_ptr<FileReader> make_fault_injecting_reader(std::unique_ptr<FileReader> inner, uint64_t fail_after_bytes,
                                                        bool short_read) {
    return std::make_unique<FaultInjectingReader>(std::move(inner), fail_after_bytes, short_read);
}

}  // namespace edge_rt
