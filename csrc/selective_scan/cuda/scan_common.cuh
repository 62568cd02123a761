// Building blocks shared by the forward and backward selective-scan kernels.
//
// Torch-free on purpose: nvcc alone compiles the kernels (CI checks that without a GPU).
// Defining MMSSM_SCAN_EMULATION swaps the CUDA headers for a host emulation of the few
// intrinsics used here (tests/cuda_emulation.h), so the very same kernel code can be run
// and checked on a CPU-only machine; nothing else changes between the two builds.
//
// Vocabulary used across the kernels (see docs/kernels.md):
//   row     one (batch, channel) sequence, scanned by kWarps consecutive warps of a block;
//           a block holds `rows` rows of consecutive channels of one batch and one group.
//   tile    the positions one row covers per loop step: kWarps * 32 * kItems; thread t of
//           the row owns positions tile_start + t * kItems + [0, kItems) ("blocked").
//   pair    the affine map h -> a * h + b of one time step (or of a run of them).
#pragma once

#include <cstdint>

#include "../scan.h"
#include "../scan_math.h"

#if defined(MMSSM_SCAN_EMULATION)
#include "tests/cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// Launch through a kernel pointer so template arguments never meet the macro's commas.
#define MMSSM_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
#endif

#define MMSSM_DEVICE __device__ __forceinline__

namespace mmssm {
namespace cuda_scan {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxDState = 256;
// Every launch uses at most 4 warps (128 threads): rows * warps_per_row <= 4.
constexpr int kMaxWarpsPerBlock = 4;
constexpr int kMaxThreadsPerBlock = kMaxWarpsPerBlock * kWarpSize;
// Resident blocks per SM the register allocation must allow (__launch_bounds__): 128
// threads x 4 blocks = 16 warps (<= 128 registers) forward, x 3 = 12 warps backward
// (<= 168 registers). Both kernels are memory-bound: warps in flight over registers.
constexpr int kFwdMinBlocks = 4;
constexpr int kBwdMinBlocks = 3;
constexpr float kLog2e = 1.4426950408889634f;

#if !defined(MMSSM_SCAN_EMULATION)
// Start of the block's dynamic shared memory.
template <typename T>
MMSSM_DEVICE T* dynamic_smem() {
  extern __shared__ float4 mmssm_scan_dynamic_smem[];
  return reinterpret_cast<T*>(mmssm_scan_dynamic_smem);
}
#endif

// ---------------------------------------------------------------------------------
// Element conversion: every input dtype is widened to float once and rounded once.
// (bf16 goes through float on every architecture, so sm_75 needs no bf16 arithmetic.)
MMSSM_DEVICE float to_float(float v) { return v; }
MMSSM_DEVICE float to_float(__half v) { return __half2float(v); }
MMSSM_DEVICE float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
MMSSM_DEVICE T from_float(float v);
template <>
MMSSM_DEVICE float from_float<float>(float v) { return v; }
template <>
MMSSM_DEVICE __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
MMSSM_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---------------------------------------------------------------------------------
// Scalar math: the formulas of ../scan_math.h (shared with the CPU kernels) on the
// device's primitives.
struct DeviceMath {
  __host__ __device__ __forceinline__ static float exp(float x) { return expf(x); }
  __host__ __device__ __forceinline__ static float log1p_unit(float e) { return log1pf(e); }
  __host__ __device__ __forceinline__ static float expm1_nonpos(float x) { return expm1f(x); }
  __host__ __device__ __forceinline__ static float abs(float x) { return fabsf(x); }
  __host__ __device__ __forceinline__ static float relu(float x) { return fmaxf(x, 0.f); }
  __host__ __device__ __forceinline__ static float ones_like(float) { return 1.f; }
  __host__ __device__ __forceinline__ static float select(bool m, float a, float b) {
    return m ? a : b;
  }
};

MMSSM_DEVICE float softplus(float x) { return scan_math::softplus<DeviceMath>(x); }
MMSSM_DEVICE float sigmoid(float x) { return scan_math::sigmoid<DeviceMath>(x); }
// d softplus / dx from the output (the kernels keep dt = softplus(x), not x).
MMSSM_DEVICE float softplus_grad_from_output(float y) {
  return scan_math::softplus_grad_from_output<DeviceMath>(y);
}

// ---------------------------------------------------------------------------------
// The scan element: the affine map x -> a * x + b.
//   forward  (state):   h_l = a_l * h_{l-1} + b_l,  a_l = exp(dt A), b_l = dt B u
//   backward (adjoint): g_l = a_{l+1} * g_{l+1} + C_l dy_l
// Both directions compose maps the same way; only which neighbour is "inner" differs.
struct Pair {
  float a;
  float b;
};

MMSSM_DEVICE Pair identity_pair() { return Pair{1.f, 0.f}; }

// outer ∘ inner: first apply `inner`, then `outer`.
// Forward scan: inner = earlier steps. Reverse scan: inner = later steps.
MMSSM_DEVICE Pair compose(Pair inner, Pair outer) {
  return Pair{inner.a * outer.a, fmaf(outer.a, inner.b, outer.b)};
}

MMSSM_DEVICE Pair shfl_up_pair(Pair v, int delta) {
  return Pair{__shfl_up_sync(kFullMask, v.a, delta), __shfl_up_sync(kFullMask, v.b, delta)};
}

MMSSM_DEVICE Pair shfl_down_pair(Pair v, int delta) {
  return Pair{__shfl_down_sync(kFullMask, v.a, delta),
              __shfl_down_sync(kFullMask, v.b, delta)};
}

MMSSM_DEVICE Pair shfl_idx_pair(Pair v, int src_lane) {
  return Pair{__shfl_sync(kFullMask, v.a, src_lane), __shfl_sync(kFullMask, v.b, src_lane)};
}

// Exclusive scan, in time order, of the per-thread aggregates of one row.
//   v            this thread's aggregate (its kItems steps composed)
//   warp_totals  kWarps slots private to this row (only used when kWarps > 1); callers
//                alternate between two slot sets on successive calls, which makes the
//                single __syncthreads below sufficient (see docs/kernels.md).
// Returns the composition of every earlier thread of the row (identity for thread 0)
// and sets `total` to the composition of the whole row.
// Must be called by every thread of the block (it synchronises the block when kWarps > 1).
template <int kWarps>
MMSSM_DEVICE Pair row_scan_forward(Pair v, Pair* warp_totals, int warp_in_row, int lane,
                                   Pair& total) {
  Pair inclusive = v;
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset <<= 1) {
    const Pair earlier = shfl_up_pair(inclusive, offset);
    if (lane >= offset) inclusive = compose(earlier, inclusive);
  }
  Pair exclusive = shfl_up_pair(inclusive, 1);
  if (lane == 0) exclusive = identity_pair();
  if (kWarps == 1) {
    total = shfl_idx_pair(inclusive, kWarpSize - 1);
    return exclusive;
  }
  if (lane == kWarpSize - 1) warp_totals[warp_in_row] = inclusive;
  __syncthreads();
  Pair before = identity_pair();
  total = identity_pair();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const Pair t = warp_totals[w];
    if (w < warp_in_row) before = compose(before, t);
    total = compose(total, t);
  }
  return compose(before, exclusive);
}

