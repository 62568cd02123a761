// Torch binding of the CUDA selective scan: the extension module `mmssm._C_cuda`.
//
// Same Python API as the CPU module `mmssm._C`:
//   fwd(u, delta, A, B, C, D?, z?, delta_bias?, delta_softplus)
//       -> [out, last_state, chunk_states]
//   bwd(u, delta, A, B, C, D?, z?, delta_bias?, dout, chunk_states?, delta_softplus)
//       -> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]   (absent ones undefined)
// Shapes: u, delta, z, dout (batch, dim, L); A (dim, N); B, C (batch, G, N, L);
// D, delta_bias (dim,). u/delta/B/C/z/dout share one dtype (fp32, fp16, bf16) and have
// unit stride along L (other strides are passed through); A/D/delta_bias are fp32.
// Outputs: out, du, ddelta, dz in the input dtype; last_state (batch, dim, N),
// chunk_states (batch, dim, n_chunks, N), dA, dB, dC, dD, ddelta_bias in fp32 (the
// Python glue casts each gradient to its input's dtype). chunk_states holds h at the end
// of every chunk of cuda_scan::chunk_size_for(batch, dim, L) steps; bwd re-creates it
// with the forward kernel when it is None or empty.
// Compiled only where torch has CUDA; the kernels themselves (cuda/*.cu) are torch-free.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <vector>

#include "cuda/launch_policy.cuh"
#include "scan.h"

namespace {

using at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

constexpr const char* kOp = "selective_scan (cuda): ";

mmssm::ScanDType input_dtype(const Tensor& u) {
  switch (u.scalar_type()) {
    case at::kFloat: return mmssm::ScanDType::kFloat32;
    case at::kHalf: return mmssm::ScanDType::kFloat16;
    case at::kBFloat16: return mmssm::ScanDType::kBFloat16;
    default:
      TORCH_CHECK(false, kOp, "u has dtype ", u.scalar_type(),
                  "; the CUDA backend supports float32, float16 and bfloat16");
  }
  return mmssm::ScanDType::kFloat32;  // unreachable
}

void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& expected,
                 const char* layout) {
  TORCH_CHECK(t.sizes().vec() == expected, kOp, name, " has shape ", t.sizes(), ", expected ",
              at::IntArrayRef(expected), " ", layout);
}

void check_device(const Tensor& t, const char* name, const Tensor& u) {
  TORCH_CHECK(t.is_cuda(), kOp, name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == u.device(), kOp, name, " is on ", t.device(), " but u is on ",
              u.device(), "; all inputs must be on one device");
}

// Activations: input dtype and unit stride along the time axis.
void check_activation(const Tensor& t, const char* name, const Tensor& u) {
  check_device(t, name, u);
  TORCH_CHECK(t.scalar_type() == u.scalar_type(), kOp, name, " has dtype ", t.scalar_type(),
              " but u has ", u.scalar_type(), "; u, delta, B, C, z and dout must share one dtype");
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, kOp, name,
              " must have stride 1 along its last (time) axis, got strides ", t.strides());
}

// Weights and saved states: contiguous fp32.
void check_fp32(const Tensor& t, const char* name, const Tensor& u) {
  check_device(t, name, u);
  TORCH_CHECK(t.scalar_type() == at::kFloat, kOp, name, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), kOp, name, " must be contiguous");
}

struct Shape {
  int64_t batch, dim, seqlen, dstate, groups;
};

// Called when u is not a CUDA tensor: on a machine without a usable GPU the first thing
// to say is that, not "move u to the GPU". The CUDA runtime's own reason is included
// (no driver, no device, driver too old for this runtime, ...).
void check_cuda_device_present() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error so later CUDA calls do not report it again
    TORCH_CHECK(false, kOp, "no CUDA device is available (cudaGetDeviceCount: ",
                cudaGetErrorString(err), "); mmssm._C_cuda needs an NVIDIA GPU and driver. "
                "Use the 'cpu' or 'torch' backend on this machine.");
  }
  TORCH_CHECK(count > 0, kOp, "no CUDA device is available (cudaGetDeviceCount found 0 "
              "devices); mmssm._C_cuda needs an NVIDIA GPU. Use the 'cpu' or 'torch' backend "
              "on this machine.");
}

