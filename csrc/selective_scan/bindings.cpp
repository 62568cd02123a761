// torch binding of the CPU selective scan: mmssm._C.fwd / mmssm._C.bwd.
//
//   fwd(u, delta, A, B, C, D?, z?, delta_bias?, delta_softplus)
//       -> [out, last_state, chunk_states]
//   bwd(u, delta, A, B, C, D?, z?, delta_bias?, dout, chunk_states, delta_softplus)
//       -> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]   (None for absent optionals)
//
// u, delta, z, dout: (batch, dim, L); B, C: (batch, G, N, L); one input dtype
// (fp32 / fp16 / bf16 / fp64). A (dim, N), D and delta_bias (dim,) in the accumulation
// dtype (fp32, fp64 for fp64 inputs). Tensors whose last axis is not contiguous are
// copied; everything else is checked and rejected with a message naming the argument.
// chunk_states: (batch, dim, ceil(L / 64), N) accumulation dtype, the state after every
// 64-step chunk; bwd also accepts None or an empty tensor (then it recomputes them).
#include <cmath>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "activation.h"
#include "rms_norm.h"
#include "route_conv.h"
#include "scan.h"

namespace {

using at::Tensor;

// The kernel's workers run on torch's intra-op thread pool: the threads torch's own ops
// use, so the scan never competes with (or spins against) a second pool.
void run_on_torch_pool(int32_t workers, void (*body)(void* ctx, int32_t worker), void* ctx) {
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) body(ctx, static_cast<int32_t>(w));
  });
}

// Runs a torch-free row-op driver (route_conv.h, rms_norm.h) on p: its workers on torch's
// pool, the GIL released while it runs.
template <typename Params>
void run_row_driver(Params& p, void (*driver)(const Params&)) {
  p.num_threads = at::get_num_threads();
  p.run_workers = &run_on_torch_pool;
  pybind11::gil_scoped_release no_gil;
  driver(p);
}

std::string shape_str(const Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) {
    s += std::to_string(t.size(i));
    if (i + 1 < t.dim()) s += ", ";
  }
  if (t.dim() == 1) s += ",";
  return s + ")";
}

std::string expected_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += std::to_string(shape[i]);
    if (i + 1 < shape.size()) s += ", ";
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

void check_tensor(const Tensor& t, const char* name, const std::vector<int64_t>& shape,
                  at::ScalarType dtype, const char* dtype_rule) {
  TORCH_CHECK(t.defined(), "selective_scan cpu: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "selective_scan cpu: ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == static_cast<int64_t>(shape.size()) &&
                  t.sizes() == at::IntArrayRef(shape),
              "selective_scan cpu: ", name, " has shape ", shape_str(t), ", expected ",
              expected_str(shape));
  TORCH_CHECK(t.scalar_type() == dtype, "selective_scan cpu: ", name, " has dtype ",
              t.scalar_type(), ", expected ", dtype, " (", dtype_rule, ")");
}

// Last axis contiguous (copy otherwise); other strides are passed to the kernel.
Tensor last_dim_contiguous(const Tensor& t) {
  return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
}

mmssm::ScanDType scan_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return mmssm::ScanDType::kFloat32;
    case at::kHalf: return mmssm::ScanDType::kFloat16;
    case at::kBFloat16: return mmssm::ScanDType::kBFloat16;
    case at::kDouble: return mmssm::ScanDType::kFloat64;
    default:
      TORCH_CHECK(false, "selective_scan cpu: u has dtype ", t,
                  "; supported: float32, float16, bfloat16, float64");
  }
  return mmssm::ScanDType::kFloat32;
}

struct Checked {
  Tensor u, delta, A, B, C, D, z, delta_bias;
  int64_t batch, dim, seqlen, dstate, groups;
  at::ScalarType in_type, acc_type;
};

