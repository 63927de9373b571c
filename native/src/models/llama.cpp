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
    if (!f.cfg.is_moe()) {
        const FfnRows ffn_rows(f, il);
        const int64_t t0 = ffn_rows.first, m = ffn_rows.count, E = f.cfg.n_embd;
        if (m == 0) return;
        norm_rows(f, s.x.data(), w.ffn_norm, s.cur.data(), t0);
        gated_ffn(f, il, w.ffn_gate, w.ffn_up, w.ffn_down, 0, s.cur.data() + t0 * E, m, f.cfg.n_ff,
                  s.ffn_out.data() + t0 * E);
        add_into(s.x.data() + t0 * E, s.ffn_out.data() + t0 * E, m * E);
    } else {
        norm_rows(f, s.x.data(), w.ffn_norm, s.cur.data());
        moe_ffn(f, il, w);
        add_into(s.x.data(), s.moe.data(), rows);
    }
}

}  // namespace edge_rt