// Validates every input shared by fwd and bwd; returns the problem sizes.
Shape check_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                   const Tensor& C, const OptTensor& D, const OptTensor& z,
                   const OptTensor& delta_bias) {
  if (!u.is_cuda()) check_cuda_device_present();
  TORCH_CHECK(u.is_cuda(), kOp, "u must be a CUDA tensor, got one on ", u.device());
  TORCH_CHECK(u.dim() == 3, kOp, "u must be (batch, dim, L), got shape ", u.sizes());
  input_dtype(u);
  Shape s;
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.seqlen = u.size(2);
  TORCH_CHECK(u.size(-1) <= 1 || u.stride(-1) == 1, kOp,
              "u must have stride 1 along its last (time) axis, got strides ", u.strides());
  check_activation(delta, "delta", u);
  check_shape(delta, "delta", {s.batch, s.dim, s.seqlen}, "(batch, dim, L) like u");

  check_fp32(A, "A", u);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == s.dim, kOp, "A must be (dim, N) = (", s.dim,
              ", N), got shape ", A.sizes());
  s.dstate = A.size(1);
  TORCH_CHECK(s.dstate >= 1 && s.dstate <= 256, kOp, "A has shape ", A.sizes(),
              "; the CUDA backend needs 1 <= N <= 256");

  TORCH_CHECK(B.dim() == 4, kOp, "B must be (batch, G, N, L) = (", s.batch, ", G, ", s.dstate,
              ", ", s.seqlen, "), got shape ", B.sizes());
  s.groups = B.size(1);
  TORCH_CHECK(s.groups >= 1 && s.dim % s.groups == 0, kOp, "dim=", s.dim,
              " (u ", u.sizes(), ") is not divisible by the number of groups G=", s.groups,
              " (B ", B.sizes(), ")");
  check_activation(B, "B", u);
  check_shape(B, "B", {s.batch, s.groups, s.dstate, s.seqlen}, "(batch, G, N, L)");
  check_activation(C, "C", u);
  check_shape(C, "C", {s.batch, s.groups, s.dstate, s.seqlen}, "(batch, G, N, L) like B");

  if (D.has_value()) {
    check_fp32(*D, "D", u);
    check_shape(*D, "D", {s.dim}, "(dim,)");
  }
  if (delta_bias.has_value()) {
    check_fp32(*delta_bias, "delta_bias", u);
    check_shape(*delta_bias, "delta_bias", {s.dim}, "(dim,)");
  }
  if (z.has_value()) {
    check_activation(*z, "z", u);
    check_shape(*z, "z", {s.batch, s.dim, s.seqlen}, "(batch, dim, L) like u");
  }
  return s;
}

// Fills the forward part of the params (inputs only; outputs are set by the callers).
void fill_inputs(mmssm::SelectiveScanFwdParams& p, const Shape& s, const Tensor& u,
                 const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                 const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                 bool delta_softplus) {
  p.batch = s.batch;
  p.dim = s.dim;
  p.seqlen = s.seqlen;
  p.dstate = s.dstate;
  p.n_groups = s.groups;
  p.input_type = input_dtype(u);
  p.delta_softplus = delta_softplus;
  p.u = u.data_ptr();
  p.u_batch_stride = u.stride(0);
  p.u_dim_stride = u.stride(1);
  p.delta = delta.data_ptr();
  p.delta_batch_stride = delta.stride(0);
  p.delta_dim_stride = delta.stride(1);
  if (z.has_value()) {
    p.z = z->data_ptr();
    p.z_batch_stride = z->stride(0);
    p.z_dim_stride = z->stride(1);
  }
  p.B = B.data_ptr();
  p.B_batch_stride = B.stride(0);
  p.B_group_stride = B.stride(1);
  p.B_dstate_stride = B.stride(2);
  p.C = C.data_ptr();
  p.C_batch_stride = C.stride(0);
  p.C_group_stride = C.stride(1);
  p.C_dstate_stride = C.stride(2);
  p.A = A.data_ptr();
  p.D = D.has_value() ? D->data_ptr() : nullptr;
  p.delta_bias = delta_bias.has_value() ? delta_bias->data_ptr() : nullptr;
  p.chunk_size = mmssm::cuda_scan::chunk_size_for(s.batch, s.dim, s.seqlen);
  p.n_chunks = mmssm::cuda_scan::num_chunks_for(s.seqlen, p.chunk_size);
}

