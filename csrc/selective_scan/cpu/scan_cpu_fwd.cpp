// CPU selective scan, forward: argument checks and the split into tiles; the kernels and
// the design notes are in scan_cpu_kernels.h.
#include "scan_cpu_common.h"

namespace mmssm {

void selective_scan_fwd_cpu(const SelectiveScanFwdParams& p) {
  using namespace cpu;
  check_common(p);
  const Kernels& k = kernels_for(p);
  const TileGrid grid(p, k.tile_width(p));
  if (p.seqlen == 0 || grid.tiles == 0) return;
  run_items(p, grid.tiles, p.batch * p.dim * p.seqlen * p.dstate, k.fwd_scratch_bytes(p),
            [&](int64_t i, void* scratch) { k.fwd_tile(p, grid[i], scratch); });
}

}  // namespace mmssm
