// What the CPU forward / backward drivers (scan_cpu_fwd.cpp, scan_cpu_bwd.cpp) share with
// the kernels (scan_cpu_kernels.h): the tile grid, the backward's work items, the entry
// points of the kernels compiled for each instruction set, and the worker loop.
// Plain C++: nothing here depends on the instruction set the including file targets.
// The design notes are at the top of scan_cpu_kernels.h.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../activation.h"
#include "../rms_norm.h"
#include "../route_conv.h"
#include "../scan.h"

namespace mmssm {
namespace cpu {

// Time steps per block (= the chunk of the saved chunk states).
constexpr int64_t kBlock = kCpuChunkSize;
// Channel tiles per item of the routed forward, at most: two tiles of float32 are 16
// (AVX2) or 32 (AVX-512) floats, one or two whole cache lines of a token's row, read once
// per route instead of once per tile (docs/benchmarks.md). The driver takes one tile per
// item where larger items would leave a thread fewer than two (route_item_tiles).
constexpr int64_t kRouteItemTiles = 2;

// Tiles per item of the routed forward for `tiles` tiles in all on `threads` threads.
// Which it is changes no result (an item computes each channel as one tile alone).
inline int64_t route_item_tiles(int64_t tiles, int64_t threads) {
  return tiles >= 2 * kRouteItemTiles * std::max<int64_t>(1, threads) ? kRouteItemTiles : 1;
}
// A block is a whole number of W x W squares for every tile width W (<= 16).
static_assert(kBlock % 16 == 0, "kBlock must be a multiple of 16");

// ---- the tile grid ----------------------------------------------------------------------
//
// A tile is up to W consecutive channels of one (batch, group), W = the kernels' SIMD
// width (Kernels::tile_width): they share B and C. Tiles are numbered batch-major, then
// group, then channel; a group whose channel count is not a multiple of W ends with a
// partial tile whose missing lanes run a zero recurrence and are never stored.
struct Tile {
  int64_t b, g, d0;  // batch, group, first channel
  int64_t lanes;     // channels in the tile, 1 .. W
};

// (Always inlined, like every function of this header that the kernels call: the
// kernels' translation units target other instruction sets, so no out-of-line copy of
// these may be emitted there.)
#define MMSSM_ALWAYS_INLINE inline __attribute__((always_inline))

struct TileGrid {
  int64_t width, per_group, tiles_per_group, groups, tiles;

  MMSSM_ALWAYS_INLINE TileGrid(const SelectiveScanFwdParams& p, int64_t tile_width)
      : width(tile_width),
        per_group(p.dim / p.n_groups),
        tiles_per_group((per_group + width - 1) / width),
        groups(p.n_groups),
        tiles(p.batch * p.n_groups * tiles_per_group) {}

  // Tile `index_in_group` of (b, g).
  MMSSM_ALWAYS_INLINE Tile at(int64_t b, int64_t g, int64_t index_in_group) const {
    const int64_t first = index_in_group * width;
    return Tile{b, g, g * per_group + first, std::min<int64_t>(width, per_group - first)};
  }
  MMSSM_ALWAYS_INLINE Tile operator[](int64_t t) const {
    const int64_t bg = t / tiles_per_group;
    return at(bg / groups, bg % groups, t % tiles_per_group);
  }
};

// ---- the backward's work items ----------------------------------------------------------
//
// dB / dC sum over the channels of a group. A work item is a slice of consecutive tiles
// of one (batch, group); it accumulates into its own (L, N) time-major partial rows,
// which the driver sums in a fixed order at the end. dA / dD / d delta_bias are written
// per (batch, channel) and reduced over the batch in a fixed order.
struct BwdItem {
  int64_t b, g, slice, tile_begin, tile_end;  // tiles [tile_begin, tile_end) of (b, g)
};

struct BwdPartials {
  void* dB;     // (slices, batch, G, L, N) acc_t, or dB itself (1 slice, N == 1)
  void* dC;
  void* dA;     // (batch, dim, N)
  void* dD;     // (batch, dim)
  void* dbias;  // (batch, dim)
};

// The routed backward's work items (scan.h: selective_scan_bwd_routes_cpu): a slice of
// consecutive channel tiles -- the same tiles of every route -- of one batch element. Its
// channels' input gradients are summed over the routes into the token-major du by the
// item alone (no two items share a channel); dB / dC / d delta_lowrank, sums over the
// channels of a route, go to the slice's own route-ordered partial rows, which the
// driver sums per token in a fixed order; the per-channel gradients are written per
// (batch, channel) and reduced over the batch.
struct RoutesBwdItem {
  int64_t b, slice, tile_begin, tile_end;  // tiles [tile_begin, tile_end) of every route
};

struct RoutesBwdPartials {
  void* dB;       // (slices, batch, G, L, N) acc_t, route (step) order
  void* dC;
  void* dlow;     // (slices, batch, G, R, L)
  void* dA;       // (batch, dim, N)
  void* dD;       // (batch, dim)
  void* dbias;    // (batch, dim)
  void* dweight;  // (batch, dim, R)
};

// How many slices the tiles of a group are cut into (both backwards): enough work items
// (`units` per slice: (batch, group) pairs or batch elements) for many cores while the
// slices' partial rows (`slab_bytes` each) stay within a memory budget, never more
// slices than tiles. Depends on the shapes only (determinism).
struct TileSlices {
  int64_t count, per_slice;  // slices, tiles per slice (the last may have fewer)

