// Forced into every translation unit of the official VMamba selective_scan kernel when
// tools/official_vmamba_compare.py builds it (nvcc -include, through NVCC_APPEND_FLAGS),
// so that its unmodified sources compile with CUDA 13.
//
// CUDA 13 ships CCCL 3, which removed two CUB helpers that the official
// csrc/selective_scan/reverse_scan.cuh (commit 2ed52ea) calls: cub::LaneId() and
// cub::CTA_SYNC() (deprecated in CCCL 2.x; their documented replacements are the %laneid
// register and __syncthreads()). With an older CUB (CUDA 12) they still exist, and this
// header defines nothing.
#pragma once

#include <cub/version.cuh>

#if defined(CUB_VERSION) && CUB_VERSION >= 300000
namespace cub {
__device__ __forceinline__ unsigned int LaneId() {
  unsigned int lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}
__device__ __forceinline__ void CTA_SYNC() { __syncthreads(); }
}  // namespace cub
#endif
