#include "edge_rt/expert_predictor.h"

#include <cmath>

#include "edge_rt/error.h"
#include "edge_rt/file_reader.h"

namespace edge_rt {

namespace {

constexpr const char* kArch = "expert_predictor";
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kVersion = 1;  // scores = router + MLP correction

[[noreturn]] void bad(const std::string& path, const std::string& what) {
    fail(ErrorKind::ModelFormat, "[expert predictor] " + path + ": " + what);
}

void expect_key(const GgufFile& f, const std::string& key, int64_t want) {
    const int64_t got = f.get_int(key);
    if (got != want) {
        bad(f.path(), "'" + key + "' is " + std::to_string(got) + " but the model has " + std::to_string(want) +
                          " (a predictor fitted for another model)");
    }
}

}  // namespace

std::unique_ptr<ExpertPredictor> ExpertPredictor::load(const std::string& path, const ModelConfig& cfg) {
    if (!cfg.is_moe()) fail(ErrorKind::InvalidArgument, "[expert predictor] the model has no experts to predict");
    try {
        return parse(path, cfg);
    } catch (const Error& e) {
        // Errors from the GGUF reader name a key or tensor but not the file: say it is the predictor.
        const std::string msg = e.what();
        if (msg.rfind("[expert predictor]", 0) == 0) throw;
        throw Error(e.kind(), "[expert predictor] " + path + ": " + msg);
    }
}

std::unique_ptr<ExpertPredictor> ExpertPredictor::parse(const std::string& path, const ModelConfig& cfg) {
    auto p = std::unique_ptr<ExpertPredictor>(new ExpertPredictor());
    p->path_ = path;
    p->file_ = GgufFile::open(path);
    const GgufFile& f = *p->file_;
    const std::string arch = f.get_string_or("general.architecture", "");
    if (arch != kArch) {
        bad(path, "general.architecture is '" + arch + "', expected '" + kArch + "' (not an expert predictor file)");
    }
    const int64_t version = f.get_int("expert_predictor.version");
    if (version != kVersion) {
        bad(path, "'expert_predictor.version' is " + std::to_string(version) + ", this edge_rt reads version " +
                      std::to_string(kVersion) + " (refit with edge-rt fit-predictor)");
    }
    expect_key(f, "expert_predictor.n_embd", cfg.n_embd);
    expect_key(f, "expert_predictor.n_expert", cfg.n_expert);
    expect_key(f, "expert_predictor.block_count", cfg.n_layer);
    p->hidden_ = f.get_int("expert_predictor.hidden_size");
    if (p->hidden_ < 1 || p->hidden_ > kMaxHidden) {
        bad(path, "'expert_predictor.hidden_size' " + std::to_string(p->hidden_) + " outside [1, " +
                      std::to_string(kMaxHidden) + "]");
    }
    const int64_t E = cfg.n_embd, H = p->hidden_, NE = cfg.n_expert;
    struct Want {
        const char* suffix;
        int64_t ne0, ne1;
        bool is_1d;
    };
    const Want wants[4] = {{"expert_pred_hidden.weight", E, H, false},
                           {"expert_pred_hidden.bias", H, 1, true},
                           {"expert_pred_out.weight", H, NE, false},
                           {"expert_pred_out.bias", NE, 1, true}};
    const uint64_t per_layer = (uint64_t)(E * H + H + H * NE + NE);
    const size_t expected_tensors = (size_t)(cfg.n_layer - 1) * 4;
    if (f.tensors().size() != expected_tensors) {
        bad(path, "has " + std::to_string(f.tensors().size()) + " tensors, expected " +
                      std::to_string(expected_tensors) + " (4 for each layer 1.." + std::to_string(cfg.n_layer - 1) +
                      ")");
    }
    // Every tensor is checked before anything is allocated: the sizes are then those of tensors whose
    // data the reader proved to lie inside the file, so a hostile hidden_size cannot size a buffer.
    std::vector<const GgufTensorInfo*> infos;
    for (int64_t il = 1; il < cfg.n_layer; ++il) {
        for (const Want& want : wants) {
            const std::string name = "blk." + std::to_string(il) + "." + want.suffix;
            const GgufTensorInfo* t = f.find_tensor(name);
            if (!t) bad(path, "tensor '" + name + "' is missing");
            const bool is_1d = want.is_1d;
            if (t->type != GgmlType::F32 || t->ne[0] != want.ne0 || t->ne[1] != want.ne1 || t->ne[2] != 1 ||
                t->ne[3] != 1 || t->n_dims != (is_1d ? 1u : 2u)) {
                bad(path, "tensor '" + name + "' must be F32 of shape [" + std::to_string(want.ne0) +
                              (is_1d ? "" : ", " + std::to_string(want.ne1)) + "], got " + type_name(t->type) + " [" +
                              std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) + ", ...]");
            }
            infos.push_back(t);
        }
    }
    try {
        p->data_.resize((size_t)(per_layer * (uint64_t)(cfg.n_layer - 1)));
    } catch (const std::bad_alloc&) {
        fail(ErrorKind::OutOfMemory,
             "[expert predictor] cannot allocate " + std::to_string(per_layer) + " floats per layer");
    }
    auto reader = open_model_reader(path, IoMode::Buffered);
    p->layers_.resize((size_t)cfg.n_layer);
    float* dst = p->data_.data();
    for (size_t i = 0; i < infos.size(); ++i) {
        const GgufTensorInfo* t = infos[i];
        reader->read_exact(dst, (size_t)t->n_bytes, t->offset);
        for (uint64_t j = 0; j < t->n_elements; ++j) {
            if (!std::isfinite(dst[j])) bad(path, "tensor '" + t->name + "' holds a non-finite value");
        }
        Layer& L = p->layers_[1 + i / 4];
        const size_t role = i % 4;  // the order of `wants`
        if (role == 0 || role == 2) {
            (role == 0 ? L.hidden_w : L.out_w) = TensorView::of(*t, reinterpret_cast<const uint8_t*>(dst), cfg.repack);
        } else {
            (role == 1 ? L.hidden_b : L.out_b) = dst;
        }
        dst += t->n_elements;
    }
    return p;
}

const ExpertPredictor::Layer* ExpertPredictor::layer(int il) const noexcept {
    if (il < 1 || il >= (int)layers_.size()) return nullptr;
    return &layers_[(size_t)il];
}

}  // namespace edge_rt
