// CPU selective-scan kernels, forward and backward. Torch-free.
//
// Included once per instruction set by scan_cpu_kernels_{generic,v3,v4}.cpp, which set
// MMSSM_CPU_ISA_NS / MMSSM_CPU_ISA_LEVEL (and the target) first; each defines that
// namespace's `kernels` table (scan_cpu_common.h). The drivers (scan_cpu_fwd.cpp,
// scan_cpu_bwd.cpp) check the arguments, split the work and pick the table.
//
// Design
// - Work is split in tiles of W channels of one (batch, group) (TileGrid; W = the SIMD
//   width: 16 floats with AVX-512, 8 with AVX2, 4 with SSE / NEON): the channels of a tile
//   sit side by side in the lanes of a SIMD register (simd.h), so one time step of every
//   channel's recurrence is one vector operation per state, and B / C, shared by the
//   group, are scalar broadcasts. No horizontal operation is needed in the forward; the
//   backward's sums over channels (dB, dC) use a reduction tree (lane_sums) over W
//   products at a time.
// - The sequence is walked in blocks of kBlock (64) steps. A block of u / delta / z /
//   dout is moved into the lane layout by W x W register transposes (load_lanes) and
//   the results moved back (store_lanes); B / C of the block are converted to acc_t once.
// - Per step and state: a = exp(dt A) = 2^(dt A log2 e), h = a h + dt u B, y += C h, with
//   exp2, softplus and the gate computed by branch-free polynomials on the vectors
//   (cpu_math.h, with the formulas shared with CUDA in ../scan_math.h). States are
//   advanced through a block in groups of 8 whose states stay in registers
//   (advance_states).
// - The forward stores the state after every block in `chunk_states` (if given); the
//   backward restarts each block from it (or from a first recurrence-only pass without
//   them), keeps the block's states, and runs the adjoint recurrence
//       g_l = C_l dy_l + a_{l+1} g_{l+1}
//   backwards through the block; every gradient term is element-wise in g, h and the
//   inputs (shared/specs/selective_scan.md §1.2).
// - Nothing is reduced across tiles except dB / dC / dA / dD / d delta_bias, in an order
//   fixed by the shapes (see BwdItem): results are bit-identical for any number of
//   threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "../scan_math.h"
#include "cpu_math.h"
#include "scan_cpu_common.h"
#include "simd.h"
#include "activation_kernels.h"
#include "rms_norm_kernels.h"
#include "route_conv_kernels.h"

