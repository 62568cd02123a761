// The CPU kernels (scan_cpu_kernels.h) compiled for x86-64-v3 (AVX2 + FMA); picked at
// run time on CPUs that have it (scan_cpu_common.h: kernels_for). The standard headers
// come before the target pragma (their inline functions keep the baseline target, so no
// copy compiled for this instruction set can stand in for the others' at link time);
// everything after it, the intrinsics' headers included, is compiled for it, in the
// kernels' own namespace.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "scan_cpu_common.h"
#if MMSSM_CPU_X86_ISAS
#pragma GCC target("arch=x86-64-v3")
#define MMSSM_CPU_ISA_NS isa_v3
#define MMSSM_CPU_ISA_LEVEL 3
#include "scan_cpu_kernels.h"

MMSSM_DEFINE_CPU_KERNELS
#endif
