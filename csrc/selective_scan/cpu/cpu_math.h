// Torch-free math of the CPU selective scan on SIMD vectors (simd.h):
// * CpuMath, the primitives behind the shared formulas of ../scan_math.h:
//   branch-free polynomial exp / log1p / expm1 for float vectors (libm calls would keep
//   the loops scalar), libm lane by lane for double vectors (the fp64 path is for gradient
//   checks); the AVX-512 build (MMSSM_CPU_ISA_LEVEL 4) computes exp with vscalefps;
// * conversions of the 16-bit input types (IEEE binary16, bfloat16) to and from float,
//   one float register at a time.
//
// Accuracy of the float primitives (relative, over the arguments the scan passes): exp
// and expm1 within 2 ulp, log1p_unit within 1 ulp plus the rounding of its argument;
// exp(0) = 1 and log1p_unit(e) / e -> 1 exactly (no bias to compound over a scan).
// Polynomial coefficients: weighted least-squares fits for the minimax relative error on
// the stated interval with the leading terms fixed (Lawson's iteration on 6000 Chebyshev
// points), rounded to float; the comment on each gives the max relative error.
#pragma once

#include <cmath>
#include <cstring>
#include <cstdint>
#include <type_traits>

#include "../scan_math.h"
#include "simd.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

using VFloat = Vec<float>;
using VDouble = Vec<double>;
using VInt = Vec<int32_t>;
using VUint = Vec<uint32_t>;
using VHalf = VecN<uint16_t, kLanes<float>>;  // 16-bit values of one float register

// Storage types of the 16-bit inputs: raw bits, converted on load / store.
struct half_bits {
  uint16_t x;
};
struct bf16_bits {
  uint16_t x;
};

// ---- min / max -------------------------------------------------------------------------
//
// Lane by lane a < b ? a : b (kMax false) or a > b ? a : b (kMax true): b wherever either
// is nan -- the rule of vminps / vmaxps, which are what this is on AVX2 / AVX-512 (one
// instruction; GCC does not fold the select into them because of that nan rule, and
// leaves a compare and a blend). With a constant as a, x as b: a clamp that keeps nan.
template <bool kMax>
MMSSM_INLINE VFloat lane_pick(VFloat a, VFloat b) {
#if MMSSM_CPU_ISA_LEVEL >= 4
  const __m512 va = bitcast<__m512>(a), vb = bitcast<__m512>(b);
  return bitcast<VFloat>(kMax ? _mm512_max_ps(va, vb) : _mm512_min_ps(va, vb));
#elif MMSSM_CPU_ISA_LEVEL >= 3
  const __m256 va = bitcast<__m256>(a), vb = bitcast<__m256>(b);
  return bitcast<VFloat>(kMax ? _mm256_max_ps(va, vb) : _mm256_min_ps(va, vb));
#else
  return (kMax ? b < a : a < b) ? a : b;
#endif
}

// min(hi, x) and max(lo, x), x itself where it is nan.
MMSSM_INLINE VFloat clamp_above(VFloat x, float hi) { return lane_pick<false>(splat(hi), x); }
MMSSM_INLINE VFloat clamp_below(VFloat x, float lo) { return lane_pick<true>(splat(lo), x); }

// ---- exp ------------------------------------------------------------------------------
//
// exp(x) = 2^k exp(r), k = round(x / ln2), r = x - k ln2 in [-ln2/2, ln2/2] (Cody-Waite:
// ln2 split in a 12-bit high part, so k * hi is exact). k is found with the 1.5 * 2^23
// rounding constant; the low bits of `shifted` then hold k, and (bits << 23) puts k in
// the exponent field (the constant's own bits shift out), with no float -> int
// conversion (undefined for nan). The polynomial returns 2 exp(r) and the scale is
// 2^(k-1), so that k = 128 (x up to ln(FLT_MAX)) needs no second factor.
// x is clamped to [-86.6, 88.72]: results below ~2.4e-38 stay there instead of reaching
// 0, overflow saturates near FLT_MAX, nan propagates (the clamps keep it; the scale
// multiplies it).
MMSSM_INLINE VFloat exp_generic(VFloat x) {
  const float kHi = 88.72f, kLo = -86.6f;
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.428606765330187045e-06f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23
  x = clamp_below(clamp_above(x, kHi), kLo);
  const VFloat shifted = x * kLog2e + kRound;
  const VFloat k = shifted - kRound;
  const VFloat r = (x - k * kLn2Hi) - k * kLn2Lo;
  // 2 exp(r) on |r| <= ln2 / 2: 2 (1 + r + r^2 q(r)), q of degree 4; max relative
  // error 3.8e-9, and exact at r = 0 (no bias for decays near 1, whose errors would
  // compound over a long scan).
  VFloat p = splat(2.762922552e-03f);
  p = p * r + 1.673742011e-02f;
  p = p * r + 8.333677798e-02f;
  p = p * r + 3.333304226e-01f;
  p = p * r + 9.999998808e-01f;
  p = p * r + 2.0f;
  p = p * r + 2.0f;
  const VInt scale = (bitcast<VInt>(shifted) << 23) + (126 << 23);  // 2^(k-1)
  return p * bitcast<VFloat>(scale);
}

