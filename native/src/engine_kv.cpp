// The engine's sequence state outside eval(): reset, truncate and the KV hand-off from a prefill that
// ran elsewhere (engine.h write_kv / commit_kv).
#include <algorithm>
#include <string>

#include "edge_rt/engine.h"
#include "edge_rt/error.h"
#include "edge_rt/fp16.h"
#include "forward.h"

namespace edge_rt {

void Engine::reset() noexcept {
    n_past_ = 0;
    std::fill(kv_rows_.begin(), kv_rows_.end(), 0);
}

void Engine::truncate(int64_t n_past) {
    if (n_past < 0 || n_past > n_past_) {
        fail(ErrorKind::InvalidArgument,
             "[truncate] n_past " + std::to_string(n_past) + " outside [0, " + std::to_string(n_past_) + "]");
    }
    n_past_ = n_past;
    std::fill(kv_rows_.begin(), kv_rows_.end(), n_past);
}

void Engine::write_kv(int il, int64_t first, int64_t n, const float* k, const float* v) {
    if (il < 0 || il >= cfg_.n_layer) {
        fail(ErrorKind::InvalidArgument,
             "[write_kv] layer " + std::to_string(il) + " outside [0, " + std::to_string(cfg_.n_layer) + ")");
    }
    const int64_t held = kv_rows_[(size_t)il];
    if (n < 1 || first < 0 || first > held || n > n_ctx_ - first) {
        fail(ErrorKind::InvalidArgument, "[write_kv] layer " + std::to_string(il) + ": rows [" + std::to_string(first) +
                                             ", " + std::to_string(first + n) +
                                             ") must be non-empty, start at or before the " + std::to_string(held) +
                                             " rows it holds and end at or before n_ctx " + std::to_string(n_ctx_));
    }
    if (!k || !v) fail(ErrorKind::InvalidArgument, "[write_kv] k and v must not be null");
    // K: one row of kv_dim per position; V transposed (kv_dim rows of n_ctx), as KvCache lays them out.
    const int64_t KV = cfg_.kv_dim();
    uint16_t* kc = kv_->k[(size_t)il].data();
    uint16_t* vc = kv_->v[(size_t)il].data();
    for (int64_t t = 0; t < n; ++t) {
        const int64_t pos = first + t;
        for (int64_t i = 0; i < KV; ++i) {
            kc[pos * KV + i] = fp32_to_fp16(k[t * KV + i]);
            vc[i * n_ctx_ + pos] = fp32_to_fp16(v[t * KV + i]);
        }
    }
    kv_rows_[(size_t)il] = std::max(held, first + n);
}

void Engine::commit_kv(int64_t n_past) {
    if (n_past < n_past_ || n_past > n_ctx_) {
        fail(ErrorKind::InvalidArgument, "[commit_kv] n_past " + std::to_string(n_past) + " outside [" +
                                             std::to_string(n_past_) + ", " + std::to_string(n_ctx_) + "]");
    }
    for (int64_t il = 0; il < cfg_.n_layer; ++il) {
        if (kv_rows_[(size_t)il] < n_past) {
            fail(ErrorKind::InvalidArgument, "[commit_kv] layer " + std::to_string(il) + " holds " +
                                                 std::to_string(kv_rows_[(size_t)il]) + " rows, fewer than n_past " +
                                                 std::to_string(n_past) + ": write_kv them first");
        }
    }
    n_past_ = n_past;
}

void Engine::read_kv(int il, int64_t first, int64_t n, float* k, float* v) const {
    if (il < 0 || il >= cfg_.n_layer || n < 1 || first < 0 || n > n_past_ - first || !k || !v) {
        fail(ErrorKind::InvalidArgument, "[read_kv] layer " + std::to_string(il) + " rows [" + std::to_string(first) +
                                             ", " + std::to_string(first + n) + ") outside layers [0, " +
                                             std::to_string(cfg_.n_layer) + ") and positions [0, " +
                                             std::to_string(n_past_) + ")");
    }
    const int64_t KV = cfg_.kv_dim();
    const uint16_t* kc = kv_->k[(size_t)il].data();
    const uint16_t* vc = kv_->v[(size_t)il].data();
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t i = 0; i < KV; ++i) {
            k[t * KV + i] = fp16_to_fp32(kc[(first + t) * KV + i]);
            v[t * KV + i] = fp16_to_fp32(vc[i * n_ctx_ + first + t]);
        }
    }
}

}  // namespace edge_rt