namespace mmssm {
namespace cpu {
namespace MMSSM_CPU_ISA_NS {

using M = CpuMath;

// ---- lane layout ------------------------------------------------------------------------

// dst[i] for i < len (len <= kBlock): lane w = row w of `src` at position i, where row w
// starts at src + w * row_stride, for w < lanes; 0 in the other lanes. The vectors from
// len up to the next multiple of the width W are written too (zeros).
template <typename in_t>
MMSSM_INLINE void load_lanes(const in_t* src, int64_t row_stride, int64_t lanes,
                             int64_t len, Vec<acc_of<in_t>>* dst) {
  using V = Vec<acc_of<in_t>>;
  constexpr int kW = kLanes<acc_of<in_t>>;
  for (int64_t q = 0; q * kW < len; ++q) {
    const int64_t valid = std::min<int64_t>(kW, len - q * kW);
    V v[kW];
    if (lanes == kW && valid == kW) {
#pragma GCC unroll 16
      for (int w = 0; w < kW; ++w) v[w] = load_acc(src + w * row_stride + q * kW);
    } else {
      for (int w = 0; w < kW; ++w) {
        v[w] = w < lanes ? load_acc_partial(src + w * row_stride + q * kW, valid) : V{};
      }
    }
    transpose_square(v);
#pragma GCC unroll 16
    for (int c = 0; c < kW; ++c) dst[q * kW + c] = v[c];
  }
}

// Software prefetch of positions [0, len) of rows w < lanes (row w at src + w * row_stride):
// the next block of a tile's input rows (many rows, walked backwards in the backward
// pass, are more streams than the hardware prefetchers follow).
template <typename T>
MMSSM_INLINE void prefetch_rows(const T* src, int64_t row_stride, int64_t lanes,
                                int64_t len) {
  if (src == nullptr) return;
  for (int64_t w = 0; w < lanes; ++w) {
    const char* row = reinterpret_cast<const char*>(src + w * row_stride);
    for (int64_t off = 0; off < len * static_cast<int64_t>(sizeof(T)); off += 64) {
      __builtin_prefetch(row + off);
    }
  }
}

// The inverse: row w of `dst` at positions [0, len) = lane w of src[0 .. len), w < lanes.
// Reads src up to the next multiple of W (those vectors must be initialised).
template <typename in_t>
MMSSM_INLINE void store_lanes(const Vec<acc_of<in_t>>* src, in_t* dst, int64_t row_stride,
                              int64_t lanes, int64_t len) {
  using V = Vec<acc_of<in_t>>;
  constexpr int kW = kLanes<acc_of<in_t>>;
  for (int64_t q = 0; q * kW < len; ++q) {
    const int64_t valid = std::min<int64_t>(kW, len - q * kW);
    V v[kW];
#pragma GCC unroll 16
    for (int c = 0; c < kW; ++c) v[c] = src[q * kW + c];
    transpose_square(v);
    if (lanes == kW && valid == kW) {
#pragma GCC unroll 16
      for (int w = 0; w < kW; ++w) store_acc(dst + w * row_stride + q * kW, v[w]);
    } else {
      for (int64_t w = 0; w < lanes; ++w) {
        store_acc_partial(dst + w * row_stride + q * kW, valid, v[w]);
      }
    }
  }
}

// dst[s * kBlock + i] = src[s * row_stride + i] as acc_t, for s < rows, i < len; zeros
// from len up to the next multiple of W. (B / C of one block, state-major.)
template <typename in_t>
MMSSM_INLINE void load_rows(const in_t* src, int64_t row_stride, int64_t rows, int64_t len,
                            acc_of<in_t>* dst) {
  constexpr int kW = kLanes<acc_of<in_t>>;
  for (int64_t s = 0; s < rows; ++s) {
    for (int64_t q = 0; q * kW < len; ++q) {
      const int64_t valid = std::min<int64_t>(kW, len - q * kW);
      const in_t* from = src + s * row_stride + q * kW;
      store(dst + s * kBlock + q * kW,
            valid == kW ? load_acc(from) : load_acc_partial(from, valid));
    }
  }
}

// Per-channel constants of a tile as lane vectors (0 in missing lanes or without x):
// v[s] lane w = x[(d0 + w) * n + s].
template <typename acc_t>
MMSSM_INLINE void lane_constants(const acc_t* x, int64_t d0, int64_t lanes, int64_t n,
                                 Vec<acc_t>* v) {
  for (int64_t s = 0; s < n; ++s) {
    v[s] = Vec<acc_t>{};
    for (int64_t w = 0; w < lanes && x; ++w) v[s][w] = x[(d0 + w) * n + s];
  }
}

// A log2(e) as lane constants: the decays are computed as exp(dt A) = 2^(dt A log2(e)).
// Returns whether the tile's decays may use M::decay_exp2 (cpu_math.h; `decay` below):
// with `softplus` dt >= 0 or nan, so every A <= 0 (none nan; empty lanes are 0) makes
// every exponent dt A log2(e) <= 0 or nan.
template <typename acc_t>
MMSSM_INLINE bool lane_constants_log2e(const acc_t* A, int64_t d0, int64_t lanes, int64_t n,
                                       bool softplus, Vec<acc_t>* v) {
  lane_constants(A, d0, lanes, n, v);
  bool nonpositive = true;
  for (int64_t s = 0; s < n; ++s) {
    v[s] *= static_cast<acc_t>(1.44269504088896340736);
    for (int w = 0; w < kLanes<acc_t>; ++w) nonpositive &= v[s][w] <= 0;
  }
  return softplus && nonpositive;
}

// A decay 2^t, t = dt A log2(e): M::decay_exp2 (two instructions fewer than M::exp2 on
// AVX2 and below) where lane_constants_log2e found every t <= 0 or nan, else M::exp2.
template <bool kBounded, typename V>
MMSSM_INLINE V decay(V t) {
  if constexpr (kBounded) {
    return M::decay_exp2(t);
  } else {
    return M::exp2(t);
  }
}

// Lane w of h[s] <-> out[w * row_stride + s] for w < lanes, s < n (missing lanes: 0).
template <typename acc_t>
MMSSM_INLINE void store_states(const Vec<acc_t>* h, int64_t n, int64_t lanes, acc_t* out,
                               int64_t row_stride) {
  for (int64_t w = 0; w < lanes; ++w) {
    for (int64_t s = 0; s < n; ++s) out[w * row_stride + s] = h[s][w];
  }
}
template <typename acc_t>
MMSSM_INLINE void load_states(const acc_t* in, int64_t row_stride, int64_t n, int64_t lanes,
                              Vec<acc_t>* h) {
  for (int64_t s = 0; s < n; ++s) {
    h[s] = Vec<acc_t>{};
    for (int64_t w = 0; w < lanes; ++w) h[s][w] = in[w * row_stride + s];
  }
}

// ---- the recurrence over one block ------------------------------------------------------

// States are advanced in groups of up to kStateGroup, whose states stay in registers.
constexpr int kStateGroup = 8;

// The group sizes: kG when known at compile time (N = 1: 1, N % 8 == 0: 8), else 0.
template <int kN>
constexpr int group_size() {
  return kN == 1 ? 1 : (kN > 0 && kN % kStateGroup == 0) ? kStateGroup : 0;
}

// Per step of a block: dt = softplus(delta + bias) (or delta + bias) and dt * u.
template <typename V>
MMSSM_INLINE void time_steps(const V* delta, const V* u, const V& bias, bool softplus,
                             int64_t len, V* dt, V* dtu) {
  if (softplus) {
    for (int64_t i = 0; i < len; ++i) {
      const V d = scan_math::softplus<M>(delta[i] + bias);
      dt[i] = d;
      dtu[i] = d * u[i];
    }
  } else {
    for (int64_t i = 0; i < len; ++i) {
      const V d = delta[i] + bias;
      dt[i] = d;
      dtu[i] = d * u[i];
    }
  }
}

// Advances the states h[0 .. kn) of one group (kG = kn when known at compile time, else
// 0) through `len` steps of a block: h_k = 2^(dt A2_k) h_k + dt u B_k (A2 = A log2(e)).
// A2[k]: the group's lane constants, B / C: its (state, step) rows (stride kBlock).
// kY: y[i] += sum_k C_k h_k after step i. kH: H[i * kn + k] = h_k after step i.
// kBounded: the decays by decay_exp2 (lane_constants_log2e's verdict).
template <int kG, bool kY, bool kH, bool kBounded, typename V, typename acc_t>
MMSSM_INLINE void advance_states(V* h, int64_t kn, const V* A2, const acc_t* B,
                                 const acc_t* C, const V* dt, const V* dtu, int64_t len,
                                 V* y, V* H) {
  constexpr int kMax = kG > 0 ? kG : kStateGroup;
  const int64_t n = kG > 0 ? kG : kn;
  V hk[kMax] = {}, Ak[kMax] = {};
#pragma GCC unroll 8
  for (int64_t k = 0; k < n; ++k) {
    hk[k] = h[k];
    Ak[k] = A2[k];
  }
  for (int64_t i = 0; i < len; ++i) {
    const V d = dt[i], du = dtu[i];
    V y0{}, y1{};
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) {
      hk[k] = decay<kBounded>(d * Ak[k]) * hk[k] + du * B[k * kBlock + i];
      if (kY) {
        if (k & 1) {
          y1 += C[k * kBlock + i] * hk[k];
        } else {
          y0 += C[k * kBlock + i] * hk[k];
        }
      }
      if (kH) H[i * n + k] = hk[k];
    }
    if (kY) y[i] += y0 + y1;
  }
#pragma GCC unroll 8
  for (int64_t k = 0; k < n; ++k) h[k] = hk[k];
}

// advance_states as a function of its own, for groups of more than one state: inlined
// into the tile functions GCC kept fewer of a group's 8 states in registers there (39
// stack operands per step instead of 24), and decay_exp2's two fewer instructions bought
// nothing (N = 16 forward 0.96x; 1.04-1.06x as a function of its own, AVX2).
template <int kG, bool kY, bool kH, bool kBounded, typename V, typename acc_t>
__attribute__((noinline)) void advance_state_group(V* h, int64_t kn, const V* A2,
                                                   const acc_t* B, const acc_t* C,
                                                   const V* dt, const V* dtu, int64_t len,
                                                   V* y, V* H) {
  advance_states<kG, kY, kH, kBounded>(h, kn, A2, B, C, dt, dtu, len, y, H);
}

// One group: N = 1 inlined (nothing to spill), larger groups by advance_state_group.
template <int kG, bool kY, bool kH, bool kBounded, typename V, typename acc_t>
MMSSM_INLINE void advance_group(V* h, int64_t kn, const V* A2, const acc_t* B,
                                const acc_t* C, const V* dt, const V* dtu, int64_t len,
                                V* y, V* H) {
  if constexpr (kG == 1) {
    advance_states<kG, kY, kH, kBounded>(h, kn, A2, B, C, dt, dtu, len, y, H);
  } else {
    advance_state_group<kG, kY, kH, kBounded>(h, kn, A2, B, C, dt, dtu, len, y, H);
  }
}

// advance_states for every group of states [k0, k0 + 8) of the n. With kH, group k0's
// (len, kn) states start at H + k0 * kBlock. bounded: lane_constants_log2e's verdict.
template <int kN, bool kY, bool kH, typename V, typename acc_t>
MMSSM_INLINE void advance_all_states(V* h, int64_t n, const V* A2, const acc_t* B,
                                     const acc_t* C, const V* dt, const V* dtu,
                                     int64_t len, V* y, V* H, bool bounded) {
  constexpr int kG = group_size<kN>();
  for (int64_t k0 = 0; k0 < n; k0 += kStateGroup) {
    const int64_t kn = std::min<int64_t>(kStateGroup, n - k0);
    V* Hk = kH ? H + k0 * kBlock : H;
    const acc_t *Bk = B + k0 * kBlock, *Ck = C + k0 * kBlock;
    if (bounded) {
      advance_group<kG, kY, kH, true>(h + k0, kn, A2 + k0, Bk, Ck, dt, dtu, len, y, Hk);
    } else {
      advance_group<kG, kY, kH, false>(h + k0, kn, A2 + k0, Bk, Ck, dt, dtu, len, y, Hk);
    }
  }
}

// ---- forward ----------------------------------------------------------------------------

// Lane-layout scratch of one forward tile.
template <typename acc_t>
struct FwdScratch {
  using V = Vec<acc_t>;
  V *u, *delta, *z, *dt, *dtu, *y;  // (kBlock) each; y: the block's outputs
  V *A2, *h;                         // (n): A log2(e), state
  V* W;                              // (r): low-rank delta weights (delta_weight columns)
  acc_t *B, *C;                      // (n, kBlock)
  acc_t* low;                        // (r, kBlock): the block's low-rank delta rows