Checked check_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                     const Tensor& C, const std::optional<Tensor>& D,
                     const std::optional<Tensor>& z,
                     const std::optional<Tensor>& delta_bias) {
  TORCH_CHECK(u.defined() && u.dim() == 3, "selective_scan cpu: u must be (batch, dim, L), ",
              "got shape ", u.defined() ? shape_str(u) : std::string("undefined"));
  TORCH_CHECK(u.device().is_cpu(), "selective_scan cpu: u must be a CPU tensor, got device ",
              u.device());
  Checked c;
  c.in_type = u.scalar_type();
  scan_dtype(c.in_type);
  c.acc_type = c.in_type == at::kDouble ? at::kDouble : at::kFloat;
  c.batch = u.size(0);
  c.dim = u.size(1);
  c.seqlen = u.size(2);
  TORCH_CHECK(A.defined() && A.dim() == 2, "selective_scan cpu: A must be (dim, N), got ",
              A.defined() ? shape_str(A) : std::string("undefined"));
  c.dstate = A.size(1);
  TORCH_CHECK(c.dstate >= 1, "selective_scan cpu: A has shape ", shape_str(A),
              "; N must be >= 1");
  TORCH_CHECK(B.defined() && B.dim() == 4, "selective_scan cpu: B must be (batch, G, N, L), got ",
              B.defined() ? shape_str(B) : std::string("undefined"));
  c.groups = B.size(1);
  TORCH_CHECK(c.groups >= 1 && c.dim % c.groups == 0, "selective_scan cpu: dim=", c.dim,
              " (u ", shape_str(u), ") is not divisible by the number of groups G=",
              c.groups, " (B ", shape_str(B), ")");

  const char* input_rule = "u, delta, B, C, z and dout share u's dtype";
  const char* weight_rule = "A, D and delta_bias use float32 (float64 for float64 inputs)";
  const std::vector<int64_t> act = {c.batch, c.dim, c.seqlen};
  const std::vector<int64_t> grouped = {c.batch, c.groups, c.dstate, c.seqlen};
  if (delta.defined()) check_tensor(delta, "delta", act, c.in_type, input_rule);
  check_tensor(A, "A", {c.dim, c.dstate}, c.acc_type, weight_rule);
  check_tensor(B, "B", grouped, c.in_type, input_rule);
  check_tensor(C, "C", grouped, c.in_type, input_rule);
  c.u = last_dim_contiguous(u);
  if (delta.defined()) c.delta = last_dim_contiguous(delta);
  c.B = last_dim_contiguous(B);
  c.C = last_dim_contiguous(C);
  c.A = A.contiguous();
  if (D.has_value() && D->defined()) {
    check_tensor(*D, "D", {c.dim}, c.acc_type, weight_rule);
    c.D = D->contiguous();
  }
  if (z.has_value() && z->defined()) {
    check_tensor(*z, "z", act, c.in_type, input_rule);
    c.z = last_dim_contiguous(*z);
  }
  if (delta_bias.has_value() && delta_bias->defined()) {
    check_tensor(*delta_bias, "delta_bias", {c.dim}, c.acc_type, weight_rule);
    c.delta_bias = delta_bias->contiguous();
  }
  return c;
}

int64_t n_chunks_for(int64_t seqlen) {
  return (seqlen + mmssm::kCpuChunkSize - 1) / mmssm::kCpuChunkSize;
}

void fill_params(mmssm::SelectiveScanFwdParams& p, const Checked& c, bool delta_softplus) {
  p.batch = c.batch;
  p.dim = c.dim;
  p.seqlen = c.seqlen;
  p.dstate = c.dstate;
  p.n_groups = c.groups;
  p.input_type = scan_dtype(c.in_type);
  p.delta_softplus = delta_softplus;
  p.u = c.u.data_ptr();
  p.u_batch_stride = c.u.stride(0);
  p.u_dim_stride = c.u.stride(1);
  if (c.delta.defined()) {
    p.delta = c.delta.data_ptr();
    p.delta_batch_stride = c.delta.stride(0);
    p.delta_dim_stride = c.delta.stride(1);
  }
  if (c.z.defined()) {
    p.z = c.z.data_ptr();
    p.z_batch_stride = c.z.stride(0);
    p.z_dim_stride = c.z.stride(1);
  }
  p.B = c.B.data_ptr();
  p.B_batch_stride = c.B.stride(0);
  p.B_group_stride = c.B.stride(1);
  p.B_dstate_stride = c.B.stride(2);
  p.C = c.C.data_ptr();
  p.C_batch_stride = c.C.stride(0);
  p.C_group_stride = c.C.stride(1);
  p.C_dstate_stride = c.C.stride(2);
  p.A = c.A.data_ptr();
  p.D = c.D.defined() ? c.D.data_ptr() : nullptr;
  p.delta_bias = c.delta_bias.defined() ? c.delta_bias.data_ptr() : nullptr;
  p.chunk_size = mmssm::kCpuChunkSize;
  p.n_chunks = n_chunks_for(c.seqlen);
  p.num_threads = at::get_num_threads();
  p.run_workers = &run_on_torch_pool;
}

std::vector<Tensor> run_fwd(const Checked& c, bool delta_softplus,
                            const Tensor& delta_lowrank, const Tensor& delta_weight);

// delta in low-rank form (scan.h: delta_lowrank): delta_lowrank (batch, G, R, L or T),
// last dim contiguous; delta_weight (dim, R) contiguous. The tensors must outlive p.
void fill_lowrank(mmssm::SelectiveScanFwdParams& p, const Tensor& delta_lowrank,
                  const Tensor& delta_weight) {
  p.delta_lowrank = delta_lowrank.data_ptr();
  p.dl_batch_stride = delta_lowrank.stride(0);
  p.dl_group_stride = delta_lowrank.stride(1);
  p.dl_rank_stride = delta_lowrank.stride(2);
  p.delta_weight = delta_weight.data_ptr();
  p.delta_rank = delta_weight.size(1);
}

std::vector<Tensor> fwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                        const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                        const std::optional<Tensor>& z,
                        const std::optional<Tensor>& delta_bias, bool delta_softplus) {
  TORCH_CHECK(delta.defined(), "selective_scan cpu: delta is undefined");
  return run_fwd(check_inputs(u, delta, A, B, C, D, z, delta_bias), delta_softplus, Tensor(),
                 Tensor());
}

