// The scalar math of the selective scan, written once for both backends: the time-step
// activation softplus, its derivative, and the gate's sigmoid / SiLU.
//
// Each formula is a template over
//   M  the backend's primitives (static member functions):
//        exp(x), log1p_unit(e) = log(1 + e) for 0 <= e <= 1, expm1_nonpos(x) = e^x - 1
//        for x <= 0, abs(x), relu(x) = max(x, 0), ones_like(x), and
//        select(mask, a, b) = mask ? a : b (lane-wise for vectors);
//      the CUDA kernels use expf / log1pf / expm1f (cuda/scan_common.cuh), the CPU kernels
//      branch-free polynomial versions on SIMD vectors (cpu/cpu_math.h);
//   V  the value: a float (CUDA), or a SIMD vector of floats or doubles (CPU).
// Torch-free and header-only, so nvcc, the CUDA host emulation and the CPU kernels all
// compile the same lines.
#pragma once

#if defined(__CUDACC__)
#define MMSSM_MATH_FN __host__ __device__ __forceinline__
#else
#define MMSSM_MATH_FN inline __attribute__((always_inline))
#endif

namespace mmssm {
namespace scan_math {

// Above this pre-activation softplus is the identity (torch's threshold; spec §1.1).
constexpr float kSoftplusThreshold = 20.f;

// softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|): no overflow, and
// log1p only ever sees (0, 1]. Exactly x above the threshold (in float the correction
// there, < 2.1e-9, is below half an ulp of x anyway; in double it is not).
template <typename M, typename V>
MMSSM_MATH_FN V softplus(V x) {
  const V smooth = M::relu(x) + M::log1p_unit(M::exp(-M::abs(x)));
  return M::select(x > kSoftplusThreshold, x, smooth);
}

// d softplus(x) / dx = sigmoid(x), from the output y = softplus(x) alone (the kernels
// keep y, not x): sigmoid(x) = 1 - e^-y = -expm1(-y), exact for tiny y too. 1 above the
// threshold, where y = x.
template <typename M, typename V>
MMSSM_MATH_FN V softplus_grad_from_output(V y) {
  return M::select(y > kSoftplusThreshold, M::ones_like(y), -M::expm1_nonpos(-y));
}

template <typename M, typename V>
MMSSM_MATH_FN V sigmoid(V x) {
  return 1.f / (1.f + M::exp(-x));
}

// out = y * silu(z): the gate of the scan's output.
template <typename M, typename V>
MMSSM_MATH_FN V silu(V z) {
  return z * sigmoid<M>(z);
}

// The gate's backward: out = y * silu(z) with s = sigmoid(z) gives
//   d out / d y = z s,   d out / d z = y s (1 + z (1 - s)).
template <typename M, typename V>
MMSSM_MATH_FN V silu_grad(V z, V s) {
  return s * (1.f + z * (1.f - s));
}

}  // namespace scan_math
}  // namespace mmssm
