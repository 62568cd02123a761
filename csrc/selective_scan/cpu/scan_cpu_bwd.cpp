// CPU selective scan, backward: argument checks, the work items and the fixed-order
// reduction of their partial gradients; the kernels and the design notes are in
// scan_cpu_kernels.h.
#include <cstring>

#include "scan_cpu_common.h"

namespace mmssm {
namespace cpu {
namespace {

// Fixed-order sums of the partials into the (zero-initialised) outputs.
template <typename acc_t>
void reduce_partials(const SelectiveScanBwdParams& p, const BwdPartials& part,
                     int64_t slices, bool in_place) {
  const int64_t batch = p.batch, dim = p.dim, n = p.dstate, L = p.seqlen;
  sum_over_batch<acc_t>(part.dA, p.dA, batch, dim * n);
  sum_over_batch<acc_t>(part.dD, p.dD, batch, dim);
  sum_over_batch<acc_t>(part.dbias, p.ddelta_bias, batch, dim);
  if (in_place) return;
  // dB / dC: the slices' (L, N) partial rows summed into (N, L).
  const int64_t rows = batch * p.n_groups;
  const int64_t slab = rows * L * n;
  const acc_t* dB_p = static_cast<const acc_t*>(part.dB);
  const acc_t* dC_p = static_cast<const acc_t*>(part.dC);
  acc_t* dB = static_cast<acc_t*>(p.dB);
  acc_t* dC = static_cast<acc_t*>(p.dC);
  run_items(p, rows, rows * L * n, 0, [&](int64_t r, void*) {
    for (int64_t s = 0; s < slices; ++s) {
      const acc_t* srcB = dB_p + s * slab + r * L * n;
      const acc_t* srcC = dC_p + s * slab + r * L * n;
      for (int64_t st = 0; st < n; ++st) {
        acc_t* outB = dB + (r * n + st) * L;
        acc_t* outC = dC + (r * n + st) * L;
        for (int64_t l = 0; l < L; ++l) {
          outB[l] += srcB[l * n + st];
          outC[l] += srcC[l * n + st];
        }
      }
    }
  });
}

}  // namespace
}  // namespace cpu

void selective_scan_bwd_cpu(const SelectiveScanBwdParams& p) {
  using namespace cpu;
  check_common(p);
  if (p.delta_lowrank || p.route_index) {
    throw std::invalid_argument(
        "selective_scan_bwd_cpu: the backward takes the full delta, not a low-rank one, "
        "and no route_index");
  }
  const int64_t batch = p.batch, G = p.n_groups, n = p.dstate, L = p.seqlen;
  if (batch * p.dim == 0 || L == 0) return;
  const int64_t elem = acc_size(p.input_type);
  const Kernels& k = kernels_for(p);
  const TileGrid grid(p, k.tile_width(p));

  // Tile slices per (batch, group), each with its own dB / dC partials (TileSlices).
  const TileSlices cut(batch * G, 2 * batch * G * L * n * elem, grid.tiles_per_group, 128);
  const int64_t slices = cut.count, per_slice = cut.per_slice;

  // One slice and N == 1: the (L, N) partial layout is dB's (N, L) layout, so the items
  // accumulate into dB / dC directly (the caller zero-initialised them).
  const bool in_place = slices == 1 && n == 1;
  const size_t slab_elems = static_cast<size_t>(slices * batch * G * L * n);
  std::vector<double> dB_buf(in_place ? 0 : slab_elems * elem / 8 + 1);
  std::vector<double> dC_buf(in_place ? 0 : slab_elems * elem / 8 + 1);
  std::vector<double> small_buf(static_cast<size_t>(batch * p.dim * (n + 2) * elem / 8 + 1));
  char* small = reinterpret_cast<char*>(small_buf.data());
  BwdPartials part;
  part.dB = in_place ? p.dB : static_cast<void*>(dB_buf.data());
  part.dC = in_place ? p.dC : static_cast<void*>(dC_buf.data());
  part.dA = small;
  part.dD = small + batch * p.dim * n * elem;
  part.dbias = small + batch * p.dim * (n + 1) * elem;

  std::vector<BwdItem> items;
  items.reserve(static_cast<size_t>(batch * G * slices));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t t0 = s * per_slice;
        items.push_back({b, g, s, t0, std::min(t0 + per_slice, grid.tiles_per_group)});
      }
    }
  }
  run_items(p, static_cast<int64_t>(items.size()), batch * p.dim * L * n,
            k.bwd_scratch_bytes(p), [&](int64_t i, void* scratch) {
              k.bwd_item(p, items[i], grid, part, slices, scratch);
            });

  if (p.input_type == ScanDType::kFloat64) {
    reduce_partials<double>(p, part, slices, in_place);
  } else {
    reduce_partials<float>(p, part, slices, in_place);
  }
}

}  // namespace mmssm
