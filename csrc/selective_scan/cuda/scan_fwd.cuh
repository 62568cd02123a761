// Forward selective-scan kernel (spec §1.1) and its per-tier launcher.
//
// One row = one (batch, channel) sequence, processed tile by tile from left to right.
// Per tile: load u and delta once (dt and dt*u kept in registers), then for every
// state n load that state's B and C, build the pairs (exp(dt A), dt B u), scan them
// across the row, and accumulate y += C h. The state at the end of the tile is carried
// into the next tile by the row's first thread (seeded into its first pair).
#pragma once

#include "launch_policy.cuh"
#include "scan_common.cuh"

namespace mmssm {
namespace cuda_scan {

// Dynamic shared memory of the forward kernel, offsets in floats.
struct FwdSmemLayout {
  int64_t stage;  // [warps in block][stage_floats(items)]  per-warp I/O staging
  int64_t scan;   // Pair [2][warps in block]                 row-scan warp totals
  int64_t carry;  // [rows][dstate]                           state carried across tiles
  int64_t total;
};

__host__ __device__ inline FwdSmemLayout fwd_smem_layout(int warps, int items, int rows,
                                                         int64_t dstate) {
  const int64_t block_warps = int64_t{warps} * rows;
  FwdSmemLayout s;
  s.stage = 0;
  s.scan = s.stage + block_warps * stage_floats(items);
  s.carry = s.scan + 2 * block_warps * 2;
  s.total = s.carry + rows * dstate;
  return s;
}

template <typename T, int kWarps, int kItems>
__global__ void __launch_bounds__(kMaxThreadsPerBlock, kFwdMinBlocks)
    selective_scan_fwd_kernel(SelectiveScanFwdParams p, int rows) {
  using Place = ThreadPlace<kWarps>;
  constexpr int kRowThreads = Place::kRowThreads;
  constexpr int kTile = kRowThreads * kItems;
  constexpr int kSegment = kWarpSize * kItems;  // positions per warp per tile
  const Place me(static_cast<int>(threadIdx.x));

  const int64_t seqlen = p.seqlen;
  const int64_t dstate = p.dstate;
  const int64_t blocks_per_batch = p.dim / rows;
  const int64_t batch = static_cast<int64_t>(blockIdx.x) / blocks_per_batch;
  const int64_t channel =
      (static_cast<int64_t>(blockIdx.x) % blocks_per_batch) * rows + me.row;
  const int64_t group = channel / (p.dim / p.n_groups);

  float* smem = dynamic_smem<float>();
  const FwdSmemLayout layout = fwd_smem_layout(kWarps, kItems, rows, dstate);
  float* stage = smem + layout.stage + me.warp * stage_floats(kItems);
  Pair* scan_slots = reinterpret_cast<Pair*>(smem + layout.scan);
  // Read and written only by the row's thread 0, so it needs no barrier.
  float* carry = smem + layout.carry + me.row * dstate;

  const T* u = static_cast<const T*>(p.u) + batch * p.u_batch_stride + channel * p.u_dim_stride;
  const T* delta = static_cast<const T*>(p.delta) + batch * p.delta_batch_stride +
                   channel * p.delta_dim_stride;
  const T* z = p.z == nullptr ? nullptr
                              : static_cast<const T*>(p.z) + batch * p.z_batch_stride +
                                    channel * p.z_dim_stride;
  const T* B = static_cast<const T*>(p.B) + batch * p.B_batch_stride + group * p.B_group_stride;
  const T* C = static_cast<const T*>(p.C) + batch * p.C_batch_stride + group * p.C_group_stride;
  T* out = static_cast<T*>(p.out) + (batch * p.dim + channel) * seqlen;
  const float* A = static_cast<const float*>(p.A) + channel * dstate;
  const float D = p.D == nullptr ? 0.f : static_cast<const float*>(p.D)[channel];
  const float bias =
      p.delta_bias == nullptr ? 0.f : static_cast<const float*>(p.delta_bias)[channel];
  float* states = p.chunk_states == nullptr
                      ? nullptr
                      : static_cast<float*>(p.chunk_states) +
                            (batch * p.dim + channel) * p.n_chunks * dstate;
  float* last_state = p.last_state == nullptr
                          ? nullptr
                          : static_cast<float*>(p.last_state) + (batch * p.dim + channel) * dstate;
  const int64_t chunk = p.chunk_size;

  const int64_t n_tiles = (seqlen + kTile - 1) / kTile;
  int scan_parity = 0;
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    const int64_t tile_start = tile * kTile;
    const int64_t segment_start = tile_start + me.warp_in_row * kSegment;
    const int valid = valid_count(seqlen, segment_start, kSegment);
    const int64_t first = tile_start + me.row_thread * kItems;  // this thread's positions

    float dt[kItems], dtu[kItems], y[kItems];
    load_items2<kItems>(u, delta, segment_start, valid, dtu, dt, stage, me.lane);
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      float step = dt[k] + bias;
      if (p.delta_softplus) step = softplus(step);
      dt[k] = first + k < seqlen ? step : 0.f;  // tail: dt = 0 gives the identity pair
      y[k] = D * dtu[k];
      dtu[k] *= dt[k];
    }

