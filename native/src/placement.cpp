#include "edge_rt/placement.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "edge_rt/error.h"
#include "edge_rt/file_reader.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

namespace {

constexpr uint64_t kAlign = kDirectAlign;
// Tensors of one unit closer than this are read as one run (the gap is read and ignored): one large
// sequential request beats several small ones on flash.
constexpr uint64_t kMergeGap = 256 * 1024;

const char* const kExpertSuffix[3] = {".ffn_gate_exps.weight", ".ffn_up_exps.weight", ".ffn_down_exps.weight"};

bool ends_with(const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Tensors of unit u: a layer (without its experts in an MoE model) or the head.
std::vector<const GgufTensorInfo*> unit_tensor_infos(const GgufFile& file, const ModelConfig& cfg, int u) {
    if (u == cfg.n_layer) return head_tensor_infos(file, cfg);
    std::vector<const GgufTensorInfo*> ts = layer_tensor_infos(file, u);
    if (cfg.is_moe())
        ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto* t) { return is_expert_tensor(*t); }), ts.end());
    return ts;
}

// Coalesces a unit's tensors into 4096-aligned file runs (tensors closer than kMergeGap share a run),
// packed one after the other in the unit's buffer.
std::vector<WeightRun> coalesce(std::vector<const GgufTensorInfo*> tensors) {
    std::sort(tensors.begin(), tensors.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    std::vector<WeightRun> runs;
    for (const auto* t : tensors) {
        const uint64_t b = align_down_direct(t->offset), e = align_up_direct(t->offset + t->n_bytes);
        if (!runs.empty() && b <= runs.back().file_begin + runs.back().length + kMergeGap) {
            runs.back().length = std::max(runs.back().length, e - runs.back().file_begin);
        } else {
            runs.push_back(WeightRun{b, e - b, 0});
        }
    }
    uint64_t at = 0;
    for (WeightRun& r : runs) {
        r.slot_offset = at;
        at += r.length;
    }
    return runs;
}

// Room one matrix of an expert needs in a slot: its 4096-aligned file span, whatever its alignment.
uint64_t expert_part_room(uint64_t matrix_bytes) { return align_up_direct(matrix_bytes) + kAlign; }

// Bytes to pin layer il's router and its input norm (aligned spans).
uint64_t router_pin_bytes(const GgufFile& file, int il) {
    uint64_t b = 0;
    for (const char* suffix : {".ffn_norm.weight", ".ffn_gate_inp.weight"}) {
        const GgufTensorInfo* t = file.find_tensor("blk." + std::to_string(il) + suffix);
        if (t) b += align_up_direct(t->offset + t->n_bytes) - align_down_direct(t->offset);
    }
    return b;
}

// MoE sizes: per matrix (gate, up, down) the largest room over layers (their sum is one expert slot),
// the pinned routers, and the largest expert's bytes in the file (its three matrices, unpadded).
uint64_t measure_experts(const GgufFile& file, const ModelConfig& cfg, Placement& p) {
    uint64_t largest = 0;
    for (int il = 0; il < cfg.n_layer; ++il) {
        uint64_t bytes = 0;
        for (int m = 0; m < 3; ++m) {
            const GgufTensorInfo* t = expert_tensor(file, il, m);
            if (!t) continue;  // ModelConfig::from_gguf requires them; keep the sizing total
            p.expert_part_bytes[m] = std::max(p.expert_part_bytes[m], expert_part_room(t->ne[1] * t->row_bytes()));
            bytes += t->ne[1] * t->row_bytes();
        }
        largest = std::max(largest, bytes);
        p.router_pin_bytes.push_back(router_pin_bytes(file, il));
        p.router_bytes += p.router_pin_bytes.back();
    }
    p.expert_slot_bytes = p.expert_part_bytes[0] + p.expert_part_bytes[1] + p.expert_part_bytes[2];
    p.total_experts = (uint64_t)cfg.n_layer * (uint64_t)cfg.n_expert;
    return largest;
}

uint64_t largest_unit(const Placement& p) {
    uint64_t largest = 0;
    for (const WeightUnit& u : p.units) largest = std::max(largest, u.packed_bytes);
    return largest;
}

// Everything place_weights() needs that does not depend on the budget. Returns the placement with its
// sizes set; *expert_file_bytes receives the largest expert's file bytes (MoE).
Placement measure(const GgufFile& file, const ModelConfig& cfg, uint64_t* expert_file_bytes) {
    Placement p;
    p.units.resize((size_t)cfg.n_layer + 1);
    for (int u = 0; u <= (int)cfg.n_layer; ++u) {
        WeightUnit& unit = p.units[(size_t)u];
        unit.tensors = unit_tensor_infos(file, cfg, u);
        unit.runs = coalesce(unit.tensors);
        for (const WeightRun& r : unit.runs) unit.packed_bytes += r.length;
    }
    p.embd_buf_bytes = align_up_direct(file.find_tensor("token_embd.weight")->row_bytes()) + 2 * kAlign;
    p.moe = cfg.is_moe();
    const uint64_t largest_expert = p.moe ? measure_experts(file, cfg, p) : 0;
    if (expert_file_bytes) *expert_file_bytes = largest_expert;
    p.floor = largest_unit(p) + (p.moe ? p.router_bytes + p.expert_slot_bytes : 0) + p.embd_buf_bytes;
    return p;
}

// MoE: the expert cache's first share of the budget (p.expert_slots) and the routers. Returns the bytes
// they take from `avail` (0 when the budget is unlimited).
uint64_t reserve_experts(Placement& p, const ModelConfig& cfg, const PlacementRequest& req, uint64_t expert_file_bytes,
                         uint64_t avail) {
    if (req.expert_cache_bytes) {
        // Counted in the experts' file bytes, so that "all expert bytes" caches every expert.
        p.expert_slots = std::min(p.total_experts, std::max<uint64_t>(1, req.expert_cache_bytes / expert_file_bytes));
    } else {
        // Layers are placed first (attention runs every token, an expert k/n of them), keeping room
        // for one token's experts; the cache then takes what the layers leave.
        p.expert_slots = std::min<uint64_t>(p.total_experts, (uint64_t)cfg.n_expert_used);
    }
    if (avail == UINT64_MAX) return 0;
    const uint64_t largest = largest_unit(p);
    if (!req.expert_cache_bytes) {  // near the minimum: fewer than k slots (acquired in groups)
        const uint64_t room = avail > p.router_bytes + largest ? avail - p.router_bytes - largest : 0;
        p.expert_slots = std::max<uint64_t>(1, std::min(p.expert_slots, room / p.expert_slot_bytes));
    }
    const uint64_t need = p.router_bytes + p.expert_slots * p.expert_slot_bytes;
    if (avail < need + largest) {
        fail(ErrorKind::OutOfMemory, "[budget] an expert cache of " + std::to_string(p.expert_slots) + " experts (" +
                                         format_bytes(p.expert_slots * p.expert_slot_bytes) +
                                         ") does not fit the budget with one layer slot and the routers");
    }
    return need;
}

// Pins the largest units that fit `avail` beside `window_wanted` slots (else beside one slot); the
// rest stream, and a slot is as large as the largest streamed unit.
void pin_largest(Placement& p, int window_wanted, uint64_t avail) {
    const int n_units = (int)p.units.size();
    std::vector<int> order((size_t)n_units);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return p.units[(size_t)a].packed_bytes > p.units[(size_t)b].packed_bytes; });
    // With k units pinned (the k largest), slots are as large as the (k+1)-th largest unit.
    auto need = [&](int k, int w) {
        uint64_t pinned = 0;
        for (int i = 0; i < k; ++i) pinned += p.units[(size_t)order[(size_t)i]].packed_bytes;
        const uint64_t slot = k < n_units ? p.units[(size_t)order[(size_t)k]].packed_bytes : 0;
        return pinned + (k < n_units ? (uint64_t)w * slot : 0);
    };
    int k_pinned = -1;
    for (int w : {window_wanted, 1}) {
        for (int k = n_units; k >= 0; --k) {
            if (need(k, std::min(w, n_units - k)) <= avail) {
                k_pinned = k;
                break;
            }
        }
        if (k_pinned >= 0) break;
    }
    if (k_pinned < 0) k_pinned = 0;  // unreachable after the floor check; keeps the analysis simple
    for (int i = 0; i < k_pinned; ++i) {
        p.units[(size_t)order[(size_t)i]].pinned = true;
        p.pinned_bytes += p.units[(size_t)order[(size_t)i]].packed_bytes;
    }
    for (int u = 0; u < n_units; ++u) {
        if (p.units[(size_t)u].pinned) continue;
        p.streamed.push_back(u);
        p.slot_bytes = std::max(p.slot_bytes, p.units[(size_t)u].packed_bytes);
    }
}