// The forward with delta in low-rank form (scan.h: delta_lowrank): delta_lowrank
// (batch, G, R, L) in u's dtype, delta_weight (dim, R) in the accumulation dtype.
std::vector<Tensor> fwd_lowrank(const Tensor& u, const Tensor& delta_lowrank,
                                const Tensor& delta_weight, const Tensor& A, const Tensor& B,
                                const Tensor& C, const std::optional<Tensor>& D,
                                const std::optional<Tensor>& z,
                                const std::optional<Tensor>& delta_bias,
                                bool delta_softplus) {
  Checked c = check_inputs(u, Tensor(), A, B, C, D, z, delta_bias);
  TORCH_CHECK(delta_weight.defined() && delta_weight.dim() == 2 &&
                  delta_weight.size(0) == c.dim && delta_weight.size(1) >= 1,
              "selective_scan cpu: delta_weight must be (dim, R) = (", c.dim, ", R), got ",
              delta_weight.defined() ? shape_str(delta_weight) : std::string("undefined"));
  const int64_t rank = delta_weight.size(1);
  check_tensor(delta_weight, "delta_weight", {c.dim, rank}, c.acc_type,
               "float32 (float64 for float64 inputs), like A");
  check_tensor(delta_lowrank, "delta_lowrank", {c.batch, c.groups, rank, c.seqlen}, c.in_type,
               "u's dtype");
  return run_fwd(c, delta_softplus, last_dim_contiguous(delta_lowrank),
                 delta_weight.contiguous());
}

// The routed forward's inputs (scan.h: route_index): the G routes of route_index (G, L)
// read from x (batch, T, E); delta_lowrank (batch, G, R, T), B and C (batch, G, N, T) per
// token; A (G*E, N), delta_weight (G*E, R), D and delta_bias (G*E,) per route channel;
// float32 or float64, all in x's dtype.
struct RoutesChecked {
  Checked c;
  Tensor index, low, weight;
  int64_t tokens = 0, channels = 0;
  bool rows_by_step = false;
};

RoutesChecked check_routes(const Tensor& x, const Tensor& route_index,
                           const Tensor& delta_lowrank, const Tensor& delta_weight,
                           const Tensor& A, const Tensor& B, const Tensor& C,
                           const std::optional<Tensor>& D,
                           const std::optional<Tensor>& delta_bias, bool rows_by_step) {
  TORCH_CHECK(x.defined() && x.dim() == 3, "selective_scan cpu: x must be (batch, T, E), ",
              "got shape ", x.defined() ? shape_str(x) : std::string("undefined"));
  TORCH_CHECK(x.device().is_cpu(), "selective_scan cpu: x must be a CPU tensor, got device ",
              x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "selective_scan cpu: the routed scan takes float32 or float64 x, got ",
              x.scalar_type());
  TORCH_CHECK(route_index.defined() && route_index.dim() == 2 &&
                  route_index.scalar_type() == at::kLong && route_index.device().is_cpu(),
              "selective_scan cpu: route_index must be a (G, L) int64 CPU tensor, got ",
              route_index.defined() ? shape_str(route_index) : std::string("undefined"));
  TORCH_CHECK(A.defined() && A.dim() == 2, "selective_scan cpu: A must be (G*E, N), got ",
              A.defined() ? shape_str(A) : std::string("undefined"));
  TORCH_CHECK(delta_weight.defined() && delta_weight.dim() == 2 && delta_weight.size(1) >= 1,
              "selective_scan cpu: delta_weight must be (G*E, R), got ",
              delta_weight.defined() ? shape_str(delta_weight) : std::string("undefined"));
  const at::ScalarType in_type = x.scalar_type();
  const at::ScalarType acc_type = in_type;
  const int64_t batch = x.size(0), tokens = x.size(1), channels = x.size(2);
  const int64_t groups = route_index.size(0), seqlen = route_index.size(1);
  const int64_t dim = groups * channels, dstate = A.size(1), rank = delta_weight.size(1);
  TORCH_CHECK(groups >= 1 && dstate >= 1, "selective_scan cpu: route_index ",
              shape_str(route_index), " and A ", shape_str(A), " need G >= 1 and N >= 1");
  const char* input_rule = "x, delta_lowrank, B and C share x's dtype";
  const char* weight_rule = "A, D, delta_bias and delta_weight use x's dtype";
  check_tensor(A, "A", {dim, dstate}, acc_type, weight_rule);
  check_tensor(delta_weight, "delta_weight", {dim, rank}, acc_type, weight_rule);
  // per token (batch, G, rows, T), or per route step (batch, G, rows, L)
  const int64_t per = rows_by_step ? seqlen : tokens;
  check_tensor(delta_lowrank, "delta_lowrank", {batch, groups, rank, per}, in_type,
               input_rule);
  check_tensor(B, "B", {batch, groups, dstate, per}, in_type, input_rule);
  check_tensor(C, "C", {batch, groups, dstate, per}, in_type, input_rule);
  RoutesChecked r;
  Checked& c = r.c;
  if (D.has_value() && D->defined()) {
    check_tensor(*D, "D", {dim}, acc_type, weight_rule);
    c.D = D->contiguous();
  }
  if (delta_bias.has_value() && delta_bias->defined()) {
    check_tensor(*delta_bias, "delta_bias", {dim}, acc_type, weight_rule);
    c.delta_bias = delta_bias->contiguous();
  }
  r.index = route_index.contiguous();
  {
    const int64_t* v = r.index.data_ptr<int64_t>();
    for (int64_t i = 0; i < r.index.numel(); ++i) {
      TORCH_CHECK(v[i] >= -1 && v[i] < tokens, "selective_scan cpu: route_index holds ", v[i],
                  " at flat position ", i, "; entries must be in [-1, T) with T = ", tokens,
                  " (x ", shape_str(x), ")");
    }
  }
  c.u = (channels <= 1 || x.stride(2) == 1) ? x : x.contiguous();
  c.B = last_dim_contiguous(B);
  c.C = last_dim_contiguous(C);
  c.A = A.contiguous();
  c.batch = batch;
  c.dim = dim;
  c.seqlen = seqlen;
  c.dstate = dstate;
  c.groups = groups;
  c.in_type = in_type;
  c.acc_type = acc_type;
  r.low = last_dim_contiguous(delta_lowrank);
  r.weight = delta_weight.contiguous();
  r.tokens = tokens;
  r.channels = channels;
  r.rows_by_step = rows_by_step;
  return r;
}

