// Portable SIMD vectors for the CPU selective scan: one register of float or double
// (GCC / Clang vector extensions): 16 floats with AVX-512, 8 with AVX2, 4 with SSE / NEON.
// Wider vector types are avoided on purpose: GCC lowers comparisons and selects on
// vectors wider than the registers to scalar code.
//
// The kernels put W = kLanes<acc_t> channels of one (batch, group) side by side in the
// lanes ("lane layout"): per time step every channel's recurrence is one vector
// operation, and B / C, shared by the channels of a group, are scalar broadcasts. The
// tensors are stored channel-major (time contiguous), so blocks are moved between the two
// layouts by W x W transposes in registers (transpose_square), and sums over the
// channels of a group are formed by a reduction tree (lane_sums), never by per-vector
// horizontal adds.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if !(defined(__GNUC__) || defined(__clang__))
#error "mmssm's CPU selective scan needs GCC or Clang (vector extensions)"
#endif

#if defined(__clang__) || __GNUC__ >= 12
#define MMSSM_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#error "mmssm's CPU selective scan needs GCC >= 12 or Clang (__builtin_shufflevector)"
#endif

#define MMSSM_INLINE inline __attribute__((always_inline))
#define MMSSM_LAMBDA_INLINE __attribute__((always_inline))

// The kernels (scan_cpu_kernels.h) are compiled once per instruction set, each time in
// its own translation unit (scan_cpu_kernels_*.cpp) that sets MMSSM_CPU_ISA_LEVEL and
// MMSSM_CPU_ISA_NS before including them: everything here lives in that namespace, so
// the copies compiled for different instruction sets never meet at link time.
#ifndef MMSSM_CPU_ISA_NS
#define MMSSM_CPU_ISA_NS isa_generic
#define MMSSM_CPU_ISA_LEVEL 0
#endif
#if MMSSM_CPU_ISA_LEVEL >= 3
#include <immintrin.h>
#endif

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

#if MMSSM_CPU_ISA_LEVEL >= 4
constexpr int kNativeBytes = 64;
#elif MMSSM_CPU_ISA_LEVEL >= 3
constexpr int kNativeBytes = 32;
#else
constexpr int kNativeBytes = 16;
#endif

// Lanes of a register of T.
template <typename T>
constexpr int kLanes = kNativeBytes / static_cast<int>(sizeof(T));

template <typename T, int N>
struct VecNOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
// N values of T.
template <typename T, int N>
using VecN = typename VecNOf<T, N>::type;
// One register of T.
template <typename T>
using Vec = VecN<T, kLanes<T>>;

template <typename To, typename From>
MMSSM_INLINE To bitcast(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "bitcast between different sizes");
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}

template <typename T>
MMSSM_INLINE Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

template <typename T>
MMSSM_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
MMSSM_INLINE void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// ---- W x W transpose and lane sums ------------------------------------------------------
//
// Both are built from one step, swap_blocks<D>: for rows a (index i) and b (index i + D)
// it exchanges a's lanes {c : c & D} with b's lanes {c - D}. Applying it for D = W/2,
// ..., 2, 1 to every such pair of rows transposes the W x W block; adding the two
// results instead of keeping both halves the number of vectors while keeping every lane
// a sum over one input vector.

// Lane c of the exchanged vectors as an index of a two-source shuffle of W lanes.
constexpr int swap_lo(int w, int d, int c) { return (c & d) ? w + c - d : c; }
constexpr int swap_hi(int w, int d, int c) { return (c & d) ? w + c : c + d; }

#define MMSSM_I2(f, w, d, c) f(w, d, c), f(w, d, c + 1)
#define MMSSM_I4(f, w, d, c) MMSSM_I2(f, w, d, c), MMSSM_I2(f, w, d, c + 2)
#define MMSSM_I8(f, w, d, c) MMSSM_I4(f, w, d, c), MMSSM_I4(f, w, d, c + 4)
#define MMSSM_I16(f, w, d, c) MMSSM_I8(f, w, d, c), MMSSM_I8(f, w, d, c + 8)

template <int D, typename V>
MMSSM_INLINE void swap_blocks(V& a, V& b) {
  constexpr int W = sizeof(V) / sizeof(a[0]);
  static_assert(D < W, "D must be below the vector width");
  V lo, hi;
  if constexpr (W == 16) {
    lo = MMSSM_SHUFFLE(a, b, MMSSM_I16(swap_lo, 16, D, 0));
    hi = MMSSM_SHUFFLE(a, b, MMSSM_I16(swap_hi, 16, D, 0));
  } else if constexpr (W == 8) {
    lo = MMSSM_SHUFFLE(a, b, MMSSM_I8(swap_lo, 8, D, 0));
    hi = MMSSM_SHUFFLE(a, b, MMSSM_I8(swap_hi, 8, D, 0));
  } else if constexpr (W == 4) {
    lo = MMSSM_SHUFFLE(a, b, MMSSM_I4(swap_lo, 4, D, 0));
    hi = MMSSM_SHUFFLE(a, b, MMSSM_I4(swap_hi, 4, D, 0));
  } else {
    static_assert(W == 2, "2, 4, 8 or 16 lanes");
    lo = MMSSM_SHUFFLE(a, b, MMSSM_I2(swap_lo, 2, D, 0));
    hi = MMSSM_SHUFFLE(a, b, MMSSM_I2(swap_hi, 2, D, 0));
  }
  a = lo;
  b = hi;
}

#undef MMSSM_I16
#undef MMSSM_I8
#undef MMSSM_I4
#undef MMSSM_I2

// The stage D of a transpose / lane sum over W vectors, and the ones below it.
template <int D, int W, typename V>
MMSSM_INLINE void transpose_stages(V* v) {
  if constexpr (D >= 1) {
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) {
      if ((i & D) == 0) swap_blocks<D>(v[i], v[i + D]);
    }
    transpose_stages<D / 2, W>(v);
  }
}

template <int D, typename V>
MMSSM_INLINE V fold_stages(V* v) {
  if constexpr (D == 0) {
    return v[0];
  } else {
#pragma GCC unroll 16
    for (int j = 0; j < D; ++j) {
      V a = v[j], b = v[j + D];
      swap_blocks<D>(a, b);
      v[j] = a + b;
    }
    return fold_stages<D / 2>(v);
  }
}

// In place: v[r][c] -> v[c][r] for the W x W block of W vectors of W lanes.
template <typename V>
MMSSM_INLINE void transpose_square(V* v) {
  constexpr int W = sizeof(V) / sizeof(v[0][0]);
  transpose_stages<W / 2, W>(v);
}

// Lane j of the result = the sum of the W lanes of v[j], for the W vectors v (which are
// overwritten). The order of the additions is fixed: the result depends on the inputs
// only.
template <typename V>
MMSSM_INLINE V lane_sums(V* v) {
  constexpr int W = sizeof(V) / sizeof(v[0][0]);
  return fold_stages<W / 2>(v);
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm
