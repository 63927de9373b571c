// Run-time ISA detection: x86-64 (cpuid + xgetbv) and Linux aarch64 (getauxval). See cpu_features.h.
//
// x86: a feature counts as supported only when the CPU reports it *and* the OS saves the register state
// it needs (XCR0), since a hypervisor or kernel may hide AVX-512 state even on a CPU that has it.
// aarch64: the kernel's hwcaps say what EL0 may execute (a feature it does not expose faults even if the
// core has it); each bit is tested with &, never && (llama.cpp once read `hwcap && HWCAP_ASIMDDP`, true
// on every CPU, and ran SDOT on cores without it).
#include "edge_rt/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define EDGE_RT_X86_CPUID 1
#include <cpuid.h>
#endif

#if defined(__aarch64__) && defined(__linux__)
#define EDGE_RT_ARM_HWCAP 1
#include <sys/auxv.h>
// Bit numbers from the Linux uapi (arch/arm64/include/uapi/asm/hwcap.h), spelled out so that older
// kernel headers still build.
constexpr unsigned long kHwcapAsimd = 1ul << 1;     // HWCAP_ASIMD
constexpr unsigned long kHwcapAsimdDp = 1ul << 20;  // HWCAP_ASIMDDP: SDOT/UDOT
constexpr unsigned long kHwcap2I8mm = 1ul << 13;    // HWCAP2_I8MM: SMMLA/UMMLA/USMMLA
#endif

namespace edge_rt {

namespace {

struct CpuFlags {
    bool avx2 = false;          // AVX2 + FMA + F16C with YMM state enabled
    bool avx512vnni = false;    // AVX512 F+BW+VL+DQ+VNNI with ZMM/opmask state enabled (and avx2)
    bool neon = false;          // AdvSIMD (every aarch64 Linux CPU)
    bool neon_dotprod = false;  // + SDOT (Armv8.2 dotprod)
    bool neon_i8mm = false;     // + SMMLA (i8mm), and dotprod
};

#ifdef EDGE_RT_X86_CPUID
uint64_t read_xcr0() {
    uint32_t eax = 0, edx = 0;
    // xgetbv with ecx=0; encoded as bytes so no -mxsave flag is needed for this portable file.
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

CpuFlags detect() {
    CpuFlags f;
#ifdef EDGE_RT_X86_CPUID
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
    const unsigned max_leaf = a;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = (c >> 27) & 1;
    const bool avx = (c >> 28) & 1;
    const bool fma = (c >> 12) & 1;
    const bool f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return f;
    const uint64_t xcr0 = read_xcr0();
    const bool ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
    const bool zmm_state = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
    if (max_leaf < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    const bool avx2 = (b >> 5) & 1;
    const bool avx512f = (b >> 16) & 1;
    const bool avx512dq = (b >> 17) & 1;
    const bool avx512bw = (b >> 30) & 1;
    const bool avx512vl = (b >> 31) & 1;
    const bool avx512vnni = (c >> 11) & 1;
    f.avx2 = ymm_state && avx2 && fma && f16c;
    f.avx512vnni = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl && avx512vnni;
#endif
#ifdef EDGE_RT_ARM_HWCAP
    const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
    f.neon = (hwcap & kHwcapAsimd) != 0;
    f.neon_dotprod = f.neon && (hwcap & kHwcapAsimdDp) != 0;
    f.neon_i8mm = f.neon_dotprod && (hwcap2 & kHwcap2I8mm) != 0;
#endif
    return f;
}

const CpuFlags& flags() {
    static const CpuFlags f = detect();
    return f;
}

bool runs(Isa isa) { return isa_compiled(isa) && cpu_supports(isa); }

Isa compute_best() {
    for (Isa top : {Isa::Avx512Vnni, Isa::NeonI8mm})
        for (Isa i = top; i != Isa::Scalar; i = isa_parent(i))
            if (runs(i)) return i;
    return Isa::Scalar;
}

// True when `a` is `b` or one of its ancestors.
bool at_or_below(Isa a, Isa b) {
    for (Isa i = b;; i = isa_parent(i)) {
        if (i == a) return true;
        if (i == Isa::Scalar) return false;
    }
}

Isa compute_active() {
    const Isa best = best_isa();
    const char* env = std::getenv("EDGE_RT_ISA");
    if (env == nullptr || *env == '\0') return best;
    for (int i = 0; i < kIsaCount; ++i)
        if (std::strcmp(env, isa_name((Isa)i)) == 0) return at_or_below((Isa)i, best) ? (Isa)i : best;
    return best;  // unknown names (and the other family's) are ignored; the override only ever lowers
}

}  // namespace

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512Vnni: return "avx512vnni";
        case Isa::Neon: return "neon";
        case Isa::NeonDotprod: return "neon_dotprod";
        case Isa::NeonI8mm: return "neon_i8mm";
    }
    return "unknown";
}

Isa isa_parent(Isa isa) noexcept {
    switch (isa) {
        case Isa::Avx512Vnni: return Isa::Avx2;
        case Isa::NeonI8mm: return Isa::NeonDotprod;
        case Isa::NeonDotprod: return Isa::Neon;
        default: return Isa::Scalar;
    }
}

bool cpu_supports(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2: return flags().avx2;
        case Isa::Avx512Vnni: return flags().avx512vnni;
        case Isa::Neon: return flags().neon;
        case Isa::NeonDotprod: return flags().neon_dotprod;
        case Isa::NeonI8mm: return flags().neon_i8mm;
    }
    return false;
}

bool isa_compiled(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2:
#if defined(EDGE_RT_HAVE_AVX2)
            return true;
#else
            return false;
#endif
        case Isa::Avx512Vnni:
#if defined(EDGE_RT_HAVE_AVX512VNNI)
            return true;
#else
            return false;
#endif
        case Isa::Neon:
        case Isa::NeonDotprod:
        case Isa::NeonI8mm:
#if defined(EDGE_RT_HAVE_NEON)
            return true;
#else
            return false;
#endif
    }
    return false;
}

Isa best_isa() noexcept {
    static const Isa best = compute_best();
    return best;
}

Isa active_isa() noexcept {
    static const Isa active = compute_active();
    return active;
}

Isa runnable_isa(Isa isa) noexcept {
    while (isa != Isa::Scalar && !runs(isa)) isa = isa_parent(isa);
    return isa;
}

}  // namespace edge_rt