  MMSSM_ALWAYS_INLINE TileSlices(int64_t units, int64_t slab_bytes, int64_t tiles_per_group,
                                 int64_t target_items) {
    const int64_t kPartialBudget = int64_t(64) << 20;  // bytes
    int64_t n = std::max<int64_t>(1, (target_items + units - 1) / units);
    n = std::min(n, std::max<int64_t>(1, kPartialBudget / std::max<int64_t>(1, slab_bytes)));
    n = std::min(n, tiles_per_group);
    per_slice = (tiles_per_group + n - 1) / n;
    count = (tiles_per_group + per_slice - 1) / per_slice;
  }
};

// out[i] += part[b * count + i] for every batch element b, in order, i < count (both
// backwards' per-channel gradients; nothing when out is null).
template <typename acc_t>
MMSSM_ALWAYS_INLINE void sum_over_batch(const void* part, void* out, int64_t batch,
                                        int64_t count) {
  if (out == nullptr) return;
  const acc_t* from = static_cast<const acc_t*>(part);
  acc_t* to = static_cast<acc_t*>(out);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < count; ++i) to[i] += from[b * count + i];
  }
}

// ---- kernels ----------------------------------------------------------------------------

enum class CpuIsa { kGeneric, kV3, kV4 };

// The best instruction set of this CPU, or the one MMSSM_CPU_ISA (generic / avx2) asks
// for if the CPU has it (tests and benchmarks of the other code paths).
CpuIsa cpu_isa();

// Entry points of scan_cpu_kernels.h, compiled once per instruction set
// (scan_cpu_kernels_{generic,v3,v4}.cpp; v3 = x86-64-v3: AVX2 + FMA, v4 = x86-64-v4:
// AVX-512; the last two only on x86-64 with GCC).
struct Kernels {
  // Channels per tile (the SIMD width for p's accumulation dtype).
  int64_t (*tile_width)(const SelectiveScanFwdParams& p);
  // Scratch bytes one worker needs.
  int64_t (*fwd_scratch_bytes)(const SelectiveScanFwdParams& p);
  int64_t (*bwd_scratch_bytes)(const SelectiveScanBwdParams& p);
  // One tile of the forward.
  void (*fwd_tile)(const SelectiveScanFwdParams& p, const Tile& t, void* scratch);
  // One backward work item (its tiles, one after another).
  void (*bwd_item)(const SelectiveScanBwdParams& p, const BwdItem& item,
                   const TileGrid& grid, const BwdPartials& part, int64_t slices,
                   void* scratch);
  // The fused route convolution (route_conv.h, float32): scratch bytes per worker, and
  // rows [begin, end) of the (batch, channel) rows.
  int64_t (*route_conv_scratch_bytes)(const RouteConvParams& p);
  void (*route_conv_rows)(const RouteConvParams& p, int64_t begin, int64_t end,
                          void* scratch);
  // ... and the route merge + gate, the same way.
  int64_t (*route_merge_scratch_bytes)(const RouteMergeParams& p);
  void (*route_merge_rows)(const RouteMergeParams& p, int64_t begin, int64_t end,
                           void* scratch);
  // One item of the routed forward (scan.h: route_index; float32 and float64 inputs):
  // channel tiles [first, first + count) of every group of batch element b, count <=
  // kRouteItemTiles.
  void (*fwd_routes_item)(const SelectiveScanFwdParams& p, const TileGrid& grid, int64_t b,
                          int64_t first, int64_t count, void* scratch);
  // The routed backward: scratch bytes per worker and one work item.
  int64_t (*bwd_routes_scratch_bytes)(const SelectiveScanBwdParams& p);
  void (*bwd_routes_item)(const SelectiveScanBwdParams& p, const TileGrid& grid,
                          const RoutesBwdItem& item, const RoutesBwdPartials& part,
                          void* scratch);
  // The fused RMSNorm (rms_norm.h, float32): rows [begin, end).
  void (*rms_norm_rows)(const RmsNormParams& p, int64_t begin, int64_t end);
  // The activations (activation.h, float32): values [begin, end).
  void (*activation_range)(const ActivationParams& p, int64_t begin, int64_t end);
};