  static int64_t bytes(int64_t n, int64_t r) {
    return static_cast<int64_t>(sizeof(V)) * (6 * kBlock + 2 * n + r) +
           static_cast<int64_t>(sizeof(acc_t)) * (2 * n + r) * kBlock;
  }
  MMSSM_INLINE FwdScratch(void* base, int64_t n, int64_t r) {
    V* v = static_cast<V*>(base);
    u = v;
    delta = u + kBlock;
    z = delta + kBlock;
    dt = z + kBlock;
    dtu = dt + kBlock;
    y = dtu + kBlock;
    A2 = y + kBlock;
    h = A2 + n;
    W = h + n;
    B = reinterpret_cast<acc_t*>(W + r);
    C = B + n * kBlock;
    low = C + n * kBlock;
  }
};

// delta[i] = sum_r W[r] * low[r * kBlock + i] for the block's steps: the low-rank delta
// (SelectiveScanFwdParams::delta_lowrank) for all the tile's channels, a small matrix
// product (lanes x R) x (R x len) with four steps' sums held in registers while the
// ranks are walked (each W[r] is loaded once per four steps; the sums are in rank order).
// Steps from len up to the next multiple of the width are zero (low's padding is zero).
template <typename V, typename acc_t>
MMSSM_INLINE void lowrank_delta(const V* W, const acc_t* low, int64_t rank, int64_t len,
                                V* delta) {
  constexpr int kW = kLanes<acc_t>;
  static_assert(kW % 4 == 0 || kW == 2, "four steps per pass");
  const int64_t padded = (len + kW - 1) / kW * kW;
  int64_t i = 0;
  for (; i + 4 <= padded; i += 4) {
    V d0{}, d1{}, d2{}, d3{};
    for (int64_t r = 0; r < rank; ++r) {
      const V w = W[r];
      const acc_t* row = low + r * kBlock + i;
      d0 += w * row[0];
      d1 += w * row[1];
      d2 += w * row[2];
      d3 += w * row[3];
    }
    delta[i] = d0;
    delta[i + 1] = d1;
    delta[i + 2] = d2;
    delta[i + 3] = d3;
  }
  for (; i < padded; ++i) {
    V d{};
    for (int64_t r = 0; r < rank; ++r) d += W[r] * low[r * kBlock + i];
    delta[i] = d;
  }
}

// One tile (kN: compile-time N, 0 = runtime).
template <typename in_t, int kN>
__attribute__((noinline)) void fwd_tile(const SelectiveScanFwdParams& p, const Tile& t,
                                        void* scratch) {
  using acc_t = acc_of<in_t>;
  using V = Vec<acc_t>;
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen;
  const int64_t lanes = t.lanes;
  const int64_t rank = p.delta_lowrank ? p.delta_rank : 0;
  FwdScratch<acc_t> s(scratch, n, rank);

  const in_t* u = static_cast<const in_t*>(p.u) + t.b * p.u_batch_stride +
                  t.d0 * p.u_dim_stride;
  const in_t* delta = p.delta_lowrank ? nullptr
                                      : static_cast<const in_t*>(p.delta) +
                                            t.b * p.delta_batch_stride +
                                            t.d0 * p.delta_dim_stride;
  const in_t* low = p.delta_lowrank ? static_cast<const in_t*>(p.delta_lowrank) +
                                          t.b * p.dl_batch_stride + t.g * p.dl_group_stride
                                    : nullptr;
  if (low) lane_constants(static_cast<const acc_t*>(p.delta_weight), t.d0, lanes, rank, s.W);
  const in_t* z = p.z ? static_cast<const in_t*>(p.z) + t.b * p.z_batch_stride +
                            t.d0 * p.z_dim_stride
                      : nullptr;
  const in_t* B = static_cast<const in_t*>(p.B) + t.b * p.B_batch_stride +
                  t.g * p.B_group_stride;
  const in_t* C = static_cast<const in_t*>(p.C) + t.b * p.C_batch_stride +
                  t.g * p.C_group_stride;
  const int64_t row0 = t.b * p.dim + t.d0;  // first row of the contiguous outputs
  in_t* out = static_cast<in_t*>(p.out) + row0 * L;

  const bool bounded = lane_constants_log2e(static_cast<const acc_t*>(p.A), t.d0, lanes, n,
                                            p.delta_softplus, s.A2);
  V bias, Dv;
  lane_constants(static_cast<const acc_t*>(p.delta_bias), t.d0, lanes, 1, &bias);
  lane_constants(static_cast<const acc_t*>(p.D), t.d0, lanes, 1, &Dv);
  for (int64_t k = 0; k < n; ++k) s.h[k] = V{};

  for (int64_t l0 = 0, c = 0; l0 < L; l0 += kBlock, ++c) {
    const int64_t len = std::min(kBlock, L - l0);
    if (l0 + kBlock < L) {
      const int64_t next = std::min(kBlock, L - l0 - kBlock);
      prefetch_rows(u + l0 + kBlock, p.u_dim_stride, lanes, next);
      if (delta) prefetch_rows(delta + l0 + kBlock, p.delta_dim_stride, lanes, next);
      if (z) prefetch_rows(z + l0 + kBlock, p.z_dim_stride, lanes, next);
    }
    load_lanes(u + l0, p.u_dim_stride, lanes, len, s.u);
    if (low) {
      load_rows(low + l0, p.dl_rank_stride, rank, len, s.low);
      lowrank_delta(s.W, s.low, rank, len, s.delta);
    } else {
      load_lanes(delta + l0, p.delta_dim_stride, lanes, len, s.delta);
    }
    load_rows(B + l0, p.B_dstate_stride, n, len, s.B);
    load_rows(C + l0, p.C_dstate_stride, n, len, s.C);
    time_steps(s.delta, s.u, bias, p.delta_softplus, len, s.dt, s.dtu);
    for (int64_t i = 0; i < len; ++i) s.y[i] = Dv * s.u[i];
    advance_all_states<kN, true, false>(s.h, n, s.A2, s.B, s.C, s.dt, s.dtu, len, s.y,
                                        static_cast<V*>(nullptr), bounded);
    if (z) {
      load_lanes(z + l0, p.z_dim_stride, lanes, len, s.z);
      for (int64_t i = 0; i < len; ++i) s.y[i] *= scan_math::silu<M>(s.z[i]);
    }
    for (int64_t i = len; i % kLanes<acc_t>; ++i) s.y[i] = V{};  // whole squares
    store_lanes(s.y, out + l0, L, lanes, len);
    if (p.chunk_states) {
      acc_t* saved = static_cast<acc_t*>(p.chunk_states) + (row0 * p.n_chunks + c) * n;
      store_states(s.h, n, lanes, saved, p.n_chunks * n);
    }
  }
  if (p.last_state) {
    store_states(s.h, n, lanes, static_cast<acc_t*>(p.last_state) + row0 * n, n);
  }
}

// ---- routed forward ----------------------------------------------------------------------
//
// The routes of a scan pattern read straight from one token-major map and summed straight
// back into one (scan.h: route_index; selective_scan_fwd_routes_cpu). The W channels of a
// tile are W consecutive floats of a token's row, so step i of a route is one vector
// load of the token index[i] (no transpose, no gathered copy of the map) and its output
// one vector add into that token's row. The per-token low-rank delta / B / C rows are read
// at index[i] too. An item is one to kRouteItemTiles channel tiles of one batch element
// and walks the routes in order, so the sum over routes is formed in a fixed order by one
// worker.

// Lane row `lanes` <= W values at p, as a vector (0 in missing lanes).
template <typename in_t>
MMSSM_INLINE Vec<acc_of<in_t>> load_lane_row(const in_t* p, int64_t lanes) {
  return lanes == kLanes<acc_of<in_t>> ? load_acc(p) : load_acc_partial(p, lanes);
}

// p[0 .. lanes) += the first `lanes` lanes of v.
template <typename in_t>
MMSSM_INLINE void add_lane_row(in_t* p, int64_t lanes, const Vec<acc_of<in_t>>& v) {
  if (lanes == kLanes<acc_of<in_t>>) {
    store_acc(p, load_acc(p) + v);
  } else {
    store_acc_partial(p, lanes, load_acc_partial(p, lanes) + v);
  }
}

// p[0 .. lanes) = the first `lanes` lanes of v.
template <typename in_t>
MMSSM_INLINE void store_lane_row(in_t* p, int64_t lanes, const Vec<acc_of<in_t>>& v) {
  if (lanes == kLanes<acc_of<in_t>>) {
    store_acc(p, v);
  } else {
    store_acc_partial(p, lanes, v);
  }
}

// dst[s * kBlock + i] = src[s * row_stride + index[i]] (0 where index[i] < 0) as acc_t,
// for s < rows, i < len; zeros from len up to the next multiple of W.
template <typename in_t>
MMSSM_INLINE void gather_rows(const in_t* src, int64_t row_stride, int64_t rows,
                              const int64_t* index, int64_t len, acc_of<in_t>* dst) {
  using acc_t = acc_of<in_t>;
  constexpr int kW = kLanes<acc_t>;
  const int64_t padded = (len + kW - 1) / kW * kW;
  for (int64_t s = 0; s < rows; ++s) {
    const in_t* row = src + s * row_stride;
    acc_t* out = dst + s * kBlock;
    for (int64_t i = 0; i < len; ++i) {
      out[i] = index[i] >= 0 ? static_cast<acc_t>(row[index[i]]) : acc_t(0);
    }
    for (int64_t i = len; i < padded; ++i) out[i] = acc_t(0);
  }
}

// Software prefetch of the token rows `base + index[i] * stride` (i < len, padding steps
// skipped) of a block a route visits next: the steps of a transposed or reversed route
// are a row apart in the map, one cache line each, a pattern the hardware prefetchers do
// not follow. `write`: the rows are updated (added into).
template <typename T>
MMSSM_INLINE void prefetch_tokens(const T* base, int64_t stride, const int64_t* index,
                                  int64_t len, bool write) {
  for (int64_t i = 0; i < len; ++i) {
    if (index[i] < 0) continue;
    if (write) {
      __builtin_prefetch(base + index[i] * stride, 1);
    } else {
      __builtin_prefetch(base + index[i] * stride);
    }
  }
}

// Route g's low-rank delta / B / C rows of batch element b (routed kernels).
template <typename in_t>
struct RouteInputs {
  const in_t *low, *B, *C;
  MMSSM_INLINE RouteInputs(const SelectiveScanFwdParams& p, int64_t b, int64_t g)
      : low(static_cast<const in_t*>(p.delta_lowrank) + b * p.dl_batch_stride +
            g * p.dl_group_stride),
        B(static_cast<const in_t*>(p.B) + b * p.B_batch_stride + g * p.B_group_stride),
        C(static_cast<const in_t*>(p.C) + b * p.C_batch_stride + g * p.C_group_stride) {}
};

// The low-rank delta / B / C rows of a block's steps l0 + [0, len) of one route: read
// per step from the per-token rows at index[i] (index = the route's map from l0), or,
// with route_rows_by_step, the rows are already in step order (padding steps zero).
template <typename in_t>
MMSSM_INLINE void route_rows(const SelectiveScanFwdParams& p, const in_t* low, const in_t* B,
                             const in_t* C, const int64_t* index, int64_t l0, int64_t len,
                             int64_t rank, int64_t n, acc_of<in_t>* low_out,
                             acc_of<in_t>* B_out, acc_of<in_t>* C_out) {
  if (p.route_rows_by_step) {
    load_rows(low + l0, p.dl_rank_stride, rank, len, low_out);
    load_rows(B + l0, p.B_dstate_stride, n, len, B_out);
    load_rows(C + l0, p.C_dstate_stride, n, len, C_out);
  } else {
    gather_rows(low, p.dl_rank_stride, rank, index, len, low_out);
    gather_rows(B, p.B_dstate_stride, n, index, len, B_out);
    gather_rows(C, p.C_dstate_stride, n, index, len, C_out);
  }
}

// Per-channel constants and state of one tile of a routed forward item (the first
// tile's live in FwdScratch, the others after it: fwd_bytes).
template <typename acc_t>
struct RouteTileState {
  using V = Vec<acc_t>;
  Tile t;
  V *A2, *h, *W;  // (n), (n), (r)
  V bias, Dv;
  bool bounded;
  acc_t* saved;  // chunk states of the tile's first channel, or null
};

// One item of the routed forward: `count` (<= kRouteItemTiles) consecutive channel tiles
// from `first` of one batch element in every route g = 0 .. G-1, added into out
// (zero-initialised by the caller), or with route_merge false stored per route step.
// The tiles of an item are adjacent floats of every token row, so a block's token rows
// are read (and its output rows updated) by one item while they are in cache, and the
// block's low-rank delta / B / C rows, which do not depend on the channel, are read once
// for all of them. Each channel's arithmetic, and the order in which the routes are added
// into a token's row, is that of one tile alone.
template <typename in_t, int kN>
__attribute__((noinline)) void fwd_routes_item(const SelectiveScanFwdParams& p,
                                               const TileGrid& grid, int64_t b,
                                               int64_t first, int64_t count,
                                               void* scratch) {
  using acc_t = acc_of<in_t>;
  using V = Vec<acc_t>;
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen, E = grid.per_group;
  const int64_t rank = p.delta_rank;
  FwdScratch<acc_t> s(scratch, n, rank);
  V* more = reinterpret_cast<V*>(static_cast<char*>(scratch) +
                                 FwdScratch<acc_t>::bytes(n, rank));
  RouteTileState<acc_t> tiles[kRouteItemTiles];
  for (int64_t k = 0; k < count; ++k) {
    RouteTileState<acc_t>& ts = tiles[k];
    ts.A2 = k == 0 ? s.A2 : more + (k - 1) * (2 * n + rank);
    ts.h = k == 0 ? s.h : ts.A2 + n;
    ts.W = k == 0 ? s.W : ts.h + n;
  }
  const in_t* x = static_cast<const in_t*>(p.u) + b * p.u_batch_stride;
  in_t* out = static_cast<in_t*>(p.out) + b * p.tokens * E;                 // merged
  in_t* out_routes = static_cast<in_t*>(p.out) + b * p.n_groups * L * E;  // per step

  for (int64_t g = 0; g < p.n_groups; ++g) {
    const int64_t* route = p.route_index + g * L;
    const RouteInputs<in_t> in(p, b, g);
    const in_t *low = in.low, *B = in.B, *C = in.C;
    for (int64_t k = 0; k < count; ++k) {
      RouteTileState<acc_t>& ts = tiles[k];
      ts.t = grid.at(b, g, first + k);
      const int64_t d0 = ts.t.d0, lanes = ts.t.lanes;
      lane_constants(static_cast<const acc_t*>(p.delta_weight), d0, lanes, rank, ts.W);
      ts.bounded = lane_constants_log2e(static_cast<const acc_t*>(p.A), d0, lanes, n,
                                        p.delta_softplus, ts.A2);
      lane_constants(static_cast<const acc_t*>(p.delta_bias), d0, lanes, 1, &ts.bias);
      lane_constants(static_cast<const acc_t*>(p.D), d0, lanes, 1, &ts.Dv);
      for (int64_t j = 0; j < n; ++j) ts.h[j] = V{};
      ts.saved = p.chunk_states ? static_cast<acc_t*>(p.chunk_states) +
                                      (b * p.dim + d0) * p.n_chunks * n
                                : nullptr;
    }
    const int64_t e_first = tiles[0].t.d0 - g * E;
    const int64_t e_last = tiles[count - 1].t.d0 - g * E;

    for (int64_t l0 = 0, c = 0; l0 < L; l0 += kBlock, ++c) {
      const int64_t len = std::min(kBlock, L - l0);
      const int64_t* index = route + l0;
      if (l0 + kBlock < L) {  // the next block's token rows (first and last tile's lines)
        const int64_t next = std::min(kBlock, L - l0 - kBlock);
        prefetch_tokens(x + e_first, p.u_token_stride, index + kBlock, next, false);
        if (e_last != e_first) {
          prefetch_tokens(x + e_last, p.u_token_stride, index + kBlock, next, false);
        }
        if (p.route_merge) {
          prefetch_tokens(out + e_first, E, index + kBlock, next, true);
          if (e_last != e_first) prefetch_tokens(out + e_last, E, index + kBlock, next, true);
        }
      }
      route_rows(p, low, B, C, index, l0, len, rank, n, s.low, s.B, s.C);
      for (int64_t k = 0; k < count; ++k) {
        RouteTileState<acc_t>& ts = tiles[k];
        const int64_t e0 = ts.t.d0 - g * E, lanes = ts.t.lanes;
        for (int64_t i = 0; i < len; ++i) {
          s.u[i] = index[i] >= 0
                       ? load_lane_row(x + index[i] * p.u_token_stride + e0, lanes)
                       : V{};
        }
        lowrank_delta(ts.W, s.low, rank, len, s.delta);
        time_steps(s.delta, s.u, ts.bias, p.delta_softplus, len, s.dt, s.dtu);
        for (int64_t i = 0; i < len; ++i) s.y[i] = ts.Dv * s.u[i];
        advance_all_states<kN, true, false>(ts.h, n, ts.A2, s.B, s.C, s.dt, s.dtu, len,
                                            s.y, static_cast<V*>(nullptr), ts.bounded);
        if (p.route_merge) {
          for (int64_t i = 0; i < len; ++i) {
            if (index[i] >= 0) add_lane_row(out + index[i] * E + e0, lanes, s.y[i]);
          }
        } else {
          in_t* steps = out_routes + (g * L + l0) * E + e0;
          for (int64_t i = 0; i < len; ++i) store_lane_row(steps + i * E, lanes, s.y[i]);
        }
        if (ts.saved) store_states(ts.h, n, lanes, ts.saved + c * n, p.n_chunks * n);
      }
    }
  }
}

// ---- backward ---------------------------------------------------------------------------

// Sums over the lanes of W vectors at a time, added to out_a[at[j]] / out_b[at[j]].
template <typename acc_t>
struct LaneSums {
  using V = Vec<acc_t>;
  static constexpr int kW = kLanes<acc_t>;
  V a[kW], b[kW];
  int64_t at[kW];
  int count = 0;

