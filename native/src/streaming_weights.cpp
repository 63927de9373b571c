#include "edge_rt/streaming_weights.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <numeric>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"

namespace edge_rt {

namespace {

constexpr uint64_t kAlign = kDirectAlign;
// Tensors of one unit closer than this are read as one run (the gap is read and ignored): one large
// sequential request beats several small ones on flash.
constexpr uint64_t kMergeGap = 256 * 1024;
// Size of one read request; several are in flight (one per I/O thread).
constexpr uint64_t kChunkBytes = 4ull << 20;
constexpr size_t kMaxEvents = 1u << 18;

uint64_t align_down(uint64_t x) { return x / kAlign * kAlign; }
uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

uint8_t* alloc_aligned(uint64_t bytes, const std::string& what) {
    void* p = nullptr;
    if (posix_memalign(&p, kAlign, (size_t)std::max<uint64_t>(align_up(bytes), kAlign)) != 0) {
        fail(ErrorKind::OutOfMemory, "[stream] cannot allocate " + format_bytes(bytes) + " for " + what);
    }
    return static_cast<uint8_t*>(p);
}

std::string unit_name(int unit, int n_layer) { return unit == n_layer ? "output head" : "layer " + std::to_string(unit); }

}  // namespace

namespace {
double steady_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

double StreamingWeights::now() const { return steady_seconds() - t0_; }

namespace {
// Coalesces a unit's tensors into 4096-aligned file runs (tensors closer than kMergeGap share a run).
std::vector<std::pair<uint64_t, uint64_t>> coalesce(std::vector<const GgufTensorInfo*> tensors) {
    std::sort(tensors.begin(), tensors.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // (aligned file begin, aligned length)
    for (const auto* t : tensors) {
        const uint64_t b = align_down(t->offset), e = align_up(t->offset + t->n_bytes);
        if (!runs.empty() && b <= runs.back().first + runs.back().second + kMergeGap) {
            runs.back().second = std::max(runs.back().second, e - runs.back().first);
        } else {
            runs.emplace_back(b, e - b);
        }
    }
    return runs;
}

uint64_t embedding_buffer_bytes(const GgufFile& file) {
    return align_up(file.find_tensor("token_embd.weight")->row_bytes()) + 2 * kAlign;
}
}  // namespace

uint64_t StreamingWeights::min_weight_bytes(const GgufFile& file, const ModelConfig& cfg) {
    uint64_t largest = 0;
    for (int u = 0; u <= cfg.n_layer; ++u) {
        uint64_t bytes = 0;
        for (const auto& r : coalesce(u < cfg.n_layer ? layer_tensor_infos(file, u) : head_tensor_infos(file, cfg)))
            bytes += r.second;
        largest = std::max(largest, bytes);
    }
    return largest + embedding_buffer_bytes(file);
}

StreamingWeights::StreamingWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg,
                                   MemoryAccountant& accountant, const StreamingOptions& options)
    : file_(std::move(file)), cfg_(cfg), options_(options) {
    t0_ = steady_seconds();
    const GgufFile& f = *file_;
    reader_ = open_model_reader(f.path(), options.io_mode);
    if (options.fault_after_bytes) {
        reader_ = make_fault_injecting_reader(std::move(reader_), options.fault_after_bytes, options.fault_short_read);
    }

    // ---- units and their coalesced runs ----
    const int n_units = (int)cfg.n_layer + 1;
    units_.resize((size_t)n_units);
    for (int u = 0; u < n_units; ++u) {
        Unit& unit = units_[(size_t)u];
        unit.tensors = u < cfg.n_layer ? layer_tensor_infos(f, u) : head_tensor_infos(f, cfg);
        for (const auto& [begin, length] : coalesce(unit.tensors)) {
            unit.runs.push_back(Run{begin, length, unit.packed_bytes});
            unit.packed_bytes += length;
        }
    }

    // ---- placement: pin the largest units that fit, stream the rest through W slots ----
    const uint64_t budget = accountant.budget();
    const uint64_t fixed = accountant.total();
    const TensorView embd_info = [&] {
        TensorView v;
        const GgufTensorInfo* t = f.find_tensor("token_embd.weight");
        v.info = t;
        v.type = t->type;
        v.ne0 = t->ne[0];
        v.ne1 = t->ne[1];
        v.row_bytes = (size_t)t->row_bytes();
        return v;
    }();
    token_embd_ = embd_info;
    embd_buf_bytes_ = embedding_buffer_bytes(f);
    const uint64_t minimum = fixed + min_weight_bytes(f, cfg);
    if (budget && budget < minimum) {  // Engine checks this first; kept so the class stands alone
        fail(ErrorKind::OutOfMemory, "[budget] memory budget " + std::to_string(budget) + " bytes is below the minimum " +
                                         std::to_string(minimum) + " bytes for '" + f.path() + "'");
    }
    const uint64_t avail = budget ? budget - fixed - embd_buf_bytes_ : UINT64_MAX;

    std::vector<int> order((size_t)n_units);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return units_[(size_t)a].packed_bytes > units_[(size_t)b].packed_bytes; });
    // With k units pinned (the k largest), slots are as large as the (k+1)-th largest unit.
    auto need = [&](int k, int w) {
        uint64_t pinned = 0;
        for (int i = 0; i < k; ++i) pinned += units_[(size_t)order[(size_t)i]].packed_bytes;
        const uint64_t slot = k < n_units ? units_[(size_t)order[(size_t)k]].packed_bytes : 0;
        return pinned + (k < n_units ? (uint64_t)w * slot : 0);
    };
    const int w_wanted = options.window > 0 ? options.window : 2;  // two slots overlap I/O with compute
    int k_pinned = -1;
    for (int w : {w_wanted, 1}) {
        for (int k = n_units; k >= 0; --k) {
            if (need(k, std::min(w, n_units - k)) <= avail) { k_pinned = k; break; }
        }
        if (k_pinned >= 0) break;
    }
    if (k_pinned < 0) k_pinned = 0;  // unreachable after the minimum check; keeps the analysis simple
    uint64_t pinned_bytes = 0;
    std::vector<bool> is_pinned((size_t)n_units, false);
    for (int i = 0; i < k_pinned; ++i) {
        is_pinned[(size_t)order[(size_t)i]] = true;
        pinned_bytes += units_[(size_t)order[(size_t)i]].packed_bytes;
    }
    stream_pos_.assign((size_t)n_units, -1);
    for (int u = 0; u < n_units; ++u) {
        if (!is_pinned[(size_t)u]) {
            stream_pos_[(size_t)u] = (int)streamed_.size();
            streamed_.push_back(u);
            slot_bytes_ = std::max(slot_bytes_, units_[(size_t)u].packed_bytes);
        }
    }
    int window = 0;
    if (!streamed_.empty()) {
        const uint64_t room = avail == UINT64_MAX ? UINT64_MAX : avail - pinned_bytes;
        const uint64_t fits = room / slot_bytes_;
        if (options.window > 0) {
            if ((uint64_t)options.window > fits) {
                fail(ErrorKind::OutOfMemory, "[budget] window of " + std::to_string(options.window) + " slots of " +
                                                 format_bytes(slot_bytes_) + " does not fit the budget (room for " +
                                                 std::to_string(fits) + ")");
            }
            window = options.window;
        } else {
            window = (int)std::min<uint64_t>(fits, streamed_.size());
        }
        if (!options.prefetch) window = 1;  // naive baseline: read, compute, free
        window = std::max(window, 1);
    }
    accountant.reserve(MemClass::PinnedWeights, pinned_bytes, "pinned weights");
    accountant.reserve(MemClass::WindowSlots, (uint64_t)window * slot_bytes_ + embd_buf_bytes_, "window slots");