// 2^f on |f| <= 1/2 as 1 + f q(f), q of degree 5: max relative error 1.6e-8, exact at
// f = 0. kTwice: 2 * 2^f, every coefficient doubled (exactly, at compile time), so the
// values are exactly twice 2^f's. The one polynomial of every exp2 here.
template <bool kTwice = false>
MMSSM_INLINE VFloat exp2_unit(VFloat f) {
  constexpr float m = kTwice ? 2.0f : 1.0f;
  VFloat p = splat(m * 1.535336196e-04f);
  p = p * f + m * 1.339887502e-03f;
  p = p * f + m * 9.618436918e-03f;
  p = p * f + m * 5.550332367e-02f;
  p = p * f + m * 2.402264774e-01f;
  p = p * f + m * 6.931471825e-01f;
  p = p * f + m;
  return p;
}

// t = k + f, k = round(t), f in [-1/2, 1/2] (exact), for |t| < 2^22: `shifted` =
// t + 1.5 * 2^23 holds k in its low bits, so (bits << 23) is k moved into the exponent
// field (the constant's own bits shift out), with no float -> int conversion.
struct Exp2Split {
  VFloat shifted, f;
};
MMSSM_INLINE Exp2Split exp2_split(VFloat t) {
  const float kRound = 12582912.0f;  // 1.5 * 2^23
  const VFloat shifted = t + kRound;
  return {shifted, t - (shifted - kRound)};
}

// 2^t (the scan's decays: exp(dt A) = 2^(dt A log2(e)), with A log2(e) computed once per
// channel), same scheme as exp_generic: 2^t = 2^(k-1) * 2 * 2^f. t is clamped to
// [-125, 127.99]: results below ~2.4e-38 stay there, overflow saturates near FLT_MAX, nan
// propagates.
MMSSM_INLINE VFloat exp2_generic(VFloat t) {
  const Exp2Split s = exp2_split(clamp_below(clamp_above(t, 127.99f), -125.0f));
  const VInt scale = (bitcast<VInt>(s.shifted) << 23) + (126 << 23);  // 2^(k-1)
  return exp2_unit<true>(s.f) * bitcast<VFloat>(scale);
}

// 2^t for the scan's decays where t <= 0 or nan is known: t = dt A log2(e) with every A
// <= 0 and dt >= 0 or nan (the softplus of delta). exp2_generic less two instructions: no
// upper clamp (t <= 0 cannot overflow) and the scale 2^k added to the exponent field of
// 2^f (the polynomial halved: 2^f in [2^-1/2, 2^1/2], exponent -1 or 0) as an integer
// instead of multiplied; with k >= -125 (the lower clamp) the field stays >= 2. The
// result is exp2_generic's bit for bit for every t <= 0, and nan for the default nan
// (that of 0 * inf: its low bits, which become the scale, are 0). A nan with another
// payload can only come from a nan dt here, whose dt u B term makes the state nan all the
// same.
MMSSM_INLINE VFloat decay_exp2_generic(VFloat t) {
  const Exp2Split s = exp2_split(clamp_below(t, -125.0f));
  return bitcast<VFloat>(bitcast<VInt>(exp2_unit(s.f)) +
                         (bitcast<VInt>(s.shifted) << 23));  // 2^f 2^k
}

