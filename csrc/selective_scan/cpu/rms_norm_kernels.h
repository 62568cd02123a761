// The fused RMSNorm (../rms_norm.h), compiled with the scan kernels for each instruction
// set (included by scan_cpu_kernels.h). Work item: a range of rows. Per row: the sum of
// squares over W lanes (two accumulators, the partial last vector masked), one
// horizontal sum, the scale 1 / sqrt(mean + eps) in float32, then x * scale * weight
// stored W channels at a time.
#pragma once

#include <cmath>
#include <cstdint>

#include "../rms_norm.h"
#include "cpu_math.h"
#include "simd.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

inline void rms_norm_rows(const RmsNormParams& p, int64_t begin, int64_t end) {
  constexpr int W = kLanes<float>;
  const int64_t C = p.channels;
  const int64_t full = C / W * W;
  for (int64_t r = begin; r < end; ++r) {
    const float* x = p.x + r * p.x_row_stride;
    float* out = p.out + r * C;
    VFloat s0{}, s1{};
    int64_t c = 0;
    for (; c + 2 * W <= full; c += 2 * W) {
      const VFloat a = load(x + c), b = load(x + c + W);
      s0 += a * a;
      s1 += b * b;
    }
    if (c < full) {
      const VFloat a = load(x + c);
      s0 += a * a;
    }
    if (full < C) {
      const VFloat a = load_acc_partial(x + full, C - full);
      s1 += a * a;
    }
    const VFloat s = s0 + s1;
    float sum = 0.f;
    for (int j = 0; j < W; ++j) sum += s[j];
    const float mean = sum / static_cast<float>(C);
    const VFloat scale = splat(1.f / std::sqrt(mean + p.eps));
    for (c = 0; c < full; c += W) {
      store(out + c, load(x + c) * scale * load(p.weight + c));
    }
    if (full < C) {
      const int64_t lanes = C - full;
      store_acc_partial(out + full, lanes,
                        load_acc_partial(x + full, lanes) * scale *
                            load_acc_partial(p.weight + full, lanes));
    }
  }
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