    // ---- pinned units: read once now ----
    for (int u = 0; u < n_units; ++u) {
        if (!is_pinned[(size_t)u]) continue;
        Unit& unit = units_[(size_t)u];
        unit.pinned = alloc_aligned(unit.packed_bytes, unit_name(u, (int)cfg.n_layer));
        for (const Run& r : unit.runs) {
            const uint64_t required = std::min(r.length, f.file_size() - r.file_begin);
            reader_->read(unit.pinned + r.slot_offset, (size_t)r.length, r.file_begin, (size_t)required);
        }
    }
    pinned_layers_.resize((size_t)cfg.n_layer);
    for (int u = 0; u < (int)cfg.n_layer; ++u)
        if (is_pinned[(size_t)u]) bind_views(u, units_[(size_t)u].pinned, pinned_layers_[(size_t)u], pinned_head_);
    if (is_pinned[(size_t)cfg.n_layer]) {
        LayerWeights unused;
        bind_views((int)cfg.n_layer, units_[(size_t)cfg.n_layer].pinned, unused, pinned_head_);
    }
    // Tied output head pinned: embedding rows come from it instead of the file.
    if (cfg.tied_output && is_pinned[(size_t)cfg.n_layer]) pinned_embd_ = pinned_head_.output.data;
    embd_buf_ = alloc_aligned(embd_buf_bytes_, "the embedding row buffer");

