// Run-time ISA detection: cpuid + xgetbv on x86-64, getauxval(AT_HWCAP / AT_HWCAP2) on Linux aarch64.
//
// A build compiles one family of kernels beside Scalar: x86 (Avx2 < Avx512Vnni) or ARM (Neon <
// NeonDotprod < NeonI8mm). Each ISA's parent is the one below it in its family (Scalar at the bottom);
// a kernel an ISA lacks is its parent's.
//
// active_isa() is the best ISA both compiled in and supported by this CPU, lowered by the environment
// variable EDGE_RT_ISA (scalar, avx2, avx512vnni, neon, neon_dotprod, neon_i8mm) when set to an ISA of
// this build's family (never raised above what the CPU supports; other names are ignored).
// Decided once per process; thread-safe.
#pragma once

namespace edge_rt {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512Vnni = 2, Neon = 3, NeonDotprod = 4, NeonI8mm = 5 };
constexpr int kIsaCount = 6;

const char* isa_name(Isa isa) noexcept;
Isa isa_parent(Isa isa) noexcept;     // the next lower ISA of the family; Scalar for Scalar
bool cpu_supports(Isa isa) noexcept;  // CPU (and OS register state) support, regardless of build
bool isa_compiled(Isa isa) noexcept;  // kernels for this ISA were built into the library
Isa best_isa() noexcept;              // highest ISA that is compiled and supported
Isa active_isa() noexcept;            // best_isa() lowered by EDGE_RT_ISA
// isa if this process can run it, else the first ancestor it can (Scalar at worst).
Isa runnable_isa(Isa isa) noexcept;

}  // namespace edge_rt
