// Shared, torch-free description of the CPU activations (float32), elementwise: the
// exact (erf) GELU of nn.GELU() and the SiLU of nn.SiLU(), with their derivatives.
//
//   GELU forward:  out[i] = x[i] * Phi(x[i])                          (grad == nullptr)
//   GELU backward: out[i] = grad[i] * (Phi(x[i]) + x[i] * phi(x[i]))  (grad given)
//   SiLU forward:  out[i] = x[i] * s(x[i]), s = sigmoid = 1 / (1 + exp(-x))
//   SiLU backward: out[i] = grad[i] * s (1 + x[i] (1 - s))
//
// Phi / phi: the standard normal distribution / density. Phi(x) = 1 - h(x) for x >= 0 and
// h(|x|) for x < 0, h(a) = erfc(a / sqrt 2) / 2 = t P(t) exp(-a^2 / 2), t = 1 / (1 + c a)
// (one division, one exp and a polynomial per value; phi comes from the same exp). The
// result equals torch's F.gelu / gelu_backward up to rounding (about 1e-7 * max(1, |x|)
// either way: tests/ops/test_activation.py measures both against float64); nan stays
// nan, +inf -> +inf, -inf -> nan and a gradient of nan at +-inf, as torch's. SiLU takes s
// as 1 / (1 + exp(-x)) with cpu_math.h's exp, and s = 0 below x = -87 (no subnormal; the
// infinities and nan give torch's results as above).
// out may be x (forward) or grad (backward): every value is read before it is written.
// A value's result depends on nothing else, so neither the thread count nor the split
// changes it.
#pragma once

#include <cstdint>

#include "scan.h"

namespace mmssm {

enum class Activation : int32_t { kGelu = 0, kSilu = 1 };

struct ActivationParams {
  Activation kind = Activation::kGelu;
  int64_t n = 0;                  // values, all contiguous
  const float* x = nullptr;       // (n,)
  const float* grad = nullptr;    // (n,): the backward's output gradient; null: forward
  float* out = nullptr;           // (n,)
  // Workers, as in SelectiveScanFwdParams (null run_workers: the calling thread).
  int32_t num_threads = 1;
  CpuWorkersFn run_workers = nullptr;
};

void activation_cpu(const ActivationParams& params);

}  // namespace mmssm
