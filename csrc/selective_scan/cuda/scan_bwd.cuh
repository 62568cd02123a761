// Backward selective-scan kernel (spec §1.2) and its per-tier launcher.
//
// A row walks its tiles last-to-first; the tile equals the forward's chunk_size, so the
// forward saved h at the end of every tile. Per tile: load u, delta, dout (and z), then
// for every state n
//   1. re-run the forward scan inside the tile, seeded with chunk_states[tile - 1],
//      keeping h_{l-1} per item (a_l h_{l-1} is needed exactly, not as h_l - dt B u);
//   2. run the adjoint scan g_l = a_{l+1} g_{l+1} + C_l dy_l right-to-left, seeded with
//      a_{end} * g_{end} carried from the later tile by the row's last thread;
//   3. form the per-position gradient terms; dA is warp-reduced into a shared slot per
//      warp; the dB/dC terms of all rows of the block (same batch and group) are summed in
//      shared memory and added to global memory with one coalesced atomic per position.
// du, ddelta (softplus chain rule) and dz are stored per tile in the input dtype;
// dD, ddelta_bias and dA are added with one atomic per warp (per state) at the end.
#pragma once

#include "launch_policy.cuh"
#include "scan_common.cuh"

namespace mmssm {
namespace cuda_scan {

// Shared floats one row needs to stage a tile of dB (or dC) terms: padded(tile - 1) + 1.
__host__ __device__ constexpr int bwd_row_reduce_floats(int warps, int items) {
  return 33 * warps * items;
}

// Dynamic shared memory of the backward kernel, offsets in floats.
struct BwdSmemLayout {
  int64_t stage;      // [warps in block][stage_floats(items)]        I/O staging
  int64_t scan;       // Pair [2][warps in block]                      row-scan warp totals
  int64_t reduce;     // [2 parities][2: dB, dC][rows][row_reduce]     cross-row dB/dC sums
  int64_t rev_carry;  // [rows][dstate]   g at the start of the later tile (row's last thread)
  int64_t dA;         // [warps in block][dstate]   dA partials (lane 0 of each warp)
  int64_t total;
};

__host__ __device__ inline BwdSmemLayout bwd_smem_layout(int warps, int items, int rows,
                                                         int64_t dstate) {
  const int64_t block_warps = int64_t{warps} * rows;
  BwdSmemLayout s;
  s.stage = 0;
  s.scan = s.stage + block_warps * stage_floats(items);
  s.reduce = s.scan + 2 * block_warps * 2;
  s.rev_carry = s.reduce + int64_t{2} * 2 * rows * bwd_row_reduce_floats(warps, items);
  s.dA = s.rev_carry + rows * dstate;
  s.total = s.dA + block_warps * dstate;
  return s;
}

// kHasZ is a template flag (unlike in the forward) because the gate keeps two more
// arrays of items live across the state loop; without it they cost no registers.
template <typename T, int kWarps, int kItems, bool kHasZ>
__global__ void __launch_bounds__(kMaxThreadsPerBlock, kBwdMinBlocks)
    selective_scan_bwd_kernel(SelectiveScanBwdParams p, int rows) {
  using Place = ThreadPlace<kWarps>;
  constexpr int kRowThreads = Place::kRowThreads;
  constexpr int kTile = kRowThreads * kItems;  // == p.chunk_size (checked by the launcher)
  constexpr int kSegment = kWarpSize * kItems;
  constexpr int kRowReduce = bwd_row_reduce_floats(kWarps, kItems);
  const Place me(static_cast<int>(threadIdx.x));
  const int block_threads = rows * kRowThreads;

  const int64_t seqlen = p.seqlen;
  const int64_t dstate = p.dstate;
  const int64_t n_chunks = p.n_chunks;
  const int64_t blocks_per_batch = p.dim / rows;
  const int64_t batch = static_cast<int64_t>(blockIdx.x) / blocks_per_batch;
  const int64_t channel =
      (static_cast<int64_t>(blockIdx.x) % blocks_per_batch) * rows + me.row;
  const int64_t group = channel / (p.dim / p.n_groups);
  const int64_t row_offset = (batch * p.dim + channel) * seqlen;  // contiguous (batch, dim, L)

  float* smem = dynamic_smem<float>();
  const BwdSmemLayout layout = bwd_smem_layout(kWarps, kItems, rows, dstate);
  float* stage = smem + layout.stage + me.warp * stage_floats(kItems);
  Pair* scan_slots = reinterpret_cast<Pair*>(smem + layout.scan);
  float* reduce = smem + layout.reduce;
  float* rev_carry = smem + layout.rev_carry + me.row * dstate;  // row's last thread only
  float* dA_partial = smem + layout.dA + me.warp * dstate;       // lane 0 of the warp only

  const T* u = static_cast<const T*>(p.u) + batch * p.u_batch_stride + channel * p.u_dim_stride;
  const T* delta = static_cast<const T*>(p.delta) + batch * p.delta_batch_stride +
                   channel * p.delta_dim_stride;
  const T* z = !kHasZ ? nullptr
                     : static_cast<const T*>(p.z) + batch * p.z_batch_stride +
                           channel * p.z_dim_stride;
  const T* dout = static_cast<const T*>(p.dout) + batch * p.dout_batch_stride +
                  channel * p.dout_dim_stride;
  const T* B = static_cast<const T*>(p.B) + batch * p.B_batch_stride + group * p.B_group_stride;
  const T* C = static_cast<const T*>(p.C) + batch * p.C_batch_stride + group * p.C_group_stride;
  const float* A = static_cast<const float*>(p.A) + channel * dstate;
  const float D = p.D == nullptr ? 0.f : static_cast<const float*>(p.D)[channel];
  const float bias =
      p.delta_bias == nullptr ? 0.f : static_cast<const float*>(p.delta_bias)[channel];
  const float* states = p.chunk_states == nullptr
                            ? nullptr
                            : static_cast<const float*>(p.chunk_states) +
                                  (batch * p.dim + channel) * n_chunks * dstate;
  T* du_out = static_cast<T*>(p.du) + row_offset;
  T* ddelta_out = static_cast<T*>(p.ddelta) + row_offset;
  T* dz_out = !kHasZ ? nullptr : static_cast<T*>(p.dz) + row_offset;
  // (batch, G, N, L) contiguous fp32, shared by every channel of the group.
  float* dB = static_cast<float*>(p.dB) + (batch * p.n_groups + group) * dstate * seqlen;
  float* dC = static_cast<float*>(p.dC) + (batch * p.n_groups + group) * dstate * seqlen;

  if (me.lane == 0) {
    for (int64_t n = 0; n < dstate; ++n) dA_partial[n] = 0.f;
  }

  float dD_sum = 0.f;
  float dbias_sum = 0.f;
  int scan_parity = 0;
  int reduce_parity = 0;
  const bool row_last = me.row_thread == kRowThreads - 1;

  for (int64_t tile = n_chunks - 1; tile >= 0; --tile) {
    const int64_t tile_start = tile * kTile;
    const int64_t segment_start = tile_start + me.warp_in_row * kSegment;
    const int valid = valid_count(seqlen, segment_start, kSegment);
    const int64_t first = tile_start + me.row_thread * kItems;
    const bool has_later_tile = tile + 1 < n_chunks;

    float uu[kItems], dt[kItems], dy[kItems], dz[kItems], y[kItems];
    float du[kItems], ddt[kItems];
    {
      T raw_u[kItems], raw_delta[kItems], raw_dout[kItems];
      load_striped<kItems>(u, segment_start, valid, raw_u, me.lane);
      load_striped<kItems>(delta, segment_start, valid, raw_delta, me.lane);
      load_striped<kItems>(dout, segment_start, valid, raw_dout, me.lane);
      striped_to_blocked<kItems>(raw_u, uu, stage, me.lane);
      striped_to_blocked<kItems>(raw_delta, dt, stage, me.lane);
      striped_to_blocked<kItems>(raw_dout, dy, stage, me.lane);
    }
    if (kHasZ) {
      load_items<kItems>(z, segment_start, valid, dz, stage, me.lane);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const float zk = dz[k];
        const float sig = sigmoid(zk);
        // dz = dout * y * sig * (1 + z (1 - sig)); y is only known after the state loop.
        dz[k] = dy[k] * sig * fmaf(zk, 1.f - sig, 1.f);
        dy[k] *= zk * sig;  // gradient reaching the pre-gate output y
      }
    }
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      float step = dt[k] + bias;
      if (p.delta_softplus) step = softplus(step);
      dt[k] = first + k < seqlen ? step : 0.f;
      y[k] = 0.f;
      du[k] = 0.f;
      ddt[k] = 0.f;
    }
    // dt at the position right after my items: the next lane's first item, or (lane 31)
    // read from memory (next warp's first position, or the later tile's first position).
    float dt_after = __shfl_down_sync(kFullMask, dt[0], 1);
    if (me.lane == kWarpSize - 1) {
      const int64_t q = first + kItems;
      dt_after = 0.f;
      if (q < seqlen) {
        dt_after = to_float(delta[q]) + bias;
        if (p.delta_softplus) dt_after = softplus(dt_after);
      }
    }

#pragma unroll 1
    for (int64_t n = 0; n < dstate; ++n) {
      float bv[kItems], cv[kItems], a[kItems], hprev[kItems];
      load_items2<kItems>(B + n * p.B_dstate_stride, C + n * p.C_dstate_stride, segment_start,
                          valid, bv, cv, stage, me.lane);
      const float An = A[n];
      const float A_log2 = An * kLog2e;

      // 1. Forward recompute inside the tile.
#pragma unroll
      for (int k = 0; k < kItems; ++k) a[k] = exp2f(dt[k] * A_log2);
      const float seed = (me.row_thread == 0 && tile > 0) ? states[(tile - 1) * dstate + n] : 0.f;
      Pair mine{1.f, seed};
#pragma unroll
      for (int k = 0; k < kItems; ++k) mine = compose(mine, Pair{a[k], dt[k] * uu[k] * bv[k]});
      Pair row_total;
      const Pair before = row_scan_forward<kWarps>(
          mine, scan_slots + (scan_parity * rows + me.row) * kWarps, me.warp_in_row, me.lane,
          row_total);
      scan_parity ^= 1;
      float h = before.b + seed;
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        hprev[k] = h;
        h = fmaf(a[k], h, dt[k] * uu[k] * bv[k]);
      }