void fill_routes(mmssm::SelectiveScanFwdParams& p, const RoutesChecked& r, bool delta_softplus,
                 bool merge) {
  fill_params(p, r.c, delta_softplus);
  fill_lowrank(p, r.low, r.weight);
  p.u_token_stride = r.c.u.stride(1);  // u is (batch, T, E): tokens, then channels
  p.u_dim_stride = r.c.u.stride(2);
  p.route_index = r.index.data_ptr<int64_t>();
  p.tokens = r.tokens;
  p.route_merge = merge;
  p.route_rows_by_step = r.rows_by_step;
}

std::vector<Tensor> run_fwd_routes(const RoutesChecked& r, bool delta_softplus, bool merge,
                                   bool keep_states) {
  const Checked& c = r.c;
  Tensor out = merge ? at::zeros({c.batch, r.tokens, r.channels}, c.u.options())
                     : at::empty({c.batch, c.groups, c.seqlen, r.channels}, c.u.options());
  Tensor states = keep_states ? at::empty({c.batch, c.dim, n_chunks_for(c.seqlen), c.dstate},
                                          c.u.options())
                              : Tensor();
  mmssm::SelectiveScanFwdParams p;
  fill_routes(p, r, delta_softplus, merge);
  p.out = out.data_ptr();
  p.chunk_states = keep_states && states.numel() > 0 ? states.data_ptr() : nullptr;
  if (out.numel() > 0) {
    pybind11::gil_scoped_release no_gil;
    mmssm::selective_scan_fwd_routes_cpu(p);
  }
  return {out, states};
}

// The routed forward (scan.h: route_index, see check_routes): out (batch, T, E), the
// routes' outputs summed per token -- with merge false (batch, G, L, E) per route step.
// rows_by_step: delta_lowrank, B and C are given per route step (scan.h:
// route_rows_by_step) instead of per token.
Tensor fwd_routes(const Tensor& x, const Tensor& route_index, const Tensor& delta_lowrank,
                  const Tensor& delta_weight, const Tensor& A, const Tensor& B,
                  const Tensor& C, const std::optional<Tensor>& D,
                  const std::optional<Tensor>& delta_bias, bool delta_softplus, bool merge,
                  bool rows_by_step) {
  const RoutesChecked r = check_routes(x, route_index, delta_lowrank, delta_weight, A, B, C,
                                       D, delta_bias, rows_by_step);
  return run_fwd_routes(r, delta_softplus, merge, false)[0];
}

// The routed forward that keeps what bwd_routes needs: [out (batch, T, E) -- with merge
// false (batch, G, L, E) --, chunk_states (batch, G*E, ceil(L / chunk_size), N)].
std::vector<Tensor> fwd_routes_saved(const Tensor& x, const Tensor& route_index,
                                     const Tensor& delta_lowrank, const Tensor& delta_weight,
                                     const Tensor& A, const Tensor& B, const Tensor& C,
                                     const std::optional<Tensor>& D,
                                     const std::optional<Tensor>& delta_bias,
                                     bool delta_softplus, bool rows_by_step, bool merge) {
  const RoutesChecked r = check_routes(x, route_index, delta_lowrank, delta_weight, A, B, C,
                                       D, delta_bias, rows_by_step);
  return run_fwd_routes(r, delta_softplus, merge, true);
}

