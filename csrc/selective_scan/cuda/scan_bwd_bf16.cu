// Backward selective-scan kernels for __nv_bfloat16 inputs. One translation unit per
// (direction, dtype) keeps each nvcc job small and lets the six compile in parallel.
#include "scan_bwd.cuh"

namespace mmssm {
namespace cuda_scan {

template int launch_selective_scan_bwd<__nv_bfloat16>(const SelectiveScanBwdParams&, void*);

}  // namespace cuda_scan
}  // namespace mmssm
