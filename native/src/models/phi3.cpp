// The phi3 block (Phi-3, Phi-3.5 mini and medium), as llama.cpp's llama_model_phi3 computes it: the
// llama block over views into phi3's fused tensors.
//   attn_qkv [n_embd, q_dim + 2 kv_dim]: q rows, then k rows, then v rows (llama.cpp's build_qkv views)
//   ffn_up   [n_embd, 2 n_ff]: gate rows, then up rows (ggml_swiglu: silu(first half) * second half)
// A view's rows are dotted with the activations exactly as the fused tensor's rows would be, so splitting
// changes no bit; the views point into whatever buffer the provider filled (resident or a window slot).
// The rest is configuration the shared ops read: NeoX RoPE with the long/short factors and attention
// factor, q scaled by 1/sqrt(head_dim) before the scores (ModelConfig::query_scale).
#include "registry.h"

namespace edge_rt {

void phi3_block(ForwardPass& f, int il, const LayerWeights& fused) {
    const ModelConfig& c = f.cfg;
    LayerWeights w = fused;
    w.wq = fused.wqkv.rows(0, c.q_dim());
    w.wk = fused.wqkv.rows(c.q_dim(), c.kv_dim());
    w.wv = fused.wqkv.rows(c.q_dim() + c.kv_dim(), c.kv_dim());
    w.ffn_gate = fused.ffn_up.rows(0, c.n_ff);
    w.ffn_up = fused.ffn_up.rows(c.n_ff, c.n_ff);
    llama_block(f, il, w);
}

}  // namespace edge_rt