// The routed backward: the gradients of fwd_routes_saved's out for dout (batch, T, E), or
// with merge false (batch, G, L, E):
// [dx (batch, T, E), d delta_lowrank (batch, G, R, T), d delta_weight (G*E, R), dA,
//  dB, dC (batch, G, N, T), dD, d delta_bias] (None for absent D / delta_bias); the
// gradients of delta_lowrank / B / C are per token also with rows_by_step, and per route
// step, (batch, G, R or N, L), with grads_by_step (which needs rows_by_step).
std::vector<Tensor> bwd_routes(const Tensor& x, const Tensor& route_index,
                               const Tensor& delta_lowrank, const Tensor& delta_weight,
                               const Tensor& A, const Tensor& B, const Tensor& C,
                               const std::optional<Tensor>& D,
                               const std::optional<Tensor>& delta_bias, const Tensor& dout,
                               const Tensor& chunk_states, bool delta_softplus,
                               bool rows_by_step, bool merge, bool grads_by_step) {
  TORCH_CHECK(rows_by_step || !grads_by_step,
              "selective_scan cpu: bwd_routes gives the row gradients per route step "
              "(grads_by_step) only for rows given per route step (rows_by_step)");
  const RoutesChecked r = check_routes(x, route_index, delta_lowrank, delta_weight, A, B, C,
                                       D, delta_bias, rows_by_step);
  const Checked& c = r.c;
  const char* rule = "the routed forward's dtype (x's)";
  if (merge) {
    check_tensor(dout, "dout", {c.batch, r.tokens, r.channels}, c.in_type, rule);
  } else {
    check_tensor(dout, "dout", {c.batch, c.groups, c.seqlen, r.channels}, c.in_type, rule);
  }
  check_tensor(chunk_states, "chunk_states",
               {c.batch, c.dim, n_chunks_for(c.seqlen), c.dstate}, c.acc_type,
               "returned by fwd_routes_saved");
  const Tensor dout_c = dout.contiguous(), states = chunk_states.contiguous();
  auto opts = c.u.options();
  Tensor dx = at::zeros({c.batch, r.tokens, r.channels}, opts);
  // the rows' gradients per route step (grads_by_step) or per token
  const int64_t per = grads_by_step ? c.seqlen : r.tokens;
  Tensor dlow = at::zeros({c.batch, c.groups, r.weight.size(1), per}, opts);
  Tensor dweight = at::zeros({c.dim, r.weight.size(1)}, opts);
  Tensor dA = at::zeros({c.dim, c.dstate}, opts);
  Tensor dB = at::zeros({c.batch, c.groups, c.dstate, per}, opts);
  Tensor dC = at::zeros({c.batch, c.groups, c.dstate, per}, opts);
  Tensor dD, ddelta_bias;
  if (c.D.defined()) dD = at::zeros({c.dim}, opts);
  if (c.delta_bias.defined()) ddelta_bias = at::zeros({c.dim}, opts);

  mmssm::SelectiveScanBwdParams p;
  fill_routes(p, r, delta_softplus, merge);
  p.chunk_states = states.numel() > 0 ? states.data_ptr() : nullptr;
  p.dout = dout_c.data_ptr();
  p.du = dx.data_ptr();
  p.ddelta_lowrank = dlow.data_ptr();
  p.ddelta_weight = dweight.data_ptr();
  p.dA = dA.data_ptr();
  p.dB = dB.data_ptr();
  p.dC = dC.data_ptr();
  p.dD = dD.defined() ? dD.data_ptr() : nullptr;
  p.ddelta_bias = ddelta_bias.defined() ? ddelta_bias.data_ptr() : nullptr;
  p.route_grads_by_step = grads_by_step;
  if (c.batch * c.dim > 0 && c.seqlen > 0) {
    pybind11::gil_scoped_release no_gil;
    mmssm::selective_scan_bwd_routes_cpu(p);
  }
  return {dx, dlow, dweight, dA, dB, dC, dD, ddelta_bias};
}

std::vector<Tensor> run_fwd(const Checked& c, bool delta_softplus,
                            const Tensor& delta_lowrank, const Tensor& delta_weight) {
  const Tensor& u = c.u;
  auto acc_opts = u.options().dtype(c.acc_type);
  Tensor out = at::empty({c.batch, c.dim, c.seqlen}, u.options().dtype(c.in_type));
  Tensor last_state = at::zeros({c.batch, c.dim, c.dstate}, acc_opts);
  Tensor chunk_states =
      at::empty({c.batch, c.dim, n_chunks_for(c.seqlen), c.dstate}, acc_opts);

  mmssm::SelectiveScanFwdParams p;
  fill_params(p, c, delta_softplus);
  p.out = out.data_ptr();
  p.last_state = last_state.data_ptr();
  p.chunk_states = chunk_states.numel() > 0 ? chunk_states.data_ptr() : nullptr;
  if (delta_lowrank.defined()) fill_lowrank(p, delta_lowrank, delta_weight);
  {
    pybind11::gil_scoped_release no_gil;
    mmssm::selective_scan_fwd_cpu(p);
  }
  return {out, last_state, chunk_states};
}

std::vector<Tensor> bwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                        const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                        const std::optional<Tensor>& z,
                        const std::optional<Tensor>& delta_bias, const Tensor& dout,
                        const std::optional<Tensor>& chunk_states, bool delta_softplus) {
  Checked c = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  check_tensor(dout, "dout", {c.batch, c.dim, c.seqlen}, c.in_type,
               "u, delta, B, C, z and dout share u's dtype");
  Tensor dout_c = last_dim_contiguous(dout);
  Tensor states;
  if (chunk_states.has_value() && chunk_states->defined() && chunk_states->numel() > 0) {
    check_tensor(*chunk_states, "chunk_states",
                 {c.batch, c.dim, n_chunks_for(c.seqlen), c.dstate}, c.acc_type,
                 "the accumulation dtype returned by fwd");
    states = chunk_states->contiguous();
  }

  auto in_opts = u.options().dtype(c.in_type);
  auto acc_opts = u.options().dtype(c.acc_type);
  Tensor du = at::empty({c.batch, c.dim, c.seqlen}, in_opts);
  Tensor ddelta = at::empty({c.batch, c.dim, c.seqlen}, in_opts);
  Tensor dA = at::zeros({c.dim, c.dstate}, acc_opts);
  Tensor dB = at::zeros({c.batch, c.groups, c.dstate, c.seqlen}, acc_opts);
  Tensor dC = at::zeros({c.batch, c.groups, c.dstate, c.seqlen}, acc_opts);
  Tensor dD, dz, ddelta_bias;
  if (c.D.defined()) dD = at::zeros({c.dim}, acc_opts);
  if (c.z.defined()) dz = at::empty({c.batch, c.dim, c.seqlen}, in_opts);
  if (c.delta_bias.defined()) ddelta_bias = at::zeros({c.dim}, acc_opts);

  mmssm::SelectiveScanBwdParams p;
  fill_params(p, c, delta_softplus);
  p.chunk_states = states.defined() ? states.data_ptr() : nullptr;
  p.dout = dout_c.data_ptr();
  p.dout_batch_stride = dout_c.stride(0);
  p.dout_dim_stride = dout_c.stride(1);
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dz = dz.defined() ? dz.data_ptr() : nullptr;
  p.dA = dA.data_ptr();
  p.dB = dB.data_ptr();
  p.dC = dC.data_ptr();
  p.dD = dD.defined() ? dD.data_ptr() : nullptr;
  p.ddelta_bias = ddelta_bias.defined() ? ddelta_bias.data_ptr() : nullptr;
  {
    pybind11::gil_scoped_release no_gil;
    mmssm::selective_scan_bwd_cpu(p);
  }
  return {du, ddelta, dA, dB, dC, dD, dz, ddelta_bias};
}

