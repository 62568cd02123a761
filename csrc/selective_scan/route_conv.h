// Shared, torch-free description of the fused route ops of Vim's bidirectional mixer.
//
// The route convolution: Vim's causal depthwise
// conv1d + bias + SiLU over a sequence read in both directions, written straight into the
// (B, 2, D, L) route layout the selective scan reads. It replaces four passes (gather the
// two routes, flip, conv, SiLU) by one.
//
// Semantics, for x (B, D, L), weight (2, D, K), bias (2, D) (optional, else 0):
//   route 0 (forward):  out[b,0,d,l] = silu(bias[0,d] + sum_j weight[0,d,j] * x[b,d,l-K+1+j])
//   route 1 (reversed): out[b,1,d,l] = silu(bias[1,d] + sum_j weight[1,d,j] * r[b,d,l-K+1+j])
// with r[b,d,m] = x[b,d,L-1-m] and zero for negative time indices; silu(v) = v / (1 + e^-v).
// This is torch.nn.functional.conv1d(routes, weight, bias, padding=K-1, groups=2D)[..., :L]
// followed by SiLU, with routes = (x, x reversed in time). Float32 only.
#pragma once

#include <cstdint>

#include "scan.h"

namespace mmssm {

// Strides are in elements; x's time axis has stride 1.
struct RouteConvParams {
  int64_t batch = 0, dim = 0, seqlen = 0, width = 0;  // B, D, L, K
  const float* x = nullptr;                           // (B, D, L)
  int64_t x_batch_stride = 0, x_dim_stride = 0;
  const float* weight = nullptr;  // (2, D, K) contiguous
  const float* bias = nullptr;    // (2, D) contiguous, or null
  float* out = nullptr;           // (B, 2, D, L) contiguous
  // Workers, as in SelectiveScanFwdParams (null run_workers: the calling thread).
  int32_t num_threads = 1;
  CpuWorkersFn run_workers = nullptr;
};

void route_conv_silu_fwd_cpu(const RouteConvParams& params);

// The way back: the two routes' scan outputs summed per token and gated,
//   out[b,d,l] = (ys[b,0,d,l] + ys[b,1,d,L-1-l]) * silu(z[b,d,l]) * scale
// (route 1 was read reversed), z optional (then no gate). One pass instead of the flip,
// the sum, the SiLU and two products.
struct RouteMergeParams {
  int64_t batch = 0, dim = 0, seqlen = 0;  // B, D, L
  const float* ys = nullptr;               // (B, 2, D, L) contiguous
  const float* z = nullptr;                // (B, D, L), time contiguous, or null
  int64_t z_batch_stride = 0, z_dim_stride = 0;
  float scale = 1.f;
  float* out = nullptr;  // (B, D, L) contiguous
  int32_t num_threads = 1;
  CpuWorkersFn run_workers = nullptr;
};

void route_merge_gate_fwd_cpu(const RouteMergeParams& params);

}  // namespace mmssm