      // 2. Adjoint scan. Item k's map is g -> alpha_k g + C_k dy_k with alpha_k = a_{k+1}.
      // The row's last thread takes the later tile's contribution a_end * g_end as a
      // constant (alpha 0); every other thread's last alpha links it to its right neighbour.
      const float a_after = exp2f(dt_after * A_log2);
      const float from_later = (row_last && has_later_tile) ? a_after * rev_carry[n] : 0.f;
      const float alpha_last = row_last ? 0.f : a_after;
      Pair mine_rev = identity_pair();
#pragma unroll
      for (int k = kItems - 1; k >= 0; --k) {
        const float alpha = k == kItems - 1 ? alpha_last : a[k + 1];
        const float beta = fmaf(cv[k], dy[k], k == kItems - 1 ? from_later : 0.f);
        mine_rev = compose(mine_rev, Pair{alpha, beta});
      }
      Pair row_total_rev;
      const Pair after = row_scan_reverse<kWarps>(
          mine_rev, scan_slots + (scan_parity * rows + me.row) * kWarps, me.warp_in_row,
          me.lane, row_total_rev);
      scan_parity ^= 1;

      // 3. Gradient terms, walking my items right to left with the adjoint g.
      float* reduce_B = reduce + (reduce_parity * 2 + 0) * rows * kRowReduce + me.row * kRowReduce;
      float* reduce_C = reduce + (reduce_parity * 2 + 1) * rows * kRowReduce + me.row * kRowReduce;
      float g = after.b;
      float dA_sum = 0.f;
#pragma unroll
      for (int k = kItems - 1; k >= 0; --k) {
        const float alpha = k == kItems - 1 ? alpha_last : a[k + 1];
        const float beta = fmaf(cv[k], dy[k], k == kItems - 1 ? from_later : 0.f);
        g = fmaf(alpha, g, beta);
        const float decayed = a[k] * hprev[k];  // a_l h_{l-1}
        const float bu = bv[k] * uu[k];
        const float h_k = fmaf(dt[k], bu, decayed);
        const float g_dt = g * dt[k];
        du[k] = fmaf(g_dt, bv[k], du[k]);
        ddt[k] = fmaf(g, fmaf(An, decayed, bu), ddt[k]);
        dA_sum = fmaf(g_dt, decayed, dA_sum);
        if (kHasZ) y[k] = fmaf(cv[k], h_k, y[k]);
        const int slot = padded(me.row_thread * kItems + k);
        reduce_B[slot] = g_dt * uu[k];
        reduce_C[slot] = dy[k] * h_k;
      }
      // g at this tile's first position, for the earlier tile.
      if (row_last) rev_carry[n] = row_total_rev.b;
      dA_sum = warp_sum(dA_sum);
      if (me.lane == 0) dA_partial[n] += dA_sum;

