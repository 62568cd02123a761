// Declarations of the per-dtype launchers (defined in scan_fwd.cuh / scan_bwd.cuh and
// instantiated once per dtype in scan_{fwd,bwd}_{fp32,fp16,bf16}.cu), plus the entry
// points that pick a tier explicitly (used by the test harness to cover every tier).
#pragma once

#include "../scan.h"
#include "launch_policy.cuh"

namespace mmssm {
namespace cuda_scan {

template <typename T>
int launch_selective_scan_fwd(const SelectiveScanFwdParams& p, void* stream, Tier tier);
template <typename T>
int launch_selective_scan_bwd(const SelectiveScanBwdParams& p, void* stream);

// Forward with an explicit tier (1x2, 1x4, 1x8, 2x8 or 4x8, warps x items); any tier
// works with any chunk_size >= 8, which lets tests decouple the two.
// The backward's tier is already explicit: it follows params.chunk_size.
int selective_scan_fwd_cuda_tier(const SelectiveScanFwdParams& p, void* stream, Tier tier);

}  // namespace cuda_scan
}  // namespace mmssm