namespace isa_generic {
extern const Kernels kernels;
}
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMSSM_CPU_X86_ISAS 1
namespace isa_v3 {
extern const Kernels kernels;
}
namespace isa_v4 {
extern const Kernels kernels;
}
#else
#define MMSSM_CPU_X86_ISAS 0
#endif

// The kernels of the best instruction set this CPU has (or MMSSM_CPU_ISA's choice).
inline const Kernels& float_kernels() {
#if MMSSM_CPU_X86_ISAS
  switch (cpu_isa()) {
    case CpuIsa::kV4: return isa_v4::kernels;
    case CpuIsa::kV3: return isa_v3::kernels;
    default: break;
  }
#endif
  return isa_generic::kernels;
}

// The kernels for the input dtype of p: fp64 (gradient checks) always runs the generic
// build, everything else the one cpu_isa() picks.
inline const Kernels& kernels_for(const SelectiveScanFwdParams& p) {
  return p.input_type == ScanDType::kFloat64 ? isa_generic::kernels : float_kernels();
}

// ---- workers ----------------------------------------------------------------------------

inline int64_t acc_size(ScanDType t) {
  return t == ScanDType::kFloat64 ? int64_t(sizeof(double)) : int64_t(sizeof(float));
}

// Runs item(i, scratch) for every i in [0, items) on up to num_threads workers of the
// caller's pool (run_workers), each with its own `scratch_bytes` of 64-byte aligned
// scratch. Items are handed out one at a time from a shared counter, so a worker that is
// descheduled (a busy machine) delays only the item it holds, and a worker that starts
// late finds the work done. Small problems (`elements` state updates in all) run on the
// calling thread: starting workers would cost more than it saves. Which worker runs an
// item never changes what the item computes.
template <typename Item>
void run_items(int32_t num_threads, CpuWorkersFn run_workers, int64_t items,
               int64_t elements, int64_t scratch_bytes, Item&& item) {
  if (items <= 0) return;
  constexpr int64_t kMinElementsPerWorker = int64_t(1) << 15;
  int64_t workers = std::max<int64_t>(1, num_threads);
  workers = std::min(workers, items);
  workers = std::min(workers, elements / kMinElementsPerWorker);
  workers = run_workers ? std::max<int64_t>(1, workers) : 1;
  const int64_t stride = (scratch_bytes + 63) / 64 * 64;
  // One allocation up front: a failure raises here, not inside a worker.
  std::vector<char> buffer(static_cast<size_t>(workers * stride + 64));
  char* base = buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64;

  if (workers == 1) {
    for (int64_t i = 0; i < items; ++i) item(i, static_cast<void*>(base));
    return;
  }
  struct Shared {
    Item* item;
    char* base;
    int64_t stride, items;
    std::atomic<int64_t> next;
  } shared{&item, base, stride, items, {0}};
  auto body = [](void* ctx, int32_t worker) {
    Shared& s = *static_cast<Shared*>(ctx);
    void* scratch = s.base + worker * s.stride;
    for (int64_t i = s.next.fetch_add(1); i < s.items; i = s.next.fetch_add(1)) {
      (*s.item)(i, scratch);
    }
  };
  run_workers(static_cast<int32_t>(workers), body, &shared);
}

template <typename Item>
void run_items(const SelectiveScanFwdParams& p, int64_t items, int64_t elements,
               int64_t scratch_bytes, Item&& item) {
  run_items(p.num_threads, p.run_workers, items, elements, scratch_bytes,
            std::forward<Item>(item));
}

inline void check_common(const SelectiveScanFwdParams& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0 || p.dstate < 1 || p.n_groups < 1 ||
      p.dim % p.n_groups != 0) {
    throw std::invalid_argument(
        "selective_scan_cpu: invalid sizes (need dstate >= 1, n_groups >= 1, "
        "dim % n_groups == 0)");
  }
  if (p.delta_lowrank && (p.delta_rank < 1 || p.delta_weight == nullptr)) {
    throw std::invalid_argument(
        "selective_scan_cpu: a low-rank delta needs delta_rank >= 1 and delta_weight");
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
