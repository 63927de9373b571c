#include "edge_rt/streaming_weights.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <utility>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"
#include "edge_rt/placement.h"

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

const char* const kExpertSuffix[3] = {".ffn_gate_exps.weight", ".ffn_up_exps.weight", ".ffn_down_exps.weight"};

// Tensors of unit u: a layer (without its experts in an MoE model) or the head.
std::vector<const GgufTensorInfo*> unit_tensor_infos(const GgufFile& file, const ModelConfig& cfg, int u) {
    if (u == cfg.n_layer) return head_tensor_infos(file, cfg);
    std::vector<const GgufTensorInfo*> ts = layer_tensor_infos(file, u);
    if (cfg.is_moe()) ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto* t) { return is_expert_tensor(*t); }), ts.end());
    return ts;
}

// Room one matrix of an expert needs in a slot: its 4096-aligned file span, whatever its alignment.
uint64_t expert_part_room(uint64_t matrix_bytes) { return align_up(matrix_bytes) + kAlign; }

// Per matrix (gate, up, down): the largest room over layers; sum = one expert slot. Returns the
// largest expert's bytes in the file (its three matrices, unpadded).
uint64_t expert_parts(const GgufFile& file, const ModelConfig& cfg, uint64_t parts[3]) {
    for (int m = 0; m < 3; ++m) parts[m] = 0;
    uint64_t largest = 0;
    for (int il = 0; il < cfg.n_layer; ++il) {
        uint64_t bytes = 0;
        for (int m = 0; m < 3; ++m) {
            const GgufTensorInfo* t = file.find_tensor("blk." + std::to_string(il) + kExpertSuffix[m]);
            if (!t) continue;  // ModelConfig::from_gguf requires them; keep the sizing total
            parts[m] = std::max(parts[m], expert_part_room(t->ne[1] * t->row_bytes()));
            bytes += t->ne[1] * t->row_bytes();
        }
        largest = std::max(largest, bytes);
    }
    return largest;
}

// Bytes to pin layer il's router and its input norm (aligned spans).
uint64_t router_pin_bytes(const GgufFile& file, int il) {
    uint64_t b = 0;
    for (const char* suffix : {".ffn_norm.weight", ".ffn_gate_inp.weight"}) {
        const GgufTensorInfo* t = file.find_tensor("blk." + std::to_string(il) + suffix);
        if (t) b += align_up(t->offset + t->n_bytes) - align_down(t->offset);
    }
    return b;
}

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
    return weight_floor(file, cfg);
}

StreamingWeights::StreamingWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg,
                                   MemoryAccountant& accountant, const StreamingOptions& options)
    : file_(std::move(file)), cfg_(cfg), options_(options) {
    try {
        build(accountant);
    } catch (...) {
        shutdown();  // a constructor that throws runs no destructor: free what build() allocated
        throw;
    }
}

