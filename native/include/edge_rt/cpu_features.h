// Run-time ISA detection (cpuid on x86; getauxval(AT_HWCAP) on ARM in a later port).
//
// active_isa() is the best ISA both compiled in and supported by this CPU, lowered by the environment
// variable EDGE_RT_ISA=scalar|avx2|avx512vnni when set (never raised above what the CPU supports).
// Decided once per process; thread-safe.
#pragma once

namespace edge_rt {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512Vnni = 2 };

const char* isa_name(Isa isa) noexcept;
bool cpu_supports(Isa isa) noexcept;  // CPU (and OS register state) support, regardless of build
bool isa_compiled(Isa isa) noexcept;  // kernels for this ISA were built into the library
Isa best_isa() noexcept;              // highest ISA that is compiled and supported
Isa active_isa() noexcept;            // best_isa() lowered by EDGE_RT_ISA

}  // namespace edge_rt
