// The CPU GELU (../activation.h), compiled with the scan kernels for each instruction set
// (included by scan_cpu_kernels.h). Work item: a range of values, W at a time (the
// partial last vector masked).
//
// h(a) = erfc(a / sqrt 2) / 2 for a = |x| >= 0 is t P(t) exp(-a^2 / 2), t = 1 / (1 + c a),
// c = 0.45 / sqrt 2, P of degree 6: a weighted least-squares fit of
// erfc(a / sqrt 2) exp(a^2 / 2) / (2 t) on 6000 Chebyshev points of a in [0, 7 sqrt 2]
// (Lawson's iteration towards the minimax error of x Phi(x) / max(1, |x|)), whose error,
// 1.7e-9, is far below float32 rounding; the coefficients are rounded to float. Beyond
// |x| = 9.9 h is below 1e-22 and keeps falling (the exp clamps at exp(-86.6)).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../activation.h"
#include "cpu_math.h"
#include "simd.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

// K vectors of x at a time, every step applied to all K before the next: the steps of one
// vector form a dependency chain of ~60 cycles (a division, the polynomial, the exp), and
// interleaving K of them lets the core overlap them (one vector at a time ran at ~2.7
// cycles per value on an AVX2 EPYC, 4 at a time at ~1).
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

template <bool kGrad>
MMSSM_INLINE void gelu_values(const GeluParams& p, int64_t begin, int64_t end) {
  constexpr int W = kLanes<float>, K = 4;
  VFloat x[K], g[K], out[K];
  int64_t i = begin;
  for (; i + K * W <= end; i += K * W) {
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      x[k] = load(p.x + i + k * W);
      if constexpr (kGrad) g[k] = load(p.grad + i + k * W);
    }
    gelu_vectors<K, kGrad>(x, g, out);
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) store(p.out + i + k * W, out[k]);
  }
  for (; i < end; i += W) {  // the last values, one (partial) vector at a time
    const int64_t n = std::min<int64_t>(W, end - i);
    VFloat x1[1] = {load_acc_partial(p.x + i, n)}, g1[1], out1[1];
    if constexpr (kGrad) g1[0] = load_acc_partial(p.grad + i, n);
    gelu_vectors<1, kGrad>(x1, g1, out1);
    store_acc_partial(p.out + i, n, out1[0]);
  }
}

inline void gelu_range(const GeluParams& p, int64_t begin, int64_t end) {
  if (p.grad == nullptr) {
    gelu_values<false>(p, begin, end);
  } else {
    gelu_values<true>(p, begin, end);
  }
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