void StreamingWeights::build(MemoryAccountant& accountant) {
    const ModelConfig& cfg = cfg_;
    const StreamingOptions& options = options_;
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
        unit.tensors = unit_tensor_infos(f, cfg, u);
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
    uint64_t avail = budget ? budget - fixed - embd_buf_bytes_ : UINT64_MAX;

    // ---- MoE: pinned routers, and the expert cache's share of the budget ----
    moe_ = cfg.is_moe();
    uint64_t router_bytes = 0, expert_slots_wanted = 0, total_experts = 0;
    bool expert_cache_explicit = false;
    if (moe_) {
        const uint64_t expert_file_bytes = expert_parts(f, cfg, expert_part_bytes_);
        expert_slot_bytes_ = expert_part_bytes_[0] + expert_part_bytes_[1] + expert_part_bytes_[2];
        for (int il = 0; il < cfg.n_layer; ++il) router_bytes += router_pin_bytes(f, il);
        total_experts = (uint64_t)cfg.n_layer * (uint64_t)cfg.n_expert;
        if (options.expert_cache_bytes) {
            expert_cache_explicit = true;
            // Counted in the experts' file bytes, so that "all expert bytes" caches every expert.
            expert_slots_wanted = std::min(total_experts, std::max<uint64_t>(1, options.expert_cache_bytes / expert_file_bytes));
        } else {
            // Layers are placed first (attention runs every token, an expert k/n of them), keeping
            // room for one token's experts; the cache then takes what the layers leave.
            expert_slots_wanted = std::min<uint64_t>(total_experts, (uint64_t)cfg.n_expert_used);
        }
        if (avail != UINT64_MAX) {
            const uint64_t largest_unit = min_weight_bytes(f, cfg) - embd_buf_bytes_ - router_bytes - expert_slot_bytes_;
            if (!expert_cache_explicit) {  // near the minimum: fewer than k slots (acquired in groups)
                const uint64_t room = avail > router_bytes + largest_unit ? avail - router_bytes - largest_unit : 0;
                expert_slots_wanted = std::max<uint64_t>(1, std::min(expert_slots_wanted, room / expert_slot_bytes_));
            }
            const uint64_t moe_need = router_bytes + expert_slots_wanted * expert_slot_bytes_;
            if (avail < moe_need + largest_unit) {
                fail(ErrorKind::OutOfMemory, "[budget] an expert cache of " + std::to_string(expert_slots_wanted) +
                                                 " experts (" + format_bytes(expert_slots_wanted * expert_slot_bytes_) +
                                                 ") does not fit the budget with one layer slot and the routers");
            }
            avail -= moe_need;
        }
    }

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
            // MoE: two slots overlap a layer's read with compute; the rest of the budget caches experts.
            if (moe_) window = std::min(window, 2);
        }
        if (!options.prefetch) window = 1;  // no overlap: read, compute, free (pinned units stay)
        window = std::max(window, 1);
    }
    uint64_t expert_slots = expert_slots_wanted;
    if (moe_ && !expert_cache_explicit) {
        const uint64_t used = pinned_bytes + (uint64_t)window * slot_bytes_;
        const uint64_t left = avail == UINT64_MAX ? UINT64_MAX : avail - std::min(avail, used);
        expert_slots = left == UINT64_MAX ? total_experts : std::min(total_experts, expert_slots + left / expert_slot_bytes_);
    }
    accountant.reserve(MemClass::PinnedWeights, pinned_bytes + router_bytes, "pinned weights");
    accountant.reserve(MemClass::WindowSlots, (uint64_t)window * slot_bytes_ + embd_buf_bytes_, "window slots");
    if (moe_) accountant.reserve(MemClass::ExpertCache, expert_slots * expert_slot_bytes_, "expert cache");

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

    if (moe_) {
        const int64_t L = cfg.n_layer;
        router_pins_.assign((size_t)L, nullptr);
        router_norms_.resize((size_t)L);
        routers_.resize((size_t)L);
        expert_tensors_.resize((size_t)(3 * L));
        for (int il = 0; il < L; ++il) {
            const std::string b = "blk." + std::to_string(il);
            uint8_t* buf = router_pins_[(size_t)il] = alloc_aligned(router_pin_bytes(f, il), "the routers");
            uint64_t at = 0;
            const uint64_t size = f.file_size();
            for (const char* suffix : {".ffn_norm.weight", ".ffn_gate_inp.weight"}) {
                const GgufTensorInfo* t = f.find_tensor(b + suffix);
                if (!t) continue;
                const uint64_t begin = align_down(t->offset), len = align_up(t->offset + t->n_bytes) - begin;
                reader_->read(buf + at, (size_t)len, begin, (size_t)std::min(len, size - begin));
                TensorView v;
                v.info = t;
                v.type = t->type;
                v.ne0 = t->ne[0];
                v.ne1 = t->ne[1];
                v.row_bytes = (size_t)t->row_bytes();
                v.data = buf + at + (t->offset - begin);
                (suffix[5] == 'n' ? router_norms_ : routers_)[(size_t)il] = v;
                at += len;
            }
            for (int m = 0; m < 3; ++m) expert_tensors_[(size_t)(3 * il + m)] = f.find_tensor(b + kExpertSuffix[m]);
        }
        expert_slots_.resize((size_t)expert_slots);
        for (auto& es : expert_slots_) es.buffer = alloc_aligned(expert_slot_bytes_, "an expert cache slot");
        slot_of_expert_.assign((size_t)total_experts, -1);
        expert_freq_.assign((size_t)total_experts, 0.0);
        for (int src = 0; src < 2; ++src) {
            predicted_[src].assign((size_t)L, std::vector<uint8_t>((size_t)cfg.n_expert, 0));
            predictor_ran_[src].assign((size_t)L, 0);
        }
        prediction_width_ = options.prediction_width > 0 ? std::min<int>(options.prediction_width, (int)cfg.n_expert)
                                                         : (int)cfg.n_expert_used;
        speculative_cap_ = options.speculative_cap_bytes ? options.speculative_cap_bytes
                                                         : 2 * (uint64_t)cfg.n_expert_used * expert_slot_bytes_;
        expert_stats_.cache_slots = (int)expert_slots;
        expert_stats_.slot_bytes = expert_slot_bytes_;
        expert_stats_.total_experts = total_experts;
        expert_stats_.layers.assign((size_t)L, ExpertLayerStats{});
    }

    slots_.resize((size_t)window);
    for (auto& s : slots_) s.buffer = alloc_aligned(slot_bytes_, "a window slot");
    const int n_io = std::max(1, options.io_threads);
    for (int i = 0; i < n_io && (!streamed_.empty() || moe_); ++i) io_threads_.emplace_back([this] { io_loop(); });
    if (options_.prefetch && !streamed_.empty()) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < window; ++i) issue((uint64_t)i);
    }
}

