// Launch policy of the CUDA selective scan: plain C++ (no CUDA, no torch), so the torch
// binding includes it to size `chunk_states` exactly as the kernels expect.
//
// Kernel shape vocabulary (see docs/kernels.md): a *row* is one (batch, channel)
// sequence scanned by `warps` warps, each thread owning `items` consecutive positions,
// so a row covers a *tile* of warps * 32 * items positions per step. A block holds
// `rows` rows (rows * warps <= 4 warps = 128 threads).
#pragma once

#include <cstdint>

namespace mmssm {
namespace cuda_scan {

// A (warps, items) pair as one value, so that the launchers can `switch` over the
// instantiated tiers: `case tier_key(1, 8):`.
enum class TierKey : int {};
constexpr TierKey tier_key(int warps, int items) {
  return static_cast<TierKey>(warps * 100 + items);  // items < 100
}

struct Tier {
  int warps;  // warps per row: 1, 2 or 4
  int items;  // consecutive positions per thread: 2, 4 or 8
  int64_t tile() const { return int64_t{32} * warps * items; }
  constexpr TierKey key() const { return tier_key(warps, items); }
};

// Long sequences over few (batch, channel) rows (detection: batch 2, L = 64000) need
// wider rows to fill the GPU; many rows (classification batch 128) fill it with
// one-warp rows, which scan without any block-wide barrier.
inline int row_warps_for(int64_t rows_total) {
  if (rows_total >= 4096) return 1;
  if (rows_total >= 2048) return 2;
  return 4;
}

// Tile just covering short sequences (49 -> 64, 196/197 -> 256); beyond 256, 8 items
// per thread and the row width from the parallelism. At most 8 items: the backward keeps
// ~10 arrays of items in registers, and the forward's bytes in flight per warp come from
// issuing two tensors' loads at once rather than from longer per-thread runs.
// Forward and backward use the same tier, so a forward tile is a saved chunk.
inline Tier scan_tier(int64_t batch, int64_t dim, int64_t seqlen) {
  if (seqlen <= 64) return Tier{1, 2};
  if (seqlen <= 128) return Tier{1, 4};
  if (seqlen <= 256) return Tier{1, 8};
  return Tier{row_warps_for(batch * dim), 8};
}

// The backward walks its tiles last-to-first and re-runs the forward inside each one,
// seeded with the state saved at the end of the previous tile. So the forward saves
// h every `chunk_size` steps, chunk_size = the backward tile (64 .. 1024).
inline int64_t chunk_size_for(int64_t batch, int64_t dim, int64_t seqlen) {
  return scan_tier(batch, dim, seqlen).tile();
}

inline int64_t num_chunks_for(int64_t seqlen, int64_t chunk_size) {
  return chunk_size > 0 ? (seqlen + chunk_size - 1) / chunk_size : 0;
}

// The backward tier whose tile is `chunk_size`; {0, 0} if there is none.
inline Tier backward_tier_for_chunk(int64_t chunk_size) {
  switch (chunk_size) {
    case 64: return Tier{1, 2};
    case 128: return Tier{1, 4};
    case 256: return Tier{1, 8};
    case 512: return Tier{2, 8};
    case 1024: return Tier{4, 8};
    default: return Tier{0, 0};
  }
}

// Rows per block: fill 4 warps, but only with channels of one group, so that the rows
// of a block share B and C (the backward sums their dB/dC in shared memory before the
// global atomics). Halve until the group size is a multiple.
inline int rows_per_block(int warps, int64_t dim, int64_t groups) {
  int rows = 4 / warps;
  const int64_t per_group = groups > 0 ? dim / groups : 1;
  while (rows > 1 && per_group % rows != 0) rows /= 2;
  return rows;
}

}  // namespace cuda_scan
}  // namespace mmssm