// Mirror image of row_scan_forward: exclusive scan against time order (suffix), for
// the adjoint recurrence. Returns the composition of every later thread of the row
// (identity for the row's last thread); `total` composes the whole row.
template <int kWarps>
MMSSM_DEVICE Pair row_scan_reverse(Pair v, Pair* warp_totals, int warp_in_row, int lane,
                                   Pair& total) {
  Pair inclusive = v;
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset <<= 1) {
    const Pair later = shfl_down_pair(inclusive, offset);
    if (lane + offset < kWarpSize) inclusive = compose(later, inclusive);
  }
  Pair exclusive = shfl_down_pair(inclusive, 1);
  if (lane == kWarpSize - 1) exclusive = identity_pair();
  if (kWarps == 1) {
    total = shfl_idx_pair(inclusive, 0);
    return exclusive;
  }
  if (lane == 0) warp_totals[warp_in_row] = inclusive;
  __syncthreads();
  Pair after = identity_pair();
  total = identity_pair();
#pragma unroll
  for (int w = kWarps - 1; w >= 0; --w) {
    const Pair t = warp_totals[w];
    if (w > warp_in_row) after = compose(after, t);
    total = compose(total, t);
  }
  return compose(after, exclusive);
}

MMSSM_DEVICE float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// ---------------------------------------------------------------------------------
// Warp-cooperative I/O between global memory (coalesced, lane-striped) and registers
// (blocked: lane owns kItems consecutive positions), staged through a per-warp shared
// buffer. One padding word per 32 makes both the striped and the blocked accesses
// bank-conflict free for kItems in {2, 4, 8, 16}.
MMSSM_DEVICE int padded(int i) { return i + (i >> 5); }

