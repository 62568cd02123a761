// CPU selective scan, forward: argument checks and the split into tiles; the kernels and
// the design notes are in scan_cpu_kernels.h.
#include "scan_cpu_common.h"

namespace mmssm {

void selective_scan_fwd_cpu(const SelectiveScanFwdParams& p) {
  using namespace cpu;
  check_common(p);
  if (p.route_index) {
    throw std::invalid_argument(
        "selective_scan_fwd_cpu: route_index is set; the routed forward is "
        "selective_scan_fwd_routes_cpu");
  }
  const Kernels& k = kernels_for(p);
  const TileGrid grid(p, k.tile_width(p));
  if (p.seqlen == 0 || grid.tiles == 0) return;
  run_items(p, grid.tiles, p.batch * p.dim * p.seqlen * p.dstate, k.fwd_scratch_bytes(p),
            [&](int64_t i, void* scratch) { k.fwd_tile(p, grid[i], scratch); });
}

void selective_scan_fwd_routes_cpu(const SelectiveScanFwdParams& p) {
  using namespace cpu;
  check_common(p);
  if (!p.route_index || !p.delta_lowrank || p.z || p.last_state || p.tokens < 0 ||
      !(p.input_type == ScanDType::kFloat32 || p.input_type == ScanDType::kFloat64)) {
    throw std::invalid_argument(
        "selective_scan_cpu routed forward: needs route_index, a low-rank delta and "
        "float32 / float64 inputs, and takes no z or last_state");
  }
  const Kernels& k = kernels_for(p);
  const TileGrid grid(p, k.tile_width(p));
  if (p.seqlen == 0 || grid.tiles == 0) return;
  const int64_t per_item = route_item_tiles(p.batch * grid.tiles_per_group, p.num_threads);
  const int64_t items = (grid.tiles_per_group + per_item - 1) / per_item;
  run_items(p, p.batch * items, p.batch * p.dim * p.seqlen * p.dstate,
            k.fwd_scratch_bytes(p), [&](int64_t i, void* scratch) {
              const int64_t first = i % items * per_item;
              k.fwd_routes_item(p, grid, i / items, first,
                                std::min(per_item, grid.tiles_per_group - first), scratch);
            });
}

}  // namespace mmssm
