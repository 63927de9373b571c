#include "edge_rt/weight_provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"
#include "interleave.h"

namespace edge_rt {

namespace {

TensorView view_of(const GgufFile& file, const ModelConfig& cfg, const std::string& name, const TensorLocator& locate) {
    const GgufTensorInfo* t = file.find_tensor(name);
    if (!t) return TensorView{};  // optional tensor; required ones were checked by ModelConfig::from_gguf
    return TensorView::of(*t, locate(*t), cfg.repack);
}

}  // namespace

LayerWeights bind_layer_tensors(const GgufFile& file, const ModelConfig& cfg, int il, const TensorLocator& locate) {
    const std::string b = "blk." + std::to_string(il) + ".";
    auto v = [&](const char* suffix) { return view_of(file, cfg, b + suffix, locate); };
    LayerWeights w;
    w.attn_norm = v("attn_norm.weight");
    w.wq = v("attn_q.weight");
    w.wk = v("attn_k.weight");
    w.wv = v("attn_v.weight");
    w.wqkv = v("attn_qkv.weight");
    w.bq = v("attn_q.bias");
    w.bk = v("attn_k.bias");
    w.bv = v("attn_v.bias");
    w.q_norm = v("attn_q_norm.weight");
    w.k_norm = v("attn_k_norm.weight");
    w.wo = v("attn_output.weight");
    w.attn_post_norm = v("post_attention_norm.weight");
    w.ffn_norm = v("ffn_norm.weight");
    w.ffn_post_norm = v("post_ffw_norm.weight");
    w.ffn_gate = v("ffn_gate.weight");
    w.ffn_up = v("ffn_up.weight");
    w.ffn_down = v("ffn_down.weight");
    w.ffn_gate_inp = v("ffn_gate_inp.weight");
    w.ffn_gate_exps = v("ffn_gate_exps.weight");
    w.ffn_up_exps = v("ffn_up_exps.weight");
    w.ffn_down_exps = v("ffn_down_exps.weight");
    w.ffn_gate_inp_shexp = v("ffn_gate_inp_shexp.weight");
    w.ffn_gate_shexp = v("ffn_gate_shexp.weight");
    w.ffn_up_shexp = v("ffn_up_shexp.weight");
    w.ffn_down_shexp = v("ffn_down_shexp.weight");
    return w;
}

void WeightProvider::acquire_experts(int /*il*/, const LayerWeights& w, const int32_t* ids, int n, ExpertWeights* out) {
    for (int i = 0; i < n; ++i) {
        out[i].gate = w.ffn_gate_exps.expert(ids[i]);
        out[i].up = w.ffn_up_exps.expert(ids[i]);
        out[i].down = w.ffn_down_exps.expert(ids[i]);
    }
}

HeadWeights bind_head_tensors(const GgufFile& file, const ModelConfig& cfg, const TensorLocator& locate) {
    HeadWeights h;
    h.output_norm = view_of(file, cfg, "output_norm.weight", locate);
    h.output = view_of(file, cfg, cfg.tied_output ? "token_embd.weight" : "output.weight", locate);
    return h;
}

std::vector<const GgufTensorInfo*> layer_tensor_infos(const GgufFile& file, int il) {
    const std::string prefix = "blk." + std::to_string(il) + ".";
    std::vector<const GgufTensorInfo*> out;
    for (const auto& t : file.tensors())
        if (t.name.compare(0, prefix.size(), prefix) == 0) out.push_back(&t);
    return out;
}

std::vector<const GgufTensorInfo*> head_tensor_infos(const GgufFile& file, const ModelConfig& cfg) {
    std::vector<const GgufTensorInfo*> out;
    out.push_back(file.find_tensor("output_norm.weight"));
    out.push_back(file.find_tensor(cfg.tied_output ? "token_embd.weight" : "output.weight"));
    return out;
}

uint64_t ResidentWeights::bytes_needed(const GgufFile& f) {
    uint64_t begin = UINT64_MAX, end = 0;
    for (const auto& t : f.tensors()) {
        begin = std::min(begin, t.offset);
        end = std::max(end, t.offset + t.n_bytes);
    }
    return begin == UINT64_MAX ? 0 : end - begin;
}

ResidentWeights::ResidentWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& cfg)
    : file_(std::move(file)), n_embd_(cfg.n_embd) {
    const GgufFile& f = *file_;
    uint64_t begin = UINT64_MAX;
    for (const auto& t : f.tensors()) begin = std::min(begin, t.offset);
    if (begin == UINT64_MAX) begin = f.data_offset();
    base_offset_ = begin;
    size_ = bytes_needed(f);

    void* mem = nullptr;
    const size_t alloc = std::max<uint64_t>(size_, 1);
    if (posix_memalign(&mem, 4096, (size_t)((alloc + 4095) / 4096 * 4096)) != 0) {
        fail(ErrorKind::OutOfMemory,
             "[load] cannot allocate " + std::to_string(size_) + " bytes for the weights of '" + f.path() + "'");
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
            const std::string why =
                got < 0 ? std::strerror(errno) : "file is shorter than its tensor data (truncated?)";
            ::close(fd);
            std::free(buffer_);
            buffer_ = nullptr;
            fail(got < 0 ? ErrorKind::Io : ErrorKind::ModelFormat, "[load] reading tensor data of '" + f.path() +
                                                                       "' at offset " + std::to_string(begin + done) +
                                                                       ": " + why);
        }
        done += (uint64_t)got;
    }
    ::close(fd);

    const TensorLocator locate = [this](const GgufTensorInfo& t) { return buffer_ + (t.offset - base_offset_); };
    layers_.reserve((size_t)cfg.n_layer);
    for (int il = 0; il < cfg.n_layer; ++il) {
        layers_.push_back(bind_layer_tensors(f, cfg, il, locate));
        interleave_layer(layers_.back());
    }
    head_ = bind_head_tensors(f, cfg, locate);
    // A tied head's bytes are also the embedding rows read_embeddings dequantizes: left in the file's
    // layout (its Blockwise kernel reads plain rows).
    if (!cfg.tied_output) interleave_in_place(head_.output);
    token_embd_ = view_of(f, cfg, "token_embd.weight", locate);
}

ResidentWeights::~ResidentWeights() { std::free(buffer_); }

void ResidentWeights::read_embeddings(const int32_t* tokens, int64_t n, float* out) {
    const WeightKernels* k = weight_kernels(token_embd_.type);
    for (int64_t t = 0; t < n; ++t) k->dequantize_row(token_embd_.row(tokens[t]), out + t * n_embd_, n_embd_);
}

}  // namespace edge_rt
