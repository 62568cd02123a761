// CPU selective scan, backward (design notes at the top of scan_cpu_fwd.cpp).
//
// Per row the blocks are visited from the last to the first. Each block restarts the
// forward recurrence from the state at its start (the forward's chunk states, or a
// first recurrence-only pass when they are not given), keeps the block's states in
// scratch, and then runs the adjoint recurrence
//     g_l = C_l dy_l + a_{l+1} g_{l+1}
// backwards through the block; all gradient terms are element-wise in g, h and the
// inputs (shared/specs/selective_scan.md §1.2), so they are SIMD loops.
//
// dB / dC sum over the channels of a group. Work items are (batch, group, channel
// slice); each slice accumulates into its own (L, N) partial rows, which are summed in
// a fixed order at the end: no atomics, no races, and the slice count depends on the
// shapes only, so every gradient is bit-identical for any thread count. dA / dD /
// d delta_bias are reduced over the batch in a fixed order as well.
#include "scan_cpu_common.h"

namespace mmssm {
namespace cpu {

struct BwdItem {
  int64_t b, g, slice, d_begin, d_end;
};

struct BwdPartials {
  void* dB;     // (slices, batch, G, L, N) acc_t, or dB itself (1 slice, N == 1)
  void* dC;
  void* dA;     // (batch, dim, N)
  void* dD;     // (batch, dim)
  void* dbias;  // (batch, dim)
};

template <typename in_t>
struct GradRows {
  const in_t* dout;
  in_t* du;
  in_t* ddelta;
  in_t* dz;  // null without gate
};

template <typename in_t, typename acc_t>
MMSSM_INLINE GradRows<in_t> grad_rows(const SelectiveScanBwdParams& p, int64_t b,
                                      int64_t d) {
  const int64_t row = b * p.dim + d, L = p.seqlen;
  GradRows<in_t> r;
  r.dout = static_cast<const in_t*>(p.dout) + b * p.dout_batch_stride + d * p.dout_dim_stride;
  r.du = static_cast<in_t*>(p.du) + row * L;
  r.ddelta = static_cast<in_t*>(p.ddelta) + row * L;
  r.dz = p.z ? static_cast<in_t*>(p.dz) + row * L : nullptr;
  return r;
}

// Incoming gradient of y (before the gate) and, with a gate, dz:
//   out = y * silu(z):  dy = dout * silu(z),  dz = dout * y * sig(z) (1 + z (1 - sig(z))).
// `y` holds sum_s C h on entry (only read with a gate).
template <typename in_t, typename acc_t>
MMSSM_INLINE void output_grad(const Row<in_t, acc_t>& x, const GradRows<in_t>& gr,
                              int64_t l0, int64_t len, const acc_t* u, const acc_t* y,
                              acc_t* dy, acc_t* accD) {
  const in_t* dout = gr.dout + l0;
  if (x.z) {
    const in_t* z = x.z + l0;
    in_t* dz = gr.dz + l0;
    const acc_t Dv = x.D;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t zi = to_acc<acc_t>(z[i]);
      const acc_t sig = sigmoid(zi);
      const acc_t go = to_acc<acc_t>(dout[i]);
      const acc_t yi = y[i] + Dv * u[i];
      dz[i] = Store<in_t>::from(go * yi * sig * (acc_t(1) + zi * (acc_t(1) - sig)));
      const acc_t dyi = go * zi * sig;
      dy[i] = dyi;
      accD[i] += dyi * u[i];
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t dyi = to_acc<acc_t>(dout[i]);
      dy[i] = dyi;
      accD[i] += dyi * u[i];
    }
  }
}

// ---------------------------------------------------------------------------------------
// N == 1: channels [d0, d0 + rows) of batch b, all in one group (rows <= kTileRows).
// dB_row / dC_row: the slice's (L) partial rows.

template <typename in_t, typename acc_t, bool kSoftplus>
MMSSM_KERNEL void bwd_tile_n1(const SelectiveScanBwdParams& p, int64_t b, int64_t d0,
                              int64_t rows, acc_t* dB_row, acc_t* dC_row,
                              const BwdPartials& part, acc_t* scratch) {
  constexpr int64_t R = kTileRows, T = kBlock, S = kBlock + 1;
  const int64_t L = p.seqlen;
  const int64_t n_blocks = (L + T - 1) / T;
  acc_t* u = scratch;                  // (R, T)
  acc_t* dt_raw = u + R * T;           // (R, T)
  acc_t* dt = dt_raw + R * T;          // (R, T)
  acc_t* decay = dt + R * T;           // (R, T)
  acc_t* drive = decay + R * T;        // (R, T)
  acc_t* dy = drive + R * T;           // (R, T)
  acc_t* adj = dy + R * T;             // (R, T) adjoint g
  acc_t* accD = adj + R * T;           // (R, T) running sums over blocks
  acc_t* accA = accD + R * T;          // (R, T)
  acc_t* accBias = accA + R * T;       // (R, T)
  acc_t* states = accBias + R * T;     // (R, T + 1): h_{-1} (block start), h_0 .. h_{T-1}
  acc_t* Bv = states + R * S;          // (T)
  acc_t* Cv = Bv + T;                  // (T)
  acc_t* starts = Cv + T;              // (R, n_blocks)

  Row<in_t, acc_t> rr[R];
  GradRows<in_t> gg[R];
  for (int64_t r = 0; r < rows; ++r) {
    rr[r] = make_row<in_t, acc_t>(p, b, d0 + r);
    gg[r] = grad_rows<in_t, acc_t>(p, b, d0 + r);
  }
  // Missing rows of a partial tile: zero recurrence, zero incoming gradient.
  std::fill(decay, decay + 2 * R * T, acc_t(0));  // decay and drive
  std::fill(dy, dy + R * T, acc_t(0));
  std::fill(accD, accD + 3 * R * T, acc_t(0));    // accD, accA, accBias
  const Row<in_t, acc_t> first = make_row<in_t, acc_t>(p, b, d0);  // the tile's group
  const in_t* B_row = first.B;
  const in_t* C_row = first.C;

  auto inputs = [&](int64_t l0, int64_t len) MMSSM_LAMBDA_INLINE {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) Bv[i] = to_acc<acc_t>(B_row[l0 + i]);
    for (int64_t r = 0; r < rows; ++r) {
      const Row<in_t, acc_t>& x = rr[r];
      const in_t* us = x.u + l0;
      const in_t* ds = x.delta + l0;
      acc_t *ur = u + r * T, *rawr = dt_raw + r * T, *dtr = dt + r * T;
      acc_t *ar = decay + r * T, *br = drive + r * T;
      const acc_t a0 = x.A[0], bias = x.bias;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t ui = to_acc<acc_t>(us[i]);
        const acc_t raw = to_acc<acc_t>(ds[i]) + bias;
        const acc_t d = time_step<kSoftplus>(raw);
        ur[i] = ui;
        rawr[i] = raw;
        dtr[i] = d;
        ar[i] = fast_exp(d * a0);
        br[i] = d * ui * Bv[i];
      }
    }
  };

  // State at the start of every block.
  acc_t h[R];
  if (p.chunk_states) {
    const acc_t* saved = static_cast<const acc_t*>(p.chunk_states);
    for (int64_t r = 0; r < rows; ++r) {
      starts[r * n_blocks] = 0;
      for (int64_t c = 1; c < n_blocks; ++c) {
        starts[r * n_blocks + c] = saved[rr[r].index * p.n_chunks + c - 1];
      }
    }
  } else {
    for (int64_t r = 0; r < R; ++r) h[r] = 0;
    for (int64_t c = 0; c < n_blocks; ++c) {
      for (int64_t r = 0; r < rows; ++r) starts[r * n_blocks + c] = h[r];
      if (c + 1 == n_blocks) break;
      inputs(c * T, T);
      for (int64_t i = 0; i < T; ++i) {
#pragma GCC unroll 8
        for (int64_t r = 0; r < R; ++r) h[r] = decay[r * T + i] * h[r] + drive[r * T + i];
      }
    }
  }

  acc_t g[R], next_a[R];
  for (int64_t r = 0; r < R; ++r) g[r] = next_a[r] = 0;
  for (int64_t c = n_blocks - 1; c >= 0; --c) {
    const int64_t l0 = c * T;
    const int64_t len = std::min(T, L - l0);
    if (c > 0) {  // the block processed next
      for (int64_t r = 0; r < rows; ++r) {
        prefetch(rr[r].u + l0 - T, T);
        prefetch(rr[r].delta + l0 - T, T);
        prefetch(gg[r].dout + l0 - T, T);
        if (rr[r].z) prefetch(rr[r].z + l0 - T, T);
      }
      prefetch(B_row + l0 - T, T);
      prefetch(C_row + l0 - T, T);
    }
    inputs(l0, len);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) Cv[i] = to_acc<acc_t>(C_row[l0 + i]);

    // Forward recurrence over the block, from the saved start state.
    for (int64_t r = 0; r < R; ++r) {
      h[r] = r < rows ? starts[r * n_blocks + c] : acc_t(0);
      states[r * S] = h[r];
    }
    for (int64_t i = 0; i < len; ++i) {
#pragma GCC unroll 8
      for (int64_t r = 0; r < R; ++r) {
        h[r] = decay[r * T + i] * h[r] + drive[r * T + i];
        states[r * S + 1 + i] = h[r];
      }
    }

    // dy (and dz) per row; adj is free here and holds C h for the gate.
    for (int64_t r = 0; r < rows; ++r) {
      acc_t* yr = adj + r * T;
      const acc_t* hr = states + r * S + 1;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) yr[i] = Cv[i] * hr[i];
      output_grad(rr[r], gg[r], l0, len, u + r * T, yr, dy + r * T, accD + r * T);
    }

    // Adjoint recurrence, backwards through the block.
    for (int64_t i = len - 1; i >= 0; --i) {
      const acc_t ci = Cv[i];
#pragma GCC unroll 8
      for (int64_t r = 0; r < R; ++r) {
        g[r] = next_a[r] * g[r] + ci * dy[r * T + i];
        adj[r * T + i] = g[r];
        next_a[r] = decay[r * T + i];
      }
    }

    // Element-wise gradient terms.
    acc_t* dBb = dB_row + l0;
    acc_t* dCb = dC_row + l0;
    for (int64_t r = 0; r < rows; ++r) {
      const Row<in_t, acc_t>& x = rr[r];
      const acc_t a0 = x.A[0], Dv = x.D;
      const acc_t *ur = u + r * T, *rawr = dt_raw + r * T, *dtr = dt + r * T;
      const acc_t *ar = decay + r * T, *dyr = dy + r * T, *gr = adj + r * T;
      const acc_t* hr = states + r * S;
      acc_t *aA = accA + r * T, *aBias = accBias + r * T;
      in_t* du = gg[r].du + l0;
      in_t* ddelta = gg[r].ddelta + l0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t gi = gr[i], dti = dtr[i], ui = ur[i], bi = Bv[i];
        const acc_t ahp = ar[i] * hr[i];  // a_i h_{i-1}
        const acc_t ddt = time_step_grad<kSoftplus>(gi * (bi * ui + a0 * ahp), rawr[i]);
        du[i] = Store<in_t>::from(Dv * dyr[i] + dti * gi * bi);
        ddelta[i] = Store<in_t>::from(ddt);
        aA[i] += gi * dti * ahp;
        aBias[i] += ddt;
        dBb[i] += gi * dti * ui;
        dCb[i] += dyr[i] * hr[i + 1];
      }
    }
  }

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t index = rr[r].index;
    static_cast<acc_t*>(part.dA)[index] = sum_array(accA + r * T, T);
    static_cast<acc_t*>(part.dD)[index] = sum_array(accD + r * T, T);
    static_cast<acc_t*>(part.dbias)[index] = sum_array(accBias + r * T, T);
  }
}

