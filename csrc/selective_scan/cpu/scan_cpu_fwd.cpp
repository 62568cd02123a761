// CPU selective scan, forward. Torch-free; OpenMP over (batch, channel) rows.
//
// Design
// - A row (b, d) is scanned over L in blocks of kBlock steps. Within a block, every
//   per-step quantity that does not depend on the state (dtype conversion, dt and its
//   softplus, exp(dt * A), dt * B * u, the readout, D * u, the gate) is computed by SIMD
//   loops over the block; only the recurrence h = a * h + b is sequential in time.
// - N == 1 (VMamba family): kTileRows rows are scanned together, their recurrences
//   interleaved in one loop so the FMA latency of one chain hides behind the others.
// - N > 1: the recurrence is vectorised over the state axis (time-major (step, state)
//   block layout); y = sum_s C h is formed by a pairwise tree over the block afterwards,
//   never by a per-step horizontal add.
// - The state after every block is stored in `chunk_states` (if given) so that the
//   backward can restart at any block without re-running the scan from l = 0.
// - No reductions depend on the thread count: results are bit-identical for any number
//   of threads (and deterministic run to run).
// - The row kernels are multiversioned for x86-64 / x86-64-v3 / x86-64-v4 (MMSSM_KERNEL in
//   scan_cpu_common.h), the math helpers (cpu_math.h) are branch-free so they vectorise,
//   and the next block of every input stream is prefetched.
#include "scan_cpu_common.h"