void check_launch(int err, const char* which) {
  TORCH_CHECK(err == 0, kOp, which, " kernel launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
}

std::vector<Tensor> fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                        const Tensor& C, const OptTensor& D, const OptTensor& z,
                        const OptTensor& delta_bias, bool delta_softplus) {
  const Shape s = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  const c10::cuda::CUDAGuard device_guard(u.device());

  mmssm::SelectiveScanFwdParams p;
  fill_inputs(p, s, u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  const auto fp32 = u.options().dtype(at::kFloat);
  Tensor out = at::empty({s.batch, s.dim, s.seqlen}, u.options());
  // An empty sequence leaves the state at its initial zero.
  Tensor last_state = s.seqlen == 0 ? at::zeros({s.batch, s.dim, s.dstate}, fp32)
                                    : at::empty({s.batch, s.dim, s.dstate}, fp32);
  Tensor chunk_states = at::empty({s.batch, s.dim, p.n_chunks, s.dstate}, fp32);
  p.out = out.data_ptr();
  p.last_state = last_state.data_ptr();
  p.chunk_states = chunk_states.data_ptr();

  check_launch(mmssm::selective_scan_fwd_cuda(p, c10::cuda::getCurrentCUDAStream().stream()),
               "forward");
  return {out, last_state, chunk_states};
}

std::vector<Tensor> bwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                        const Tensor& C, const OptTensor& D, const OptTensor& z,
                        const OptTensor& delta_bias, const Tensor& dout,
                        const OptTensor& chunk_states, bool delta_softplus) {
  const Shape s = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  check_activation(dout, "dout", u);
  check_shape(dout, "dout", {s.batch, s.dim, s.seqlen}, "(batch, dim, L) like u");
  const c10::cuda::CUDAGuard device_guard(u.device());

  mmssm::SelectiveScanBwdParams p;
  fill_inputs(p, s, u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  const auto fp32 = u.options().dtype(at::kFloat);
  Tensor states;
  if (chunk_states.has_value() && chunk_states->defined() && chunk_states->numel() > 0) {
    states = *chunk_states;
    check_fp32(states, "chunk_states", u);
    check_shape(states, "chunk_states", {s.batch, s.dim, p.n_chunks, s.dstate},
                "(batch, dim, n_chunks, N) as returned by fwd for these shapes");
  } else {
    // Not given: run the forward once more to get them (its output is discarded).
    states = at::empty({s.batch, s.dim, p.n_chunks, s.dstate}, fp32);
    Tensor scratch = at::empty({s.batch, s.dim, s.seqlen}, u.options());
    mmssm::SelectiveScanFwdParams fp = p;
    fp.out = scratch.data_ptr();
    fp.chunk_states = states.data_ptr();
    check_launch(mmssm::selective_scan_fwd_cuda(fp, c10::cuda::getCurrentCUDAStream().stream()),
                 "forward (chunk_states recompute)");
  }
  p.chunk_states = states.data_ptr();
  p.dout = dout.data_ptr();
  p.dout_batch_stride = dout.stride(0);
  p.dout_dim_stride = dout.stride(1);

  Tensor du = at::empty({s.batch, s.dim, s.seqlen}, u.options());
  Tensor ddelta = at::empty({s.batch, s.dim, s.seqlen}, u.options());
  Tensor dz = z.has_value() ? at::empty({s.batch, s.dim, s.seqlen}, u.options()) : Tensor();
  // Accumulated with atomics: start from zero.
  Tensor dA = at::zeros({s.dim, s.dstate}, fp32);
  Tensor dB = at::zeros({s.batch, s.groups, s.dstate, s.seqlen}, fp32);
  Tensor dC = at::zeros({s.batch, s.groups, s.dstate, s.seqlen}, fp32);
  Tensor dD = D.has_value() ? at::zeros({s.dim}, fp32) : Tensor();
  Tensor ddelta_bias = delta_bias.has_value() ? at::zeros({s.dim}, fp32) : Tensor();
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dz = z.has_value() ? dz.data_ptr() : nullptr;
  p.dA = dA.data_ptr();
  p.dB = dB.data_ptr();
  p.dC = dC.data_ptr();
  p.dD = D.has_value() ? dD.data_ptr() : nullptr;
  p.ddelta_bias = delta_bias.has_value() ? ddelta_bias.data_ptr() : nullptr;

  check_launch(mmssm::selective_scan_bwd_cuda(p, c10::cuda::getCurrentCUDAStream().stream()),
               "backward");
  return {du, ddelta, dA, dB, dC, dD, dz, ddelta_bias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmssm selective scan, CUDA kernels (see csrc/selective_scan/cuda_bindings.cpp)";
  m.def("fwd", &fwd, "Selective scan forward -> [out, last_state, chunk_states]",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D") = py::none(), py::arg("z") = py::none(),
        py::arg("delta_bias") = py::none(), py::arg("delta_softplus") = false);
  m.def("bwd", &bwd,
        "Selective scan backward -> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("z"), py::arg("delta_bias"), py::arg("dout"), py::arg("chunk_states"),
        py::arg("delta_softplus") = false);
}
