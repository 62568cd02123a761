// CPU drivers of the fused route ops (../route_conv.h): argument checks, the instruction
// set, and the split into ranges of (batch, channel) rows; the kernels are in
// route_conv_kernels.h.
#include <stdexcept>

#include "scan_cpu_common.h"

namespace mmssm {

namespace {
constexpr int64_t kRowsPerItem = 8;
}  // namespace

void route_conv_silu_fwd_cpu(const RouteConvParams& p) {
  using namespace cpu;
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0 || p.width < 1) {
    throw std::invalid_argument(
        "route_conv_silu_cpu: invalid sizes (need batch, dim, seqlen >= 0, width >= 1)");
  }
  const int64_t rows = p.batch * p.dim;
  if (rows == 0 || p.seqlen == 0) return;
  const Kernels* k = &float_kernels();
  const int64_t items = (rows + kRowsPerItem - 1) / kRowsPerItem;
  run_items(p.num_threads, p.run_workers, items, 2 * rows * p.seqlen * p.width,
            k->route_conv_scratch_bytes(p), [&](int64_t i, void* scratch) {
              const int64_t begin = i * kRowsPerItem;
              k->route_conv_rows(p, begin, std::min(rows, begin + kRowsPerItem), scratch);
            });
}

void route_merge_gate_fwd_cpu(const RouteMergeParams& p) {
  using namespace cpu;
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0) {
    throw std::invalid_argument(
        "route_merge_gate_cpu: invalid sizes (need batch, dim, seqlen >= 0)");
  }
  const int64_t rows = p.batch * p.dim;
  if (rows == 0 || p.seqlen == 0) return;
  const Kernels* k = &float_kernels();
  const int64_t items = (rows + kRowsPerItem - 1) / kRowsPerItem;
  run_items(p.num_threads, p.run_workers, items, 2 * rows * p.seqlen,
            k->route_merge_scratch_bytes(p), [&](int64_t i, void* scratch) {
              const int64_t begin = i * kRowsPerItem;
              k->route_merge_rows(p, begin, std::min(rows, begin + kRowsPerItem), scratch);
            });
}

}  // namespace mmssm
