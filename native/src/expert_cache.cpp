#include "edge_rt/expert_cache.h"

#include <algorithm>

#include "edge_rt/error.h"

namespace edge_rt {

ExpertCache::ExpertCache(const GgufFile& file, const ModelConfig& cfg, const Placement& placement, ExpertPolicy policy,
                         uint64_t speculative_cap_bytes, int prediction_width, IoQueue& io)
    : n_expert_(cfg.n_expert), repack_(cfg.repack), policy_(policy), io_(io), slot_bytes_(placement.expert_slot_bytes) {
    const int64_t L = cfg.n_layer;
    tensors_.resize((size_t)(3 * L));
    for (int il = 0; il < L; ++il)
        for (int m = 0; m < 3; ++m) tensors_[(size_t)(3 * il + m)] = expert_tensor(file, il, m);
    std::copy(placement.expert_part_bytes, placement.expert_part_bytes + 3, part_bytes_);
    slots_.resize((size_t)placement.expert_slots);
    for (Slot& s : slots_) s.buffer = alloc_io_buffer(slot_bytes_, "an expert cache slot");
    slot_of_expert_.assign((size_t)placement.total_experts, -1);
    freq_.assign((size_t)placement.total_experts, 0.0);
    for (int src = 0; src < 2; ++src) {
        predicted_[src].assign((size_t)L, std::vector<uint8_t>((size_t)n_expert_, 0));
        predictor_ran_[src].assign((size_t)L, 0);
    }
    prediction_width_ = prediction_width > 0 ? std::min<int>(prediction_width, (int)n_expert_) : (int)cfg.n_expert_used;
    speculative_cap_ = speculative_cap_bytes ? speculative_cap_bytes : 2 * (uint64_t)cfg.n_expert_used * slot_bytes_;
    stats_.cache_slots = (int)slots_.size();
    stats_.slot_bytes = slot_bytes_;
    stats_.total_experts = placement.total_experts;
    stats_.layers.assign((size_t)L, ExpertLayerStats{});
}

// ---- engine thread ----

void ExpertCache::acquire(int il, const int32_t* ids, int n, ExpertWeights* out) {
    if (n > (int)slots_.size()) {
        fail(ErrorKind::Internal, "[stream] " + std::to_string(n) + " experts asked at once, the cache holds " +
                                      std::to_string(slots_.size()));
    }
    std::unique_lock<std::mutex> lock(io_.mutex());
    held_.clear();
    for (int i = 0; i < n; ++i) out[i] = slots_[(size_t)pin_for_use(il, ids[i], lock)].views;
    wait_pinned(il, lock);
}

int ExpertCache::pin_for_use(int il, int e, std::unique_lock<std::mutex>& lock) {
    ExpertLayerStats& ls = stats_.layers[(size_t)il];
    int s = slot_of_expert_[key(il, e)];
    if (s >= 0 && slots_[(size_t)s].state == State::Failed) {
        forget(slots_[(size_t)s]);
        s = -1;
    }
    ++stats_.uses;
    ++ls.uses;
    if (s >= 0) {
        ++stats_.hits;
        ++ls.hits;
        const Slot& es = slots_[(size_t)s];
        // Needed now: move its reads to the front of the queue (the rest keep their order).
        if (es.state == State::Loading && es.speculative) io_.promote(*this, s);
    } else {
        ++stats_.misses;
        // Every free slot is loading a prediction: one will finish.
        while ((s = find_victim(false, 0)) < 0) io_.wait_for_completion(lock);
        issue(s, il, e, false);
    }
    Slot& es = slots_[(size_t)s];
    ++es.pins;
    touch(es, true);
    held_.push_back(s);
    return s;
}

void ExpertCache::wait_pinned(int il, std::unique_lock<std::mutex>& lock) {
    const double wait_start = io_.now();
    bool stalled = false;
    for (int s : held_) {
        while (slots_[(size_t)s].state == State::Loading) {
            stalled = true;
            io_.wait_for_completion(lock);
        }
    }
    if (stalled) {
        stats_.stall_seconds += io_.now() - wait_start;
        ++stalls_;
    }
    for (int s : held_) {
        Slot& es = slots_[(size_t)s];
        if (es.state != State::Failed) continue;
        const std::string error = es.io.error + " (while reading expert " + std::to_string(es.expert) + " of layer " +
                                  std::to_string(il) + ")";
        const ErrorKind kind = es.io.error_kind;
        for (int h : held_) --slots_[(size_t)h].pins;
        held_.clear();
        forget(es);
        throw Error(kind, error);
    }
}

void ExpertCache::release() {
    std::lock_guard<std::mutex> lock(io_.mutex());
    for (int s : held_) --slots_[(size_t)s].pins;
    held_.clear();
}

void ExpertCache::note_routing(int il, const int32_t* ids, int n) {
    std::lock_guard<std::mutex> lock(io_.mutex());
    ExpertLayerStats& ls = stats_.layers[(size_t)il];
    for (int src = 0; src < 2; ++src) {
        if (!predictor_ran_[src][(size_t)il]) continue;
        std::vector<uint8_t>& pred = predicted_[src][(size_t)il];
        ls.needed_with_prediction[src] += (uint64_t)n;
        for (int i = 0; i < n; ++i) ls.correct[src] += pred[(size_t)ids[i]] ? 1 : 0;
        std::fill(pred.begin(), pred.end(), 0);
        predictor_ran_[src][(size_t)il] = 0;
    }
    if (il == 0 && ++passes_ % 64 == 0)
        for (double& f : freq_) f *= 0.5;
}

void ExpertCache::prefetch(int il, const int32_t* ids, int n, PredictionSource source) {
    std::lock_guard<std::mutex> lock(io_.mutex());
    const int src = (int)source;
    ExpertLayerStats& ls = stats_.layers[(size_t)il];
    std::vector<uint8_t>& pred = predicted_[src][(size_t)il];
    predictor_ran_[src][(size_t)il] = 1;
    const uint64_t call_tick = tick_ + 1;
    for (int i = 0; i < n; ++i) {
        if (pred[(size_t)ids[i]]) continue;
        pred[(size_t)ids[i]] = 1;
        ++ls.predicted[src];
        const int s = slot_of_expert_[key(il, ids[i])];
        if (s >= 0 && slots_[(size_t)s].state != State::Failed) {
            touch(slots_[(size_t)s], false);  // keep it until the router asks
            continue;
        }
        if (s >= 0) forget(slots_[(size_t)s]);  // a failed read: try again
        const int v = speculative_in_flight_ + slot_bytes_ > speculative_cap_ ? -1 : find_victim(true, call_tick);
        if (v < 0) {  // cap reached, or no slot a prediction may take
            ++stats_.predictions_dropped;
            continue;
        }
        issue(v, il, ids[i], true);
        touch(slots_[(size_t)v], false);
    }
}

void ExpertCache::drop_loading() {
    for (Slot& es : slots_) {
        if (es.state != State::Loading) continue;
        if (es.speculative_in_flight) speculative_in_flight_ -= slot_bytes_;
        forget(es);
    }
}

// ---- slots and policy (lock held) ----

void ExpertCache::forget(Slot& es) {
    if (es.layer >= 0) slot_of_expert_[key(es.layer, es.expert)] = -1;
    es.state = State::Free;
    es.layer = es.expert = -1;
    es.pins = 0;
    es.speculative = es.speculative_in_flight = false;
    es.io = IoProgress{};
}

void ExpertCache::touch(Slot& slot, bool use) {
    slot.last_use = ++tick_;
    if (use) {
        slot.speculative = false;
        freq_[key(slot.layer, slot.expert)] += 1.0;
    }
}

int ExpertCache::find_victim(bool for_prediction, uint64_t protect_from_tick) const {
    int best = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
        const Slot& es = slots_[i];
        if (es.state == State::Free) return (int)i;
        if (es.state == State::Loading || es.pins > 0) continue;
        // A prediction never evicts another prediction not yet used, nor what it just touched.
        if (for_prediction && (es.speculative || es.last_use >= protect_from_tick)) continue;
        if (best < 0) {
            best = (int)i;
            continue;
        }
        const Slot& b = slots_[(size_t)best];
        bool better = es.last_use < b.last_use;
        if (policy_ == ExpertPolicy::Lfu) {
            const double fe = freq_[key(es.layer, es.expert)];
            const double fb = freq_[key(b.layer, b.expert)];
            better = fe < fb || (fe == fb && es.last_use < b.last_use);
        }
        if (es.state == State::Failed) better = true;
        if (better) best = (int)i;
    }
    return best;
}