      __syncthreads();  // this parity's reduce buffers are complete
      const float* sum_B = reduce + (reduce_parity * 2 + 0) * rows * kRowReduce;
      const float* sum_C = reduce + (reduce_parity * 2 + 1) * rows * kRowReduce;
      float* dB_n = dB + n * seqlen;
      float* dC_n = dC + n * seqlen;
      for (int i = me.tid; i < kTile; i += block_threads) {
        const int64_t pos = tile_start + i;
        if (pos < seqlen) {
          float sB = 0.f, sC = 0.f;
          for (int r = 0; r < rows; ++r) {
            sB += sum_B[r * kRowReduce + padded(i)];
            sC += sum_C[r * kRowReduce + padded(i)];
          }
          atomicAdd(dB_n + pos, sB);
          atomicAdd(dC_n + pos, sC);
        }
      }
      // The other parity is written next; this one only after the next __syncthreads.
      reduce_parity ^= 1;
    }

#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const float ddelta = p.delta_softplus ? ddt[k] * softplus_grad_from_output(dt[k]) : ddt[k];
      dD_sum = fmaf(dy[k], uu[k], dD_sum);
      dbias_sum += ddelta;
      du[k] = fmaf(D, dy[k], du[k]);
      ddt[k] = ddelta;
      if (kHasZ) dz[k] *= fmaf(D, uu[k], y[k]);  // pre-gate output y = sum C h + D u
    }
    store_items<kItems>(du_out, segment_start, valid, du, stage, me.lane);
    store_items<kItems>(ddelta_out, segment_start, valid, ddt, stage, me.lane);
    if (kHasZ) store_items<kItems>(dz_out, segment_start, valid, dz, stage, me.lane);
  }

  dD_sum = warp_sum(dD_sum);
  dbias_sum = warp_sum(dbias_sum);
  if (me.lane == 0) {
    if (p.dD != nullptr) atomicAdd(static_cast<float*>(p.dD) + channel, dD_sum);
    if (p.ddelta_bias != nullptr) atomicAdd(static_cast<float*>(p.ddelta_bias) + channel, dbias_sum);
    float* dA = static_cast<float*>(p.dA) + channel * dstate;
    for (int64_t n = 0; n < dstate; ++n) atomicAdd(dA + n, dA_partial[n]);
  }
}

