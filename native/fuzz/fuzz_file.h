// The fuzzed bytes as a file the core can open by path: an anonymous memory file (memfd) reached as
// /proc/self/fd/N, so each input costs no disk I/O and leaves nothing behind. The readers under test
// take paths (they pread, fstat and, for streaming, reopen the file), which is why a buffer alone
// would not do.
//
// Contract: FuzzFile(data, size) holds the bytes until it is destroyed; path() is valid meanwhile.
// Aborts (a harness bug, not a finding) if the memfd cannot be created or written.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

class FuzzFile {
public:
    FuzzFile(const uint8_t* data, size_t size) {
        fd_ = memfd_create("edge_rt_fuzz", MFD_CLOEXEC);
        if (fd_ < 0) die("memfd_create");
        size_t done = 0;
        while (done < size) {
            ssize_t w = ::write(fd_, data + done, size - done);
            if (w <= 0) die("write");
            done += static_cast<size_t>(w);
        }
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~FuzzFile() { ::close(fd_); }
    FuzzFile(const FuzzFile&) = delete;
    FuzzFile& operator=(const FuzzFile&) = delete;
    const std::string& path() const noexcept { return path_; }

private:
    [[noreturn]] static void die(const char* what) {
        std::perror(what);
        std::abort();
    }
    int fd_ = -1;
    std::string path_;
};