void ExpertCache::issue(int slot, int il, int e, bool speculative) {
    Slot& es = slots_[(size_t)slot];
    if (es.layer >= 0) {
        if (es.speculative && es.state == State::Ready) ++stats_.speculative_unused;
        slot_of_expert_[key(es.layer, es.expert)] = -1;
    }
    es.layer = il;
    es.expert = e;
    es.state = State::Loading;
    es.pins = 0;
    es.speculative = es.issued_on_prediction = speculative;
    es.io = IoProgress{};
    slot_of_expert_[key(il, e)] = slot;
    // Matrix m of expert e is one 4096-aligned span of its 3-D tensor, at part m of the slot.
    IoSpan spans[3];
    TensorView* views[3] = {&es.views.gate, &es.views.up, &es.views.down};
    uint64_t at = 0;
    for (int m = 0; m < 3; ++m) {
        const GgufTensorInfo* t = tensors_[(size_t)(3 * il + m)];
        const uint64_t matrix = (uint64_t)t->ne[1] * t->row_bytes();
        const uint64_t off = t->offset + (uint64_t)e * matrix;
        const uint64_t begin = align_down_direct(off);
        spans[m] = IoSpan{es.buffer.get() + at, begin, align_up_direct(off + matrix) - begin};
        *views[m] = TensorView::of(*t, es.buffer.get() + at + (off - begin), repack_);
        views[m]->ne2 = 1;  // expert e's matrix alone (info still names the whole 3-D tensor)
        at += part_bytes_[m];
    }
    // On demand: ahead of everything queued. Speculative: behind layer reads and on-demand experts.
    es.io.pending = (int)io_.submit(*this, slot, spans, 3, speculative ? IoPriority::Normal : IoPriority::Urgent);
    if (speculative) {
        speculative_in_flight_ += slot_bytes_;
        es.speculative_in_flight = true;
        ++stats_.reads_speculative;
    } else {
        ++stats_.reads_on_demand;
    }
}

