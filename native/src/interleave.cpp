#include "interleave.h"

#include <vector>

#include "edge_rt/kernels.h"

namespace edge_rt {

void interleave_groups_in_place(const WeightKernels& k, uint8_t* m, size_t row_bytes, int64_t ne0, int64_t rows,
                                uint8_t* scratch) {
    const size_t group_bytes = 8 * row_bytes;
    for (int64_t g = 0; g < rows / 8; ++g) {
        uint8_t* at = m + (size_t)g * group_bytes;
        std::copy(at, at + group_bytes, scratch);
        k.interleave_x8(scratch, row_bytes, ne0, at);
    }
}

bool interleave_in_place(TensorView& v) {
    if (!v.present() || v.data == nullptr || v.interleaved || v.sum_order != SumOrder::Blockwise) return false;
    const WeightKernels* k = weight_kernels(v.type);
    if (k == nullptr || k->interleave_x8 == nullptr || k->gemm_x8 == nullptr) return false;
    std::vector<uint8_t> scratch(8 * v.row_bytes);
    auto* base = const_cast<uint8_t*>(v.data);  // the provider's own buffer (see the contract)
    for (int64_t e = 0; e < v.ne2; ++e)
        interleave_groups_in_place(*k, base + (size_t)e * v.matrix_bytes(), v.row_bytes, v.ne0, v.ne1, scratch.data());
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