// ---------------------------------------------------------------------------------------
// N > 1 (kN: compile-time N, 0 = runtime): channel d of batch b. dB_part / dC_part: the
// slice's (L, N) time-major partial rows.

template <typename in_t, typename acc_t, int kN, bool kSoftplus>
MMSSM_KERNEL void bwd_channel(const SelectiveScanBwdParams& p, int64_t b, int64_t d,
                              acc_t* dB_part, acc_t* dC_part, const BwdPartials& part,
                              acc_t* scratch) {
  constexpr int64_t T = kBlock;
  constexpr int64_t kLocal = kN > 0 ? kN : 1;
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen;
  const int64_t n_blocks = (L + T - 1) / T;
  acc_t* u = scratch;                // (T)
  acc_t* dt_raw = u + T;             // (T)
  acc_t* dt = dt_raw + T;            // (T)
  acc_t* dtu = dt + T;               // (T)
  acc_t* dy = dtu + T;               // (T)
  acc_t* y = dy + T;                 // (T)
  acc_t* du_sum = y + T;             // (T)
  acc_t* ddt_sum = du_sum + T;       // (T)
  acc_t* accD = ddt_sum + T;         // (T)
  acc_t* accBias = accD + T;         // (T)
  acc_t* Bt = accBias + T;           // (T, n)
  acc_t* Ct = Bt + T * n;            // (T, n)
  acc_t* decay = Ct + T * n;         // (T, n)
  acc_t* drive = decay + T * n;      // (T, n)
  acc_t* P1 = drive + T * n;         // (T, n) per-state terms summed over s
  acc_t* P2 = P1 + T * n;            // (T, n)
  acc_t* states = P2 + T * n;        // (T + 1, n): block start, h_0 .. h_{T-1}
  acc_t* starts = states + (T + 1) * n;  // (n_blocks, n)
  acc_t* rt = starts + n_blocks * n;     // 5 runtime-N vectors

  const Row<in_t, acc_t> x = make_row<in_t, acc_t>(p, b, d);
  const GradRows<in_t> gr = grad_rows<in_t, acc_t>(p, b, d);
  acc_t h_l[kLocal], g_l[kLocal], an_l[kLocal], dA_l[kLocal], A_l[kLocal];
  acc_t* h = kN > 0 ? h_l : rt;
  acc_t* g = kN > 0 ? g_l : rt + n;
  acc_t* next_a = kN > 0 ? an_l : rt + 2 * n;
  acc_t* dA = kN > 0 ? dA_l : rt + 3 * n;
  acc_t* A = kN > 0 ? A_l : rt + 4 * n;
  for (int64_t s = 0; s < n; ++s) {
    A[s] = x.A[s];
    h[s] = g[s] = next_a[s] = dA[s] = 0;
  }
  std::fill(accD, accD + 2 * T, acc_t(0));  // accD, accBias

  auto inputs = [&](int64_t l0, int64_t len) MMSSM_LAMBDA_INLINE {
    const in_t* us = x.u + l0;
    const in_t* ds = x.delta + l0;
    const acc_t bias = x.bias;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t ui = to_acc<acc_t>(us[i]);
      const acc_t raw = to_acc<acc_t>(ds[i]) + bias;
      const acc_t dd = time_step<kSoftplus>(raw);
      u[i] = ui;
      dt_raw[i] = raw;
      dt[i] = dd;
      dtu[i] = dd * ui;
    }
    load_transposed(x.B + l0, p.B_dstate_stride, Bt, len, n);
    for (int64_t i = 0; i < len; ++i) {
      const acc_t dti = dt[i], dtui = dtu[i];
      acc_t* a = decay + i * n;
      acc_t* bu = drive + i * n;
      const acc_t* bt = Bt + i * n;
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) {
        a[s] = fast_exp(dti * A[s]);
        bu[s] = dtui * bt[s];
      }
    }
  };

  // State at the start of every block.
  if (p.chunk_states) {
    const acc_t* saved = static_cast<const acc_t*>(p.chunk_states) + x.index * p.n_chunks * n;
    std::fill(starts, starts + n, acc_t(0));
    if (n_blocks > 1) std::memcpy(starts + n, saved, sizeof(acc_t) * (n_blocks - 1) * n);
  } else {
    for (int64_t c = 0; c < n_blocks; ++c) {
      for (int64_t s = 0; s < n; ++s) starts[c * n + s] = h[s];
      if (c + 1 == n_blocks) break;
      inputs(c * T, T);
      for (int64_t i = 0; i < T; ++i) {
        const acc_t* a = decay + i * n;
        const acc_t* bu = drive + i * n;
#pragma omp simd
        for (int64_t s = 0; s < n; ++s) h[s] = a[s] * h[s] + bu[s];
      }
    }
  }

  for (int64_t c = n_blocks - 1; c >= 0; --c) {
    const int64_t l0 = c * T;
    const int64_t len = std::min(T, L - l0);
    if (c > 0) {  // the block processed next
      prefetch(x.u + l0 - T, T);
      prefetch(x.delta + l0 - T, T);
      prefetch(gr.dout + l0 - T, T);
      if (x.z) prefetch(x.z + l0 - T, T);
    }
    inputs(l0, len);
    load_transposed(x.C + l0, p.C_dstate_stride, Ct, len, n);

    for (int64_t s = 0; s < n; ++s) h[s] = states[s] = starts[c * n + s];
    for (int64_t i = 0; i < len; ++i) {
      const acc_t* a = decay + i * n;
      const acc_t* bu = drive + i * n;
      acc_t* hs = states + (i + 1) * n;
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) {
        const acc_t v = a[s] * h[s] + bu[s];
        h[s] = v;
        hs[s] = v;
      }
    }
    if (x.z) {  // y = sum_s C h, needed for dz
#pragma omp simd
      for (int64_t k = 0; k < len * n; ++k) P1[k] = Ct[k] * states[n + k];
      sum_rows(P1, y, len, n);
    }
    output_grad(x, gr, l0, len, u, y, dy, accD);

    acc_t* dBb = dB_part + l0 * n;
    acc_t* dCb = dC_part + l0 * n;
    for (int64_t i = len - 1; i >= 0; --i) {
      const acc_t* a = decay + i * n;
      const acc_t* bt = Bt + i * n;
      const acc_t* ct = Ct + i * n;
      const acc_t* hp = states + i * n;
      const acc_t* hs = states + (i + 1) * n;
      acc_t* p1 = P1 + i * n;
      acc_t* p2 = P2 + i * n;
      acc_t* dBi = dBb + i * n;
      acc_t* dCi = dCb + i * n;
      const acc_t dyi = dy[i], ui = u[i], dti = dt[i], dtui = dtu[i];
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) {
        const acc_t gs = next_a[s] * g[s] + ct[s] * dyi;
        g[s] = gs;
        next_a[s] = a[s];
        const acc_t ahp = a[s] * hp[s];  // a_i h_{i-1}
        p1[s] = gs * bt[s];
        p2[s] = gs * (bt[s] * ui + A[s] * ahp);
        dA[s] += gs * dti * ahp;
        dBi[s] += gs * dtui;
        dCi[s] += dyi * hs[s];
      }
    }
    sum_rows(P1, du_sum, len, n);
    sum_rows(P2, ddt_sum, len, n);

    in_t* du = gr.du + l0;
    in_t* ddelta = gr.ddelta + l0;
    const acc_t Dv = x.D;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t ddt = time_step_grad<kSoftplus>(ddt_sum[i], dt_raw[i]);
      du[i] = Store<in_t>::from(Dv * dy[i] + dt[i] * du_sum[i]);
      ddelta[i] = Store<in_t>::from(ddt);
      accBias[i] += ddt;
    }
  }

  acc_t* dA_out = static_cast<acc_t*>(part.dA) + x.index * n;
  for (int64_t s = 0; s < n; ++s) dA_out[s] = dA[s];
  static_cast<acc_t*>(part.dD)[x.index] = sum_array(accD, T);
  static_cast<acc_t*>(part.dbias)[x.index] = sum_array(accBias, T);
}