// log(1 + e) for 0 <= e <= 1, as e q(e): relative accuracy for tiny e as well.
MMSSM_INLINE VFloat log1p_unit(VFloat e) {
  // log1p(e) / e on [0, 1]: 1 + e q1(e), q1 of degree 7; max relative error 6.3e-8,
  // exact at e = 0.
  VFloat q = splat(5.364787299e-03f);
  q = q * e - 3.006564640e-02f;
  q = q * e + 7.920429856e-02f;
  q = q * e - 1.375378221e-01f;
  q = q * e + 1.915364563e-01f;
  q = q * e - 2.485716194e-01f;
  q = q * e + 3.332132101e-01f;
  q = q * e - 4.999964833e-01f;
  q = q * e + 1.0f;
  return e * q;
}

#if MMSSM_CPU_ISA_LEVEL >= 4
// exp on AVX-512: vscalefps computes p * 2^k from a float k, with IEEE overflow (inf) and
// underflow (subnormals, 0), so no exponent bit tricks are needed. The clamps only keep
// the range reduction exact; max / min return x itself when it is nan.
MMSSM_INLINE VFloat exp(VFloat x) {
  __m512 v = bitcast<__m512>(x);
  v = _mm512_max_ps(_mm512_set1_ps(-104.0f), v);
  v = _mm512_min_ps(_mm512_set1_ps(89.0f), v);
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), v);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
  // exp(r) on |r| <= ln2 / 2: the polynomial of exp_generic, halved.
  const VFloat rv = bitcast<VFloat>(r);
  VFloat p = splat(1.381461276e-03f);
  p = p * rv + 8.368710056e-03f;
  p = p * rv + 4.166838899e-02f;
  p = p * rv + 1.666652113e-01f;
  p = p * rv + 4.999999404e-01f;
  p = p * rv + 1.0f;
  p = p * rv + 1.0f;
  return bitcast<VFloat>(_mm512_scalef_ps(bitcast<__m512>(p), k));
}

// 2^t on AVX-512 (see exp2_generic): vscalefps again; the clamps only keep nan and the
// infinities out of the reduction (2^-150 is 0 and 2^129 inf anyway).
MMSSM_INLINE VFloat exp2(VFloat t) {
  __m512 v = bitcast<__m512>(t);
  v = _mm512_max_ps(_mm512_set1_ps(-150.0f), v);
  v = _mm512_min_ps(_mm512_set1_ps(129.0f), v);
  const __m512 k = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const VFloat p = exp2_unit(bitcast<VFloat>(_mm512_sub_ps(v, k)));
  return bitcast<VFloat>(_mm512_scalef_ps(bitcast<__m512>(p), k));
}
// The decays on AVX-512: exp2 (vscalefps already scales in one instruction).
MMSSM_INLINE VFloat decay_exp2(VFloat t) { return exp2(t); }
#else
MMSSM_INLINE VFloat exp(VFloat x) { return exp_generic(x); }
MMSSM_INLINE VFloat exp2(VFloat t) { return exp2_generic(t); }
MMSSM_INLINE VFloat decay_exp2(VFloat t) { return decay_exp2_generic(t); }
#endif

// e^x - 1 for x <= 0: a polynomial near 0 (where exp(x) - 1 would cancel), exp(x) - 1
// below -ln2/2 (there the difference loses no more than 2 ulp).
MMSSM_INLINE VFloat expm1_nonpos(VFloat x) {
  // (e^x - 1) / x on [-ln2/2, 0]: degree 4, max relative error 1.3e-8.
  VFloat q = splat(7.214565296e-03f);
  q = q * x + 4.133331031e-02f;
  q = q * x + 1.666254252e-01f;
  q = q * x + 4.999981821e-01f;
  q = q * x + 1.0f;
  return x < -0.34657359f ? exp(x) - 1.0f : x * q;
}

// fp64: libm per lane.
#define MMSSM_LANEWISE(name, fn)                                 \
  MMSSM_INLINE VDouble name(VDouble x) {                         \
    for (int i = 0; i < kLanes<double>; ++i) x[i] = fn(x[i]);            \
    return x;                                                    \
  }
MMSSM_LANEWISE(exp, std::exp)
MMSSM_LANEWISE(exp2, std::exp2)
MMSSM_LANEWISE(decay_exp2, std::exp2)
MMSSM_LANEWISE(log1p_unit, std::log1p)
MMSSM_LANEWISE(expm1_nonpos, std::expm1)
#undef MMSSM_LANEWISE

