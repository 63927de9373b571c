#include "edge_rt/streaming_weights.h"

#include <algorithm>
#include <utility>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"
#include "interleave.h"

namespace edge_rt {

namespace {

std::string unit_name(int unit, int n_layer) {
    return unit == n_layer ? "output head" : "layer " + std::to_string(unit);
}

}  // namespace

uint64_t StreamingWeights::min_weight_bytes(const GgufFile& file, const ModelConfig& cfg) {
    return weight_floor(file, cfg);
}

// ---- load and teardown ----

StreamingWeights::StreamingWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg,
                                   MemoryAccountant& accountant, const StreamingOptions& options)
    : file_(std::move(file)), cfg_(cfg), options_(options) {
    try {
        build(accountant);
    } catch (...) {
        shutdown();  // a constructor that throws runs no destructor: stop the threads before the buffers go
        throw;
    }
}

StreamingWeights::~StreamingWeights() { shutdown(); }

void StreamingWeights::shutdown() noexcept {
    if (io_) io_->stop();
}

void StreamingWeights::build(MemoryAccountant& accountant) {
    const GgufFile& f = *file_;
    io_ = std::make_unique<IoQueue>(f.path(), f.file_size(), options_.io_mode, options_.fault_after_bytes,
                                    options_.fault_short_read);
    token_embd_ = TensorView::of(*f.find_tensor("token_embd.weight"), nullptr, cfg_.repack);  // rows read on demand

    PlacementRequest request;
    request.budget = accountant.budget();
    request.reserved = accountant.total();
    request.window = options_.window;
    request.prefetch = options_.prefetch;
    request.expert_cache_bytes = options_.expert_cache_bytes;
    placement_ = place_weights(f, cfg_, request);
    accountant.reserve(MemClass::PinnedWeights, placement_.pinned_class_bytes(), "pinned weights");
    accountant.reserve(MemClass::WindowSlots, placement_.window_class_bytes(), "window slots");
    if (placement_.moe) accountant.reserve(MemClass::ExpertCache, placement_.expert_class_bytes(), "expert cache");

    load_pinned();
    embd_buf_ = alloc_io_buffer(placement_.embd_buf_bytes, "the embedding row buffer");
    if (placement_.moe) {
        load_routers();
        experts_ = std::make_unique<ExpertCache>(f, cfg_, placement_, options_.expert_policy,
                                                 options_.speculative_cap_bytes, options_.prediction_width, *io_);
    }

    const std::vector<int>& streamed = placement_.streamed;
    stream_pos_.assign(placement_.units.size(), -1);
    for (size_t i = 0; i < streamed.size(); ++i) stream_pos_[(size_t)streamed[i]] = (int)i;
    slots_.resize((size_t)placement_.window);
    for (Slot& s : slots_) s.buffer = alloc_io_buffer(placement_.slot_bytes, "a window slot");
    if (!streamed.empty() || experts_) io_->start(std::max(1, options_.io_threads));
    if (options_.prefetch && !streamed.empty()) {
        std::lock_guard<std::mutex> lock(io_->mutex());
        for (int i = 0; i < placement_.window; ++i) issue((uint64_t)i);
    }
}

void StreamingWeights::load_pinned() {
    const int n_layer = (int)cfg_.n_layer;
    pinned_.resize(placement_.units.size());
    pinned_layers_.resize((size_t)n_layer);
    for (int u = 0; u <= n_layer; ++u) {
        const WeightUnit& unit = placement_.units[(size_t)u];
        if (!unit.pinned) continue;
        IoBuffer& buf = pinned_[(size_t)u] = alloc_io_buffer(unit.packed_bytes, unit_name(u, n_layer));
        for (const WeightRun& r : unit.runs) io_->read_now(buf.get() + r.slot_offset, r.length, r.file_begin);
        LayerWeights unused;
        bind_views(u, buf.get(), u < n_layer ? pinned_layers_[(size_t)u] : unused, pinned_head_);
        interleave_unit(u, u < n_layer ? pinned_layers_[(size_t)u] : unused, pinned_head_);
    }
    // Tied output head pinned: embedding rows come from it instead of the file.
    if (cfg_.tied_output && placement_.units[(size_t)n_layer].pinned) pinned_embd_ = pinned_head_.output.data;
}