// The route ops' inputs: float32 CPU tensors.
void check_float_cpu(const char* op, const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, name, " must be a CPU tensor, got device ",
              t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, name, " must be float32, got ",
              t.scalar_type());
}

// The fused route convolution (route_conv.h): x (B, D, L), weight (2D, K), bias (2D,)
// or None, all float32 -> (B, 2, D, L).
Tensor route_conv_silu(const Tensor& x, const Tensor& weight,
                       const std::optional<Tensor>& bias) {
  const char* op = "route_conv_silu cpu: ";
  TORCH_CHECK(x.defined() && x.dim() == 3, op, "x must be (batch, dim, L), got ",
              x.defined() ? shape_str(x) : std::string("undefined"));
  const int64_t batch = x.size(0), dim = x.size(1), seqlen = x.size(2);
  TORCH_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) == 2 * dim &&
                  weight.size(1) >= 1,
              op, "weight must be (2 * dim, K) = (", 2 * dim, ", K) for x ", shape_str(x),
              ", got ", weight.defined() ? shape_str(weight) : std::string("undefined"));
  check_float_cpu(op, x, "x");
  check_float_cpu(op, weight, "weight");
  Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = *bias;
    check_tensor(b, "bias", {2 * dim}, at::kFloat, "float32 like x");
    b = b.contiguous();
  }
  Tensor xc = last_dim_contiguous(x);
  Tensor wc = weight.contiguous();
  Tensor out = at::empty({batch, 2, dim, seqlen}, x.options());
  mmssm::RouteConvParams p;
  p.batch = batch;
  p.dim = dim;
  p.seqlen = seqlen;
  p.width = wc.size(1);
  p.x = xc.data_ptr<float>();
  p.x_batch_stride = xc.stride(0);
  p.x_dim_stride = xc.stride(1);
  p.weight = wc.data_ptr<float>();
  p.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  p.out = out.data_ptr<float>();
  run_row_driver(p, &mmssm::route_conv_silu_fwd_cpu);
  return out;
}

// The fused route merge + gate (route_conv.h): ys (B, 2, D, L), z (B, D, L) or None,
// float32 -> (B, D, L).
Tensor route_merge_gate(const Tensor& ys, const std::optional<Tensor>& z, double scale) {
  const char* op = "route_merge_gate cpu: ";
  TORCH_CHECK(ys.defined() && ys.dim() == 4 && ys.size(1) == 2, op,
              "ys must be (batch, 2, dim, L), got ",
              ys.defined() ? shape_str(ys) : std::string("undefined"));
  check_float_cpu(op, ys, "ys");
  const int64_t batch = ys.size(0), dim = ys.size(2), seqlen = ys.size(3);
  Tensor zc;
  if (z.has_value() && z->defined()) {
    check_tensor(*z, "z", {batch, dim, seqlen}, at::kFloat, "float32 like ys");
    zc = last_dim_contiguous(*z);
  }
  Tensor ysc = ys.contiguous();
  Tensor out = at::empty({batch, dim, seqlen}, ys.options());
  mmssm::RouteMergeParams p;
  p.batch = batch;
  p.dim = dim;
  p.seqlen = seqlen;
  p.ys = ysc.data_ptr<float>();
  if (zc.defined()) {
    p.z = zc.data_ptr<float>();
    p.z_batch_stride = zc.stride(0);
    p.z_dim_stride = zc.stride(1);
  }
  p.scale = static_cast<float>(scale);
  p.out = out.data_ptr<float>();
  run_row_driver(p, &mmssm::route_merge_gate_fwd_cpu);
  return out;
}

