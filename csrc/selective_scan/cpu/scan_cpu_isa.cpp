// Run-time choice of the instruction set of the CPU kernels (see cpu_isa() in
// scan_cpu_common.h).
#include <cstdlib>
#include <cstring>

#include "scan_cpu_common.h"

namespace mmssm {
namespace cpu {

namespace {

CpuIsa detect() {
#if MMSSM_CPU_X86_ISAS
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  CpuIsa best = v4 ? CpuIsa::kV4 : v3 ? CpuIsa::kV3 : CpuIsa::kGeneric;
  // MMSSM_CPU_ISA lowers the choice (never raises it above what the CPU has).
  if (const char* want = std::getenv("MMSSM_CPU_ISA")) {
    if (std::strcmp(want, "generic") == 0) best = CpuIsa::kGeneric;
    if (std::strcmp(want, "avx2") == 0 && best == CpuIsa::kV4) best = CpuIsa::kV3;
  }
  return best;
#else
  return CpuIsa::kGeneric;
#endif
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = detect();
  return isa;
}

}  // namespace cpu

const char* selective_scan_cpu_isa() {
  switch (cpu::cpu_isa()) {
    case cpu::CpuIsa::kV4: return "avx512";
    case cpu::CpuIsa::kV3: return "avx2";
    default: return "generic";
  }
}

}  // namespace mmssm
