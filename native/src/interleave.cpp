#include "interleave.h"

#include <vector>

#include "edge_rt/kernels.h"

namespace edge_rt {

bool interleave_in_place(TensorView& v) {
    if (!v.present() || v.data == nullptr || v.interleaved || v.sum_order != SumOrder::Blockwise) return false;
    const WeightKernels* k = weight_kernels(v.type);
    if (k == nullptr || k->interleave_x8 == nullptr || k->gemm_x8 == nullptr) return false;
    const size_t group_bytes = 8 * v.row_bytes;
    std::vector<uint8_t> rows(group_bytes);
    auto* base = const_cast<uint8_t*>(v.data);  // the provider's own buffer (see the contract)
    for (int64_t e = 0; e < v.ne2; ++e) {
        uint8_t* m = base + (size_t)e * v.matrix_bytes();
        for (int64_t g = 0; g < v.ne1 / 8; ++g) {
            uint8_t* at = m + (size_t)g * group_bytes;
            std::copy(at, at + group_bytes, rows.begin());
            k->interleave_x8(rows.data(), v.row_bytes, v.ne0, at);
        }
    }
    v.interleaved = true;
    return true;
}

void interleave_layer(LayerWeights& w) {
    // Fused tensors a recipe splits into row views (phi3's attn_qkv, and ffn_up holding gate and up when
    // there is no ffn_gate) stay in the file's layout: their split points need not be whole groups.
    const bool fused_gate_up = w.ffn_up.present() && !w.ffn_gate.present();
    for (TensorView* v : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ffn_gate, &w.ffn_down, &w.ffn_gate_inp, &w.ffn_gate_exps,
                          &w.ffn_up_exps, &w.ffn_down_exps, &w.ffn_gate_shexp, &w.ffn_up_shexp, &w.ffn_down_shexp})
        interleave_in_place(*v);
    if (!fused_gate_up) interleave_in_place(w.ffn_up);
}

}  // namespace edge_rt