  MMSSM_INLINE void push(const V& va, const V& vb, int64_t index, acc_t* out_a,
                         acc_t* out_b) {
    a[count] = va;
    b[count] = vb;
    at[count] = index;
    if (++count == kW) flush(out_a, out_b);
  }
  MMSSM_INLINE void flush(acc_t* out_a, acc_t* out_b) {
    if (count == 0) return;
    for (int j = count; j < kW; ++j) a[j] = b[j] = V{};
    const V sa = lane_sums(a), sb = lane_sums(b);
    for (int j = 0; j < count; ++j) {
      out_a[at[j]] += sa[j];
      out_b[at[j]] += sb[j];
    }
    count = 0;
  }
};

// Lane-layout scratch of one backward tile.
template <typename acc_t>
struct BwdScratch {
  using V = Vec<acc_t>;
  // (kBlock) each
  V *u, *delta, *dout, *z, *dt, *dtu, *dy, *y, *du, *ddt;
  V *A, *A2, *h, *h0, *g, *next_a, *dA;  // (n) each; A2 = A log2(e), h0: block start
  V* H;                             // (n, kBlock): the block's states, group-major
  V* starts;                        // (n_blocks, n): block start states (recompute)
  acc_t *B, *C;                     // (n, kBlock)
  LaneSums<acc_t>* sums;