inline int64_t bwd_scratch_elems(int64_t n, int64_t seqlen) {
  const int64_t n_blocks = (seqlen + kBlock - 1) / kBlock;
  const int64_t R = kTileRows;
  const int64_t tile = 10 * R * kBlock + R * (kBlock + 1) + 2 * kBlock + R * n_blocks;
  const int64_t row = 10 * kBlock + 6 * kBlock * n + (kBlock + 1) * n + n_blocks * n + 5 * n;
  return std::max(tile, row);
}

// ---------------------------------------------------------------------------------------
// One work item; dispatch over N.

template <typename in_t, typename acc_t, bool kSoftplus>
MMSSM_INLINE void bwd_item(const SelectiveScanBwdParams& p, const BwdItem& item,
                           const BwdPartials& part, acc_t* scratch) {
  const int64_t n = p.dstate, L = p.seqlen;
  const int64_t slab = ((item.slice * p.batch + item.b) * p.n_groups + item.g) * L * n;
  acc_t* dB = static_cast<acc_t*>(part.dB) + slab;
  acc_t* dC = static_cast<acc_t*>(part.dC) + slab;
  switch (n) {
    case 1:
      for (int64_t d = item.d_begin; d < item.d_end; d += kTileRows) {
        bwd_tile_n1<in_t, acc_t, kSoftplus>(p, item.b, d, std::min(kTileRows, item.d_end - d),
                                            dB, dC, part, scratch);
      }
      break;
    case 16:
      for (int64_t d = item.d_begin; d < item.d_end; ++d) {
        bwd_channel<in_t, acc_t, 16, kSoftplus>(p, item.b, d, dB, dC, part, scratch);
      }
      break;
    default:
      for (int64_t d = item.d_begin; d < item.d_end; ++d) {
        bwd_channel<in_t, acc_t, 0, kSoftplus>(p, item.b, d, dB, dC, part, scratch);
      }
      break;
  }
}