StreamingWeights::~StreamingWeights() { shutdown(); }

void StreamingWeights::shutdown() noexcept {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    io_wake_.notify_all();
    for (auto& t : io_threads_) t.join();
    io_threads_.clear();
    for (auto& s : slots_) std::free(std::exchange(s.buffer, nullptr));
    for (auto& u : units_) std::free(std::exchange(u.pinned, nullptr));
    for (auto& es : expert_slots_) std::free(std::exchange(es.buffer, nullptr));
    for (uint8_t*& p : router_pins_) std::free(std::exchange(p, nullptr));
    std::free(std::exchange(embd_buf_, nullptr));
}

const uint8_t* StreamingWeights::locate(const Unit& u, const uint8_t* base, const GgufTensorInfo& t) const {
    for (const Run& r : u.runs) {
        if (t.offset >= r.file_begin && t.offset + t.n_bytes <= r.file_begin + r.length)
            return base + r.slot_offset + (t.offset - r.file_begin);
    }
    if (moe_ && is_expert_tensor(t)) return nullptr;  // served per expert by acquire_experts
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
    uint64_t b = (uint64_t)slots_.size() * slot_bytes_ + embd_buf_bytes_ + expert_slots_.size() * expert_slot_bytes_;
    for (int il = 0; il < (int)router_pins_.size(); ++il) b += router_pin_bytes(*file_, il);
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
        const double start = now();
        double& io_start = c.expert ? expert_slots_[(size_t)c.slot].io_start : slots_[(size_t)c.slot].io_start;
        if (io_start == 0) io_start = start;
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
        stats_.bytes_read += c.length;
        if (c.expert) {
            ExpertSlot& es = expert_slots_[(size_t)c.slot];
            expert_stats_.bytes_read += c.length;
            if (!error.empty() && es.error.empty()) {
                es.error = error;
                es.error_kind = kind;
            }
            if (--es.pending == 0) {
                es.io_end = now();
                stats_.io_seconds += es.io_end - es.io_start;
                if (es.speculative_in_flight) {
                    speculative_in_flight_ -= expert_slot_bytes_;
                    es.speculative_in_flight = false;
                }
                es.state = es.error.empty() ? ExpertState::Ready : ExpertState::Failed;
                if (expert_events_.size() < kMaxEvents)
                    expert_events_.push_back(
                        ExpertReadEvent{es.layer, es.expert, es.issued_on_prediction, es.io_start, es.io_end});
            }
        } else {
            Slot& slot = slots_[(size_t)c.slot];
            if (!error.empty() && slot.error.empty()) {
                slot.error = error;
                slot.error_kind = kind;
            }
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
    // Expert reads dropped with the queue: those slots hold nothing usable.
    for (size_t i = 0; i < expert_slots_.size(); ++i) {
        ExpertSlot& es = expert_slots_[i];
        if (es.state != ExpertState::Loading) continue;
        if (es.speculative_in_flight) speculative_in_flight_ -= expert_slot_bytes_;
        forget(es);
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

// ---- expert cache ----

StreamingWeights::ExpertSpan StreamingWeights::expert_span(int il, int e, int m) const {
    const GgufTensorInfo* t = expert_tensors_[(size_t)(3 * il + m)];
    const uint64_t matrix = (uint64_t)t->ne[1] * t->row_bytes();
    const uint64_t off = t->offset + (uint64_t)e * matrix;
    const uint64_t begin = align_down(off);
    return ExpertSpan{begin, align_up(off + matrix) - begin, off - begin};
}

void StreamingWeights::forget(ExpertSlot& es) {
    if (es.layer >= 0) slot_of_expert_[(size_t)(es.layer * cfg_.n_expert + es.expert)] = -1;
    es.state = ExpertState::Free;
    es.layer = es.expert = -1;
    es.pending = es.pins = 0;
    es.speculative = es.speculative_in_flight = false;
    es.error.clear();
}

void StreamingWeights::touch(ExpertSlot& slot, bool use) {
    slot.last_use = ++tick_;
    if (use) {
        slot.speculative = false;
        expert_freq_[(size_t)(slot.layer * cfg_.n_expert + slot.expert)] += 1.0;
    }
}

int StreamingWeights::find_victim(bool for_prediction, uint64_t protect_from_tick) const {
    int best = -1;
    for (size_t i = 0; i < expert_slots_.size(); ++i) {
        const ExpertSlot& es = expert_slots_[i];
        if (es.state == ExpertState::Free) return (int)i;
        if (es.state == ExpertState::Loading || es.pins > 0) continue;
        // A prediction never evicts another prediction not yet used, nor what it just touched.
        if (for_prediction && (es.speculative || es.last_use >= protect_from_tick)) continue;
        if (best < 0) { best = (int)i; continue; }
        const ExpertSlot& b = expert_slots_[(size_t)best];
        bool better = es.last_use < b.last_use;
        if (options_.expert_policy == ExpertPolicy::Lfu) {
            const double fe = expert_freq_[(size_t)(es.layer * cfg_.n_expert + es.expert)];
            const double fb = expert_freq_[(size_t)(b.layer * cfg_.n_expert + b.expert)];
            better = fe < fb || (fe == fb && es.last_use < b.last_use);
        }
        if (es.state == ExpertState::Failed) better = true;
        if (better) best = (int)i;
    }
    return best;
}

void StreamingWeights::issue_expert(int slot, int il, int e, bool speculative) {
    ExpertSlot& es = expert_slots_[(size_t)slot];
    if (es.layer >= 0) {
        if (es.speculative && es.state == ExpertState::Ready) ++expert_stats_.speculative_unused;
        slot_of_expert_[(size_t)(es.layer * cfg_.n_expert + es.expert)] = -1;
    }
    es.layer = il;
    es.expert = e;
    es.state = ExpertState::Loading;
    es.pending = 0;
    es.pins = 0;
    es.speculative = speculative;
    es.issued_on_prediction = speculative;
    es.error.clear();
    es.io_start = es.io_end = 0;
    slot_of_expert_[(size_t)(il * cfg_.n_expert + e)] = slot;
    std::vector<Chunk> chunks;
    uint64_t at = 0;
    TensorView* views[3] = {&es.views.gate, &es.views.up, &es.views.down};
    for (int m = 0; m < 3; ++m) {
        const ExpertSpan span = expert_span(il, e, m);
        const GgufTensorInfo* t = expert_tensors_[(size_t)(3 * il + m)];
        TensorView& v = *views[m];
        v.info = t;
        v.type = t->type;
        v.ne0 = t->ne[0];
        v.ne1 = t->ne[1];
        v.ne2 = 1;
        v.row_bytes = (size_t)t->row_bytes();
        v.data = es.buffer + at + span.skip;
        for (uint64_t off = 0; off < span.length; off += kChunkBytes) {
            const uint64_t len = std::min(kChunkBytes, span.length - off);
            chunks.push_back(Chunk{slot, 0, es.buffer + at + off, span.file_begin + off, len, true});
        }
        at += expert_part_bytes_[m];
    }
    es.pending = (int)chunks.size();
    if (speculative) {
        // Behind everything already queued: layer reads and on-demand experts come first.
        for (const Chunk& c : chunks) queue_.push_back(c);
        speculative_in_flight_ += expert_slot_bytes_;
        es.speculative_in_flight = true;
        ++expert_stats_.reads_speculative;
    } else {
        for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) queue_.push_front(*it);
        ++expert_stats_.reads_on_demand;
    }
    io_wake_.notify_all();
}

void StreamingWeights::note_routing(int il, const int32_t* ids, int n) {
    if (!moe_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    ExpertLayerStats& ls = expert_stats_.layers[(size_t)il];
    for (int src = 0; src < 2; ++src) {
        if (!predictor_ran_[src][(size_t)il]) continue;
        std::vector<uint8_t>& pred = predicted_[src][(size_t)il];
        ls.needed_with_prediction[src] += (uint64_t)n;
        for (int i = 0; i < n; ++i) ls.correct[src] += pred[(size_t)ids[i]] ? 1 : 0;
        std::fill(pred.begin(), pred.end(), 0);
        predictor_ran_[src][(size_t)il] = 0;
    }
    if (il == 0 && ++passes_ % 64 == 0)
        for (double& f : expert_freq_) f *= 0.5;
}

void StreamingWeights::acquire_experts(int il, const LayerWeights& layer, const int32_t* ids, int n, ExpertWeights* out) {
    if (!moe_) return WeightProvider::acquire_experts(il, layer, ids, n, out);
    if (n > (int)expert_slots_.size()) {
        fail(ErrorKind::Internal, "[stream] " + std::to_string(n) + " experts asked at once, the cache holds " +
                                      std::to_string(expert_slots_.size()));
    }
    std::unique_lock<std::mutex> lock(mutex_);
    ExpertLayerStats& ls = expert_stats_.layers[(size_t)il];
    held_slots_.clear();
    for (int i = 0; i < n; ++i) {
        const size_t key = (size_t)(il * cfg_.n_expert + ids[i]);
        int s = slot_of_expert_[key];
        if (s >= 0 && expert_slots_[(size_t)s].state == ExpertState::Failed) {
            forget(expert_slots_[(size_t)s]);
            s = -1;
        }
        ++expert_stats_.uses;
        ++ls.uses;
        if (s >= 0) {
            ++expert_stats_.hits;
            ++ls.hits;
            ExpertSlot& es = expert_slots_[(size_t)s];
            if (es.state == ExpertState::Loading && es.speculative) {
                // Needed now: move its reads to the front of the queue (the rest keep their order).
                std::stable_partition(queue_.begin(), queue_.end(),
                                      [&](const Chunk& c) { return c.expert && c.slot == s; });
            }
        } else {
            ++expert_stats_.misses;
            for (;;) {
                s = find_victim(false, 0);
                if (s >= 0) break;
                slot_ready_.wait(lock);  // every free slot is loading a prediction: one will finish
            }
            issue_expert(s, il, ids[i], false);
        }
        ExpertSlot& es = expert_slots_[(size_t)s];
        ++es.pins;
        touch(es, true);
        held_slots_.push_back(s);
        out[i] = es.views;
    }
    const double wait_start = now();
    bool stalled = false;
    for (int s : held_slots_) {
        while (expert_slots_[(size_t)s].state == ExpertState::Loading) {
            stalled = true;
            slot_ready_.wait(lock);
        }
    }
    if (stalled) {
        const double stall = now() - wait_start;
        expert_stats_.stall_seconds += stall;
        stats_.stall_seconds += stall;
        stats_.stalls += 1;
    }
    for (int s : held_slots_) {
        ExpertSlot& es = expert_slots_[(size_t)s];
        if (es.state != ExpertState::Failed) continue;
        const std::string error = es.error + " (while reading expert " + std::to_string(es.expert) + " of layer " +
                                  std::to_string(il) + ")";
        const ErrorKind kind = es.error_kind;
        for (int h : held_slots_) --expert_slots_[(size_t)h].pins;
        held_slots_.clear();
        forget(es);
        throw Error(kind, error);
    }
}

void StreamingWeights::release_experts(int /*il*/) {
    if (!moe_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (int s : held_slots_) --expert_slots_[(size_t)s].pins;
    held_slots_.clear();
}

ExpertPrefetch StreamingWeights::expert_prefetch() const {
    return moe_ && options_.prefetch ? options_.expert_prefetch : ExpertPrefetch::Off;
}

bool StreamingWeights::router_weights(int il, TensorView* ffn_norm, TensorView* router) {
    if (!moe_ || il < 0 || il >= cfg_.n_layer) return false;
    *ffn_norm = router_norms_[(size_t)il];
    *router = routers_[(size_t)il];
    return true;
}

void StreamingWeights::prefetch_experts(int il, const int32_t* ids, int n, PredictionSource source) {
    if (!moe_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const int src = (int)source;
    ExpertLayerStats& ls = expert_stats_.layers[(size_t)il];
    std::vector<uint8_t>& pred = predicted_[src][(size_t)il];
    predictor_ran_[src][(size_t)il] = 1;
    const uint64_t call_tick = tick_ + 1;
    for (int i = 0; i < n; ++i) {
        if (pred[(size_t)ids[i]]) continue;
        pred[(size_t)ids[i]] = 1;
        ++ls.predicted[src];
        const size_t key = (size_t)(il * cfg_.n_expert + ids[i]);
        const int s = slot_of_expert_[key];
        if (s >= 0 && expert_slots_[(size_t)s].state != ExpertState::Failed) {
            touch(expert_slots_[(size_t)s], false);  // keep it until the router asks
            continue;
        }
        if (s >= 0) forget(expert_slots_[(size_t)s]);  // a failed read: try again
        if (speculative_in_flight_ + expert_slot_bytes_ > speculative_cap_) {
            ++expert_stats_.predictions_dropped;
            continue;
        }
        const int v = find_victim(true, call_tick);
        if (v < 0) {
            ++expert_stats_.predictions_dropped;
            continue;
        }
        issue_expert(v, il, ids[i], true);
        touch(expert_slots_[(size_t)v], false);
    }
}

ExpertStats StreamingWeights::expert_stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return expert_stats_;
}

std::vector<ExpertReadEvent> StreamingWeights::expert_events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return expert_events_;
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
    ExpertStats fresh;
    fresh.cache_slots = expert_stats_.cache_slots;
    fresh.slot_bytes = expert_stats_.slot_bytes;
    fresh.total_experts = expert_stats_.total_experts;
    fresh.layers.assign(expert_stats_.layers.size(), ExpertLayerStats{});
    expert_stats_ = fresh;
    expert_events_.clear();
}

}  // namespace edge_rt
