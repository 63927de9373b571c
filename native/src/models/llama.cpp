// The llama block (also qwen2, qwen3 and the Mixture-of-Experts llama/Mixtral, qwen2moe, qwen3moe):
//   x += attention(rms_norm(x))
//   x += ffn(rms_norm(x))        ffn: SwiGLU, or a mixture of SwiGLU experts
#include "../attention.h"
#include "../ffn.h"
#include "../ops.h"
#include "registry.h"

namespace edge_rt {

void llama_block(ForwardPass& f, int il, const LayerWeights& w) {
    Scratch& s = f.s;
    const int64_t rows = f.n * f.cfg.n_embd;
    norm_rows(f, s.x.data(), w.attn_norm, s.cur.data());
    attention(f, il, w, s.cur.data(), s.cur.data());
    add_into(s.x.data(), s.cur.data(), rows);
    ffn_boundary(f, il);
    norm_rows(f, s.x.data(), w.ffn_norm, s.cur.data());
    if (!f.cfg.is_moe()) {
        gated_ffn(f, il, w.ffn_gate, w.ffn_up, w.ffn_down, 0, s.cur.data(), f.n, f.cfg.n_ff, s.ffn_out.data());
        add_into(s.x.data(), s.ffn_out.data(), rows);
    } else {
        moe_ffn(f, il, w);
        add_into(s.x.data(), s.moe.data(), rows);
    }
}

}  // namespace edge_rt
