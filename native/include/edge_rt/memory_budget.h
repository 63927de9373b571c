// One accountant for every byte the engine allocates, by class, against an optional hard budget.
//
// Contract: reserve(class, bytes, what) adds to the class and throws Error(OutOfMemory) naming `what`,
// the budget and the classes when the total would exceed the budget (nothing is added then).
// release() subtracts. A budget of 0 means unlimited. Not thread-safe: the engine reserves at load,
// from one thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace edge_rt {

// Metadata: the parsed GGUF key/values and tensor infos the engine keeps (GgufFile::metadata_bytes) plus
// what the caller declares it holds for the same model (ModelParams::host_metadata_bytes: the Python
// tokenizer and its copy of the metadata).
// Npu: what a prefill stage outside the engine holds for the same model on an NPU that shares RAM
// (ModelParams::npu_bytes: the exported graph's weights and its activation and KV buffers).
enum class MemClass { PinnedWeights = 0, WindowSlots, ExpertCache, KvCache, Scratch, Metadata, Npu, kCount };

const char* mem_class_name(MemClass c) noexcept;  // "pinned_weights", "window_slots", ...

class MemoryAccountant {
public:
    explicit MemoryAccountant(uint64_t budget_bytes = 0) : budget_(budget_bytes) {}

    void reserve(MemClass c, uint64_t bytes, const std::string& what);
    void release(MemClass c, uint64_t bytes) noexcept;

    uint64_t budget() const noexcept { return budget_; }
    uint64_t used(MemClass c) const noexcept { return used_[(size_t)c]; }
    uint64_t total() const noexcept;
    std::string describe() const;  // "pinned_weights 1.2 MiB, window_slots ..., total ... of budget ..."

private:
    uint64_t budget_;
    std::array<uint64_t, (size_t)MemClass::kCount> used_{};
};

std::string format_bytes(uint64_t bytes);  // "1.50 GiB", "12.0 MiB", "512 B"

}  // namespace edge_rt
