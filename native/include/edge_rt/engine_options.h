// What an Engine is asked to do, in two groups as llama.cpp's llama_model_params and
// llama_context_params: the model's settings (how its weights are placed, streamed and predicted)
// apart from one evaluation context's (threads, context length, micro-batch).
//
// Contract: check_options() is the one place their ranges are checked, and the parse_* functions the
// one place their names are parsed; each failure is Error(InvalidArgument) naming the option as
// edge_rt.load() spells it. Checks that need the model (expert options on a dense model) are made by
// the Engine once the file is read. 0 means "the default" for every count and size below.
//
// Adding an option: a field here (and its check), its property in bindings/bind_engine.cpp, its keyword
// in edge_rt/loading.py load().
#pragma once

#include <cstdint>
#include <string>

#include "edge_rt/streaming_weights.h"

namespace edge_rt {

struct ModelParams {
    uint64_t mem_budget = 0;     // hard cap on the engine's memory in bytes; 0 = none (all weights resident)
    StreamingOptions streaming;  // used when mem_budget is set (window, I/O, expert cache, prediction)
    // Sidecar expert predictor (expert_predictor.h) for next-layer prefetch: its correction is added to
    // layer i+1's router scores there; empty = the router alone. Needs an MoE model, mem_budget and
    // next-layer prefetch; counted as pinned weights (plus its scratch).
    std::string expert_predictor;
    // The predictor was found next to the model rather than asked for: it is used when next-layer
    // prefetch would use it and the file is usable, and otherwise left out with a note in
    // Engine::notes() instead of an error (it only changes what is read ahead, never the output).
    bool expert_predictor_optional = false;
    // Bytes the caller holds for this model's metadata outside the engine (edge_rt.load: the Python
    // tokenizer and the metadata it was built from), counted in MemClass::Metadata against mem_budget.
    uint64_t host_metadata_bytes = 0;
    // Bytes of an NPU prefill stage the caller runs for this model (edge_rt.load(npu=...): the exported
    // graph's weights and its activation and KV buffers), counted in MemClass::Npu against mem_budget:
    // the NPUs edge_rt targets (phones, Jetson, the emulator) share the device's RAM.
    uint64_t npu_bytes = 0;
    // Sum Q4_0 and Q4_K matrices (row counts a multiple of 8) as llama.cpp's x86 build sums the repacked
    // copies it makes of them (kernels.h SumOrder::Blockwise; interleaved in RAM or in each window slot).
    // false: as llama.cpp with --no-repack (use_extra_bufts = false), which runs them in the file's layout
    // (SumOrder::Lanes: vec_dot, the tiled K-quant matmul, tinyBLAS), for bit-for-bit parity with such a
    // llama.cpp (e.g. an AMX build opened without extra buffers, edge_rt/llama_cpp_peer.py).
    bool repack = true;
};

struct ContextParams {
    int n_threads = 1;
    int64_t n_ctx = 2048;
    int64_t n_ubatch = 0;  // tokens per prefill micro-batch (bounds scratch); 0 = 256, or 128 under a budget or for MoE
};

struct EngineOptions {
    ModelParams model;
    ContextParams context;
};

constexpr int kMaxThreads = 1024;
constexpr int64_t kMaxContext = int64_t(1) << 22;  // n_ctx in [1, kMaxContext]
constexpr int kMaxWindow = 4096;
constexpr int64_t kMaxUbatch = 1 << 16;

// Ranges of every option, and options that need another (a window or an expert cache without a budget).
void check_options(const EngineOptions& options);

ExpertPolicy parse_expert_policy(const std::string& name);      // "lru" | "lfu"
ExpertPrefetch parse_expert_prefetch(const std::string& name);  // "off" | "same" | "next" | "both"
const char* expert_policy_name(ExpertPolicy policy) noexcept;
const char* expert_prefetch_name(ExpertPrefetch prefetch) noexcept;
const char* io_mode_name(IoMode mode) noexcept;

}  // namespace edge_rt
