// CPU drivers of the fused route ops (../route_conv.h): argument checks, the instruction
// set, and the split into ranges of (batch, channel) rows; the kernels are in
// route_conv_kernels.h.
#include <stdexcept>

#include "scan_cpu_common.h"

namespace mmssm {

namespace {

// Runs rows(begin, end, scratch) over the (batch, channel) rows of p in ranges of 8 on
// p's workers, each with `scratch_bytes` of scratch; `per_row` is the work of one row.
template <typename Params, typename Rows>
void run_row_ranges(const Params& p, int64_t per_row, int64_t scratch_bytes, Rows&& rows) {
  constexpr int64_t kRowsPerItem = 8;
  const int64_t total = p.batch * p.dim;
  if (total == 0 || p.seqlen == 0) return;
  const int64_t items = (total + kRowsPerItem - 1) / kRowsPerItem;
  cpu::run_items(p.num_threads, p.run_workers, items, total * per_row, scratch_bytes,
                 [&](int64_t i, void* scratch) {
                   const int64_t begin = i * kRowsPerItem;
                   rows(begin, std::min(total, begin + kRowsPerItem), scratch);
                 });
}

}  // namespace

void route_conv_silu_fwd_cpu(const RouteConvParams& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0 || p.width < 1) {
    throw std::invalid_argument(
        "route_conv_silu_cpu: invalid sizes (need batch, dim, seqlen >= 0, width >= 1)");
  }
  const cpu::Kernels& k = cpu::float_kernels();
  run_row_ranges(p, 2 * p.seqlen * p.width, k.route_conv_scratch_bytes(p),
                 [&](int64_t begin, int64_t end, void* scratch) {
                   k.route_conv_rows(p, begin, end, scratch);
                 });
}

void route_merge_gate_fwd_cpu(const RouteMergeParams& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0) {
    throw std::invalid_argument(
        "route_merge_gate_cpu: invalid sizes (need batch, dim, seqlen >= 0)");
  }
  const cpu::Kernels& k = cpu::float_kernels();
  run_row_ranges(p, 2 * p.seqlen, k.route_merge_scratch_bytes(p),
                 [&](int64_t begin, int64_t end, void* scratch) {
                   k.route_merge_rows(p, begin, end, scratch);
                 });
}

}  // namespace mmssm