// The fused RMSNorm (rms_norm.h): x (..., C), weight (C,), float32 -> (..., C)
// contiguous.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rms_norm cpu: ";
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) >= 1, op,
              "x must be (..., C) with C >= 1, got ",
              x.defined() ? shape_str(x) : std::string("undefined"));
  check_float_cpu(op, x, "x");
  const int64_t channels = x.size(-1);
  TORCH_CHECK(weight.defined(), op, "weight is undefined");
  check_float_cpu(op, weight, "weight");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == channels, op, "weight must be (",
              channels, ",) like the last axis of x ", shape_str(x), ", got ",
              shape_str(weight));
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, op, "eps must be finite and >= 0, got ",
              eps);
  // (rows, C) with unit channel stride (also for a single row): a view where the leading
  // axes allow one
  Tensor rows = last_dim_contiguous(x.reshape({-1, channels}));
  if (rows.size(0) > 1 && rows.stride(0) < channels) rows = rows.contiguous();
  Tensor wc = weight.contiguous();
  Tensor out = at::empty(x.sizes(), x.options());
  mmssm::RmsNormParams p;
  p.rows = rows.size(0);
  p.channels = channels;
  p.x = rows.data_ptr<float>();
  p.x_row_stride = rows.size(0) > 1 ? rows.stride(0) : channels;
  p.weight = wc.data_ptr<float>();
  p.eps = static_cast<float>(eps);
  p.out = out.data_ptr<float>();
  run_row_driver(p, &mmssm::rms_norm_fwd_cpu);
  return out;
}

