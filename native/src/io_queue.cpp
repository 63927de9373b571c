#include "edge_rt/io_queue.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <utility>

#include "edge_rt/memory_budget.h"

namespace edge_rt {

namespace {
double steady_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void IoBufferFree::operator()(uint8_t* p) const noexcept { std::free(p); }

IoBuffer alloc_io_buffer(uint64_t bytes, const std::string& what) {
    void* p = nullptr;
    if (posix_memalign(&p, kDirectAlign, (size_t)std::max<uint64_t>(align_up_direct(bytes), kDirectAlign)) != 0) {
        fail(ErrorKind::OutOfMemory, "[stream] cannot allocate " + format_bytes(bytes) + " for " + what);
    }
    return IoBuffer(static_cast<uint8_t*>(p));
}

bool IoProgress::chunk_done(ErrorKind kind, const std::string& e, double t) {
    if (!e.empty() && error.empty()) {
        error = e;
        error_kind = kind;
    }
    if (--pending != 0) return false;
    io_end = t;
    return true;
}

IoQueue::IoQueue(const std::string& path, uint64_t file_size, IoMode mode, uint64_t fault_after_bytes,
                 bool fault_short_read)
    : file_size_(file_size), t0_(steady_seconds()) {
    reader_ = open_model_reader(path, mode);
    if (fault_after_bytes)
        reader_ = make_fault_injecting_reader(std::move(reader_), fault_after_bytes, fault_short_read);
}

IoQueue::~IoQueue() { stop(); }

double IoQueue::now() const { return steady_seconds() - t0_; }

void IoQueue::start(int n_threads) {
    for (int i = 0; i < n_threads; ++i) threads_.emplace_back([this] { run(); });
}

void IoQueue::stop() noexcept {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
}

void IoQueue::read_now(uint8_t* dst, uint64_t length, uint64_t offset) {
    const uint64_t required = offset < file_size_ ? std::min(length, file_size_ - offset) : 0;
    reader_->read(dst, (size_t)length, offset, (size_t)required);
}

size_t IoQueue::submit(IoSink& owner, int target, const IoSpan* spans, size_t n, IoPriority priority) {
    std::vector<Chunk> chunks;
    for (size_t i = 0; i < n; ++i) {
        const IoSpan& s = spans[i];
        for (uint64_t off = 0; off < s.length; off += kIoChunkBytes) {
            chunks.push_back(
                Chunk{&owner, target, s.dst + off, s.offset + off, std::min(kIoChunkBytes, s.length - off)});
        }
    }
    if (priority == IoPriority::Urgent)
        queue_.insert(queue_.begin(), chunks.begin(), chunks.end());
    else
        queue_.insert(queue_.end(), chunks.begin(), chunks.end());
    wake_.notify_all();
    return chunks.size();
}

void IoQueue::promote(const IoSink& owner, int target) {
    std::stable_partition(queue_.begin(), queue_.end(),
                          [&](const Chunk& c) { return c.owner == &owner && c.target == target; });
}

void IoQueue::drop_all(std::unique_lock<std::mutex>& lock) {
    queue_.clear();
    completed_.wait(lock, [&] { return busy_ == 0; });
}

void IoQueue::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        const Chunk c = queue_.front();
        queue_.pop_front();
        ++busy_;
        c.owner->on_read_start(c.target, now());
        lock.unlock();
        ErrorKind kind = ErrorKind::Internal;
        std::string error;
        try {
            read_now(c.dst, c.length, c.offset);
        } catch (const Error& e) {
            kind = e.kind();
            error = e.what();
        } catch (const std::exception& e) {
            error = std::string("[stream] ") + e.what();
        }
        lock.lock();
        --busy_;
        c.owner->on_read_done(c.target, c.length, kind, error, now());
        completed_.notify_all();
    }
}

}  // namespace edge_rt