    slots_.resize((size_t)window);
    for (auto& s : slots_) s.buffer = alloc_aligned(slot_bytes_, "a window slot");
    const int n_io = std::max(1, options.io_threads);
    for (int i = 0; i < n_io && !streamed_.empty(); ++i) io_threads_.emplace_back([this] { io_loop(); });
    if (options_.prefetch && !streamed_.empty()) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < window; ++i) issue((uint64_t)i);
    }
}

StreamingWeights::~StreamingWeights() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    io_wake_.notify_all();
    for (auto& t : io_threads_) t.join();
    for (auto& s : slots_) std::free(s.buffer);
    for (auto& u : units_) std::free(u.pinned);
    std::free(embd_buf_);
}

const uint8_t* StreamingWeights::locate(const Unit& u, const uint8_t* base, const GgufTensorInfo& t) const {
    for (const Run& r : u.runs) {
        if (t.offset >= r.file_begin && t.offset + t.n_bytes <= r.file_begin + r.length)
            return base + r.slot_offset + (t.offset - r.file_begin);
    }
    fail(ErrorKind::Internal, "[stream] tensor '" + t.name + "' is outside its unit's runs");
}

void StreamingWeights::bind_views(int unit, const uint8_t* base, LayerWeights& layer, HeadWeights& head) const {
    const Unit& u = units_[(size_t)unit];
    const TensorLocator loc = [&](const GgufTensorInfo& t) { return locate(u, base, t); };
    if (unit < cfg_.n_layer) layer = bind_layer_tensors(*file_, unit, loc);
    else head = bind_head_tensors(*file_, cfg_, loc);
}

std::vector<int> StreamingWeights::pinned_units() const {
    std::vector<int> out;
    for (size_t u = 0; u < units_.size(); ++u)
        if (units_[u].pinned) out.push_back((int)u);
    return out;
}

uint64_t StreamingWeights::resident_bytes() const {
    uint64_t b = (uint64_t)slots_.size() * slot_bytes_ + embd_buf_bytes_;
    for (const auto& u : units_)
        if (u.pinned) b += u.packed_bytes;
    return b;
}

uint64_t StreamingWeights::streamed_bytes_per_pass() const noexcept {
    uint64_t b = 0;
    for (int u : streamed_) b += units_[(size_t)u].packed_bytes;
    return b;
}

void StreamingWeights::issue(uint64_t seq) {
    const size_t W = slots_.size();
    Slot& slot = slots_[seq % W];
    const int unit = streamed_[seq % streamed_.size()];
    const Unit& u = units_[(size_t)unit];
    slot.state = SlotState::Loading;
    slot.unit = unit;
    slot.seq = seq;
    slot.pending = 0;
    slot.error.clear();
    slot.io_start = slot.io_end = 0;
    for (const Run& r : u.runs) {
        for (uint64_t off = 0; off < r.length; off += kChunkBytes) {
            const uint64_t len = std::min(kChunkBytes, r.length - off);
            queue_.push_back(Chunk{(int)(seq % W), seq, slot.buffer + r.slot_offset + off, r.file_begin + off, len});
            ++slot.pending;
        }
    }
    next_issue_ = seq + 1;
    io_wake_.notify_all();
}

void StreamingWeights::io_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        io_wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        const Chunk c = queue_.front();
        queue_.pop_front();
        ++io_busy_;
        Slot& slot = slots_[(size_t)c.slot];
        const double start = now();
        if (slot.io_start == 0) slot.io_start = start;
        lock.unlock();
        ErrorKind kind = ErrorKind::Internal;
        std::string error;
        try {
            const uint64_t size = file_->file_size();
            const uint64_t required = c.offset < size ? std::min(c.length, size - c.offset) : 0;
            reader_->read(c.dst, (size_t)c.length, c.offset, (size_t)required);
        } catch (const Error& e) {
            kind = e.kind();
            error = e.what();
        } catch (const std::exception& e) {
            error = std::string("[stream] ") + e.what();
        }
        lock.lock();
        --io_busy_;
        if (!error.empty() && slot.error.empty()) {
            slot.error = error;
            slot.error_kind = kind;
        }
        stats_.bytes_read += c.length;
        if (--slot.pending == 0) {
            slot.io_end = now();
            stats_.io_seconds += slot.io_end - slot.io_start;
            if (slot.error.empty()) {
                bind_views(slot.unit, slot.buffer, slot.layer, slot.head);
                slot.state = SlotState::Ready;
            } else {
                slot.state = SlotState::Failed;
            }
        }
        slot_ready_.notify_all();
    }
}

