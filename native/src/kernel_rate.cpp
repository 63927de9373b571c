#include "edge_rt/kernel_rate.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "edge_rt/error.h"
#include "edge_rt/kernels.h"
#include "interleave.h"
#include "weight_prefetch.h"

namespace edge_rt {

namespace {

using Clock = std::chrono::steady_clock;

// Runs pass() until min_seconds have passed (after one untimed warm-up pass); returns passes per second.
template <class Pass>
double passes_per_second(double min_seconds, Pass pass) {
    pass();
    int64_t passes = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    do {
        pass();
        ++passes;
        elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < min_seconds);
    return (double)passes / elapsed;
}

// Weight bytes whose every 16-bit and 32-bit float reads as a normal number (bytes 0x30..0x3F: fp16 and
// bf16 exponents 12..15 and 96..127, f32 likewise), so no denormal slows a kernel down; varied so that
// integer codes differ from row to row.
std::vector<uint8_t> weight_bytes(size_t n) {
    constexpr size_t kPattern = 64 * 1024;  // filled byte by byte once, then copied
    std::vector<uint8_t> w(n);
    for (size_t i = 0; i < std::min(n, kPattern); ++i) w[i] = (uint8_t)(0x30 + (i * 7 + i / 97) % 16);
    for (size_t at = kPattern; at < n; at += kPattern) std::memcpy(&w[at], w.data(), std::min(kPattern, n - at));
    return w;
}

}  // namespace

KernelRate measure_kernel_rate(GgmlType type, Isa isa, double min_seconds, uint64_t matrix_bytes) {
    if (!is_compute_type(type))
        fail(ErrorKind::InvalidArgument, std::string("[profile] type ") + type_name(type) + " has no compute kernels");
    if (!isa_compiled(isa) || !cpu_supports(isa))
        fail(ErrorKind::InvalidArgument, std::string("[profile] ISA ") + isa_name(isa) + " is not available here");
    if (matrix_bytes == 0 || matrix_bytes > kRateRamMatrixBytes)
        fail(ErrorKind::InvalidArgument, "[profile] matrix_bytes must be in (0, " +
                                             std::to_string(kRateRamMatrixBytes) + "], got " +
                                             std::to_string(matrix_bytes));
    const WeightKernels* kp = weight_kernels(type, isa);
    if (!kp) fail(ErrorKind::InvalidArgument, std::string("[profile] no kernels for ") + type_name(type));
    const WeightKernels& k = *kp;
    const TypeTraits& traits = type_traits(type);
    const int64_t n = kRateCols;
    const size_t row_bytes = (size_t)(n / traits.block_elems * traits.block_bytes);
    const int64_t rows = std::max<int64_t>(8, (int64_t)(matrix_bytes / row_bytes) / 8 * 8);
    std::vector<uint8_t> w = weight_bytes(row_bytes * (size_t)rows);

    constexpr int kActRows = 8;
    const size_t act_stride = k.act_row_bytes(n);
    std::vector<uint8_t> act(act_stride * kActRows);
    std::vector<float> x((size_t)n);
    for (int j = 0; j < kActRows; ++j) {
        for (int64_t i = 0; i < n; ++i) x[(size_t)i] = (float)((i * 37 + j * 11) % 201 - 100) / 100.0f;
        k.quantize_act(x.data(), act.data() + (size_t)j * act_stride, n);
    }
    const int64_t nb = n / 32;
    std::vector<int16_t> sums((size_t)(kActRows * nb));
    std::vector<float> scales((size_t)(kActRows * nb));
    if (k.act_type == GgmlType::Q8_0) {
        for (int j = 0; j < kActRows; ++j) {
            act_block_sums(act.data() + (size_t)j * act_stride, n, &sums[(size_t)(j * nb)]);
            act_block_scales(act.data() + (size_t)j * act_stride, n, &scales[(size_t)(j * nb)]);
        }
    }

    const SumOrder order = sum_order_for(type, rows);
    const bool blockwise = order == SumOrder::Blockwise && k.dot_rows_blockwise;
    const bool x8 = blockwise && k.interleave_x8 && k.gemm_x8;
    std::vector<uint8_t> groups;
    double repack_per_s = 0;
    if (x8) {  // the layout the engine keeps such a matrix in (interleave.cpp), timed: streaming repeats it
        // Timed as the engine does it after a read: in place, group by group through a small scratch (a
        // separate destination buffer costs a third more memory traffic: 1.6x slower on a 128 MiB matrix).
        groups = w;
        std::vector<uint8_t> scratch(8 * row_bytes);
        repack_per_s = (double)w.size() * passes_per_second(min_seconds, [&] {
                           interleave_groups_in_place(k, groups.data(), row_bytes, n, rows, scratch.data());
                       });
        // the passes interleaved it again and again: the kernels below read one interleave of the file layout
        for (int64_t g = 0; g < rows / 8; ++g)
            k.interleave_x8(w.data() + (size_t)g * 8 * row_bytes, row_bytes, n,
                            groups.data() + (size_t)g * 8 * row_bytes);
        std::vector<uint8_t>().swap(w);  // the file layout is no longer read
    }
    const int16_t* a_sums = k.act_type == GgmlType::Q8_0 ? sums.data() : nullptr;
    float out[kActRows * 8];
    volatile float sink = 0;

    // One pass = the whole matrix times `n_act` activation rows, as ops.cpp's matmul would run it.
    auto run = [&](int n_act) {
        const bool tiled = n_act > 1 && k.dot_rows_tiled && takes_tiled(type, order, kPrefillPeerRows);
        const bool scaled = n_act > 1 && !blockwise && !tiled && k.vec_dot_rows_scaled;
        float acc = 0;
        if (x8) {
            float out16[kActRows * 16];
            for (int64_t g = 0; g < rows / 8; ++g) {
                prefetch_ahead(groups.data() + (size_t)g * 8 * row_bytes, 8 * row_bytes, groups.data() + groups.size());
                if (k.gemm_x16 && g + 1 < rows / 8) {  // as ops.cpp's matmul_x8 pairs groups
                    prefetch_ahead(groups.data() + (size_t)(g + 1) * 8 * row_bytes, 8 * row_bytes,
                                   groups.data() + groups.size());
                    k.gemm_x16(n, groups.data() + (size_t)g * 8 * row_bytes, act.data(), act_stride, a_sums, n_act,
                               n_act > 1 ? n_act : 0, out16, 16);
                    acc += out16[0];
                    ++g;
                    continue;
                }
                k.gemm_x8(n, groups.data() + (size_t)g * 8 * row_bytes, act.data(), act_stride, a_sums, n_act,
                          n_act > 1 ? n_act : 0, out, 8);
                acc += out[0];
            }
        } else {
            for (int64_t r = 0; r < rows; ++r) {
                const uint8_t* wrow = w.data() + (size_t)r * row_bytes;
                prefetch_ahead(wrow, row_bytes, w.data() + w.size());  // as ops.cpp's matmul streams rows
                if (r + 1 < rows && ((scaled && k.vec_dot2_rows_scaled) || (tiled && k.dot2_rows_tiled))) {
                    prefetch_ahead(wrow + row_bytes, row_bytes, w.data() + w.size());
                    float two[16];
                    if (tiled)
                        k.dot2_rows_tiled(n, wrow, row_bytes, act.data(), act_stride, n_act, two);
                    else
                        k.vec_dot2_rows_scaled(n, wrow, row_bytes, act.data(), act_stride, scales.data(), (size_t)nb,
                                               n_act, two);
                    acc += two[0] + two[8];
                    ++r;
                    continue;
                }
                if (blockwise) {
                    k.dot_rows_blockwise(n, wrow, act.data(), act_stride, n_act, n_act > 1 ? n_act : 0, out);
                } else if (tiled) {
                    k.dot_rows_tiled(n, wrow, act.data(), act_stride, n_act, out);
                } else if (scaled) {
                    k.vec_dot_rows_scaled(n, wrow, act.data(), act_stride, scales.data(), (size_t)nb, n_act, out);
                } else if (k.vec_dot_rows && n_act > 1) {
                    k.vec_dot_rows(n, wrow, act.data(), act_stride, n_act, out);
                } else {
                    for (int j = 0; j < n_act; ++j) out[j] = k.vec_dot(n, wrow, act.data() + (size_t)j * act_stride);
                }
                acc += out[0];
            }
        }
        sink = sink + acc;
    };

    KernelRate rate;
    rate.rows = rows;
    rate.cols = n;
    rate.repack_bytes_per_s = repack_per_s;
    const double elements = (double)rows * (double)n;
    rate.decode_per_s = elements * passes_per_second(min_seconds, [&] { run(1); });
    if (matrix_bytes <= kRateMatrixBytes)
        rate.prefill_per_s = elements * kActRows * passes_per_second(min_seconds, [&] { run(kActRows); });
    rate.decode_kernel = x8 ? "gemm_x8" : blockwise ? "dot_rows_blockwise" : "vec_dot";
    const bool tiled = k.dot_rows_tiled && takes_tiled(type, order, kPrefillPeerRows);
    rate.prefill_kernel = x8 && k.gemm_x16             ? "gemm_x16"
                          : x8                         ? "gemm_x8"
                          : blockwise                  ? "dot_rows_blockwise"
                          : tiled && k.dot2_rows_tiled ? "dot2_rows_tiled"
                          : tiled                      ? "dot_rows_tiled"
                          : k.vec_dot2_rows_scaled     ? "vec_dot2_rows_scaled"
                          : k.vec_dot_rows_scaled      ? "vec_dot_rows_scaled"
                          : k.vec_dot_rows             ? "vec_dot_rows"
                                                       : "vec_dot";
    return rate;
}

}  // namespace edge_rt
