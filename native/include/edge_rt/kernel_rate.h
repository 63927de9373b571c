// Throughput of the dot-product kernels on one thread, measured the way the engine multiplies a weight
// matrix (ops.cpp matmul) so that a planner can predict time from it:
//   decode  - one activation row: gemm_x8 over interleaved groups of 8 rows where the type sums
//             Blockwise and the ISA has gemm_x8 (Q4_0, Q4_K on AVX2/NEON), else vec_dot row by row;
//   prefill - 8 activation rows per weight row (the tiled, scaled or multi-row kernel the engine picks
//             for a prompt of kPrefillPeerRows tokens).
// With matrix_bytes = kRateMatrixBytes the matrix stays in L2 across repetitions, so the rate is the
// kernels' arithmetic, not memory bandwidth. With a matrix several times the last-level cache
// (kRateRamMatrixBytes) the decode rate is that of a GEMV streaming its weights from RAM on one thread:
// arithmetic and memory traffic as they overlap in the engine's decode (prefill is then not measured).
//
// Types the engine repacks into groups of 8 rows (gemm_x8) are repacked again in every window slot a
// streamed layer is read into; repack_bytes_per_s times that repack on the same matrix.
//
// Contract: measure_kernel_rate() runs on the calling thread only, allocates its own buffers (about
// 2 x matrix_bytes), and returns weight elements multiplied per second (one multiply-add with each
// activation row counts once per row: prefill counts 8 per weight element). Errors: Error(InvalidArgument)
// when the type has no compute kernels or the ISA is not both compiled and supported. Thread-safety: pure.
#pragma once

#include <cstdint>

#include "edge_rt/cpu_features.h"
#include "edge_rt/ggml_types.h"

namespace edge_rt {

constexpr uint64_t kRateMatrixBytes = 192 * 1024;       // fits the L2 of every CPU edge_rt targets (>= 256 KB)
constexpr uint64_t kRateRamMatrixBytes = 128ull << 20;  // several times the L3 of the CPUs edge_rt targets
constexpr int64_t kRateCols = 2048;                     // a row as wide as a 1B model's hidden state
constexpr int64_t kPrefillPeerRows = 128;               // prompt length the prefill kernel choice assumes

struct KernelRate {
    double decode_per_s = 0;        // weight elements x 1 activation row per second
    double prefill_per_s = 0;       // weight elements x 8 activation rows per second (8 per element); 0 from RAM
    double repack_bytes_per_s = 0;  // bytes/s interleave_x8 repacks (a streamed slot's cost); 0: not repacked
    int64_t rows = 0, cols = 0;
    const char* decode_kernel = "";  // "gemm_x8", "dot_rows_blockwise", "vec_dot"
    const char* prefill_kernel = "";
};

// Times each path for at least min_seconds (after one untimed pass) on a matrix of about matrix_bytes
// (at most kRateRamMatrixBytes); prefill only when the matrix fits kRateMatrixBytes.
KernelRate measure_kernel_rate(GgmlType type, Isa isa, double min_seconds, uint64_t matrix_bytes = kRateMatrixBytes);

}  // namespace edge_rt