void StreamingWeights::load_routers() {
    const GgufFile& f = *file_;
    const int64_t L = cfg_.n_layer;
    router_pins_.resize((size_t)L);
    router_norms_.resize((size_t)L);
    routers_.resize((size_t)L);
    for (int il = 0; il < L; ++il) {
        const std::string b = "blk." + std::to_string(il);
        IoBuffer& buf = router_pins_[(size_t)il] =
            alloc_io_buffer(placement_.router_pin_bytes[(size_t)il], "the routers");
        uint64_t at = 0;
        for (const char* suffix : {".ffn_norm.weight", ".ffn_gate_inp.weight"}) {
            const GgufTensorInfo* t = f.find_tensor(b + suffix);
            if (!t) continue;
            const uint64_t begin = align_down_direct(t->offset), len = align_up_direct(t->offset + t->n_bytes) - begin;
            io_->read_now(buf.get() + at, len, begin);
            (suffix[5] == 'n' ? router_norms_ : routers_)[(size_t)il] =
                TensorView::of(*t, buf.get() + at + (t->offset - begin), cfg_.repack);
            at += len;
        }
    }
}

const uint8_t* StreamingWeights::locate(const WeightUnit& u, const uint8_t* base, const GgufTensorInfo& t) const {
    for (const WeightRun& r : u.runs) {
        if (t.offset >= r.file_begin && t.offset + t.n_bytes <= r.file_begin + r.length)
            return base + r.slot_offset + (t.offset - r.file_begin);
    }
    if (placement_.moe && is_expert_tensor(t)) return nullptr;  // served per expert by acquire_experts
    fail(ErrorKind::Internal, "[stream] tensor '" + t.name + "' is outside its unit's runs");
}

// The unit's Blockwise matrices into the x8 layout, in its buffer, as ResidentWeights does at load (the
// same bits either way; interleave.h). A tied head stays in the file's layout: pinned, its bytes are
// also the embedding rows.
void StreamingWeights::interleave_unit(int unit, LayerWeights& layer, HeadWeights& head) const {
    if (unit < cfg_.n_layer)
        interleave_layer(layer);
    else if (!cfg_.tied_output)
        interleave_in_place(head.output);
}

void StreamingWeights::bind_views(int unit, const uint8_t* base, LayerWeights& layer, HeadWeights& head) const {
    const WeightUnit& u = placement_.units[(size_t)unit];
    const TensorLocator loc = [&](const GgufTensorInfo& t) { return locate(u, base, t); };
    if (unit < cfg_.n_layer)
        layer = bind_layer_tensors(*file_, cfg_, unit, loc);
    else
        head = bind_head_tensors(*file_, cfg_, loc);
}

// ---- the placement ----

std::vector<int> StreamingWeights::pinned_units() const {
    std::vector<int> out;
    for (size_t u = 0; u < placement_.units.size(); ++u)
        if (placement_.units[u].pinned) out.push_back((int)u);
    return out;
}

uint64_t StreamingWeights::resident_bytes() const {
    return placement_.pinned_class_bytes() + placement_.window_class_bytes() + placement_.expert_class_bytes();
}

uint64_t StreamingWeights::streamed_bytes_per_pass() const noexcept {
    uint64_t b = 0;
    for (int u : placement_.streamed) b += placement_.units[(size_t)u].packed_bytes;
    return b;
}

// ---- the layer window ----

void StreamingWeights::issue(uint64_t seq) {
    const size_t W = slots_.size();
    Slot& slot = slots_[seq % W];
    const int unit = placement_.streamed[seq % placement_.streamed.size()];
    slot.state = SlotState::Loading;
    slot.unit = unit;
    slot.io = IoProgress{};
    std::vector<IoSpan> spans;
    for (const WeightRun& r : placement_.units[(size_t)unit].runs)
        spans.push_back(IoSpan{slot.buffer.get() + r.slot_offset, r.file_begin, r.length});
    slot.io.pending = (int)io_->submit(*this, (int)(seq % W), spans.data(), spans.size(), IoPriority::Normal);
}