// Window slots for the streamed units in what the pinned units leave of `avail`.
int choose_window(const Placement& p, const PlacementRequest& req, uint64_t avail) {
    if (p.streamed.empty()) return 0;
    const uint64_t room = avail == UINT64_MAX ? UINT64_MAX : avail - p.pinned_bytes;
    const uint64_t fits = room / p.slot_bytes;
    int window = 0;
    if (req.window > 0) {
        if ((uint64_t)req.window > fits) {
            fail(ErrorKind::OutOfMemory, "[budget] window of " + std::to_string(req.window) + " slots of " +
                                             format_bytes(p.slot_bytes) + " does not fit the budget (room for " +
                                             std::to_string(fits) + ")");
        }
        window = req.window;
    } else {
        window = (int)std::min<uint64_t>(fits, p.streamed.size());
        // MoE: two slots overlap a layer's read with compute; the rest of the budget caches experts.
        if (p.moe) window = std::min(window, 2);
    }
    if (!req.prefetch) window = 1;  // no overlap: read, compute, free (pinned units stay)
    return std::max(window, 1);
}

}  // namespace

const GgufTensorInfo* expert_tensor(const GgufFile& file, int il, int m) {
    return file.find_tensor("blk." + std::to_string(il) + kExpertSuffix[m]);
}