// Shared floats one warp's staging buffer needs for kItems items per lane.
__host__ __device__ constexpr int stage_floats(int items) { return 33 * items; }

// Clamp the number of valid positions of a warp segment into [0, count].
MMSSM_DEVICE int valid_count(int64_t seqlen, int64_t segment_start, int count) {
  const int64_t left = seqlen - segment_start;
  return left <= 0 ? 0 : (left >= count ? count : static_cast<int>(left));
}

// Issues the global loads of positions segment_start + k * 32 + lane (coalesced) into
// registers, zero past `valid`. Separate from the staging step below so that a caller
// can have the loads of several tensors in flight before it waits on the first.
template <int kItems, typename T>
MMSSM_DEVICE void load_striped(const T* src, int64_t segment_start, int valid,
                               T (&raw)[kItems], int lane) {
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int i = k * kWarpSize + lane;
    raw[k] = i < valid ? src[segment_start + i] : from_float<T>(0.f);
  }
}

// Striped registers -> blocked floats: lane gets positions lane * kItems + [0, kItems).
template <int kItems, typename T>
MMSSM_DEVICE void striped_to_blocked(const T (&raw)[kItems], float (&x)[kItems], float* stage,
                                     int lane) {
#pragma unroll
  for (int k = 0; k < kItems; ++k) stage[padded(k * kWarpSize + lane)] = to_float(raw[k]);
  __syncwarp();
#pragma unroll
  for (int k = 0; k < kItems; ++k) x[k] = stage[padded(lane * kItems + k)];
  __syncwarp();
}

// Reads positions segment_start + [0, 32 * kItems) of one row (unit stride) into x,
// blocked; positions at or past `valid` read as 0.
template <int kItems, typename T>
MMSSM_DEVICE void load_items(const T* src, int64_t segment_start, int valid,
                             float (&x)[kItems], float* stage, int lane) {
  T raw[kItems];
  load_striped<kItems>(src, segment_start, valid, raw, lane);
  striped_to_blocked<kItems>(raw, x, stage, lane);
}

// Same for two rows at once (both loads in flight before the first is staged).
template <int kItems, typename T>
MMSSM_DEVICE void load_items2(const T* src0, const T* src1, int64_t segment_start, int valid,
                              float (&x0)[kItems], float (&x1)[kItems], float* stage,
                              int lane) {
  T raw0[kItems], raw1[kItems];
  load_striped<kItems>(src0, segment_start, valid, raw0, lane);
  load_striped<kItems>(src1, segment_start, valid, raw1, lane);
  striped_to_blocked<kItems>(raw0, x0, stage, lane);
  striped_to_blocked<kItems>(raw1, x1, stage, lane);
}

// Inverse of load_items: writes the first `valid` positions of the segment.
template <int kItems, typename T>
MMSSM_DEVICE void store_items(T* dst, int64_t segment_start, int valid,
                              const float (&x)[kItems], float* stage, int lane) {
#pragma unroll
  for (int k = 0; k < kItems; ++k) stage[padded(lane * kItems + k)] = x[k];
  __syncwarp();
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int i = k * kWarpSize + lane;
    if (i < valid) dst[segment_start + i] = from_float<T>(stage[padded(i)]);
  }
  __syncwarp();
}

// Where one thread sits inside its block (all indices are small ints).
template <int kWarps>
struct ThreadPlace {
  static constexpr int kRowThreads = kWarps * kWarpSize;
  int tid;          // in block
  int row;          // which row of the block
  int row_thread;   // position in the row, 0 .. kRowThreads - 1
  int warp;         // warp in block
  int warp_in_row;  // warp in row, 0 .. kWarps - 1
  int lane;

  MMSSM_DEVICE explicit ThreadPlace(int thread_index)
      : tid(thread_index),
        row(thread_index / kRowThreads),
        row_thread(thread_index % kRowThreads),
        warp(thread_index / kWarpSize),
        warp_in_row((thread_index % kRowThreads) / kWarpSize),
        lane(thread_index % kWarpSize) {}
};

}  // namespace cuda_scan
}  // namespace mmssm