template <typename in_t, typename acc_t>
MMSSM_INLINE void bwd_item_typed(const SelectiveScanBwdParams& p, const BwdItem& item,
                                 const BwdPartials& part, void* scratch) {
  acc_t* s = static_cast<acc_t*>(scratch);
  if (p.delta_softplus) {
    bwd_item<in_t, acc_t, true>(p, item, part, s);
  } else {
    bwd_item<in_t, acc_t, false>(p, item, part, s);
  }
}

void bwd_item_dispatch(const SelectiveScanBwdParams& p, const BwdItem& item,
                       const BwdPartials& part, void* scratch) {
  switch (p.input_type) {
    case ScanDType::kFloat32: bwd_item_typed<float, float>(p, item, part, scratch); break;
    case ScanDType::kFloat16: bwd_item_typed<half_bits, float>(p, item, part, scratch); break;
    case ScanDType::kBFloat16: bwd_item_typed<bf16_bits, float>(p, item, part, scratch); break;
    case ScanDType::kFloat64: break;
  }
}

void bwd_item_f64(const SelectiveScanBwdParams& p, const BwdItem& item,
                  const BwdPartials& part, void* scratch) {
  bwd_item_typed<double, double>(p, item, part, scratch);
}

// Fixed-order sums of the partials into the (zero-initialised) outputs.
template <typename acc_t>
void reduce_partials(const SelectiveScanBwdParams& p, const BwdPartials& part,
                     int64_t slices, bool in_place) {
  const int64_t batch = p.batch, dim = p.dim, n = p.dstate, L = p.seqlen;
  const acc_t* dA_p = static_cast<const acc_t*>(part.dA);
  const acc_t* dD_p = static_cast<const acc_t*>(part.dD);
  const acc_t* db_p = static_cast<const acc_t*>(part.dbias);
  acc_t* dA = static_cast<acc_t*>(p.dA);
  acc_t* dD = static_cast<acc_t*>(p.dD);
  acc_t* db = static_cast<acc_t*>(p.ddelta_bias);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < dim * n; ++i) dA[i] += dA_p[b * dim * n + i];
    for (int64_t d = 0; d < dim && dD; ++d) dD[d] += dD_p[b * dim + d];
    for (int64_t d = 0; d < dim && db; ++d) db[d] += db_p[b * dim + d];
  }
  if (in_place) return;
  const int64_t rows = batch * p.n_groups;
  const int64_t slab = rows * L * n;
  const acc_t* dB_p = static_cast<const acc_t*>(part.dB);
  const acc_t* dC_p = static_cast<const acc_t*>(part.dC);
  acc_t* dB = static_cast<acc_t*>(p.dB);
  acc_t* dC = static_cast<acc_t*>(p.dC);
  const int threads = thread_count(p.num_threads, rows, rows * L * n);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t s = 0; s < slices; ++s) {
      const acc_t* srcB = dB_p + s * slab + r * L * n;
      const acc_t* srcC = dC_p + s * slab + r * L * n;
      for (int64_t st = 0; st < n; ++st) {
        acc_t* outB = dB + (r * n + st) * L;
        acc_t* outC = dC + (r * n + st) * L;
        for (int64_t l = 0; l < L; ++l) {
          outB[l] += srcB[l * n + st];
          outC[l] += srcC[l * n + st];
        }
      }
    }
  }
}

}  // namespace cpu

