#include "edge_rt/weight_provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "edge_rt/error.h"

namespace edge_rt {

namespace {

TensorView view_of(const GgufFile& file, const std::string& name, const uint8_t* base, uint64_t base_offset) {
    TensorView v;
    const GgufTensorInfo* t = file.find_tensor(name);
    if (!t) return v;  // optional tensor; required ones were checked by ModelConfig::from_gguf
    v.info = t;
    v.type = t->type;
    v.ne0 = t->ne[0];
    v.ne1 = t->ne[1];
    v.row_bytes = (size_t)t->row_bytes();
    v.data = base + (t->offset - base_offset);
    return v;
}

}  // namespace

LayerWeights bind_layer_tensors(const GgufFile& file, const ModelConfig& cfg, int il, const uint8_t* base,
                                uint64_t base_offset) {
    const std::string b = "blk." + std::to_string(il) + ".";
    auto v = [&](const char* suffix) { return view_of(file, b + suffix, base, base_offset); };
    LayerWeights w;
    w.attn_norm = v("attn_norm.weight");
    w.wq = v("attn_q.weight");
    w.wk = v("attn_k.weight");
    w.wv = v("attn_v.weight");
    w.bq = v("attn_q.bias");
    w.bk = v("attn_k.bias");
    w.bv = v("attn_v.bias");
    w.q_norm = v("attn_q_norm.weight");
    w.k_norm = v("attn_k_norm.weight");
    w.wo = v("attn_output.weight");
    w.ffn_norm = v("ffn_norm.weight");
    w.ffn_gate = v("ffn_gate.weight");
    w.ffn_up = v("ffn_up.weight");
    w.ffn_down = v("ffn_down.weight");
    return w;
}

GlobalWeights bind_global_tensors(const GgufFile& file, const ModelConfig& cfg, const uint8_t* base,
                                  uint64_t base_offset) {
    GlobalWeights g;
    g.token_embd = view_of(file, "token_embd.weight", base, base_offset);
    g.output_norm = view_of(file, "output_norm.weight", base, base_offset);
    g.output = cfg.tied_output ? g.token_embd : view_of(file, "output.weight", base, base_offset);
    return g;
}

ResidentWeights::ResidentWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg) : file_(std::move(file)) {
    const GgufFile& f = *file_;
    uint64_t begin = UINT64_MAX, end = 0;
    for (const auto& t : f.tensors()) {
        begin = std::min(begin, t.offset);
        end = std::max(end, t.offset + t.n_bytes);
    }
    if (begin == UINT64_MAX) begin = end = f.data_offset();
    base_offset_ = begin;
    size_ = end - begin;

    void* mem = nullptr;
    const size_t alloc = std::max<uint64_t>(size_, 1);
    if (posix_memalign(&mem, 4096, (size_t)((alloc + 4095) / 4096 * 4096)) != 0) {
        fail(ErrorKind::OutOfMemory, "[load] cannot allocate " + std::to_string(size_) + " bytes for the weights of '" +
                                         f.path() + "'");
    }
    buffer_ = static_cast<uint8_t*>(mem);

    const int fd = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        std::free(buffer_);
        fail(ErrorKind::Io, "[load] cannot open '" + f.path() + "': " + std::strerror(errno));
    }
    uint64_t done = 0;
    constexpr uint64_t kChunk = 64ull << 20;
    while (done < size_) {
        const size_t want = (size_t)std::min<uint64_t>(kChunk, size_ - done);
        const ssize_t got = ::pread(fd, buffer_ + done, want, (off_t)(begin + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            const std::string why = got < 0 ? std::strerror(errno) : "file is shorter than its tensor data (truncated?)";
            ::close(fd);
            std::free(buffer_);
            buffer_ = nullptr;
            fail(got < 0 ? ErrorKind::Io : ErrorKind::ModelFormat,
                 "[load] reading tensor data of '" + f.path() + "' at offset " + std::to_string(begin + done) + ": " + why);
        }
        done += (uint64_t)got;
    }
    ::close(fd);

    layers_.reserve((size_t)cfg.n_layer);
    for (int il = 0; il < cfg.n_layer; ++il) layers_.push_back(bind_layer_tensors(f, cfg, il, buffer_, base_offset_));
    globals_ = bind_global_tensors(f, cfg, buffer_, base_offset_);
}

ResidentWeights::~ResidentWeights() { std::free(buffer_); }

}  // namespace edge_rt
