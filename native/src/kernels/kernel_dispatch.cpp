// Per-ISA dispatch of the weight kernels: each ISA's table merged over its parent's (cpu_features.h),
// and the stand-ins for ISA files this build does not compile.
#include "edge_rt/kernels.h"

namespace edge_rt {

namespace {

constexpr int kTypeSlots = 31;  // GgmlType ids 0..30

// The ISA's own table (nullptr where not built or not a compute type of that ISA).
const WeightKernels* own_table(Isa isa, GgmlType t) {
    switch (isa) {
        case Isa::Scalar: return scalar_weight_kernels(t);
        case Isa::Avx2: return avx2_weight_kernels(t);
        case Isa::Avx512Vnni: return avx512vnni_weight_kernels(t);
        case Isa::Neon: return neon_weight_kernels(t);
        case Isa::NeonDotprod: return neon_dotprod_weight_kernels(t);
        case Isa::NeonI8mm: return neon_i8mm_weight_kernels(t);
    }
    return nullptr;
}

// Per-ISA tables with every null entry filled from the ISA's parent (cpu_features.h), built once.
struct MergedTables {
    WeightKernels k[kIsaCount][kTypeSlots];
    bool present[kTypeSlots] = {};
    static void overlay(WeightKernels& dst, const WeightKernels* src) {
        if (src == nullptr) return;
        if (src->quantize_act) dst.quantize_act = src->quantize_act;
        if (src->vec_dot) dst.vec_dot = src->vec_dot;
        if (src->vec_dot_rows) {  // a level's scaled twin only ever stands beside its own vec_dot_rows
            dst.vec_dot_rows = src->vec_dot_rows;
            dst.vec_dot_rows_scaled = src->vec_dot_rows_scaled;
            dst.vec_dot2_rows_scaled = src->vec_dot2_rows_scaled;
        }
        if (src->dequantize_row) dst.dequantize_row = src->dequantize_row;
        if (src->dot_rows_blockwise) dst.dot_rows_blockwise = src->dot_rows_blockwise;
        if (src->interleave_x8) dst.interleave_x8 = src->interleave_x8;
        if (src->gemm_x8) dst.gemm_x8 = src->gemm_x8;
        if (src->dot_rows_tiled) dst.dot_rows_tiled = src->dot_rows_tiled;
        // the Blockwise and Tiled orders are one per type (every ISA's gemm_x8 and dot_rows_tiled have the
        // twin's bits), so a level may add a two-group or two-row kernel over its parent's single one
        if (src->gemm_x16) dst.gemm_x16 = src->gemm_x16;
        if (src->dot2_rows_tiled) dst.dot2_rows_tiled = src->dot2_rows_tiled;
    }
    MergedTables() {
        for (int i = 0; i < kTypeSlots; ++i) {
            const GgmlType t = (GgmlType)i;
            const WeightKernels* scalar = scalar_weight_kernels(t);
            present[i] = scalar != nullptr;
            if (!present[i]) continue;
            k[0][i] = *scalar;
            // Parents have lower enum values, so each level is built after its parent. An ISA's table is
            // only touched on a CPU that runs it: its static initializer is code of that ISA (GCC emits
            // AVX-512 stores for the AVX-512 table), so even building the table faults with SIGILL
            // elsewhere. Levels the CPU lacks repeat their parent; weight_kernels never returns them
            // (runnable_isa).
            for (int l = 1; l < kIsaCount; ++l) {
                k[l][i] = k[(int)isa_parent((Isa)l)][i];
                if (isa_compiled((Isa)l) && cpu_supports((Isa)l)) overlay(k[l][i], own_table((Isa)l, t));
            }
        }
    }
};

}  // namespace

// Stand-ins for ISA files that this build does not compile (non-x86 hosts): "not built" = nullptr.
#if !defined(EDGE_RT_HAVE_AVX2)
const WeightKernels* avx2_weight_kernels(GgmlType) noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_AVX512VNNI)
const WeightKernels* avx512vnni_weight_kernels(GgmlType) noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_NEON)
const WeightKernels* neon_weight_kernels(GgmlType) noexcept { return nullptr; }
const WeightKernels* neon_dotprod_weight_kernels(GgmlType) noexcept { return nullptr; }
const WeightKernels* neon_i8mm_weight_kernels(GgmlType) noexcept { return nullptr; }
#endif

// The requested ISA is lowered to one this process runs (runnable_isa): asking for kernels the CPU cannot
// execute returns the best runnable ones of that line instead of code that would fault with SIGILL.
const WeightKernels* weight_kernels(GgmlType type, Isa isa) noexcept {
    const int i = (int)type;
    if (i < 0 || i >= kTypeSlots) return nullptr;
    static const MergedTables merged;
    if (!merged.present[i]) return nullptr;
    return &merged.k[(int)runnable_isa(isa)][i];
}

}  // namespace edge_rt