  static int64_t bytes(int64_t n, int64_t n_blocks) {
    return static_cast<int64_t>(sizeof(V)) * (10 * kBlock + 7 * n + n * kBlock +
                                              n_blocks * n) +
           static_cast<int64_t>(sizeof(acc_t)) * 2 * n * kBlock +
           static_cast<int64_t>(sizeof(LaneSums<acc_t>));
  }
  MMSSM_INLINE BwdScratch(void* base, int64_t n, int64_t n_blocks) {
    V* v = static_cast<V*>(base);
    for (V** a : {&u, &delta, &dout, &z, &dt, &dtu, &dy, &y, &du, &ddt}) {
      *a = v;
      v += kBlock;
    }
    for (V** a : {&A, &A2, &h, &h0, &g, &next_a, &dA}) {
      *a = v;
      v += n;
    }
    H = v;
    starts = H + n * kBlock;
    sums = reinterpret_cast<LaneSums<acc_t>*>(starts + n_blocks * n);
    B = reinterpret_cast<acc_t*>(sums + 1);
    C = B + n * kBlock;
  }
};

// The adjoint recurrence of one group of states (kn; kG as in advance_states) backwards
// through a block, with the gradient terms of those states:
//   g_k = a_{i+1,k} g_k + C_k dy_i           (next_a holds a_{i+1})
//   du_i  += sum_k g_k B_k                   (times dt_i later)
//   ddt_i += sum_k A_k g_k a_k h_{i-1,k}     (+ u_i du_i later)
//   dA_k  += dt_i g_k a_k h_{i-1,k}
//   dB_{i,k} += sum over lanes g_k dt_i u_i,  dC_{i,k} += sum over lanes dy_i h_{i,k}
// H: the group's states (i * kn + k), h0: its states before step 0. dB / dC: the block's
// (len, n) time-major partial rows; k0: the group's first state.
template <int kG, bool kBounded, typename V, typename acc_t>
MMSSM_INLINE void adjoint_states(const BwdScratch<acc_t>& s, int64_t k0, int64_t kn,
                                 int64_t n, int64_t len, const V* H, acc_t* dB,
                                 acc_t* dC) {
  constexpr int kMax = kG > 0 ? kG : kStateGroup;
  const int64_t m = kG > 0 ? kG : kn;
  const acc_t* B = s.B + k0 * kBlock;
  const acc_t* C = s.C + k0 * kBlock;
  V g[kMax] = {}, na[kMax] = {};
#pragma GCC unroll 8
  for (int64_t k = 0; k < m; ++k) {
    g[k] = s.g[k0 + k];
    na[k] = s.next_a[k0 + k];
  }
  for (int64_t i = len - 1; i >= 0; --i) {
    const V dt = s.dt[i], dtu = s.dtu[i], dy = s.dy[i];
    V du{}, ddt{};
#pragma GCC unroll 8
    for (int64_t k = 0; k < m; ++k) {
      const V A = s.A[k0 + k];
      const V a = decay<kBounded>(dt * s.A2[k0 + k]);
      const V h_prev = i > 0 ? H[(i - 1) * m + k] : s.h0[k0 + k];
      const V ahp = a * h_prev;
      g[k] = na[k] * g[k] + C[k * kBlock + i] * dy;
      na[k] = a;
      du += g[k] * B[k * kBlock + i];
      const V ga = g[k] * ahp;
      ddt += A * ga;
      s.dA[k0 + k] += dt * ga;
      s.sums->push(g[k] * dtu, dy * H[i * m + k], i * n + k0 + k, dB, dC);
    }
    s.du[i] += du;
    s.ddt[i] += ddt;
  }
  s.sums->flush(dB, dC);
#pragma GCC unroll 8
  for (int64_t k = 0; k < m; ++k) {
    s.g[k0 + k] = g[k];
    s.next_a[k0 + k] = na[k];
  }
}

// The gradients of one block whose states are in s.H (and dy, u, dt in s): the adjoint
// recurrence group by group (dB / dC into the block's (len, n) partial rows), then per
// step d u (s.du) and d dt (s.ddt, through the softplus), and D's and the bias' sums.
// bounded: lane_constants_log2e's verdict.
template <int kG, typename V, typename acc_t>
MMSSM_INLINE void block_gradients(const BwdScratch<acc_t>& s, int64_t n, int64_t len,
                                  const V& Dv, bool softplus, bool bounded, acc_t* dB,
                                  acc_t* dC, V& accD, V& accBias) {
  for (int64_t i = 0; i < len; ++i) s.du[i] = s.ddt[i] = V{};
  for (int64_t k0 = 0; k0 < n; k0 += kStateGroup) {
    const int64_t kn = std::min<int64_t>(kStateGroup, n - k0);
    if (bounded) {
      adjoint_states<kG, true>(s, k0, kn, n, len, s.H + k0 * kBlock, dB, dC);
    } else {
      adjoint_states<kG, false>(s, k0, kn, n, len, s.H + k0 * kBlock, dB, dC);
    }
  }
  for (int64_t i = 0; i < len; ++i) {
    const V ui = s.u[i], dti = s.dt[i], dyi = s.dy[i];
    V ddt = s.ddt[i] + ui * s.du[i];
    if (softplus) ddt *= scan_math::softplus_grad_from_output<M>(dti);
    s.du[i] = Dv * dyi + dti * s.du[i];
    s.ddt[i] = ddt;
    accD += dyi * ui;
    accBias += ddt;
  }
}

// One tile of the backward; dB_part / dC_part: the item's (L, N) time-major partials.
template <typename in_t, int kN>
__attribute__((noinline)) void bwd_tile(const SelectiveScanBwdParams& p, const Tile& t,
                                        acc_of<in_t>* dB_part, acc_of<in_t>* dC_part,
                                        const BwdPartials& part, void* scratch) {
  using acc_t = acc_of<in_t>;
  using V = Vec<acc_t>;
  constexpr int kG = group_size<kN>();
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen;
  const int64_t n_blocks = (L + kBlock - 1) / kBlock;
  const int64_t lanes = t.lanes;
  BwdScratch<acc_t> s(scratch, n, n_blocks);
  s.sums->count = 0;

  const in_t* u = static_cast<const in_t*>(p.u) + t.b * p.u_batch_stride +
                  t.d0 * p.u_dim_stride;
  const in_t* delta = static_cast<const in_t*>(p.delta) + t.b * p.delta_batch_stride +
                      t.d0 * p.delta_dim_stride;
  const in_t* z = p.z ? static_cast<const in_t*>(p.z) + t.b * p.z_batch_stride +
                            t.d0 * p.z_dim_stride
                      : nullptr;
  const in_t* dout = static_cast<const in_t*>(p.dout) + t.b * p.dout_batch_stride +
                     t.d0 * p.dout_dim_stride;
  const in_t* B = static_cast<const in_t*>(p.B) + t.b * p.B_batch_stride +
                  t.g * p.B_group_stride;
  const in_t* C = static_cast<const in_t*>(p.C) + t.b * p.C_batch_stride +
                  t.g * p.C_group_stride;
  const int64_t row0 = t.b * p.dim + t.d0;
  in_t* du_out = static_cast<in_t*>(p.du) + row0 * L;
  in_t* ddelta_out = static_cast<in_t*>(p.ddelta) + row0 * L;
  in_t* dz_out = p.z ? static_cast<in_t*>(p.dz) + row0 * L : nullptr;

  lane_constants(static_cast<const acc_t*>(p.A), t.d0, lanes, n, s.A);
  const bool bounded = lane_constants_log2e(static_cast<const acc_t*>(p.A), t.d0, lanes, n,
                                            p.delta_softplus, s.A2);
  V bias, Dv;
  lane_constants(static_cast<const acc_t*>(p.delta_bias), t.d0, lanes, 1, &bias);
  lane_constants(static_cast<const acc_t*>(p.D), t.d0, lanes, 1, &Dv);
  const acc_t* saved = static_cast<const acc_t*>(p.chunk_states);

  auto load_block = [&](int64_t l0, int64_t len) MMSSM_LAMBDA_INLINE {
    load_lanes(u + l0, p.u_dim_stride, lanes, len, s.u);
    load_lanes(delta + l0, p.delta_dim_stride, lanes, len, s.delta);
    load_rows(B + l0, p.B_dstate_stride, n, len, s.B);
    time_steps(s.delta, s.u, bias, p.delta_softplus, len, s.dt, s.dtu);
  };

  // Without the forward's chunk states: one recurrence-only pass for the block starts.
  if (saved == nullptr) {
    for (int64_t k = 0; k < n; ++k) s.h[k] = V{};
    for (int64_t c = 0; c < n_blocks; ++c) {
      for (int64_t k = 0; k < n; ++k) s.starts[c * n + k] = s.h[k];
      if (c + 1 == n_blocks) break;
      load_block(c * kBlock, kBlock);
      advance_all_states<kN, false, false>(s.h, n, s.A2, s.B, s.C, s.dt, s.dtu, kBlock,
                                           static_cast<V*>(nullptr),
                                           static_cast<V*>(nullptr), bounded);
    }
  }

  for (int64_t k = 0; k < n; ++k) s.g[k] = s.next_a[k] = s.dA[k] = V{};
  V accD{}, accBias{};
  for (int64_t c = n_blocks - 1; c >= 0; --c) {
    const int64_t l0 = c * kBlock;
    const int64_t len = std::min(kBlock, L - l0);
    if (c > 0) {  // the block processed next
      const int64_t prev = l0 - kBlock;
      prefetch_rows(u + prev, p.u_dim_stride, lanes, kBlock);
      prefetch_rows(delta + prev, p.delta_dim_stride, lanes, kBlock);
      prefetch_rows(dout + prev, p.dout_dim_stride, lanes, kBlock);
      if (z) prefetch_rows(z + prev, p.z_dim_stride, lanes, kBlock);
    }
    load_block(l0, len);
    load_rows(C + l0, p.C_dstate_stride, n, len, s.C);
    load_lanes(dout + l0, p.dout_dim_stride, lanes, len, s.dout);
    // Gradient reaching y = sum C h + D u (before the gate): dout * silu(z).
    if (z) {
      load_lanes(z + l0, p.z_dim_stride, lanes, len, s.z);
      for (int64_t i = 0; i < len; ++i) {
        s.dy[i] = s.dout[i] * scan_math::silu<M>(s.z[i]);
        s.y[i] = Dv * s.u[i];
      }
    } else {
      for (int64_t i = 0; i < len; ++i) s.dy[i] = s.dout[i];
    }

    // The block's states, from the state at its start.
    if (saved == nullptr) {
      for (int64_t k = 0; k < n; ++k) s.h0[k] = s.starts[c * n + k];
    } else if (c == 0) {
      for (int64_t k = 0; k < n; ++k) s.h0[k] = V{};
    } else {
      load_states(saved + (row0 * p.n_chunks + c - 1) * n, p.n_chunks * n, n, lanes, s.h0);
    }
    for (int64_t k = 0; k < n; ++k) s.h[k] = s.h0[k];
    if (z) {
      advance_all_states<kN, true, true>(s.h, n, s.A2, s.B, s.C, s.dt, s.dtu, len, s.y,
                                         s.H, bounded);
    } else {
      advance_all_states<kN, false, true>(s.h, n, s.A2, s.B, s.C, s.dt, s.dtu, len,
                                          static_cast<V*>(nullptr), s.H, bounded);
    }

    // Adjoint recurrence, group by group.
    block_gradients<kG>(s, n, len, Dv, p.delta_softplus, bounded, dB_part + l0 * n,
                        dC_part + l0 * n, accD, accBias);
    for (int64_t i = 0; i < len && z; ++i) {
      const V zi = s.z[i];
      s.y[i] = s.dout[i] * s.y[i] *
               scan_math::silu_grad<M>(zi, scan_math::sigmoid<M>(zi));  // dz
    }
    for (int64_t i = len; i % kLanes<acc_t>; ++i) s.du[i] = s.ddt[i] = s.y[i] = V{};
    store_lanes(s.du, du_out + l0, L, lanes, len);
    store_lanes(s.ddt, ddelta_out + l0, L, lanes, len);
    if (z) store_lanes(s.y, dz_out + l0, L, lanes, len);
  }

  store_states(s.dA, n, lanes, static_cast<acc_t*>(part.dA) + row0 * n, n);
  store_states(&accD, 1, lanes, static_cast<acc_t*>(part.dD) + row0, 1);
  store_states(&accBias, 1, lanes, static_cast<acc_t*>(part.dbias) + row0, 1);
}

// ---- routed backward ---------------------------------------------------------------------
//
// The adjoint of the routed forward: the backward tile above with the routed forward's
// reads. Step i of a route reads u from token index[i]'s row and the output gradient
// from the same row of the merged gradient (route_merge) or from the step's own row
// (unmerged: one vector load each), the low-rank delta / B / C rows of the step, and
// forms delta in registers; the block's states restart from the chunk states the routed
// forward kept. Its input gradient is one vector add into token
// index[i]'s row of du (summing the routes in order g = 0, 1, ... for the tile's
// channels). Instead of d delta it returns the gradients of delta's two factors:
//   d delta_weight[d, r] += sum_i d dt_i(d) low_r(i)       (per lane, in registers)
//   d low_r(i)           += sum_d delta_weight[d, r] d dt_i(d)
// the second from the block's d dt moved into one row per channel (a W x kBlock
// transpose) and summed over the tile's channels per step, into the slice's partial rows.

template <typename acc_t>
struct RoutesBwdScratch {
  using V = Vec<acc_t>;
  V *W, *dW;    // (r): delta_weight's lane constants and their gradient
  acc_t* low;   // (r, kBlock): the block's low-rank delta rows
  acc_t* rows;  // (W, kBlock): the block's d dt, one row per lane