// ---- I/O threads (lock held) ----

void ExpertCache::on_read_start(int slot, double t) { slots_[(size_t)slot].io.start(t); }

void ExpertCache::on_read_done(int slot, uint64_t bytes, ErrorKind kind, const std::string& error, double t) {
    Slot& es = slots_[(size_t)slot];
    stats_.bytes_read += bytes;
    if (!es.io.chunk_done(kind, error, t)) return;
    io_seconds_ += es.io.io_end - es.io.io_start;
    if (es.speculative_in_flight) {
        speculative_in_flight_ -= slot_bytes_;
        es.speculative_in_flight = false;
    }
    es.state = es.io.error.empty() ? State::Ready : State::Failed;
    if (events_.size() < kMaxIoEvents)
        events_.push_back(ExpertReadEvent{es.layer, es.expert, es.issued_on_prediction, es.io.io_start, es.io.io_end});
}

// ---- telemetry ----

ExpertStats ExpertCache::stats() const {
    std::lock_guard<std::mutex> lock(io_.mutex());
    return stats_;
}

std::vector<ExpertReadEvent> ExpertCache::events() const {
    std::lock_guard<std::mutex> lock(io_.mutex());
    return events_;
}

ExpertIoTotals ExpertCache::io_totals() const {
    return ExpertIoTotals{stats_.bytes_read, io_seconds_, stats_.stall_seconds, stalls_};
}

void ExpertCache::clear_telemetry() {
    ExpertStats fresh;
    fresh.cache_slots = stats_.cache_slots;
    fresh.slot_bytes = stats_.slot_bytes;
    fresh.total_experts = stats_.total_experts;
    fresh.layers.assign(stats_.layers.size(), ExpertLayerStats{});
    stats_ = fresh;
    events_.clear();
    io_seconds_ = 0;
    stalls_ = 0;
}

}  // namespace edge_rt