void StreamingWeights::resync(uint64_t seq, std::unique_lock<std::mutex>& lock) {
    io_->drop_all(lock);
    for (Slot& s : slots_) {
        s.state = SlotState::Free;
        s.io.pending = 0;
    }
    if (experts_) experts_->drop_loading();  // expert reads dropped with the queue hold nothing usable
    next_acquire_ = seq;
    needs_resync_ = false;
    if (options_.prefetch)
        for (size_t i = 0; i < slots_.size(); ++i) issue(seq + i);
}

StreamingWeights::Slot& StreamingWeights::acquire_unit(int unit) {
    std::unique_lock<std::mutex> lock(io_->mutex());
    const uint64_t m = placement_.streamed.size();
    const uint64_t pos = (uint64_t)stream_pos_[(size_t)unit];
    if (needs_resync_ || placement_.streamed[next_acquire_ % m] != unit) {
        // Out of the expected order (an interrupted pass, or after an I/O error): restart the
        // pipeline at the next use of this unit.
        uint64_t seq = next_acquire_ - next_acquire_ % m + pos;
        if (seq < next_acquire_) seq += m;
        resync(seq, lock);
    }
    if (!options_.prefetch) issue(next_acquire_);
    Slot& slot = slots_[next_acquire_ % slots_.size()];
    const double wait_start = io_->now();
    bool stalled = false;
    while (slot.state == SlotState::Loading) {
        stalled = true;
        io_->wait_for_completion(lock);
    }
    const double acquired = io_->now();
    stats_.acquires += 1;
    if (stalled) {
        stats_.stalls += 1;
        stats_.stall_seconds += acquired - wait_start;
    }
    if (slot.state == SlotState::Failed) {
        slot.state = SlotState::Free;
        needs_resync_ = true;
        throw Error(slot.io.error_kind,
                    slot.io.error + " (while streaming " + unit_name(unit, (int)cfg_.n_layer) + ")");
    }
    slot.state = SlotState::InUse;
    if (events_.size() < kMaxIoEvents) {
        StreamEvent ev;
        ev.unit = unit;
        ev.io_start = slot.io.io_start;
        ev.io_end = slot.io.io_end;
        ev.wait_start = wait_start;
        ev.acquired = acquired;
        ev.bytes = placement_.units[(size_t)unit].packed_bytes;
        events_.push_back(ev);
    }
    return slot;
}

void StreamingWeights::release_unit(int unit) {
    std::lock_guard<std::mutex> lock(io_->mutex());
    Slot& slot = slots_[next_acquire_ % slots_.size()];
    if (slot.state != SlotState::InUse || slot.unit != unit) return;  // released after a failed acquire
    slot.state = SlotState::Free;
    if (!events_.empty() && events_.back().unit == unit) events_.back().released = io_->now();
    ++next_acquire_;
    if (options_.prefetch) issue(next_acquire_ + slots_.size() - 1);
}

void StreamingWeights::on_read_start(int slot, double t) { slots_[(size_t)slot].io.start(t); }

void StreamingWeights::on_read_done(int slot, uint64_t bytes, ErrorKind kind, const std::string& error, double t) {
    Slot& s = slots_[(size_t)slot];
    stats_.bytes_read += bytes;
    if (!s.io.chunk_done(kind, error, t)) return;
    stats_.io_seconds += s.io.io_end - s.io.io_start;
    if (s.io.error.empty()) {
        bind_views(s.unit, s.buffer.get(), s.layer, s.head);
        interleave_unit(s.unit, s.layer, s.head);  // on the I/O thread: overlaps the compute
        s.state = SlotState::Ready;
    } else {
        s.state = SlotState::Failed;
    }
}

// ---- WeightProvider ----

