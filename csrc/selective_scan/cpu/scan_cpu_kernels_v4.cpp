// The CPU kernels (scan_cpu_kernels.h) compiled for x86-64-v4 (AVX-512); picked at
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
#pragma GCC target("arch=x86-64-v4")
// GCC 12's AVX-512 headers pass _mm512_undefined_ps() through, which -Wmaybe-uninitialized
// reports for every intrinsic call.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define MMSSM_CPU_ISA_NS isa_v4
#define MMSSM_CPU_ISA_LEVEL 4
#include "scan_cpu_kernels.h"

MMSSM_DEFINE_CPU_KERNELS
#endif
