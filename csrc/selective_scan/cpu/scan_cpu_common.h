// Building blocks shared by the CPU forward (scan_cpu_fwd.cpp) and backward
// (scan_cpu_bwd.cpp). The design notes are at the top of scan_cpu_fwd.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../scan.h"
#include "cpu_math.h"

// The per-row kernels (MMSSM_KERNEL) are separate, non-inlined functions: everything
// they call is inlined into them, and keeping them apart keeps GCC's super-linear
// passes (PRE, CSE) fast. On x86-64 each is compiled three times (baseline,
// x86-64-v3 = AVX2 + FMA, x86-64-v4 = AVX-512) and the loader picks one for the running
// CPU, so the build needs no -march flag.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(__clang__) && __GNUC__ >= 12 && !defined(MMSSM_NO_TARGET_CLONES)
#define MMSSM_KERNEL \
  __attribute__((noinline, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__GNUC__) || defined(__clang__)
#define MMSSM_KERNEL __attribute__((noinline))
#else
#define MMSSM_KERNEL
#endif

namespace mmssm {
namespace cpu {

// Time steps per block (= the chunk of the saved chunk states).
constexpr int64_t kBlock = kCpuChunkSize;
// N == 1: rows scanned together so their recurrences interleave (instruction-level
// parallelism hides the latency of the h = a * h + b chain).
constexpr int64_t kTileRows = 8;

// Everything one (batch, channel) row reads. `B` / `C` point at the row's group.
template <typename in_t, typename acc_t>
struct Row {
  int64_t index;  // b * dim + d: row of the contiguous outputs
  const in_t* u;
  const in_t* delta;
  const in_t* z;  // null without gate
  const in_t* B;
  const in_t* C;
  const acc_t* A;  // (N,)
  acc_t D;         // 0 without D
  acc_t bias;      // 0 without delta_bias
};

template <typename in_t, typename acc_t>
MMSSM_INLINE Row<in_t, acc_t> make_row(const SelectiveScanFwdParams& p, int64_t b,
                                       int64_t d) {
  const int64_t g = d / (p.dim / p.n_groups);
  Row<in_t, acc_t> r;
  r.index = b * p.dim + d;
  r.u = static_cast<const in_t*>(p.u) + b * p.u_batch_stride + d * p.u_dim_stride;
  r.delta = static_cast<const in_t*>(p.delta) + b * p.delta_batch_stride +
            d * p.delta_dim_stride;
  r.z = p.z ? static_cast<const in_t*>(p.z) + b * p.z_batch_stride + d * p.z_dim_stride
            : nullptr;
  r.B = static_cast<const in_t*>(p.B) + b * p.B_batch_stride + g * p.B_group_stride;
  r.C = static_cast<const in_t*>(p.C) + b * p.C_batch_stride + g * p.C_group_stride;
  r.A = static_cast<const acc_t*>(p.A) + d * p.dstate;
  r.D = p.D ? static_cast<const acc_t*>(p.D)[d] : acc_t(0);
  r.bias = p.delta_bias ? static_cast<const acc_t*>(p.delta_bias)[d] : acc_t(0);
  return r;
}

// Software prefetch of `len` elements from `p` (the next block of a row stream: many
// rows times several streams, walked backwards in the backward pass, defeat the
// hardware prefetchers).
template <typename T>
MMSSM_INLINE void prefetch(const T* p, int64_t len) {
#if defined(__GNUC__) || defined(__clang__)
  if (p == nullptr || len <= 0) return;
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = len * static_cast<int64_t>(sizeof(T));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off);
#else
  (void)p;
  (void)len;
#endif
}

template <bool kSoftplus, typename acc_t>
MMSSM_INLINE acc_t time_step(acc_t raw) {
  return kSoftplus ? softplus(raw) : raw;
}

// d delta / d dt~ chain rule: the softplus derivative (1 above 20), or identity.
template <bool kSoftplus, typename acc_t>
MMSSM_INLINE acc_t time_step_grad(acc_t grad, acc_t raw) {
  return kSoftplus ? softplus_backward(grad, raw) : grad;
}

// dst[i * n + s] = src[s * stride + i]: an (N, len) slice of B / C, time-major.
template <typename in_t, typename acc_t>
MMSSM_INLINE void load_transposed(const in_t* src, int64_t stride, acc_t* dst, int64_t len,
                                  int64_t n) {
  // State-inner order: one (strided) gather per step, contiguous stores.
  for (int64_t i = 0; i < len; ++i) {
    acc_t* out = dst + i * n;
    const in_t* col = src + i;
#pragma omp simd
    for (int64_t s = 0; s < n; ++s) out[s] = to_acc<acc_t>(col[s * stride]);
  }
}

// out[i] = sum_s in[i * n + s] for i < len, as a pairwise tree when n is a power of two
// (each level is one flat SIMD loop; `in` is overwritten). A horizontal reduction per i
// would be compiled as an in-order chain of scalar adds.
template <typename acc_t>
MMSSM_INLINE void sum_rows(acc_t* in, acc_t* out, int64_t len, int64_t n) {
  if ((n & (n - 1)) == 0) {
    for (int64_t width = n; width > 1; width /= 2) {
      const int64_t half = width / 2;
      // level: in[i * half + s] = in[i * width + s] + in[i * width + half + s]
      for (int64_t i = 0; i < len; ++i) {
        acc_t* src = in + i * width;
        acc_t* dst = in + i * half;
        if (half >= 8) {
#pragma omp simd
          for (int64_t s = 0; s < half; ++s) dst[s] = src[s] + src[half + s];
        } else {
          for (int64_t s = 0; s < half; ++s) dst[s] = src[s] + src[half + s];
        }
      }
    }
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = in[i];
    return;
  }
  for (int64_t i = 0; i < len; ++i) {
    acc_t total = 0;
    for (int64_t s = 0; s < n; ++s) total += in[i * n + s];
    out[i] = total;
  }
}

template <typename acc_t>
MMSSM_INLINE acc_t sum_array(const acc_t* x, int64_t len) {
  acc_t total = 0;
  for (int64_t i = 0; i < len; ++i) total += x[i];
  return total;
}

// ---------------------------------------------------------------------------------------
// Host-side helpers.

inline int64_t acc_size(ScanDType t) {
  return t == ScanDType::kFloat64 ? int64_t(sizeof(double)) : int64_t(sizeof(float));
}

// Threads for a parallel region over `work_items` items totalling `elements` state
// updates: at most one per item, and one thread for small problems, where starting a
// parallel region costs more than it saves.
inline int thread_count(int32_t requested, int64_t work_items, int64_t elements) {
#ifdef _OPENMP
  constexpr int64_t kMinElementsPerThread = int64_t(1) << 15;
  int64_t threads = requested > 0 ? requested : omp_get_max_threads();
  threads = std::min<int64_t>(threads, work_items);
  threads = std::min<int64_t>(threads, elements / kMinElementsPerThread);
  return static_cast<int>(std::max<int64_t>(1, threads));
#else
  (void)requested;
  (void)work_items;
  (void)elements;
  return 1;
#endif
}

inline void check_common(const SelectiveScanFwdParams& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0 || p.dstate < 1 || p.n_groups < 1 ||
      p.dim % p.n_groups != 0) {
    throw std::invalid_argument(
        "selective_scan_cpu: invalid sizes (need dstate >= 1, n_groups >= 1, "
        "dim % n_groups == 0)");
  }
  const int64_t n_chunks = (p.seqlen + kBlock - 1) / kBlock;
  if (p.chunk_states && (p.n_chunks != n_chunks || p.chunk_size != kBlock)) {
    throw std::invalid_argument("selective_scan_cpu: chunk_states must hold ceil(L / " +
                                std::to_string(kBlock) + ") chunks of " +
                                std::to_string(kBlock) + " steps");
  }
}

}  // namespace cpu
}  // namespace mmssm
