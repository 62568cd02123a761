// The fused route ops (../route_conv.h), compiled with the scan kernels for each
// instruction set (included by scan_cpu_kernels.h). Work item of both: a range of
// (batch, channel) rows.
// - Route convolution: per row the time series is copied once into a zero-padded buffer
//   in natural order and once reversed; each route is then a causal K-tap filter along
//   time, W time steps per vector (unaligned loads of the padded buffer), plus bias and
//   SiLU, stored contiguously. The row is read once and each output written once.
// - Route merge + gate: route 1's row is reversed into a scratch row, then the sum,
//   scale and gate run W steps per vector.
#pragma once

#include <cstdint>
#include <cstring>

#include "../route_conv.h"
#include "../scan_math.h"
#include "cpu_math.h"
#include "simd.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

// Floats of one padded row buffer: K - 1 leading zeros, L values, and a vector's worth
// of trailing zeros so that the last (partial) vector's loads stay inside it.
MMSSM_INLINE int64_t route_conv_row_floats(int64_t width, int64_t seqlen) {
  return (width - 1 + seqlen + kLanes<float> + 15) / 16 * 16;
}

inline int64_t route_conv_scratch_bytes(const RouteConvParams& p) {
  return 2 * route_conv_row_floats(p.width, p.seqlen) * int64_t(sizeof(float));
}

// out[l] = silu(bias + sum_j w[j] * padded[l + j]), l in [0, L).
MMSSM_INLINE void causal_filter_silu(const float* padded, const float* w, float bias,
                                     int64_t width, int64_t seqlen, float* out) {
  constexpr int W = kLanes<float>;
  int64_t l = 0;
  for (; l + W <= seqlen; l += W) {
    VFloat acc = splat(bias);
    for (int64_t j = 0; j < width; ++j) acc += splat(w[j]) * load(padded + l + j);
    store(out + l, scan_math::silu<CpuMath>(acc));
  }
  if (l < seqlen) {
    VFloat acc = splat(bias);
    for (int64_t j = 0; j < width; ++j) acc += splat(w[j]) * load(padded + l + j);
    store_acc_partial(out + l, seqlen - l, scan_math::silu<CpuMath>(acc));
  }
}

inline void route_conv_rows(const RouteConvParams& p, int64_t begin, int64_t end,
                            void* scratch) {
  const int64_t K = p.width, L = p.seqlen, D = p.dim;
  const int64_t row_floats = route_conv_row_floats(K, L);
  float* fwd = static_cast<float*>(scratch);
  float* rev = fwd + row_floats;
  // The zero head and tail of both buffers; the rows below overwrite [K - 1, K - 1 + L).
  std::memset(fwd, 0, sizeof(float) * size_t(2 * row_floats));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / D, d = r % D;
    const float* x = p.x + b * p.x_batch_stride + d * p.x_dim_stride;
    std::memcpy(fwd + K - 1, x, sizeof(float) * size_t(L));
    for (int64_t l = 0; l < L; ++l) rev[K - 1 + l] = x[L - 1 - l];
    const float bias0 = p.bias ? p.bias[d] : 0.f;
    const float bias1 = p.bias ? p.bias[D + d] : 0.f;
    causal_filter_silu(fwd, p.weight + d * K, bias0, K, L, p.out + ((2 * b) * D + d) * L);
    causal_filter_silu(rev, p.weight + (D + d) * K, bias1, K, L,
                       p.out + ((2 * b + 1) * D + d) * L);
  }
}

inline int64_t route_merge_scratch_bytes(const RouteMergeParams& p) {
  return (p.seqlen + kLanes<float> + 15) / 16 * 16 * int64_t(sizeof(float));
}

// The merge + gate (RouteMergeParams), rows [begin, end) of the (batch, channel) rows:
// route 1's row is reversed into the scratch row, then W steps per vector.
inline void route_merge_rows(const RouteMergeParams& p, int64_t begin, int64_t end,
                             void* scratch) {
  constexpr int W = kLanes<float>;
  const int64_t L = p.seqlen, D = p.dim;
  float* rev = static_cast<float*>(scratch);
  const VFloat scale = splat(p.scale);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / D, d = r % D;
    const float* y0 = p.ys + ((2 * b) * D + d) * L;
    const float* y1 = p.ys + ((2 * b + 1) * D + d) * L;
    const float* z = p.z ? p.z + b * p.z_batch_stride + d * p.z_dim_stride : nullptr;
    float* out = p.out + r * L;
    for (int64_t l = 0; l < L; ++l) rev[l] = y1[L - 1 - l];
    int64_t l = 0;
    for (; l + W <= L; l += W) {
      VFloat v = (load(y0 + l) + load(rev + l)) * scale;
      if (z) v *= scan_math::silu<CpuMath>(load(z + l));
      store(out + l, v);
    }
    if (l < L) {
      VFloat v = (load_acc_partial(y0 + l, L - l) + load_acc_partial(rev + l, L - l)) * scale;
      if (z) v *= scan_math::silu<CpuMath>(load_acc_partial(z + l, L - l));
      store_acc_partial(out + l, L - l, v);
    }
  }
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
