#include "edge_rt/memory_budget.h"

#include <cstdio>

#include "edge_rt/error.h"

namespace edge_rt {

const char* mem_class_name(MemClass c) noexcept {
    switch (c) {
        case MemClass::PinnedWeights: return "pinned_weights";
        case MemClass::WindowSlots: return "window_slots";
        case MemClass::ExpertCache: return "expert_cache";
        case MemClass::KvCache: return "kv_cache";
        case MemClass::Scratch: return "scratch";
        case MemClass::Metadata: return "metadata";
        case MemClass::Npu: return "npu";
        case MemClass::kCount: break;
    }
    return "?";
}

std::string format_bytes(uint64_t bytes) {
    char buf[64];
    if (bytes >= (1ull << 30))
        std::snprintf(buf, sizeof buf, "%.2f GiB", (double)bytes / (1ull << 30));
    else if (bytes >= (1ull << 20))
        std::snprintf(buf, sizeof buf, "%.1f MiB", (double)bytes / (1ull << 20));
    else if (bytes >= (1ull << 10))
        std::snprintf(buf, sizeof buf, "%.1f KiB", (double)bytes / (1ull << 10));
    else
        std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)bytes);
    return buf;
}

uint64_t MemoryAccountant::total() const noexcept {
    uint64_t t = 0;
    for (uint64_t u : used_) t += u;
    return t;
}

std::string MemoryAccountant::describe() const {
    std::string s;
    for (size_t i = 0; i < used_.size(); ++i) {
        if (!s.empty()) s += ", ";
        s += std::string(mem_class_name((MemClass)i)) + " " + format_bytes(used_[i]);
    }
    s += "; total " + format_bytes(total());
    if (budget_) s += " of budget " + format_bytes(budget_);
    return s;
}

void MemoryAccountant::reserve(MemClass c, uint64_t bytes, const std::string& what) {
    if (budget_ && total() + bytes > budget_) {
        fail(ErrorKind::OutOfMemory,
             "[budget] " + what + " needs " + format_bytes(bytes) + " more, exceeding the budget (" + describe() + ")");
    }
    used_[(size_t)c] += bytes;
}

void MemoryAccountant::release(MemClass c, uint64_t bytes) noexcept {
    uint64_t& u = used_[(size_t)c];
    u = bytes > u ? 0 : u - bytes;
}

}  // namespace edge_rt