template <typename T, int kWarps, int kItems>
int launch_bwd_tier(const SelectiveScanBwdParams& p, cudaStream_t stream) {
  const int rows = rows_per_block(kWarps, p.dim, p.n_groups);
  const int64_t blocks = p.batch * (p.dim / rows);
  if (blocks > 2147483647LL) return static_cast<int>(cudaErrorInvalidConfiguration);
  const size_t smem_bytes =
      static_cast<size_t>(bwd_smem_layout(kWarps, kItems, rows, p.dstate).total) * sizeof(float);
  auto kernel = p.z != nullptr ? &selective_scan_bwd_kernel<T, kWarps, kItems, true>
                               : &selective_scan_bwd_kernel<T, kWarps, kItems, false>;
  MMSSM_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)),
               dim3(static_cast<unsigned>(rows * kWarps * kWarpSize)), smem_bytes, stream, p,
               rows);
  return static_cast<int>(cudaGetLastError());
}

// The backward tiers are fixed by chunk_size (launch_policy.cuh, backward_tier_for_chunk):
// 64 -> 1x2, 128 -> 1x4, 256 -> 1x8, 512 -> 2x8, 1024 -> 4x8.
template <typename T>
int launch_selective_scan_bwd(const SelectiveScanBwdParams& p, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const Tier tier = backward_tier_for_chunk(p.chunk_size);
  switch (tier.key()) {
    case tier_key(1, 2): return launch_bwd_tier<T, 1, 2>(p, s);
    case tier_key(1, 4): return launch_bwd_tier<T, 1, 4>(p, s);
    case tier_key(1, 8): return launch_bwd_tier<T, 1, 8>(p, s);
    case tier_key(2, 8): return launch_bwd_tier<T, 2, 8>(p, s);
    case tier_key(4, 8): return launch_bwd_tier<T, 4, 8>(p, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace cuda_scan
}  // namespace mmssm