const LayerWeights& StreamingWeights::acquire_layer(int il) {
    if (placement_.units[(size_t)il].pinned) return pinned_layers_[(size_t)il];
    return acquire_unit(il).layer;
}

void StreamingWeights::release_layer(int il) {
    if (!placement_.units[(size_t)il].pinned) release_unit(il);
}

const HeadWeights& StreamingWeights::acquire_head() {
    const int u = (int)cfg_.n_layer;
    if (placement_.units[(size_t)u].pinned) return pinned_head_;
    return acquire_unit(u).head;
}

void StreamingWeights::release_head() {
    const int u = (int)cfg_.n_layer;
    if (!placement_.units[(size_t)u].pinned) release_unit(u);
}

void StreamingWeights::read_embeddings(const int32_t* tokens, int64_t n, float* out) {
    const WeightKernels* k = weight_kernels(token_embd_.type);
    for (int64_t t = 0; t < n; ++t) {
        const uint8_t* row;
        if (pinned_embd_) {
            row = pinned_embd_ + (size_t)tokens[t] * token_embd_.row_bytes;
        } else {
            const uint64_t off = token_embd_.info->offset + (uint64_t)tokens[t] * token_embd_.row_bytes;
            const uint64_t b = align_down_direct(off), e = align_up_direct(off + token_embd_.row_bytes);
            io_->read_now(embd_buf_.get(), e - b, b);
            {
                std::lock_guard<std::mutex> lock(io_->mutex());
                stats_.bytes_read += e - b;
            }
            row = embd_buf_.get() + (off - b);
        }
        k->dequantize_row(row, out + t * cfg_.n_embd, cfg_.n_embd);
    }
}

void StreamingWeights::acquire_experts(int il, const LayerWeights& layer, const int32_t* ids, int n,
                                       ExpertWeights* out) {
    if (!experts_) return WeightProvider::acquire_experts(il, layer, ids, n, out);
    experts_->acquire(il, ids, n, out);
}

void StreamingWeights::release_experts(int /*il*/) {
    if (experts_) experts_->release();
}

void StreamingWeights::note_routing(int il, const int32_t* ids, int n) {
    if (experts_) experts_->note_routing(il, ids, n);
}

ExpertPrefetch StreamingWeights::expert_prefetch() const {
    return experts_ && options_.prefetch ? options_.expert_prefetch : ExpertPrefetch::Off;
}

bool StreamingWeights::router_weights(int il, TensorView* ffn_norm, TensorView* router) {
    if (!experts_ || il < 0 || il >= cfg_.n_layer) return false;
    *ffn_norm = router_norms_[(size_t)il];
    *router = routers_[(size_t)il];
    return true;
}

void StreamingWeights::prefetch_experts(int il, const int32_t* ids, int n, PredictionSource source) {
    if (experts_) experts_->prefetch(il, ids, n, source);
}

// ---- telemetry ----

StreamStats StreamingWeights::stats() const {
    std::lock_guard<std::mutex> lock(io_->mutex());
    StreamStats s = stats_;
    if (experts_) {
        const ExpertIoTotals e = experts_->io_totals();
        s.bytes_read += e.bytes_read;
        s.io_seconds += e.io_seconds;
        s.stall_seconds += e.stall_seconds;
        s.stalls += e.stalls;
    }
    return s;
}

std::vector<StreamEvent> StreamingWeights::events() const {
    std::lock_guard<std::mutex> lock(io_->mutex());
    return events_;
}

ExpertStats StreamingWeights::expert_stats() const { return experts_ ? experts_->stats() : ExpertStats{}; }

std::vector<ExpertReadEvent> StreamingWeights::expert_events() const {
    return experts_ ? experts_->events() : std::vector<ExpertReadEvent>{};
}

void StreamingWeights::clear_telemetry() {
    std::lock_guard<std::mutex> lock(io_->mutex());
    stats_ = StreamStats{};
    events_.clear();
    if (experts_) experts_->clear_telemetry();
}

}  // namespace edge_rt