namespace mmssm {
namespace cpu {

// Readout of one row's block: out = (y + D u) * silu(z), y given.
template <typename in_t, typename acc_t>
MMSSM_INLINE void store_output(const Row<in_t, acc_t>& r, int64_t l0, int64_t len,
                               const acc_t* y, const acc_t* u, in_t* out) {
  const acc_t Dv = r.D;
  if (r.z) {
    const in_t* z = r.z + l0;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t zi = to_acc<acc_t>(z[i]);
      out[i] = Store<in_t>::from((y[i] + Dv * u[i]) * (zi * sigmoid(zi)));
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = Store<in_t>::from(y[i] + Dv * u[i]);
  }
}

// N == 1: rows [row0, row0 + rows), rows <= kTileRows.
template <typename in_t, typename acc_t, bool kSoftplus>
MMSSM_KERNEL void fwd_tile_n1(const SelectiveScanFwdParams& p, int64_t row0, int64_t rows,
                              acc_t* scratch) {
  constexpr int64_t R = kTileRows, T = kBlock;
  const int64_t L = p.seqlen;
  acc_t* u = scratch;            // (R, T)
  acc_t* decay = u + R * T;      // (R, T)
  acc_t* drive = decay + R * T;  // (R, T)
  acc_t* y = drive + R * T;      // (R, T): states, then C * h

  Row<in_t, acc_t> rr[R];
  for (int64_t r = 0; r < rows; ++r) {
    rr[r] = make_row<in_t, acc_t>(p, (row0 + r) / p.dim, (row0 + r) % p.dim);
  }
  // Missing rows of a partial tile run a zero recurrence.
  std::fill(decay + rows * T, decay + R * T, acc_t(0));
  std::fill(drive + rows * T, drive + R * T, acc_t(0));
  acc_t h[R];
  for (int64_t r = 0; r < R; ++r) h[r] = 0;

  for (int64_t l0 = 0, c = 0; l0 < L; l0 += T, ++c) {
    const int64_t len = std::min(T, L - l0);
    if (l0 + T < L) {  // the next block
      for (int64_t r = 0; r < rows; ++r) {
        prefetch(rr[r].u + l0 + T, T);
        prefetch(rr[r].delta + l0 + T, T);
        if (rr[r].z) prefetch(rr[r].z + l0 + T, T);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const Row<in_t, acc_t>& x = rr[r];
      const in_t* us = x.u + l0;
      const in_t* ds = x.delta + l0;
      const in_t* bs = x.B + l0;
      acc_t* ur = u + r * T;
      acc_t* ar = decay + r * T;
      acc_t* br = drive + r * T;
      const acc_t a0 = x.A[0], bias = x.bias;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const acc_t ui = to_acc<acc_t>(us[i]);
        const acc_t dt = time_step<kSoftplus>(to_acc<acc_t>(ds[i]) + bias);
        ur[i] = ui;
        ar[i] = fast_exp(dt * a0);
        br[i] = dt * ui * to_acc<acc_t>(bs[i]);
      }
    }
    for (int64_t i = 0; i < len; ++i) {
#pragma GCC unroll 8
      for (int64_t r = 0; r < R; ++r) {
        h[r] = decay[r * T + i] * h[r] + drive[r * T + i];
        y[r * T + i] = h[r];
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const Row<in_t, acc_t>& x = rr[r];
      const in_t* cs = x.C + l0;
      acc_t* yr = y + r * T;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) yr[i] *= to_acc<acc_t>(cs[i]);
      store_output(x, l0, len, yr, u + r * T, static_cast<in_t*>(p.out) + x.index * L + l0);
      if (p.chunk_states) static_cast<acc_t*>(p.chunk_states)[x.index * p.n_chunks + c] = h[r];
    }
  }
  if (p.last_state) {
    for (int64_t r = 0; r < rows; ++r) {
      static_cast<acc_t*>(p.last_state)[rr[r].index] = h[r];
    }
  }
}

// N > 1 (kN: compile-time N, 0 = runtime): one row.
template <typename in_t, typename acc_t, int kN, bool kSoftplus>
MMSSM_KERNEL void fwd_row(const SelectiveScanFwdParams& p, int64_t row, acc_t* scratch) {
  constexpr int64_t T = kBlock;
  constexpr int64_t kLocal = kN > 0 ? kN : 1;
  const int64_t n = kN > 0 ? kN : p.dstate;
  const int64_t L = p.seqlen;
  acc_t* u = scratch;            // (T)
  acc_t* dt = u + T;             // (T)
  acc_t* dtu = dt + T;           // (T)
  acc_t* y = dtu + T;            // (T)
  acc_t* Bt = y + T;             // (T, n): B, then dt * B * u
  acc_t* Ct = Bt + T * n;        // (T, n): C, then C * h
  acc_t* decay = Ct + T * n;     // (T, n)
  acc_t* h_rt = decay + T * n;   // (n) runtime-N state
  acc_t* A_rt = h_rt + n;        // (n)

  const Row<in_t, acc_t> x = make_row<in_t, acc_t>(p, row / p.dim, row % p.dim);
  // Compile-time N: state and A live in small local arrays (registers).
  acc_t h_local[kLocal], A_local[kLocal];
  acc_t* h = kN > 0 ? h_local : h_rt;
  acc_t* A = kN > 0 ? A_local : A_rt;
  for (int64_t s = 0; s < n; ++s) {
    h[s] = 0;
    A[s] = x.A[s];
  }

  for (int64_t l0 = 0, c = 0; l0 < L; l0 += T, ++c) {
    const int64_t len = std::min(T, L - l0);
    const in_t* us = x.u + l0;
    const in_t* ds = x.delta + l0;
    const acc_t bias = x.bias;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const acc_t ui = to_acc<acc_t>(us[i]);
      const acc_t d = time_step<kSoftplus>(to_acc<acc_t>(ds[i]) + bias);
      u[i] = ui;
      dt[i] = d;
      dtu[i] = d * ui;
    }
    load_transposed(x.B + l0, p.B_dstate_stride, Bt, len, n);
    load_transposed(x.C + l0, p.C_dstate_stride, Ct, len, n);
    for (int64_t i = 0; i < len; ++i) {
      const acc_t dti = dt[i], dtui = dtu[i];
      acc_t* a = decay + i * n;
      acc_t* b = Bt + i * n;
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) {
        a[s] = fast_exp(dti * A[s]);
        b[s] = dtui * b[s];
      }
    }
    for (int64_t i = 0; i < len; ++i) {
      const acc_t* a = decay + i * n;
      const acc_t* b = Bt + i * n;
      acc_t* ch = Ct + i * n;
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) {
        const acc_t hs = a[s] * h[s] + b[s];
        h[s] = hs;
        ch[s] *= hs;
      }
    }
    sum_rows(Ct, y, len, n);
    store_output(x, l0, len, y, u, static_cast<in_t*>(p.out) + x.index * L + l0);
    if (p.chunk_states) {
      acc_t* saved = static_cast<acc_t*>(p.chunk_states) + (x.index * p.n_chunks + c) * n;
      for (int64_t s = 0; s < n; ++s) saved[s] = h[s];
    }
  }
  if (p.last_state) {
    acc_t* last = static_cast<acc_t*>(p.last_state) + x.index * n;
    for (int64_t s = 0; s < n; ++s) last[s] = h[s];
  }
}

