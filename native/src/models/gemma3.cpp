// The Gemma 3 block, as llama.cpp's gemma3 graph computes it (src/models/gemma3.cpp):
//   x += rms_norm(attention(rms_norm(x)), post_attention_norm)
//   x += rms_norm(ffn(rms_norm(x)), post_ffw_norm)           ffn: GELU(tanh)-gated (GeGLU)
// What differs inside attention is read from the config (ModelConfig, Gemma 3 fields): q/k RMS norms,
// NeoX RoPE with the local or global base per layer, q scaled before the scores, the sliding window on
// local layers. The embedding scale and the final logit softcap are the engine's (engine.cpp).
#include "../attention.h"
#include "../ffn.h"
#include "../ops.h"
#include "registry.h"

namespace edge_rt {

void gemma3_block(ForwardPass& f, int il, const LayerWeights& w) {
    Scratch& s = f.s;
    const int64_t rows = f.n * f.cfg.n_embd;
    norm_rows(f, s.x.data(), w.attn_norm, s.cur.data());
    attention(f, il, w, s.cur.data(), s.cur.data());
    norm_rows(f, s.cur.data(), w.attn_post_norm, s.cur.data());
    add_into(s.x.data(), s.cur.data(), rows);
    ffn_boundary(f, il);
    const FfnRows ffn_rows(f, il);
    const int64_t t0 = ffn_rows.first, m = ffn_rows.count, E = f.cfg.n_embd;
    if (m == 0) return;
    norm_rows(f, s.x.data(), w.ffn_norm, s.cur.data(), t0);
    gated_ffn(f, il, w.ffn_gate, w.ffn_up, w.ffn_down, 0, s.cur.data() + t0 * E, m, f.cfg.n_ff,
              s.ffn_out.data() + t0 * E, GateActivation::GeluTanh);
    norm_rows(f, s.ffn_out.data(), w.ffn_post_norm, s.ffn_out.data(), t0);
    add_into(s.x.data() + t0 * E, s.ffn_out.data() + t0 * E, m * E);
}

}  // namespace edge_rt