// The primitives of scan_math.h for float and double vectors.
struct CpuMath {
  template <typename V>
  MMSSM_INLINE static V exp(V x) {
    return MMSSM_CPU_ISA_NS::exp(x);
  }
  template <typename V>
  MMSSM_INLINE static V exp2(V t) {
    return MMSSM_CPU_ISA_NS::exp2(t);
  }
  // 2^t where t <= 0 or nan is known (the scan's decays; see decay_exp2_generic).
  template <typename V>
  MMSSM_INLINE static V decay_exp2(V t) {
    return MMSSM_CPU_ISA_NS::decay_exp2(t);
  }
  template <typename V>
  MMSSM_INLINE static V log1p_unit(V e) {
    return MMSSM_CPU_ISA_NS::log1p_unit(e);
  }
  template <typename V>
  MMSSM_INLINE static V expm1_nonpos(V x) {
    return MMSSM_CPU_ISA_NS::expm1_nonpos(x);
  }
  // |x| and max(x, 0) of float vectors in one instruction each (clearing the sign bit;
  // vmaxps with 0 as its second operand, which it returns for nan, as the select does);
  // the values are the select's except abs(-0) = +0, which nothing here tells apart.
  template <typename V>
  MMSSM_INLINE static V abs(V x) {
    if constexpr (std::is_same<V, VFloat>::value) {
      return bitcast<VFloat>(bitcast<VUint>(x) & 0x7fffffffu);
    } else {
      return x < 0 ? -x : x;
    }
  }
  template <typename V>
  MMSSM_INLINE static V relu(V x) {
    if constexpr (std::is_same<V, VFloat>::value) {
      return lane_pick<true>(x, VFloat{});  // 0 for nan, as the select below
    } else {
      return x > 0 ? x : V{};
    }
  }
  template <typename V>
  MMSSM_INLINE static V ones_like(V) {
    return V{} + 1;
  }
  template <typename Mask, typename V>
  MMSSM_INLINE static V select(Mask m, V a, V b) {
    return m ? a : b;
  }
};

// ---- IEEE binary16 <-> float ------------------------------------------------------------

MMSSM_INLINE VFloat half_to_float(VHalf h16) {
  const VUint h = __builtin_convertvector(h16, VUint);
  const VUint sign = (h & 0x8000u) << 16;
  const VUint magnitude = h & 0x7fffu;
  const VUint shifted = magnitude << 13;  // exponent / mantissa in float position
  // Multiplying by 2^112 re-biases the exponent (15 -> 127); it also normalises half
  // subnormals, which land on float subnormals before the product.
  const VUint scaled = bitcast<VUint>(bitcast<VFloat>(shifted) * 0x1p112f);
  const VUint special = shifted | 0x7f800000u;  // inf / nan keep their payload
  return bitcast<VFloat>((magnitude >= 0x7c00u ? special : scaled) | sign);
}

MMSSM_INLINE VHalf float_to_half(VFloat f) {
  const VUint bits = bitcast<VUint>(f);
  const VUint sign = (bits >> 16) & 0x8000u;
  const VUint magnitude = bits & 0x7fffffffu;
  // >= 65536: overflow to inf; nan stays a quiet nan.
  const VUint overflow = magnitude > 0x7f800000u ? VUint{} + 0x7e00u : VUint{} + 0x7c00u;
  // < 2^-14: half subnormal. Adding 0.5 (exponent 126) aligns the mantissa so that the
  // float adder performs the round-to-nearest-even shift.
  const VFloat aligned = bitcast<VFloat>(magnitude) + 0.5f;
  const VUint subnormal = bitcast<VUint>(aligned) - 0x3f000000u;
  // normal range: re-bias the exponent and round to nearest even on bit 13.
  const VUint odd = (magnitude >> 13) & 1u;
  const VUint normal = (magnitude - 0x38000000u + 0xfffu + odd) >> 13;
  const VUint out = magnitude >= 0x47800000u ? overflow
                    : magnitude < 0x38800000u ? subnormal
                                              : normal;
  return __builtin_convertvector(out | sign, VHalf);
}

// ---- bfloat16 <-> float -----------------------------------------------------------------

MMSSM_INLINE VFloat bf16_to_float(VHalf h16) {
  return bitcast<VFloat>(__builtin_convertvector(h16, VUint) << 16);
}

