// libFuzzer harness: the streaming layout reader, a placement over a fuzzed file.
//
// For each input that parses as a model: place_weights() for an unlimited budget, the floor and
// 1.5x the floor (a pure function: it must either place or throw OutOfMemory), then a StreamingWeights
// provider at the floor (every unit streams through one slot) reads every layer, the head, the first
// and last embedding rows and, in an MoE model, expert 0 and the last expert of each layer, exactly as
// the engine's forward pass acquires them. The file is a memfd, so reads are buffered; the reader's
// own range checks (a run past the end, a short read) must surface as edge_rt::Error. OutOfMemory is a
// finding: the budget given is the floor the placement itself computed.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/memory_budget.h"
#include "edge_rt/model_config.h"
#include "edge_rt/placement.h"
#include "edge_rt/streaming_weights.h"
#include "fuzz_file.h"

using namespace edge_rt;

namespace {

// Inputs are a few hundred KiB at most (-max_len), so a model that still asks for more than this
// is refused by the harness itself rather than allocating what the file claims.
constexpr uint64_t kMaxFloor = 64ull << 20;

bool expected(const Error& e) {
    switch (e.kind()) {
        case ErrorKind::ModelFormat:
        case ErrorKind::UnsupportedArchitecture:
        case ErrorKind::UnsupportedType:
        case ErrorKind::Io: return true;
        default: return false;
    }
}

void stream_every_unit(const std::shared_ptr<const GgufFile>& gguf, const ModelConfig& cfg, uint64_t budget) {
    MemoryAccountant accountant(budget);
    StreamingOptions so;
    so.io_mode = IoMode::Buffered;
    so.io_threads = 1;
    StreamingWeights w(gguf, cfg, accountant, so);
    for (int il = 0; il < (int)cfg.n_layer; ++il) {
        const LayerWeights& layer = w.acquire_layer(il);
        if (cfg.is_moe()) {
            int32_t ids[2] = {0, (int32_t)(cfg.n_expert - 1)};
            int n = cfg.n_expert > 1 ? 2 : 1;
            int max_n = w.max_experts_per_acquire();
            if (max_n > 0 && n > max_n) n = max_n;
            ExpertWeights out[2];
            w.note_routing(il, ids, n);
            w.acquire_experts(il, layer, ids, n, out);
            w.release_experts(il);
        }
        w.release_layer(il);
    }
    w.acquire_head();
    w.release_head();
    int32_t tokens[2] = {0, (int32_t)(cfg.n_vocab - 1)};
    std::vector<float> rows((size_t)cfg.n_embd * 2);
    w.read_embeddings(tokens, 2, rows.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzFile file(data, size);
    try {
        std::shared_ptr<const GgufFile> gguf = GgufFile::open(file.path());
        ModelConfig cfg = ModelConfig::from_gguf(*gguf);
        uint64_t floor = weight_floor(*gguf, cfg);
        if (floor > kMaxFloor) return 0;
        for (uint64_t budget : {uint64_t{0}, floor, floor + floor / 2}) {
            PlacementRequest req;
            req.budget = budget;
            // The floor is what place_weights() checks: at or above it, a placement must exist.
            Placement p = place_weights(*gguf, cfg, req);
            if (p.units.size() != (size_t)cfg.n_layer + 1) std::abort();
        }
        stream_every_unit(gguf, cfg, floor);
    } catch (const Error& e) {
        if (!expected(e)) std::abort();
    }
    return 0;
}