inline int64_t fwd_scratch_elems(int64_t n) {
  const int64_t tile = 4 * kTileRows * kBlock;
  const int64_t row = 4 * kBlock + 3 * kBlock * n + 2 * n;
  return std::max(tile, row);
}

template <typename in_t, typename acc_t, bool kSoftplus>
MMSSM_INLINE void fwd_rows(const SelectiveScanFwdParams& p, int64_t begin, int64_t end,
                           acc_t* scratch) {
  switch (p.dstate) {
    case 1:
      for (int64_t r = begin; r < end; r += kTileRows) {
        fwd_tile_n1<in_t, acc_t, kSoftplus>(p, r, std::min(kTileRows, end - r), scratch);
      }
      break;
    case 16:
      for (int64_t r = begin; r < end; ++r) fwd_row<in_t, acc_t, 16, kSoftplus>(p, r, scratch);
      break;
    default:
      for (int64_t r = begin; r < end; ++r) fwd_row<in_t, acc_t, 0, kSoftplus>(p, r, scratch);
      break;
  }
}

template <typename in_t, typename acc_t>
MMSSM_INLINE void fwd_rows_typed(const SelectiveScanFwdParams& p, int64_t begin,
                                 int64_t end, void* scratch) {
  acc_t* s = static_cast<acc_t*>(scratch);
  if (p.delta_softplus) {
    fwd_rows<in_t, acc_t, true>(p, begin, end, s);
  } else {
    fwd_rows<in_t, acc_t, false>(p, begin, end, s);
  }
}

// The ISA-multiversioned entry point for 32/16-bit inputs; everything it calls is
// inlined into each clone.
void fwd_rows_dispatch(const SelectiveScanFwdParams& p, int64_t begin, int64_t end,
                       void* scratch) {
  switch (p.input_type) {
    case ScanDType::kFloat32: fwd_rows_typed<float, float>(p, begin, end, scratch); break;
    case ScanDType::kFloat16: fwd_rows_typed<half_bits, float>(p, begin, end, scratch); break;
    case ScanDType::kBFloat16: fwd_rows_typed<bf16_bits, float>(p, begin, end, scratch); break;
    case ScanDType::kFloat64: break;
  }
}

// fp64 (gradient checks, tests): compiled once, for the baseline ISA.
void fwd_rows_f64(const SelectiveScanFwdParams& p, int64_t begin, int64_t end,
                  void* scratch) {
  fwd_rows_typed<double, double>(p, begin, end, scratch);
}

}  // namespace cpu

void selective_scan_fwd_cpu(const SelectiveScanFwdParams& p) {
  using namespace cpu;
  check_common(p);
  const int64_t rows = p.batch * p.dim;
  if (rows == 0) return;
  // Work is handed out in whole tiles of kTileRows rows (N == 1 tiles are never split),
  // dynamically: a thread that gets descheduled delays one tile, not a fixed share.
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  const int threads = thread_count(p.num_threads, tiles, rows * p.seqlen * p.dstate);
  const int64_t elem = acc_size(p.input_type);
  const int64_t per_thread = (fwd_scratch_elems(p.dstate) + 64) * elem;  // bytes
  // One allocation up front: a failure raises here, not inside the parallel region.
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
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t begin = t * kTileRows, end = std::min(rows, begin + kTileRows);
      if (p.input_type == ScanDType::kFloat64) {
        fwd_rows_f64(p, begin, end, mine);
      } else {
        fwd_rows_dispatch(p, begin, end, mine);
      }
    }
  }
}

}  // namespace mmssm
