// Torch-free scalar helpers for the CPU selective scan: 16-bit float conversions and
// branch-free exp / log1p / softplus / sigmoid that GCC and Clang auto-vectorise inside
// `#pragma omp simd` loops (libm calls would keep those loops scalar).
//
// Accuracy: the float versions are within ~2 ulp of the correctly rounded result over
// the ranges the scan uses; double inputs go through libm (the fp64 path is for
// gradient checks, not speed).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) || defined(__clang__)
#define MMSSM_INLINE inline __attribute__((always_inline))
#define MMSSM_LAMBDA_INLINE __attribute__((always_inline))
#else
#define MMSSM_INLINE inline
#define MMSSM_LAMBDA_INLINE
#endif

namespace mmssm {
namespace cpu {

// Storage types of the 16-bit inputs: raw bits, converted on load/store.
struct half_bits {
  uint16_t x;
};
struct bf16_bits {
  uint16_t x;
};

MMSSM_INLINE uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

MMSSM_INLINE float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// ---- IEEE binary16 <-> float -------------------------------------------------------

MMSSM_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t magnitude = h & 0x7fffu;
  const uint32_t shifted = magnitude << 13;  // exponent/mantissa in float position
  // Multiplying by 2^112 re-biases the exponent (15 -> 127); it also normalises
  // half subnormals, which land on float subnormals before the product.
  const uint32_t scaled = float_bits(bits_float(shifted) * 0x1p112f);
  const uint32_t special = shifted | 0x7f800000u;  // inf / nan keep their payload
  return bits_float((magnitude >= 0x7c00u ? special : scaled) | sign);
}

MMSSM_INLINE uint16_t float_to_half(float f) {
  const uint32_t bits = float_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  // >= 65536: overflow to inf; nan stays a quiet nan.
  const uint32_t overflow = magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // < 2^-14: half subnormal. Adding 0.5 (exponent 126) aligns the mantissa so that the
  // float adder performs the round-to-nearest-even shift for us.
  const float aligned = bits_float(magnitude) + 0.5f;
  const uint32_t subnormal = float_bits(aligned) - 0x3f000000u;
  // normal range: re-bias the exponent and round to nearest even on bit 13.
  const uint32_t odd = (magnitude >> 13) & 1u;
  const uint32_t normal = (magnitude - 0x38000000u + 0xfffu + odd) >> 13;
  uint32_t out = magnitude >= 0x47800000u ? overflow
                 : magnitude < 0x38800000u ? subnormal
                                           : normal;
  return static_cast<uint16_t>(out | sign);
}

// ---- bfloat16 <-> float -------------------------------------------------------------

MMSSM_INLINE float bf16_to_float(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}

MMSSM_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t bits = float_bits(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x0040u;  // quiet, sign and payload kept
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// ---- typed load / store -------------------------------------------------------------

template <typename acc_t>
MMSSM_INLINE acc_t to_acc(float v) { return static_cast<acc_t>(v); }
template <typename acc_t>
MMSSM_INLINE acc_t to_acc(double v) { return static_cast<acc_t>(v); }
template <typename acc_t>
MMSSM_INLINE acc_t to_acc(half_bits v) { return static_cast<acc_t>(half_to_float(v.x)); }
template <typename acc_t>
MMSSM_INLINE acc_t to_acc(bf16_bits v) { return static_cast<acc_t>(bf16_to_float(v.x)); }

template <typename in_t>
struct Store;
template <>
struct Store<float> {
  MMSSM_INLINE static float from(float v) { return v; }
};
template <>
struct Store<double> {
  MMSSM_INLINE static double from(double v) { return v; }
};
template <>
struct Store<half_bits> {
  MMSSM_INLINE static half_bits from(float v) { return half_bits{float_to_half(v)}; }
};
template <>
struct Store<bf16_bits> {
  MMSSM_INLINE static bf16_bits from(float v) { return bf16_bits{float_to_bf16(v)}; }
};

// ---- exp ----------------------------------------------------------------------------
//
// exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 in [-ln2/2, ln2/2].
// k is found with the 1.5 * 2^23 rounding constant, so 2^k is assembled from the
// integer bits without a float->int conversion (undefined for nan). Everything is
// branch-free (min / max / integer ops) so that the loops calling it vectorise.
// x is clamped to [ln(FLT_MIN), ln(FLT_MAX)]: results below FLT_MIN (~1.2e-38) stay at
// FLT_MIN instead of 0 and overflow saturates at FLT_MAX; nan propagates.

MMSSM_INLINE float fast_exp(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;        // 12 significant bits: k * hi exact
  const float kLn2Lo = 1.428606765330187045e-06f;  // ln2 - hi
  const float kRound = 12582912.0f;                // 1.5 * 2^23
  // std::min / std::max return their first argument when the other is nan.
  const float xc = std::max(std::min(x, 88.7228f), -87.3365f);
  const float shifted = xc * kLog2e + kRound;
  const float k = shifted - kRound;
  const float r = (xc - k * kLn2Hi) - k * kLn2Lo;
  // Degree-6 Taylor polynomial of exp on |r| <= 0.347: truncation error < 2.4e-8 rel.
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // k in [-126, 128]; 2^k as two factors so that k = 128 does not overflow the bits.
  const int32_t ki = static_cast<int32_t>(float_bits(shifted) - float_bits(kRound));
  const int32_t k1 = ki >> 1;
  const float s1 = bits_float(static_cast<uint32_t>(k1 + 127) << 23);
  const float s2 = bits_float(static_cast<uint32_t>(ki - k1 + 127) << 23);
  return p * s1 * s2;
}

MMSSM_INLINE double fast_exp(double x) { return std::exp(x); }

// ---- log / log1p --------------------------------------------------------------------

// Natural log for finite y >= FLT_MIN (the callers pass 1 + exp(x) >= 1).
MMSSM_INLINE float fast_log(float y) {
  // Split y = 2^e * m with m in [sqrt(1/2), sqrt(2)) by integer arithmetic on the bits.
  const int32_t bits = static_cast<int32_t>(float_bits(y));
  const int32_t offset = bits - 0x3f3504f3;  // bits of sqrt(1/2)
  const int32_t exponent = offset >> 23;     // arithmetic shift: floor
  const float m = bits_float(static_cast<uint32_t>(bits - (exponent << 23)));
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  const float log_m = 2.0f * s + 2.0f * s * s2 * p;
  const float e = static_cast<float>(exponent);
  return e * 0.693145751953125f + (log_m + e * 1.428606765330187045e-06f);
}

// log(1 + e) for e >= 0: log of the rounded sum plus the first-order correction for
// the rounding error of 1 + e (exact enough when 1 + e rounds to 1).
MMSSM_INLINE float fast_log1p_pos(float e) {
  const float one_plus = 1.0f + e;
  const float lost = e - (one_plus - 1.0f);
  return fast_log(one_plus) + lost / one_plus;
}

// ---- activations --------------------------------------------------------------------

// softplus(x) = max(x, 0) + log1p(exp(-|x|)): branch-free and overflow-free. Above 20
// the correction (< 2.1e-9) is below half an ulp of x, so it equals torch's rule
// (identity above threshold 20) in float.
MMSSM_INLINE float softplus(float x) {
  return std::max(x, 0.0f) + fast_log1p_pos(fast_exp(-std::fabs(x)));
}
MMSSM_INLINE double softplus(double x) {
  return x > 20.0 ? x : std::log1p(std::exp(x));
}

MMSSM_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
MMSSM_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// d softplus(x) / dx applied to grad, with torch's threshold (derivative 1 above 20;
// in float sigmoid(x > 20) rounds to exactly 1, so no select is needed).
MMSSM_INLINE float softplus_backward(float grad, float x) { return grad * sigmoid(x); }
MMSSM_INLINE double softplus_backward(double grad, double x) {
  return x > 20.0 ? grad : grad * sigmoid(x);
}

}  // namespace cpu
}  // namespace mmssm