    // Which of my items end a saved chunk (at most one: kItems <= chunk) or the sequence.
    int save_item = -1;
    int64_t save_chunk = 0;
    if (states != nullptr) {
      const int64_t boundary = (first + chunk) / chunk * chunk - 1;  // first p >= first, (p+1) % chunk == 0
      if (boundary - first < kItems && boundary < seqlen) {
        save_item = static_cast<int>(boundary - first);
        save_chunk = boundary / chunk;
      }
    }
    const int64_t last_offset = seqlen - 1 - first;
    const int last_item = last_offset >= 0 && last_offset < kItems ? static_cast<int>(last_offset) : -1;

#pragma unroll 1
    for (int64_t n = 0; n < dstate; ++n) {
      float a[kItems], b[kItems], c[kItems];
      load_items2<kItems>(B + n * p.B_dstate_stride, C + n * p.C_dstate_stride, segment_start,
                          valid, b, c, stage, me.lane);
      const float A_log2 = A[n] * kLog2e;
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        a[k] = exp2f(dt[k] * A_log2);
        b[k] *= dtu[k];
      }
      // Thread 0 of the row folds in the state carried from the previous tile.
      const float seed = (me.row_thread == 0 && tile > 0) ? carry[n] : 0.f;
      Pair mine{1.f, seed};
#pragma unroll
      for (int k = 0; k < kItems; ++k) mine = compose(mine, Pair{a[k], b[k]});

      Pair row_total;
      Pair* slots = scan_slots + (scan_parity * rows + me.row) * kWarps;
      scan_parity ^= 1;
      const Pair before = row_scan_forward<kWarps>(mine, slots, me.warp_in_row, me.lane, row_total);

      float h = before.b + seed;  // state before my first item (before = identity for thread 0)
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        h = fmaf(a[k], h, b[k]);
        y[k] = fmaf(c[k], h, y[k]);
        if (k == save_item) states[save_chunk * dstate + n] = h;
        if (k == last_item) {
          if (states != nullptr) states[(p.n_chunks - 1) * dstate + n] = h;
          if (last_state != nullptr) last_state[n] = h;
        }
      }
      // Tail steps are identities, so the row total's b is h at min(tile end, L) - 1.
      if (me.row_thread == 0) carry[n] = row_total.b;
    }

    if (z != nullptr) {
      float zv[kItems];
      load_items<kItems>(z, segment_start, valid, zv, stage, me.lane);
#pragma unroll
      for (int k = 0; k < kItems; ++k) y[k] *= zv[k] * sigmoid(zv[k]);
    }
    store_items<kItems>(out, segment_start, valid, y, stage, me.lane);
  }
}

template <typename T, int kWarps, int kItems>
int launch_fwd_tier(const SelectiveScanFwdParams& p, cudaStream_t stream) {
  const int rows = rows_per_block(kWarps, p.dim, p.n_groups);
  const int64_t blocks = p.batch * (p.dim / rows);
  if (blocks > 2147483647LL) return static_cast<int>(cudaErrorInvalidConfiguration);
  const size_t smem_bytes =
      static_cast<size_t>(fwd_smem_layout(kWarps, kItems, rows, p.dstate).total) * sizeof(float);
  auto kernel = &selective_scan_fwd_kernel<T, kWarps, kItems>;
  MMSSM_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)),
               dim3(static_cast<unsigned>(rows * kWarps * kWarpSize)), smem_bytes, stream, p,
               rows);
  return static_cast<int>(cudaGetLastError());
}

// The tiers of launch_policy.cuh (scan_tier): 1x2, 1x4, 1x8, 2x8, 4x8 (warps x items).
template <typename T>
int launch_selective_scan_fwd(const SelectiveScanFwdParams& p, void* stream, Tier tier) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (tier.key()) {
    case tier_key(1, 2): return launch_fwd_tier<T, 1, 2>(p, s);
    case tier_key(1, 4): return launch_fwd_tier<T, 1, 4>(p, s);
    case tier_key(1, 8): return launch_fwd_tier<T, 1, 8>(p, s);
    case tier_key(2, 8): return launch_fwd_tier<T, 2, 8>(p, s);
    case tier_key(4, 8): return launch_fwd_tier<T, 4, 8>(p, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace cuda_scan
}  // namespace mmssm