// The activations (activation.h) run over the values in memory order: x itself where its
// values are dense (any order of the axes, e.g. a permuted view), else a contiguous copy.
Tensor dense_values(const Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

mmssm::Activation activation_kind(const std::string& kind, const char* op) {
  if (kind == "gelu") return mmssm::Activation::kGelu;
  if (kind == "silu") return mmssm::Activation::kSilu;
  TORCH_CHECK(false, op, "unknown activation '", kind, "'; expected 'gelu' or 'silu'");
  return mmssm::Activation::kGelu;
}

void run_activation(mmssm::Activation kind, const Tensor& x, const Tensor* grad,
                    const Tensor& out) {
  mmssm::ActivationParams p;
  p.kind = kind;
  p.n = x.numel();
  p.x = x.data_ptr<float>();
  p.grad = grad ? grad->data_ptr<float>() : nullptr;
  p.out = out.data_ptr<float>();
  run_row_driver(p, &mmssm::activation_cpu);
}

// activation(x, kind, inplace): gelu(x) = x Phi(x) or silu(x) = x sigmoid(x), float32; a
// new tensor with x's strides, or x itself.
Tensor activation(const Tensor& x, const std::string& kind, bool inplace) {
  const char* op = "activation cpu: ";
  const mmssm::Activation act = activation_kind(kind, op);
  TORCH_CHECK(x.defined(), op, "x is undefined");
  check_float_cpu(op, x, "x");
  if (inplace) {
    TORCH_CHECK(x.is_non_overlapping_and_dense(), op,
                "an in-place activation needs x's values dense in memory, got shape ",
                shape_str(x), " strides ", x.strides());
    run_activation(act, x, nullptr, x);
    return x;
  }
  const Tensor values = dense_values(x);
  Tensor out = at::empty_like(values);
  run_activation(act, values, nullptr, out);
  return out;
}

// activation_backward(grad, x, kind): grad times the derivative at x, float32, same shapes.
Tensor activation_backward(const Tensor& grad, const Tensor& x, const std::string& kind) {
  const char* op = "activation_backward cpu: ";
  const mmssm::Activation act = activation_kind(kind, op);
  TORCH_CHECK(grad.defined() && x.defined(), op, "grad and x must be given");
  check_float_cpu(op, grad, "grad");
  check_float_cpu(op, x, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), op, "grad has shape ", shape_str(grad),
              " but x has shape ", shape_str(x));
  Tensor xv = dense_values(x), gv = dense_values(grad);
  if (gv.strides() != xv.strides()) {  // both in one order of the values
    xv = xv.contiguous();
    gv = gv.contiguous();
  }
  Tensor out = at::empty_like(xv);
  run_activation(act, xv, &gv, out);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmssm selective scan, CPU backend (C++, SIMD, torch's intra-op threads)";
  m.attr("chunk_size") = mmssm::kCpuChunkSize;
  m.def("cpu_isa", &mmssm::selective_scan_cpu_isa,
        "instruction set of the CPU kernels here: 'avx512', 'avx2' or 'generic' (the best "
        "the CPU has, or a lower one named by MMSSM_CPU_ISA)");
  m.def("fwd", &fwd,
        "fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> "
        "[out, last_state, chunk_states]",
        pybind11::arg("u"), pybind11::arg("delta"), pybind11::arg("A"), pybind11::arg("B"),
        pybind11::arg("C"), pybind11::arg("D"), pybind11::arg("z"),
        pybind11::arg("delta_bias"), pybind11::arg("delta_softplus"));
  m.def("fwd_lowrank", &fwd_lowrank,
        "fwd_lowrank(u, delta_lowrank, delta_weight, A, B, C, D, z, delta_bias, "
        "delta_softplus) -> [out, last_state, chunk_states]: fwd with delta[b,d,l] = "
        "sum_r delta_weight[d,r] * delta_lowrank[b,g(d),r,l] formed in the kernel",
        pybind11::arg("u"), pybind11::arg("delta_lowrank"), pybind11::arg("delta_weight"),
        pybind11::arg("A"), pybind11::arg("B"), pybind11::arg("C"), pybind11::arg("D"),
        pybind11::arg("z"), pybind11::arg("delta_bias"), pybind11::arg("delta_softplus"));
  m.def("fwd_routes", &fwd_routes,
        "fwd_routes(x, route_index, delta_lowrank, delta_weight, A, B, C, D, delta_bias, "
        "delta_softplus, merge, rows_by_step=False) -> out: the routes of route_index "
        "(G, L) scanned from the token-major map x (batch, T, E) and summed back into out "
        "(batch, T, E), or with merge false out (batch, G, L, E) per route step; "
        "delta_lowrank, B, C per token (batch, G, R or N, T), or with rows_by_step per route "
        "step (batch, G, R or N, L) (see csrc/selective_scan/scan.h: route_index)",
        pybind11::arg("x"), pybind11::arg("route_index"), pybind11::arg("delta_lowrank"),
        pybind11::arg("delta_weight"), pybind11::arg("A"), pybind11::arg("B"),
        pybind11::arg("C"), pybind11::arg("D"), pybind11::arg("delta_bias"),
        pybind11::arg("delta_softplus"), pybind11::arg("merge"),
        pybind11::arg("rows_by_step") = false);
  m.def("fwd_routes_saved", &fwd_routes_saved,
        "fwd_routes_saved(x, route_index, delta_lowrank, delta_weight, A, B, C, D, "
        "delta_bias, delta_softplus, rows_by_step=False, merge=True) -> [out, "
        "chunk_states]: fwd_routes keeping the block states bwd_routes restarts from",
        pybind11::arg("x"), pybind11::arg("route_index"), pybind11::arg("delta_lowrank"),
        pybind11::arg("delta_weight"), pybind11::arg("A"), pybind11::arg("B"),
        pybind11::arg("C"), pybind11::arg("D"), pybind11::arg("delta_bias"),
        pybind11::arg("delta_softplus"), pybind11::arg("rows_by_step") = false,
        pybind11::arg("merge") = true);
  m.def("bwd_routes", &bwd_routes,
        "bwd_routes(x, route_index, delta_lowrank, delta_weight, A, B, C, D, delta_bias, "
        "dout, chunk_states, delta_softplus, rows_by_step=False, merge=True, "
        "grads_by_step=False) -> [dx, ddelta_lowrank, ddelta_weight, dA, dB, dC, dD, "
        "ddelta_bias]: the gradients of fwd_routes_saved's out for dout (batch, T, E), or "
        "(batch, G, L, E) with merge false; those of delta_lowrank, B and C per token, or "
        "with grads_by_step (rows given per step) per route step",
        pybind11::arg("x"), pybind11::arg("route_index"), pybind11::arg("delta_lowrank"),
        pybind11::arg("delta_weight"), pybind11::arg("A"), pybind11::arg("B"),
        pybind11::arg("C"), pybind11::arg("D"), pybind11::arg("delta_bias"),
        pybind11::arg("dout"), pybind11::arg("chunk_states"),
        pybind11::arg("delta_softplus"), pybind11::arg("rows_by_step") = false,
        pybind11::arg("merge") = true, pybind11::arg("grads_by_step") = false);
  m.def("route_conv_silu", &route_conv_silu,
        "route_conv_silu(x, weight, bias) -> out: Vim's causal depthwise conv1d + bias + "
        "SiLU over x (B, D, L) read forward (route 0, weight[:D]) and reversed in time "
        "(route 1, weight[D:]), out (B, 2, D, L), float32 (see csrc/selective_scan/"
        "route_conv.h)",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("bias"));
  m.def("route_merge_gate", &route_merge_gate,
        "route_merge_gate(ys, z, scale) -> out: (ys[:, 0] + ys[:, 1] reversed in time) * "
        "silu(z) * scale, ys (B, 2, D, L), z (B, D, L) or None, float32 (see "
        "csrc/selective_scan/route_conv.h)",
        pybind11::arg("ys"), pybind11::arg("z"), pybind11::arg("scale"));
  m.def("rms_norm", &rms_norm,
        "rms_norm(x, weight, eps) -> out: x / sqrt(mean(x^2 over the last axis) + eps) * "
        "weight, x (..., C), weight (C,), float32 (see csrc/selective_scan/rms_norm.h)",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("eps"));
  m.def("activation", &activation,
        "activation(x, kind, inplace=False) -> out: kind 'gelu' (x Phi(x), nn.GELU(), "
        "exact) or 'silu' (x sigmoid(x)), float32; out has x's strides, or is x with "
        "inplace (see csrc/selective_scan/activation.h)",
        pybind11::arg("x"), pybind11::arg("kind"), pybind11::arg("inplace") = false);
  m.def("activation_backward", &activation_backward,
        "activation_backward(grad, x, kind) -> grad * d activation / dx at x, float32",
        pybind11::arg("grad"), pybind11::arg("x"), pybind11::arg("kind"));
  m.def("bwd", &bwd,
        "bwd(u, delta, A, B, C, D, z, delta_bias, dout, chunk_states, delta_softplus) -> "
        "[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]",
        pybind11::arg("u"), pybind11::arg("delta"), pybind11::arg("A"), pybind11::arg("B"),
        pybind11::arg("C"), pybind11::arg("D"), pybind11::arg("z"),
        pybind11::arg("delta_bias"), pybind11::arg("dout"), pybind11::arg("chunk_states"),
        pybind11::arg("delta_softplus"));
}