  static int64_t bytes(int64_t r) {
    return static_cast<int64_t>(sizeof(V)) * 2 * r +
           static_cast<int64_t>(sizeof(acc_t)) * (r + kLanes<acc_t>) * kBlock;
  }
  MMSSM_INLINE RoutesBwdScratch(void* base, int64_t r) {
    W = static_cast<V*>(base);
    dW = W + r;
    low = reinterpret_cast<acc_t*>(dW + r);
    rows = low + r * kBlock;
  }
};

template <typename acc_t>
MMSSM_INLINE int64_t routes_bwd_offset(int64_t n, int64_t n_blocks) {
  return (BwdScratch<acc_t>::bytes(n, n_blocks) + 63) / 64 * 64;
}

template <typename in_t, int kN>
__attribute__((noinline)) void bwd_routes_item(const SelectiveScanBwdParams& p,
                                               const TileGrid& grid,
                                               const RoutesBwdItem& item,
                                               const RoutesBwdPartials& part,
                                               void* scratch) {
  using acc_t = acc_of<in_t>;
  using V = Vec<acc_t>;
  constexpr int kG = group_size<kN>();
  constexpr int kW = kLanes<acc_t>;
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen, E = grid.per_group, rank = p.delta_rank;
  const int64_t n_blocks = (L + kBlock - 1) / kBlock;
  BwdScratch<acc_t> s(scratch, n, n_blocks);
  RoutesBwdScratch<acc_t> r(static_cast<char*>(scratch) + routes_bwd_offset<acc_t>(n, n_blocks),
                            rank);
  const int64_t b = item.b;
  const in_t* x = static_cast<const in_t*>(p.u) + b * p.u_batch_stride;
  // the merged output's gradient per token (batch, T, E), or the routes' per step
  // (batch, G, L, E) with route_merge false
  const in_t* dout = static_cast<const in_t*>(p.dout) +
                     b * (p.route_merge ? p.tokens : p.n_groups * L) * E;
  in_t* dx = static_cast<in_t*>(p.du) + b * p.tokens * E;
  const acc_t* weight = static_cast<const acc_t*>(p.delta_weight);
  const acc_t* A = static_cast<const acc_t*>(p.A);
  const acc_t* saved = static_cast<const acc_t*>(p.chunk_states);

  for (int64_t g = 0; g < p.n_groups; ++g) {
    const int64_t* route = p.route_index + g * L;
    const RouteInputs<in_t> in(p, b, g);
    const in_t *low = in.low, *B = in.B, *C = in.C;
    const int64_t slab = ((item.slice * p.batch + b) * p.n_groups + g) * L;
    acc_t* dB_part = static_cast<acc_t*>(part.dB) + slab * n;
    acc_t* dC_part = static_cast<acc_t*>(part.dC) + slab * n;
    acc_t* dlow_part = static_cast<acc_t*>(part.dlow) + slab * rank;

    for (int64_t j = item.tile_begin; j < item.tile_end; ++j) {
      const Tile t = grid.at(b, g, j);
      const int64_t e0 = t.d0 - g * E, lanes = t.lanes;
      const int64_t row0 = b * p.dim + t.d0;
      s.sums->count = 0;
      lane_constants(weight, t.d0, lanes, rank, r.W);
      lane_constants(A, t.d0, lanes, n, s.A);
      const bool bounded = lane_constants_log2e(A, t.d0, lanes, n, p.delta_softplus, s.A2);
      V bias, Dv;
      lane_constants(static_cast<const acc_t*>(p.delta_bias), t.d0, lanes, 1, &bias);
      lane_constants(static_cast<const acc_t*>(p.D), t.d0, lanes, 1, &Dv);
      for (int64_t k = 0; k < n; ++k) s.g[k] = s.next_a[k] = s.dA[k] = V{};
      for (int64_t q = 0; q < rank; ++q) r.dW[q] = V{};
      V accD{}, accBias{};

      for (int64_t c = n_blocks - 1; c >= 0; --c) {
        const int64_t l0 = c * kBlock;
        const int64_t len = std::min(kBlock, L - l0);
        const int64_t* index = route + l0;
        if (c > 0) {  // the token rows and partial rows of the block processed next
          const int64_t* prev = index - kBlock;
          prefetch_tokens(x + e0, p.u_token_stride, prev, kBlock, false);
          if (p.route_merge) prefetch_tokens(dout + e0, E, prev, kBlock, false);
          prefetch_tokens(dx + e0, E, prev, kBlock, true);
          for (int64_t q = 0; q < rank; ++q) {
            for (int64_t off = 0; off < kBlock; off += 64 / int64_t(sizeof(acc_t))) {
              __builtin_prefetch(dlow_part + q * L + l0 - kBlock + off, 1);
            }
          }
        }
        for (int64_t i = 0; i < len; ++i) {
          const bool on = index[i] >= 0;
          s.u[i] = on ? load_lane_row(x + index[i] * p.u_token_stride + e0, lanes) : V{};
          // (an unmerged padding step has an output too -- C h, which rows given per
          // step make non-zero -- and so a gradient; a merged one is dropped)
          const int64_t at = p.route_merge ? index[i] : g * L + l0 + i;
          s.dy[i] = on || !p.route_merge ? load_lane_row(dout + at * E + e0, lanes) : V{};
        }
        route_rows(p, low, B, C, index, l0, len, rank, n, r.low, s.B, s.C);
        lowrank_delta(r.W, r.low, rank, len, s.delta);
        time_steps(s.delta, s.u, bias, p.delta_softplus, len, s.dt, s.dtu);

        // The block's states, from the state at its start.
        if (c == 0) {
          for (int64_t k = 0; k < n; ++k) s.h0[k] = V{};
        } else {
          load_states(saved + (row0 * p.n_chunks + c - 1) * n, p.n_chunks * n, n, lanes,
                      s.h0);
        }
        for (int64_t k = 0; k < n; ++k) s.h[k] = s.h0[k];
        advance_all_states<kN, false, true>(s.h, n, s.A2, s.B, s.C, s.dt, s.dtu, len,
                                            static_cast<V*>(nullptr), s.H, bounded);

        block_gradients<kG>(s, n, len, Dv, p.delta_softplus, bounded, dB_part + l0 * n,
                            dC_part + l0 * n, accD, accBias);
        for (int64_t i = 0; i < len; ++i) {
          if (index[i] >= 0) add_lane_row(dx + index[i] * E + e0, lanes, s.du[i]);
        }
        // d dt is zero past len from here on: both sums below may read the whole block.
        for (int64_t i = len; i < kBlock; ++i) s.ddt[i] = V{};
        // d delta_weight, per lane (four independent sums per rank, then added).
        for (int64_t q = 0; q < rank; ++q) {
          const acc_t* row = r.low + q * kBlock;
          V a0{}, a1{}, a2{}, a3{};
          for (int64_t i = 0; i < len; i += 4) {
            a0 += s.ddt[i] * row[i];
            a1 += s.ddt[i + 1] * row[i + 1];
            a2 += s.ddt[i + 2] * row[i + 2];
            a3 += s.ddt[i + 3] * row[i + 3];
          }
          r.dW[q] += (a0 + a1) + (a2 + a3);
        }
        // d low: the block's d dt as rows, summed over the lanes, the block's steps as
        // kBlock / W vectors in registers.
        store_lanes<acc_t>(s.ddt, r.rows, kBlock, kW, kBlock);
        constexpr int kVecs = kBlock / kW;
        for (int64_t q = 0; q < rank; ++q) {
          const acc_t* wq = weight + t.d0 * rank + q;
          V sum[kVecs] = {};
          for (int64_t w = 0; w < lanes; ++w) {
            const acc_t* row = r.rows + w * kBlock;
            const V wv = splat(wq[w * rank]);
#pragma GCC unroll 16
            for (int v = 0; v < kVecs; ++v) sum[v] += load(row + v * kW) * wv;
          }
          acc_t* out = dlow_part + q * L + l0;
#pragma GCC unroll 16
          for (int v = 0; v < kVecs; ++v) {
            const int64_t at = v * kW;
            if (at + kW <= len) {
              store(out + at, load(out + at) + sum[v]);
            } else if (at < len) {  // (no lane access: sum[] can stay in registers)
              const int64_t tail = len - at;
              store_acc_partial(out + at, tail, load_acc_partial(out + at, tail) + sum[v]);
            }
          }
        }
      }

      store_states(s.dA, n, lanes, static_cast<acc_t*>(part.dA) + row0 * n, n);
      store_states(&accD, 1, lanes, static_cast<acc_t*>(part.dD) + row0, 1);
      store_states(&accBias, 1, lanes, static_cast<acc_t*>(part.dbias) + row0, 1);
      store_states(r.dW, rank, lanes, static_cast<acc_t*>(part.dweight) + row0 * rank,
                   rank);
    }
  }
}

// ---- entry points -----------------------------------------------------------------------

// Calls Kernel<in_t, kN>::run(args...) for the input dtype of p and N = 1, 16 or other.
template <template <typename, int> class Kernel, typename... Args>
MMSSM_INLINE void dispatch_dtype_n(const SelectiveScanFwdParams& p, Args&&... args) {
  auto with_n = [&](auto in_tag) MMSSM_LAMBDA_INLINE {
    using in_t = decltype(in_tag);
    switch (p.dstate) {
      case 1: Kernel<in_t, 1>::run(args...); break;
      case 16: Kernel<in_t, 16>::run(args...); break;
      default: Kernel<in_t, 0>::run(args...); break;
    }
  };
  switch (p.input_type) {
    case ScanDType::kFloat32: with_n(float{}); break;
    case ScanDType::kFloat16: with_n(half_bits{}); break;
    case ScanDType::kBFloat16: with_n(bf16_bits{}); break;
    case ScanDType::kFloat64:
      // fp64 always runs the generic build (kernels_for); not compiled elsewhere.
      if constexpr (MMSSM_CPU_ISA_LEVEL == 0) with_n(double{});
      break;
  }
}

template <typename in_t, int kN>
struct FwdTile {
  static MMSSM_INLINE void run(const SelectiveScanFwdParams& p, const Tile& t, void* s) {
    fwd_tile<in_t, kN>(p, t, s);
  }
};

template <typename in_t, int kN>
struct BwdItemTiles {
  static MMSSM_INLINE void run(const SelectiveScanBwdParams& p, const BwdItem& item,
                               const TileGrid& grid, const BwdPartials& part,
                               int64_t slices, void* scratch) {
    using acc_t = acc_of<in_t>;
    const int64_t n = p.dstate, L = p.seqlen;
    const int64_t slab = ((item.slice * p.batch + item.b) * p.n_groups + item.g) * L * n;
    // (With one slice and N == 1 the driver points part.dB / dC at dB / dC themselves:
    // their (N, L) layout is then the (L, N) one.)
    (void)slices;
    acc_t* dB = static_cast<acc_t*>(part.dB) + slab;
    acc_t* dC = static_cast<acc_t*>(part.dC) + slab;
    for (int64_t j = item.tile_begin; j < item.tile_end; ++j) {
      bwd_tile<in_t, kN>(p, grid.at(item.b, item.g, j), dB, dC, part, scratch);
    }
  }
};

template <typename in_t, int kN>
struct FwdRoutesItem {
  static MMSSM_INLINE void run(const SelectiveScanFwdParams& p, const TileGrid& grid,
                               int64_t b, int64_t first, int64_t count, void* scratch) {
    if constexpr (std::is_same<in_t, float>::value || std::is_same<in_t, double>::value) {
      fwd_routes_item<in_t, kN>(p, grid, b, first, count, scratch);
    }
  }
};

template <typename in_t, int kN>
struct BwdRoutesItem {
  static MMSSM_INLINE void run(const SelectiveScanBwdParams& p, const TileGrid& grid,
                               const RoutesBwdItem& item, const RoutesBwdPartials& part,
                               void* scratch) {
    if constexpr (std::is_same<in_t, float>::value || std::is_same<in_t, double>::value) {
      bwd_routes_item<in_t, kN>(p, grid, item, part, scratch);
    }
  }
};

inline int64_t tile_width(const SelectiveScanFwdParams& p) {
  return p.input_type == ScanDType::kFloat64 ? kLanes<double> : kLanes<float>;
}

template <typename acc_t>
MMSSM_INLINE int64_t fwd_bytes(const SelectiveScanFwdParams& p) {
  const int64_t rank = p.delta_lowrank ? p.delta_rank : 0;
  const int64_t bytes = FwdScratch<acc_t>::bytes(p.dstate, rank);
  if (!p.route_index) return bytes;
  // a routed item's tiles after the first: A2, h (n each) and W (r) per tile
  return bytes + static_cast<int64_t>(sizeof(Vec<acc_t>)) * (kRouteItemTiles - 1) *
                     (2 * p.dstate + rank);
}

inline int64_t fwd_scratch_bytes(const SelectiveScanFwdParams& p) {
  return p.input_type == ScanDType::kFloat64 ? fwd_bytes<double>(p) : fwd_bytes<float>(p);
}

inline int64_t bwd_scratch_bytes(const SelectiveScanBwdParams& p) {
  const int64_t n_blocks = (p.seqlen + kBlock - 1) / kBlock;
  return p.input_type == ScanDType::kFloat64 ? BwdScratch<double>::bytes(p.dstate, n_blocks)
                                             : BwdScratch<float>::bytes(p.dstate, n_blocks);
}

template <typename acc_t>
MMSSM_INLINE int64_t bwd_routes_bytes(const SelectiveScanBwdParams& p) {
  const int64_t n_blocks = (p.seqlen + kBlock - 1) / kBlock;
  return routes_bwd_offset<acc_t>(p.dstate, n_blocks) +
         RoutesBwdScratch<acc_t>::bytes(p.delta_rank);
}

inline int64_t bwd_routes_scratch_bytes(const SelectiveScanBwdParams& p) {
  return p.input_type == ScanDType::kFloat64 ? bwd_routes_bytes<double>(p)
                                             : bwd_routes_bytes<float>(p);
}

inline void bwd_routes_entry(const SelectiveScanBwdParams& p, const TileGrid& grid,
                             const RoutesBwdItem& item, const RoutesBwdPartials& part,
                             void* scratch) {
  dispatch_dtype_n<BwdRoutesItem>(p, p, grid, item, part, scratch);
}

inline void fwd_tile_entry(const SelectiveScanFwdParams& p, const Tile& t, void* scratch) {
  dispatch_dtype_n<FwdTile>(p, p, t, scratch);
}

inline void fwd_routes_entry(const SelectiveScanFwdParams& p, const TileGrid& grid,
                             int64_t b, int64_t first, int64_t count, void* scratch) {
  dispatch_dtype_n<FwdRoutesItem>(p, p, grid, b, first, count, scratch);
}

inline void bwd_item_entry(const SelectiveScanBwdParams& p, const BwdItem& item,
                           const TileGrid& grid, const BwdPartials& part, int64_t slices,
                           void* scratch) {
  dispatch_dtype_n<BwdItemTiles>(p, p, item, grid, part, slices, scratch);
}

}  // namespace MMSSM_CPU_ISA_NS
}  // namespace cpu
}  // namespace mmssm

// Defines this instruction set's kernel table (once per scan_cpu_kernels_*.cpp).
#define MMSSM_DEFINE_CPU_KERNELS                                                   \
  namespace mmssm {                                                               \
  namespace cpu {                                                                 \
  namespace MMSSM_CPU_ISA_NS {                                                    \
  const Kernels kernels = {tile_width,       fwd_scratch_bytes,                     \
                           bwd_scratch_bytes, fwd_tile_entry,                        \
                           bwd_item_entry,   route_conv_scratch_bytes,               \
                           route_conv_rows,  route_merge_scratch_bytes,              \
                           route_merge_rows, fwd_routes_entry,                       \
                           bwd_routes_scratch_bytes, bwd_routes_entry,               \
                           rms_norm_rows,    activation_range};                      \
  }                                                                               \
  }                                                                               \
  }
