// Shared, torch-free description of one selective-scan call.
//
// Both backends (cpu/*.cpp, cuda/*.cu) consume these structs; only bindings.cpp
// (and cuda_bindings.cpp) know about torch. Keeping this header free of torch and of
// CUDA headers lets nvcc compile the kernels on machines whose torch has no CUDA.
//
// Semantics (shared/specs/selective_scan.md §1.1, real A):
//   dt[b,d,l]  = delta[b,d,l] + delta_bias[d]           (bias optional)
//   dt         = softplus(dt) if delta_softplus (identity above 20)
//   h[b,d,l,n] = exp(dt * A[d,n]) * h[b,d,l-1,n] + dt * B[b,g(d),n,l] * u[b,d,l]
//   y[b,d,l]   = sum_n C[b,g(d),n,l] * h[b,d,l,n] + D[d] * u[b,d,l]
//   out        = y * silu(z[b,d,l])                      (gate optional)
// with g(d) = d / (dim / n_groups). All arithmetic in acc_t (float, or double when the
// inputs are double); out is rounded once to the input dtype.
#pragma once

#include <cstdint>

namespace mmssm {

// dtype of the "input" tensors u, delta, B, C, z, out, dout, du, ddelta, dz.
// Weights (A, D, delta_bias), states and weight gradients are acc_t:
// float for kFloat32/kFloat16/kBFloat16 inputs, double for kFloat64 inputs.
enum class ScanDType : int32_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat64 = 3,  // CPU backend only
};

// See SelectiveScanFwdParams::run_workers.
using CpuWorkersFn = void (*)(int32_t workers, void (*body)(void* ctx, int32_t worker),
                              void* ctx);

// Strides are in elements. The time axis (last axis) of every strided tensor must have
// stride 1; the bindings make tensors last-dim contiguous before filling these in.
struct SelectiveScanFwdParams {
  int64_t batch = 0;
  int64_t dim = 0;       // channels D
  int64_t seqlen = 0;    // L
  int64_t dstate = 0;    // N
  int64_t n_groups = 0;  // G; dim % n_groups == 0
  ScanDType input_type = ScanDType::kFloat32;
  bool delta_softplus = false;

  // (batch, dim, L), input dtype
  const void* u = nullptr;
  int64_t u_batch_stride = 0, u_dim_stride = 0;
  const void* delta = nullptr;
  int64_t delta_batch_stride = 0, delta_dim_stride = 0;
  const void* z = nullptr;  // optional gate
  int64_t z_batch_stride = 0, z_dim_stride = 0;

  // CPU backend only, optional: delta in low-rank form. When delta_lowrank is set, delta
  // is not read; instead delta[b,d,l] = sum_r delta_weight[d,r] * delta_lowrank[b,g(d),r,l]
  // (the dt projection of Mamba / VMamba, dt_proj(x_proj(u)[:R]), formed in registers
  // instead of as a (batch, dim, L) tensor). delta_lowrank: (batch, G, R, L) input dtype,
  // time contiguous; delta_weight: (dim, R) acc_t, contiguous. The backward always takes
  // the full delta.
  const void* delta_lowrank = nullptr;
  int64_t dl_batch_stride = 0, dl_group_stride = 0, dl_rank_stride = 0;
  const void* delta_weight = nullptr;
  int64_t delta_rank = 0;  // R

  // CPU backend only, forward only, optional: "routed" mode
  // (selective_scan_fwd_routes_cpu), the routes of a scan pattern read from and summed
  // back into ONE token-major map. With E = dim / G channels per route and T tokens:
  //   u_g[b, e, l]  = u[b, route_index[g, l], e]   (0 where route_index[g, l] = -1)
  //   and likewise delta_lowrank, B and C, which are given per token: (batch, G, R or N, T)
  //   out[b, t, e]  = sum over g, then l with route_index[g, l] = t, of y_g[b, e, l]
  // where y_g is the scan of route g (channel rows g * E + e of A, D, delta_bias,
  // delta_weight). u: (batch, T, E), channel stride 1 (u_batch_stride, u_token_stride);
  // out: (batch, T, E) contiguous, zero-initialised by the caller -- or, with
  // route_merge false, out[b, g, l, e] = y_g[b, e, l], (batch, G, L, E) contiguous (the
  // routes' outputs token-major in route order, for a caller that normalises them before
  // merging). delta_lowrank is required and z and last_state must be null; chunk_states
// (optional) receives the states the routed backward restarts from.
  const int64_t* route_index = nullptr;  // (G, L), contiguous, values in [-1, T)
  int64_t tokens = 0;                    // T
  bool route_merge = true;
  // delta_lowrank, B and C are given per route step instead, (batch, G, R or N, L), and
  // read as given at every step, padding steps included: e.g. the per-token rows
  // gathered once by the caller rather than by every channel tile (row step l is then
  // token route_index[g, l]'s, zero at padding steps), or rows a caller computed per
  // step. The backward's dB / dC / d delta_lowrank are per token unless
  // route_grads_by_step (backward only) asks for them per step.
  bool route_rows_by_step = false;
  int64_t u_token_stride = 0;

