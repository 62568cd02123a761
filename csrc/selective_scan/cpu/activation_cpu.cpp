// CPU driver of the activations (../activation.h): argument checks, the instruction set, and the
// split into ranges of values; the kernel is in activation_kernels.h.
#include <algorithm>
#include <stdexcept>

#include "scan_cpu_common.h"

namespace mmssm {

void activation_cpu(const ActivationParams& p) {
  if (p.n < 0) throw std::invalid_argument("activation_cpu: n must be >= 0");
  if (p.n == 0) return;
  if (p.kind != Activation::kGelu && p.kind != Activation::kSilu) {
    throw std::invalid_argument("activation_cpu: unknown activation");
  }
  if (p.x == nullptr || p.out == nullptr) {
    throw std::invalid_argument("activation_cpu: x and out must be given");
  }
  // A range's values fill whole cache lines (a multiple of 16 floats), and there are
  // enough ranges to balance two or more workers.
  constexpr int64_t kValuesPerItem = int64_t(1) << 14;
  const cpu::Kernels& k = cpu::float_kernels();
  const int64_t items = (p.n + kValuesPerItem - 1) / kValuesPerItem;
  cpu::run_items(p.num_threads, p.run_workers, items, p.n, 0, [&](int64_t i, void*) {
    const int64_t begin = i * kValuesPerItem;
    k.activation_range(p, begin, std::min(p.n, begin + kValuesPerItem));
  });
}

}  // namespace mmssm