void StreamingWeights::resync(uint64_t seq, std::unique_lock<std::mutex>& lock) {
    queue_.clear();
    slot_ready_.wait(lock, [&] { return io_busy_ == 0; });
    for (auto& s : slots_) {
        s.state = SlotState::Free;
        s.pending = 0;
    }
    next_acquire_ = seq;
    next_issue_ = seq;
    needs_resync_ = false;
    if (options_.prefetch)
        for (size_t i = 0; i < slots_.size(); ++i) issue(seq + i);
}

StreamingWeights::Slot& StreamingWeights::acquire_unit(int unit) {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t m = streamed_.size();
    const uint64_t pos = (uint64_t)stream_pos_[(size_t)unit];
    if (needs_resync_ || streamed_[next_acquire_ % m] != unit) {
        // Out of the expected order (an interrupted pass, or after an I/O error): restart the
        // pipeline at the next use of this unit.
        uint64_t seq = next_acquire_ - next_acquire_ % m + pos;
        if (seq < next_acquire_) seq += m;
        resync(seq, lock);
    }
    if (!options_.prefetch) issue(next_acquire_);
    Slot& slot = slots_[next_acquire_ % slots_.size()];
    const double wait_start = now();
    bool stalled = false;
    while (slot.state == SlotState::Loading) {
        stalled = true;
        slot_ready_.wait(lock);
    }
    const double acquired = now();
    stats_.acquires += 1;
    if (stalled) {
        stats_.stalls += 1;
        stats_.stall_seconds += acquired - wait_start;
    }
    if (slot.state == SlotState::Failed) {
        slot.state = SlotState::Free;
        needs_resync_ = true;
        throw Error(slot.error_kind, slot.error + " (while streaming " + unit_name(unit, (int)cfg_.n_layer) + ")");
    }
    slot.state = SlotState::InUse;
    if (events_.size() < kMaxEvents) {
        StreamEvent ev;
        ev.unit = unit;
        ev.io_start = slot.io_start;
        ev.io_end = slot.io_end;
        ev.wait_start = wait_start;
        ev.acquired = acquired;
        ev.bytes = units_[(size_t)unit].packed_bytes;
        events_.push_back(ev);
    }
    return slot;
}

void StreamingWeights::release_unit(int unit) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = slots_[next_acquire_ % slots_.size()];
    if (slot.state != SlotState::InUse || slot.unit != unit) return;  // released after a failed acquire
    slot.state = SlotState::Free;
    if (!events_.empty() && events_.back().unit == unit) events_.back().released = now();
    ++next_acquire_;
    if (options_.prefetch) issue(next_acquire_ + slots_.size() - 1);
}

const LayerWeights& StreamingWeights::acquire_layer(int il) {
    if (units_[(size_t)il].pinned) return pinned_layers_[(size_t)il];
    return acquire_unit(il).layer;
}

void StreamingWeights::release_layer(int il) {
    if (!units_[(size_t)il].pinned) release_unit(il);
}

const HeadWeights& StreamingWeights::acquire_head() {
    const int u = (int)cfg_.n_layer;
    if (units_[(size_t)u].pinned) return pinned_head_;
    return acquire_unit(u).head;
}

void StreamingWeights::release_head() {
    const int u = (int)cfg_.n_layer;
    if (!units_[(size_t)u].pinned) release_unit(u);
}

void StreamingWeights::read_embeddings(const int32_t* tokens, int64_t n, float* out) {
    const WeightKernels* k = weight_kernels(token_embd_.type);
    const uint64_t size = file_->file_size();
    for (int64_t t = 0; t < n; ++t) {
        const uint8_t* row;
        if (pinned_embd_) {
            row = pinned_embd_ + (size_t)tokens[t] * token_embd_.row_bytes;
        } else {
            const uint64_t off = token_embd_.info->offset + (uint64_t)tokens[t] * token_embd_.row_bytes;
            const uint64_t b = align_down(off), e = align_up(off + token_embd_.row_bytes);
            reader_->read(embd_buf_, (size_t)(e - b), b, (size_t)(std::min(e, size) - b));
            {
                std::lock_guard<std::mutex> lock(mutex_);
                stats_.bytes_read += e - b;
            }
            row = embd_buf_ + (off - b);
        }
        k->dequantize_row(row, out + t * cfg_.n_embd, cfg_.n_embd);
    }
}

StreamStats StreamingWeights::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

std::vector<StreamEvent> StreamingWeights::events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
}

void StreamingWeights::clear_telemetry() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_ = StreamStats{};
    events_.clear();
}

}  // namespace edge_rt