void selective_scan_bwd_cpu(const SelectiveScanBwdParams& p) {
  using namespace cpu;
  check_common(p);
  const int64_t batch = p.batch, dim = p.dim, G = p.n_groups, n = p.dstate;
  const int64_t L = p.seqlen;
  if (batch * dim == 0) return;
  const int64_t elem = acc_size(p.input_type);
  const int64_t dim_per_group = dim / G;

  // Channel slices per (batch, group): enough work items to keep many cores busy while
  // the per-slice dB / dC partials stay within a memory budget; slices hold whole N == 1
  // tiles. Depends on the shapes only (determinism).
  const int64_t kTargetItems = 128;
  const int64_t kPartialBudget = int64_t(64) << 20;  // bytes
  const int64_t slab_bytes = std::max<int64_t>(1, 2 * batch * G * L * n * elem);
  int64_t slices = std::max<int64_t>(1, (kTargetItems + batch * G - 1) / (batch * G));
  slices = std::min(slices, std::max<int64_t>(1, kPartialBudget / slab_bytes));
  slices = std::min(slices, dim_per_group);
  int64_t per_slice = (dim_per_group + slices - 1) / slices;
  if (dim_per_group >= kTileRows) {
    per_slice = (per_slice + kTileRows - 1) / kTileRows * kTileRows;
  }
  slices = (dim_per_group + per_slice - 1) / per_slice;

  // One slice and N == 1: the (L, N) partial layout is dB's (N, L) layout, so the items
  // accumulate into dB / dC directly (the caller zero-initialised them).
  const bool in_place = slices == 1 && n == 1;
  const size_t slab_elems = static_cast<size_t>(slices * batch * G * L * n);
  std::vector<double> dB_buf(in_place ? 0 : slab_elems * elem / 8 + 1);
  std::vector<double> dC_buf(in_place ? 0 : slab_elems * elem / 8 + 1);
  std::vector<double> small_buf(static_cast<size_t>(batch * dim * (n + 2) * elem / 8 + 1));
  char* small = reinterpret_cast<char*>(small_buf.data());
  BwdPartials part;
  part.dB = in_place ? p.dB : static_cast<void*>(dB_buf.data());
  part.dC = in_place ? p.dC : static_cast<void*>(dC_buf.data());
  part.dA = small;
  part.dD = small + batch * dim * n * elem;
  part.dbias = small + batch * dim * (n + 1) * elem;
  if (!in_place) {
    std::memset(dB_buf.data(), 0, slab_elems * elem);
    std::memset(dC_buf.data(), 0, slab_elems * elem);
  }

  std::vector<BwdItem> items;
  items.reserve(static_cast<size_t>(batch * G * slices));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t d0 = g * dim_per_group + s * per_slice;
        const int64_t d1 = std::min(d0 + per_slice, (g + 1) * dim_per_group);
        items.push_back({b, g, s, d0, d1});
      }
    }
  }
  const int64_t n_items = static_cast<int64_t>(items.size());
  const int threads = thread_count(p.num_threads, n_items, batch * dim * L * n);
  const int64_t per_thread = (bwd_scratch_elems(n, L) + 64) * elem;  // bytes
  std::vector<double> scratch(static_cast<size_t>(threads * per_thread / 8 + 1));
  char* base = reinterpret_cast<char*>(scratch.data());

#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    void* mine = base + tid * per_thread;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t i = 0; i < n_items; ++i) {
      if (p.input_type == ScanDType::kFloat64) {
        bwd_item_f64(p, items[i], part, mine);
      } else {
        bwd_item_dispatch(p, items[i], part, mine);
      }
    }
  }

  if (p.input_type == ScanDType::kFloat64) {
    reduce_partials<double>(p, part, slices, in_place);
  } else {
    reduce_partials<float>(p, part, slices, in_place);
  }
}

}  // namespace mmssm
