// The CPU kernels (scan_cpu_kernels.h) for the baseline instruction set of the build
// (x86-64: SSE2; other architectures: whatever the compiler targets). Always built;
// also the fp64 kernels.
#define MMSSM_CPU_ISA_NS isa_generic
#define MMSSM_CPU_ISA_LEVEL 0
#include "scan_cpu_kernels.h"

MMSSM_DEFINE_CPU_KERNELS
