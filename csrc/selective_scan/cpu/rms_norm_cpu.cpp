// CPU driver of the fused RMSNorm (../rms_norm.h): argument checks, the instruction set,
// and the split into ranges of rows; the kernel is in rms_norm_kernels.h.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "scan_cpu_common.h"

namespace mmssm {

void rms_norm_fwd_cpu(const RmsNormParams& p) {
  if (p.rows < 0 || p.channels < 1 || p.x_row_stride < p.channels || !(p.eps >= 0.f) ||
      !std::isfinite(p.eps)) {
    throw std::invalid_argument(
        "rms_norm_cpu: invalid arguments (need rows >= 0, channels >= 1, a row stride of "
        "at least channels and a finite eps >= 0)");
  }
  if (p.rows == 0) return;
  if (p.x == nullptr || p.weight == nullptr || p.out == nullptr) {
    throw std::invalid_argument("rms_norm_cpu: x, weight and out must be given");
  }
  constexpr int64_t kRowsPerItem = 16;
  const cpu::Kernels& k = cpu::float_kernels();
  const int64_t items = (p.rows + kRowsPerItem - 1) / kRowsPerItem;
  cpu::run_items(p.num_threads, p.run_workers, items, p.rows * p.channels, 0,
                 [&](int64_t i, void*) {
                   const int64_t begin = i * kRowsPerItem;
                   k.rms_norm_rows(p, begin, std::min(p.rows, begin + kRowsPerItem));
                 });
}

}  // namespace mmssm
