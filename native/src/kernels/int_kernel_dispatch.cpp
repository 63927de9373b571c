// Per-ISA dispatch of the integer kernels (edge_rt/int_kernels.h): each ISA's own table overlaid on its
// parent's (entries it lacks are the parent's), built once, for the ISAs this process can run.
#include "edge_rt/int_kernels.h"

namespace edge_rt {

namespace {

const IntKernels* own_table(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return scalar_int_kernels();
        case Isa::Avx2: return avx2_int_kernels();
        case Isa::Avx512Vnni: return avx512vnni_int_kernels();
        case Isa::Neon: return neon_int_kernels();  // dotprod inherits it
        case Isa::NeonI8mm: return neon_i8mm_int_kernels();
        default: return nullptr;
    }
}

struct MergedIntTables {
    IntKernels k[kIsaCount];
    static void overlay(IntKernels& dst, const IntKernels& src) {
        if (src.matmul_acc) dst.matmul_acc = src.matmul_acc;
        if (src.requant_rows) dst.requant_rows = src.requant_rows;
        if (src.add) dst.add = src.add;
        if (src.mul) dst.mul = src.mul;
        if (src.requantize) dst.requantize = src.requantize;
        if (src.sum_squares) dst.sum_squares = src.sum_squares;
        if (src.scaled_product) dst.scaled_product = src.scaled_product;
        if (src.exp_row) dst.exp_row = src.exp_row;
        if (src.lut) dst.lut = src.lut;
    }
    MergedIntTables() {
        k[0] = *scalar_int_kernels();
        // Parents have lower enum values, so each level is built after its parent; an ISA's own table is
        // only touched where the CPU runs it.
        for (int l = 1; l < kIsaCount; ++l) {
            k[l] = k[(int)isa_parent((Isa)l)];
            const IntKernels* own = own_table((Isa)l);
            if (own != nullptr && isa_compiled((Isa)l) && cpu_supports((Isa)l)) overlay(k[l], *own);
        }
    }
};

}  // namespace

#if !defined(EDGE_RT_HAVE_AVX2)
const IntKernels* avx2_int_kernels() noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_AVX512VNNI)
const IntKernels* avx512vnni_int_kernels() noexcept { return nullptr; }
#endif
#if !defined(EDGE_RT_HAVE_NEON)
const IntKernels* neon_int_kernels() noexcept { return nullptr; }
const IntKernels* neon_i8mm_int_kernels() noexcept { return nullptr; }
#endif

const IntKernels& int_kernels(Isa isa) noexcept {
    static const MergedIntTables merged;
    return merged.k[(int)runnable_isa(isa)];
}

}  // namespace edge_rt
