// The state one micro-batch of the forward pass works in, shared by the engine's layer loop, the
// block recipes (models/) and the ops they are written in (ops.h, attention.h, ffn.h,
// expert_prediction.h). Internal to the core: not installed, not part of the API.
//
// Layouts: row-major; a buffer of "n x d" holds n token rows of d floats (token t's row at t * d).
#pragma once

#include <cstdint>
#include <vector>

#include "edge_rt/eval_observer.h"
#include "edge_rt/expert_predictor.h"
#include "edge_rt/model_config.h"
#include "edge_rt/thread_pool.h"
#include "edge_rt/weight_provider.h"

namespace edge_rt {

// Per-eval working memory, sized for one micro-batch and reused across calls.
struct Scratch {
    std::vector<float> x;        // n x n_embd  residual stream
    std::vector<float> cur;      // n x n_embd  normalized input of the current block, then its output
    std::vector<float> q;        // n x q_dim
    std::vector<float> k;        // n x kv_dim
    std::vector<float> v;        // n x kv_dim
    std::vector<float> attn;     // n x q_dim   attention output (heads concatenated)
    std::vector<float> gate;     // n x max(n_ff, n_ff_exp, n_ff_shexp)
    std::vector<float> up;       // n x max(n_ff, n_ff_exp, n_ff_shexp)
    std::vector<float> ffn_out;  // n x n_embd  FFN output (dense, one expert's rows, or the shared expert)
    // Mixture of experts
    std::vector<float> router;                // n x n_expert   router logits, then probabilities
    std::vector<int32_t> sel;                 // n x k          selected experts per token, by descending probability
    std::vector<float> sel_w;                 // n x k          their weights
    std::vector<float> exp_out;               // n x k x n_embd each selected expert's output for each token
    std::vector<float> gather;                // n x n_embd     rows of `cur` routed to one expert
    std::vector<float> moe;                   // n x n_embd     weighted sum of the experts
    std::vector<float> shexp_g;               // n              shared-expert gate logits
    std::vector<int32_t> expert_ids;          // experts used by the batch, ascending
    std::vector<int32_t> expert_first;        // n_expert + 1 offsets into expert_slots (counting sort)
    std::vector<int32_t> expert_slots;        // n x k: (token * k + j) grouped by expert
    std::vector<ExpertWeights> expert_views;  // one per used expert
    // Expert prediction (providers that prefetch experts): its own buffers, so it cannot touch the
    // values the forward pass computes.
    std::vector<float> pred_in;      // n x n_embd  normalized hidden state
    std::vector<float> pred_router;  // n x n_expert
    std::vector<float> pred_hidden;  // n x hidden (fitted predictor)
    std::vector<float> pred_fit;     // n x n_expert (fitted predictor's correction)
    std::vector<int32_t> pred_sel;   // n x w (w = the provider's prediction width)
    std::vector<uint8_t> pred_flag;  // n_expert
    std::vector<int32_t> pred_ids;   // predicted experts, ascending
    std::vector<uint8_t> act;        // n rows of the widest activation encoding (quantized matmul input)
    std::vector<int16_t> act_sums;   // n x (width / 32) Q8_0 block sums of `act` (x8 kernels)
    std::vector<float> act_scales;   // n x (width / 32) Q8_0 block scales of `act` in fp32 (vec_dot_rows_scaled)
    std::vector<float> norm_w;       // dequantized 1-D weights (norms, biases) when not stored as F32

    // Sizes every buffer for n tokens of cfg (prediction buffers when predict_width > 0).
    void resize(const ModelConfig& cfg, int64_t n, int64_t predict_width, int64_t predictor_hidden);
};

// The KV cache, fp16. k[il]: n_ctx rows of kv_dim (heads contiguous, head_dim each). v[il] transposed:
// kv_dim rows of n_ctx, so the probability-weighted sum over positions is one contiguous fp16 dot
// product per output element.
struct KvCache {
    int64_t n_ctx = 0;
    std::vector<std::vector<uint16_t>> k, v;
};

// llama.cpp's default batch (n_batch = n_ubatch = 512, also llama-cpp-python's): a longer eval is evaluated
// in batches of this many tokens.
constexpr int64_t kPeerBatchRows = 512;

// Everything a block recipe and its ops read or write for one micro-batch.
struct ForwardPass {
    const ModelConfig& cfg;
    WeightProvider& weights;
    ThreadPool& pool;
    Scratch& s;
    KvCache& kv;
    EvalObserver* observer;            // nullptr: nothing observed
    const ExpertPredictor* predictor;  // fitted next-layer predictor, or nullptr
    ExpertPrefetch prefetch;           // the expert predictors to run (Off for dense models)
    const float* rope_factors;         // n_rot/2 RoPE frequency divisors (ModelConfig::rope_factors_tensor), or nullptr
    int64_t n;                         // tokens in this micro-batch
    int64_t n_past;                    // cache positions before it
    // The eval call has several tokens (a prompt), even if this micro-batch has one: llama.cpp takes a
    // prompt's attention through its batched (tinyBLAS) path whatever the micro-batch split.
    bool prompt;
    // Rows of the batch llama.cpp evaluates this micro-batch's tokens in, which decides its matmul kernels
    // (kernels.h takes_tiled): the eval's token count, cut into llama.cpp's batches of kPeerBatchRows (its
    // and llama-cpp-python's default n_batch = n_ubatch). Our micro-batches (n_ubatch 256 or 128, dividing
    // kPeerBatchRows) split a prompt that llama.cpp takes whole, so the micro-batch's own n would wrongly
    // send the last few tokens of a 260-token prompt to the vec_dot kernels. 1 for a decode step; set to 1
    // for the output head when only the last row's logits are wanted (llama.cpp multiplies only the rows
    // that return logits).
    int64_t peer_rows;
    // The first row the output head reads after the last layer: n - 1 when only the last token's logits are
    // wanted, n when none; -1 when every row's are (or an observer watches every row). llama.cpp keeps only
    // the output rows after the last layer's attention (its graph's inp_out_ids), so its last FFN multiplies
    // those rows alone, in the matmul orders of that row count: the dense blocks do the same (ops.h FfnRows;
    // a Mixture-of-Experts FFN still routes every row).
    int64_t last_layer_rows_from = -1;

    bool observing(Observed kind) const { return observer && observer->wants(kind); }
};

}  // namespace edge_rt