MMSSM_INLINE VHalf float_to_bf16(VFloat f) {
  const VUint bits = bitcast<VUint>(f);
  const VUint rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const VUint nan = (bits >> 16) | 0x0040u;  // quiet; sign and payload kept
  return __builtin_convertvector((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded,
                                 VHalf);
}

// ---- typed vector load / store ----------------------------------------------------------

// acc_t of an input type: float for float / half / bf16, double for double.
template <typename in_t>
using acc_of = typename std::conditional<std::is_same<in_t, double>::value, double,
                                         float>::type;

template <typename in_t>
MMSSM_INLINE Vec<acc_of<in_t>> load_acc(const in_t* p) {
  if constexpr (std::is_same<in_t, half_bits>::value) {
    VHalf h;
    std::memcpy(&h, p, sizeof(h));
    return half_to_float(h);
  } else if constexpr (std::is_same<in_t, bf16_bits>::value) {
    VHalf h;
    std::memcpy(&h, p, sizeof(h));
    return bf16_to_float(h);
  } else {
    return load(p);
  }
}

template <typename in_t>
MMSSM_INLINE void store_acc(in_t* p, const Vec<acc_of<in_t>>& v) {
  if constexpr (std::is_same<in_t, half_bits>::value) {
    const VHalf h = float_to_half(v);
    std::memcpy(p, &h, sizeof(h));
  } else if constexpr (std::is_same<in_t, bf16_bits>::value) {
    const VHalf h = float_to_bf16(v);
    std::memcpy(p, &h, sizeof(h));
  } else {
    store(p, v);
  }
}

// The first `count` values at p (0 < count <= W), as load_acc would read them, with 0 in
// the other lanes; and p[0 .. count) = the first `count` lanes of v, as store_acc would
// write them. Nothing beyond p + count is read or written. float on AVX2 / AVX-512:
// masked loads and stores (first_lanes: the mask of lanes [0, count)); everything else
// through a zeroed register-sized buffer. (Through the buffer a float tail cost a
// variable-length copy -- `rep movs` -- and a wide load that cannot be forwarded from
// the copy's narrower stores: about 1 us per tile of an N = 16 forward whose length is
// not a multiple of W, on AVX2.)
#if MMSSM_CPU_ISA_LEVEL >= 4
MMSSM_INLINE __mmask16 first_lanes(int64_t count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}
#elif MMSSM_CPU_ISA_LEVEL >= 3
MMSSM_INLINE __m256i first_lanes(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

template <typename in_t>
MMSSM_INLINE Vec<acc_of<in_t>> load_acc_partial(const in_t* p, int64_t count) {
#if MMSSM_CPU_ISA_LEVEL >= 4
  if constexpr (std::is_same<in_t, float>::value) {
    return bitcast<VFloat>(_mm512_maskz_loadu_ps(first_lanes(count), p));
  }
#elif MMSSM_CPU_ISA_LEVEL >= 3
  if constexpr (std::is_same<in_t, float>::value) {
    return bitcast<VFloat>(_mm256_maskload_ps(p, first_lanes(count)));
  }
#endif
  constexpr int kW = kLanes<acc_of<in_t>>;
  in_t padded[kW];
  std::memset(static_cast<void*>(padded), 0, sizeof(padded));
  std::memcpy(static_cast<void*>(padded), p, count * sizeof(in_t));
  return load_acc(padded);
}

template <typename in_t>
MMSSM_INLINE void store_acc_partial(in_t* p, int64_t count, const Vec<acc_of<in_t>>& v) {
#if MMSSM_CPU_ISA_LEVEL >= 4
  if constexpr (std::is_same<in_t, float>::value) {
    _mm512_mask_storeu_ps(p, first_lanes(count), bitcast<__m512>(v));
    return;
  }
#elif MMSSM_CPU_ISA_LEVEL >= 3
  if constexpr (std::is_same<in_t, float>::value) {
    _mm256_maskstore_ps(p, first_lanes(count), bitcast<__m256>(v));
    return;
  }
#endif
  constexpr int kW = kLanes<acc_of<in_t>>;
  in_t padded[kW];
  store_acc(padded, v);
  std::memcpy(static_cast<void*>(p), padded, count * sizeof(in_t));
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
