// Run-time ISA detection for x86-64 (cpuid + xgetbv). See cpu_features.h for the contract.
//
// A feature counts as supported only when the CPU reports it *and* the OS saves the register state
// it needs (XCR0), since a hypervisor or kernel may hide AVX-512 state even on a CPU that has it.
#include "edge_rt/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define EDGE_RT_X86_CPUID 1
#include <cpuid.h>
#endif

namespace edge_rt {

namespace {

struct CpuFlags {
    bool avx2 = false;        // AVX2 + FMA + F16C with YMM state enabled
    bool avx512vnni = false;  // AVX512 F+BW+VL+DQ+VNNI with ZMM/opmask state enabled (and avx2)
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
    return f;
}

const CpuFlags& flags() {
    static const CpuFlags f = detect();
    return f;
}

Isa compute_best() {
    if (isa_compiled(Isa::Avx512Vnni) && cpu_supports(Isa::Avx512Vnni)) return Isa::Avx512Vnni;
    if (isa_compiled(Isa::Avx2) && cpu_supports(Isa::Avx2)) return Isa::Avx2;
    return Isa::Scalar;
}

Isa compute_active() {
    Isa best = best_isa();
    const char* env = std::getenv("EDGE_RT_ISA");
    if (env == nullptr || *env == '\0') return best;
    Isa wanted = best;
    if (std::strcmp(env, "scalar") == 0)
        wanted = Isa::Scalar;
    else if (std::strcmp(env, "avx2") == 0)
        wanted = Isa::Avx2;
    else if (std::strcmp(env, "avx512vnni") == 0)
        wanted = Isa::Avx512Vnni;
    // Unknown names are ignored (best ISA); the override only ever lowers.
    return (int)wanted < (int)best ? wanted : best;
}

}  // namespace

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512Vnni: return "avx512vnni";
    }
    return "unknown";
}

bool cpu_supports(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2: return flags().avx2;
        case Isa::Avx512Vnni: return flags().avx512vnni;
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

}  // namespace edge_rt
