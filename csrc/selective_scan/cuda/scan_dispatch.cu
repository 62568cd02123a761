// Host entry points of the CUDA backend (declared in ../scan.h): argument checks that
// do not need torch, then dispatch on the input dtype. Returns 0 or a cudaError_t.
#include "scan_common.cuh"
#include "scan_launch.cuh"

namespace mmssm {
namespace cuda_scan {
namespace {

constexpr int kInvalid = static_cast<int>(cudaErrorInvalidValue);

// Size checks shared by forward and backward; 0 when the sizes are well formed.
int check_sizes(const SelectiveScanFwdParams& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0) return kInvalid;
  if (p.dstate < 1 || p.dstate > kMaxDState) return kInvalid;
  if (p.n_groups < 1 || p.dim % p.n_groups != 0) return kInvalid;
  if (p.delta_lowrank != nullptr) return kInvalid;  // a low-rank delta is CPU-only
  if (p.route_index != nullptr) return kInvalid;    // so is the routed forward
  return 0;
}

// Input pointers (checked only for non-empty problems: empty tensors may have none).
bool has_inputs(const SelectiveScanFwdParams& p) {
  return p.u != nullptr && p.delta != nullptr && p.A != nullptr && p.B != nullptr &&
         p.C != nullptr;
}

bool empty_problem(const SelectiveScanFwdParams& p) {
  return p.batch == 0 || p.dim == 0 || p.seqlen == 0;
}

template <typename Launch>
int dispatch_dtype(ScanDType type, Launch&& launch) {
  switch (type) {
    case ScanDType::kFloat32: return launch(float{});
    case ScanDType::kFloat16: return launch(__half{});
    case ScanDType::kBFloat16: return launch(__nv_bfloat16{});
    default: return kInvalid;  // fp64 is CPU-only
  }
}

}  // namespace

int selective_scan_fwd_cuda_tier(const SelectiveScanFwdParams& p, void* stream, Tier tier) {
  if (int err = check_sizes(p)) return err;
  if (p.chunk_states != nullptr &&
      (p.chunk_size < 8 || p.n_chunks != num_chunks_for(p.seqlen, p.chunk_size))) {
    return kInvalid;  // the kernel saves at most one chunk end per thread (<= 8 items)
  }
  if (empty_problem(p)) return 0;
  if (!has_inputs(p) || p.out == nullptr) return kInvalid;
  return dispatch_dtype(p.input_type, [&](auto tag) {
    return launch_selective_scan_fwd<decltype(tag)>(p, stream, tier);
  });
}

}  // namespace cuda_scan

int selective_scan_fwd_cuda(const SelectiveScanFwdParams& p, void* stream) {
  return cuda_scan::selective_scan_fwd_cuda_tier(
      p, stream, cuda_scan::scan_tier(p.batch, p.dim, p.seqlen));
}

int selective_scan_bwd_cuda(const SelectiveScanBwdParams& p, void* stream) {
  using namespace cuda_scan;
  if (int err = check_sizes(p)) return err;
  if (backward_tier_for_chunk(p.chunk_size).warps == 0) return kInvalid;
  if (p.n_chunks != num_chunks_for(p.seqlen, p.chunk_size)) return kInvalid;
  if (empty_problem(p)) return 0;
  if (!has_inputs(p) || p.dout == nullptr || p.du == nullptr || p.ddelta == nullptr ||
      p.dA == nullptr || p.dB == nullptr || p.dC == nullptr ||
      (p.z != nullptr && p.dz == nullptr) || (p.n_chunks > 1 && p.chunk_states == nullptr)) {
    return kInvalid;
  }
  return dispatch_dtype(p.input_type, [&](auto tag) {
    return launch_selective_scan_bwd<decltype(tag)>(p, stream);
  });
}

}  // namespace mmssm
