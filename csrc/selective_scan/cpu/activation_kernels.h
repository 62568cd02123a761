// The CPU activations (../activation.h), compiled with the scan kernels for each
// instruction set (included by scan_cpu_kernels.h). Work item: a range of values, 4 W at
// a time, then W (the partial last vector masked).
//
// GELU: h(a) = erfc(a / sqrt 2) / 2 for a = |x| >= 0 is t P(t) exp(-a^2 / 2), with
// t = 1 / (1 + c a), c = 0.45 / sqrt 2, P of degree 6: a weighted least-squares fit of
// erfc(a / sqrt 2) exp(a^2 / 2) / (2 t) on 6000 Chebyshev points of a in [0, 7 sqrt 2]
// (Lawson's iteration towards the minimax error of x Phi(x) / max(1, |x|)), whose error,
// 1.7e-9, is far below float32 rounding; the coefficients are rounded to float. (Beyond
// the fitted range, |x| = 9.9, h is below 1e-22; past |x| = 13.2 it is set to 0.)
// SiLU: s = sigmoid(x) as scan_math.h's (the scan gate's) sigmoid.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../activation.h"
#include "../scan_math.h"
#include "cpu_math.h"
#include "simd.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

// K vectors of x at a time, every step applied to all K before the next: the steps of one
// vector form a long dependency chain (a division, the polynomial, the exp), and
// interleaving K of them lets the core overlap them (on an AVX2 EPYC, K = 4 against 1:
// 0.75-0.93 against 1.0 ns per value forward; docs/cpu_kernels.md).
// Forward (kGrad false): out = x Phi(x); backward: out = grad (Phi(x) + x phi(x)).
template <int K, bool kGrad>
MMSSM_INLINE void gelu_vectors(const VFloat (&x)[K], const VFloat* grad, VFloat (&out)[K]) {
  VFloat t[K], q[K], e[K];
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) t[k] = 1.f / (1.f + 0.318198052f * CpuMath::abs(x[k]));
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) {
    const VFloat sq = 0.5f * x[k] * x[k];
    // exp(-x^2 / 2), exactly 0 where it would be below exp(-87) (|x| > 13.19, nan and
    // +-inf included): Phi is then exactly 0 or 1, x phi(x) exactly 0 for finite x (nan
    // for +-inf, as torch's gradient), and nothing becomes subnormal.
    e[k] = sq < 87.f ? exp(-sq) : VFloat{};
  }
  static constexpr float kP[] = {4.614112548e-02f, -2.463958303e-01f, 4.273490231e-01f,
                                 -1.866775981e-01f, 2.294123100e-01f, 1.006991506e-01f,
                                 1.294718184e-01f};
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) q[k] = splat(kP[0]);
#pragma GCC unroll 8
  for (int j = 1; j < 7; ++j) {
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) q[k] = q[k] * t[k] + kP[j];
  }
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) {
    const VFloat h = t[k] * q[k] * e[k];  // Phi(-|x|)
    const VFloat cdf = x[k] < 0.f ? h : 1.f - h;
    if constexpr (kGrad) {
      out[k] = grad[k] * (cdf + x[k] * (e[k] * 0.398942280f));  // phi = e / sqrt(2 pi)
    } else {
      out[k] = x[k] * cdf;
    }
  }
}

// SiLU on K vectors: out = x s (forward) or grad s (1 + x (1 - s)), s = sigmoid(x), and s
// exactly 0 below x = -87 (where exp(-x) would overflow its clamp; nan stays nan).
template <int K, bool kGrad>
MMSSM_INLINE void silu_vectors(const VFloat (&x)[K], const VFloat* grad, VFloat (&out)[K]) {
#pragma GCC unroll 8
  for (int k = 0; k < K; ++k) {
    const VFloat s = x[k] < -87.f ? VFloat{} : scan_math::sigmoid<CpuMath>(x[k]);
    if constexpr (kGrad) {
      out[k] = grad[k] * scan_math::silu_grad<CpuMath>(x[k], s);
    } else {
      out[k] = x[k] * s;
    }
  }
}

template <int K, bool kGrad, bool kSilu>
MMSSM_INLINE void activation_vectors(const VFloat (&x)[K], const VFloat* grad,
                                     VFloat (&out)[K]) {
  if constexpr (kSilu) {
    silu_vectors<K, kGrad>(x, grad, out);
  } else {
    gelu_vectors<K, kGrad>(x, grad, out);
  }
}

template <bool kGrad, bool kSilu>
MMSSM_INLINE void activation_values(const ActivationParams& p, int64_t begin, int64_t end) {
  constexpr int W = kLanes<float>, K = 4;
  VFloat x[K], g[K], out[K];
  int64_t i = begin;
  for (; i + K * W <= end; i += K * W) {
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      x[k] = load(p.x + i + k * W);
      if constexpr (kGrad) g[k] = load(p.grad + i + k * W);
    }
    activation_vectors<K, kGrad, kSilu>(x, g, out);
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) store(p.out + i + k * W, out[k]);
  }
  for (; i < end; i += W) {  // the last values, one (partial) vector at a time
    const int64_t n = std::min<int64_t>(W, end - i);
    VFloat x1[1] = {load_acc_partial(p.x + i, n)}, g1[1], out1[1];
    if constexpr (kGrad) g1[0] = load_acc_partial(p.grad + i, n);
    activation_vectors<1, kGrad, kSilu>(x1, g1, out1);
    store_acc_partial(p.out + i, n, out1[0]);
  }
}

inline void activation_range(const ActivationParams& p, int64_t begin, int64_t end) {
  const bool grad = p.grad != nullptr;
  if (p.kind == Activation::kSilu) {
    grad ? activation_values<true, true>(p, begin, end)
         : activation_values<false, true>(p, begin, end);
  } else {
    grad ? activation_values<true, false>(p, begin, end)
         : activation_values<false, false>(p, begin, end);
  }
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
