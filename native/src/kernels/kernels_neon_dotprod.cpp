// AdvSIMD + dotprod kernels (SDOT; compiled with -march=armv8-a+dotprod). Reached through
// neon_dotprod_weight_kernels() only where cpu_features saw HWCAP_ASIMDDP (Cortex-A55/A76 and later);
// everything else is the plain NEON table's (kernel_dispatch.cpp). Reference twin: kernels_scalar.cpp.
#include <arm_neon.h>

#include "edge_rt/kernels.h"
#include "neon_block_dots.h"
#include "neon_kquant_dots.h"

namespace edge_rt {

namespace {

// SDOT: lane j += sum_{i<4} a[4j+i] * b[4j+i], exactly what DotNeon computes in three instructions.
struct DotSdot {
    static ERT_INLINE int32x4_t dot4(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
};

using Q8_0Dots = BlockDots<DecQ8_0, false, DotSdot>;
using Q4_0Dots = BlockDots<DecQ4_0, false, DotSdot>;
using Q5_0Dots = BlockDots<DecQ5_0, false, DotSdot>;
using Q4_1Dots = BlockDots<DecQ4_1, true, DotSdot>;
using Q5_1Dots = BlockDots<DecQ5_1, true, DotSdot>;

constexpr int kTypeSlots = 31;

struct DotprodTable {
    WeightKernels k[kTypeSlots] = {};
    bool present[kTypeSlots] = {};
    // The type's entry, started as an overlay entry (its activation format, no functions) on first use.
    WeightKernels& entry(GgmlType w) {
        if (!present[(int)w]) k[(int)w] = overlay_entry(w);
        present[(int)w] = true;
        return k[(int)w];
    }
    template <class Dots>
    void add(GgmlType w) {
        k[(int)w] = overlay_entry(w);
        k[(int)w].vec_dot = Dots::dot;
        k[(int)w].vec_dot_rows = Dots::dot_rows;
        present[(int)w] = true;
    }
    DotprodTable() {
        using T = GgmlType;
        add<Q8_0Dots>(T::Q8_0);
        add<Q4_0Dots>(T::Q4_0);
        add<Q5_0Dots>(T::Q5_0);
        add<Q4_1Dots>(T::Q4_1);
        add<Q5_1Dots>(T::Q5_1);
        k[(int)T::Q4_0].dot_rows_blockwise = q4_0_dot_rows_blockwise<DotSdot>;
        k[(int)T::Q4_0].gemm_x8 = q4_0_gemm_x8<DotSdot>;
        add_kquant_dots<DotSdot>(*this);
    }
};

}  // namespace

// Entries this table leaves null (activation quantizers, dequantizers) come from the plain NEON table.
const WeightKernels* neon_dotprod_weight_kernels(GgmlType type) noexcept {
    static const DotprodTable t;
    const int i = (int)type;
    return i >= 0 && i < kTypeSlots && t.present[i] ? &t.k[i] : nullptr;
}

}  // namespace edge_rt