  // (batch, G, N, L), input dtype
  const void* B = nullptr;
  int64_t B_batch_stride = 0, B_group_stride = 0, B_dstate_stride = 0;
  const void* C = nullptr;
  int64_t C_batch_stride = 0, C_group_stride = 0, C_dstate_stride = 0;

  // acc_t, contiguous
  const void* A = nullptr;           // (dim, N)
  const void* D = nullptr;           // (dim,) optional
  const void* delta_bias = nullptr;  // (dim,) optional

  // outputs
  void* out = nullptr;  // (batch, dim, L) input dtype, contiguous
  void* last_state = nullptr;  // (batch, dim, N) acc_t, contiguous; optional
  // (batch, dim, n_chunks, N) acc_t, contiguous: h at the end of each chunk of
  // `chunk_size` steps. Backends that recompute from 0 may leave it null.
  void* chunk_states = nullptr;
  int64_t chunk_size = 0;
  int64_t n_chunks = 0;

  // CPU backend only: where the kernel's workers run. `run_workers(workers, body, ctx)`
  // must call body(ctx, w) once for every w in [0, workers), concurrently, and return
  // when all calls have returned; the kernel never asks for more than `num_threads`
  // workers. The torch binding runs them on torch's intra-op thread pool
  // (at::parallel_for) with num_threads = torch.get_num_threads(), so the kernel starts no
  // threads of its own and never spins against torch's. Null: everything on the
  // calling thread.
  int32_t num_threads = 1;
  CpuWorkersFn run_workers = nullptr;
};

struct SelectiveScanBwdParams : SelectiveScanFwdParams {
  // incoming gradient of `out`, (batch, dim, L) input dtype, last dim contiguous
  const void* dout = nullptr;
  int64_t dout_batch_stride = 0, dout_dim_stride = 0;

  // gradients, all contiguous and zero-initialised by the caller where they are
  // accumulated (dA, dB, dC, dD, ddelta_bias).
  void* du = nullptr;      // (batch, dim, L) input dtype
  void* ddelta = nullptr;  // (batch, dim, L) input dtype
  void* dz = nullptr;      // (batch, dim, L) input dtype, when z is given
  void* dA = nullptr;      // (dim, N) acc_t
  void* dB = nullptr;      // (batch, G, N, L) acc_t
  void* dC = nullptr;      // (batch, G, N, L) acc_t
  void* dD = nullptr;      // (dim,) acc_t, when D is given
  void* ddelta_bias = nullptr;  // (dim,) acc_t, when delta_bias is given

  // The routed backward only (selective_scan_bwd_routes_cpu; route_index,
  // delta_lowrank and route_merge as in the routed forward): dout is the gradient of its
  // out, (batch, T, E) or with route_merge false (batch, G, L, E), contiguous; du the
  // token-major map (batch, T, E), contiguous and zero-initialised (the routes' input
  // gradients are summed into it); chunk_states are the routed forward's (required);
  // ddelta is not written, the gradient of delta goes to its two factors instead:
  void* ddelta_lowrank = nullptr;  // (batch, G, R, T) acc_t, zero-initialised
  void* ddelta_weight = nullptr;   // (dim, R) acc_t, zero-initialised
  // With route_rows_by_step: d delta_lowrank, dB and dC per route step, (batch, G, R or
  // N, L), every step's own gradient (padding steps included) instead of their sums per
  // token -- the gradients of rows that were given per step.
  bool route_grads_by_step = false;
};

// CPU backend (cpu/*.cpp: tiles of 16 channels, SIMD across the channels).
// Its forward stores h at the end of every chunk of kCpuChunkSize steps in
// `chunk_states` (when non-null), which its backward then uses instead of re-running the
// recurrence from l = 0; a null `chunk_states` in the backward means "recompute".
constexpr int64_t kCpuChunkSize = 64;
void selective_scan_fwd_cpu(const SelectiveScanFwdParams& params);
void selective_scan_bwd_cpu(const SelectiveScanBwdParams& params);
// The routed forward (route_index set; float32 / float64 inputs); with chunk_states set
// it keeps the block states for the routed backward.
void selective_scan_fwd_routes_cpu(const SelectiveScanFwdParams& params);
// Its adjoint: the gradients of the routed forward with route_merge true.
void selective_scan_bwd_routes_cpu(const SelectiveScanBwdParams& params);
// The instruction set the CPU kernels run with here: "avx512", "avx2" or "generic"
// (the best this CPU has, or a lower one named by the environment variable
// MMSSM_CPU_ISA=generic|avx2, read once).
const char* selective_scan_cpu_isa();

// CUDA backend (cuda/*.cu). `stream` is a cudaStream_t passed as void* so that this
// header needs no CUDA include. Returns 0 (cudaSuccess) or the cudaError_t of the launch.
int selective_scan_fwd_cuda(const SelectiveScanFwdParams& params, void* stream);
int selective_scan_bwd_cuda(const SelectiveScanBwdParams& params, void* stream);

}  // namespace mmssm
