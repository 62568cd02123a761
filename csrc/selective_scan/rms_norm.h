// Shared, torch-free description of the fused RMSNorm of Vim's blocks (float32).
//
// Semantics, for x (R, C) rows and weight (C,):
//   out[r, c] = x[r, c] / sqrt(mean_c(x[r, :]^2) + eps) * weight[c]
// (torch: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight). One pass
// over each row in cache instead of the five whole-tensor passes of the composite
// (pow, mean, add + rsqrt, two products). The sum of squares is formed in float32 over
// W-lane partial sums; the result equals the composite's up to rounding, and does not
// depend on the thread count (a row is never split).
#pragma once

#include <cstdint>

#include "scan.h"

namespace mmssm {

// Strides are in elements; a row's channels are contiguous.
struct RmsNormParams {
  int64_t rows = 0, channels = 0;  // R, C
  const float* x = nullptr;        // (R, C), row stride x_row_stride
  int64_t x_row_stride = 0;
  const float* weight = nullptr;  // (C,) contiguous
  float eps = 1e-5f;
  float* out = nullptr;  // (R, C) contiguous
  // Workers, as in SelectiveScanFwdParams (null run_workers: the calling thread).
  int32_t num_threads = 1;
  CpuWorkersFn run_workers = nullptr;
};

void rms_norm_fwd_cpu(const RmsNormParams& params);

}  // namespace mmssm