bool is_expert_tensor(const GgufTensorInfo& t) {
    for (const char* suffix : kExpertSuffix)
        if (ends_with(t.name, suffix)) return true;
    return false;
}

uint64_t weight_floor(const GgufFile& file, const ModelConfig& cfg) { return measure(file, cfg, nullptr).floor; }

Placement place_weights(const GgufFile& file, const ModelConfig& cfg, const PlacementRequest& req) {
    uint64_t expert_file_bytes = 0;
    Placement p = measure(file, cfg, &expert_file_bytes);
    const uint64_t minimum = req.reserved + p.floor;
    if (req.budget && req.budget < minimum) {  // Engine checks this first; kept so the placement stands alone
        fail(ErrorKind::OutOfMemory, "[budget] memory budget " + std::to_string(req.budget) +
                                         " bytes is below the minimum " + std::to_string(minimum) + " bytes for '" +
                                         file.path() + "'");
    }
    uint64_t avail = req.budget ? req.budget - req.reserved - p.embd_buf_bytes : UINT64_MAX;
    if (p.moe) avail -= reserve_experts(p, cfg, req, expert_file_bytes, avail);
    pin_largest(p, req.window > 0 ? req.window : 2, avail);  // two slots overlap I/O with compute
    p.window = choose_window(p, req, avail);
    if (p.moe && !req.expert_cache_bytes) {  // the cache takes what the layers leave
        const uint64_t used = p.pinned_bytes + (uint64_t)p.window * p.slot_bytes;
        const uint64_t left = avail == UINT64_MAX ? UINT64_MAX : avail - std::min(avail, used);
        p.expert_slots = left == UINT64_MAX ? p.total_experts
                                            : std::min(p.total_experts, p.expert_slots + left / p.expert_slot_bytes);
    }
    return p;
}

}  // namespace edge_rt
