// CPU selective scan, the routed backward (scan.h: selective_scan_bwd_routes_cpu):
// argument checks, the work items and the fixed-order reduction of their partials; the
// kernel is bwd_routes_item in scan_cpu_kernels.h.
#include <algorithm>
#include <vector>

#include "scan_cpu_common.h"

namespace mmssm {
namespace cpu {
namespace {

template <typename acc_t>
void reduce_routes(const SelectiveScanBwdParams& p, const RoutesBwdPartials& part,
                   int64_t slices) {
  const int64_t batch = p.batch, dim = p.dim, n = p.dstate, L = p.seqlen, T = p.tokens;
  const int64_t G = p.n_groups, R = p.delta_rank;
  // Per channel: summed over the batch, in order.
  sum_over_batch<acc_t>(part.dA, p.dA, batch, dim * n);
  sum_over_batch<acc_t>(part.dweight, p.ddelta_weight, batch, dim * R);
  sum_over_batch<acc_t>(part.dD, p.dD, batch, dim);
  sum_over_batch<acc_t>(part.dbias, p.ddelta_bias, batch, dim);
  // Per route step: the slices' partial rows summed (into slice 0's, in order), then
  // added onto the step's token.
  const int64_t rows = batch * G;
  acc_t* dB_p = static_cast<acc_t*>(part.dB);
  acc_t* dC_p = static_cast<acc_t*>(part.dC);
  acc_t* dl_p = static_cast<acc_t*>(part.dlow);
  acc_t* dB = static_cast<acc_t*>(p.dB);
  acc_t* dC = static_cast<acc_t*>(p.dC);
  acc_t* dlow = static_cast<acc_t*>(p.ddelta_lowrank);
  run_items(p, rows, rows * L * (2 * n + R) * slices, 0, [&](int64_t row, void*) {
    const int64_t* index = p.route_index + (row % G) * L;
    acc_t* sumB = dB_p + row * L * n;
    acc_t* sumC = dC_p + row * L * n;
    acc_t* suml = dl_p + row * L * R;
    for (int64_t s = 1; s < slices; ++s) {
      const int64_t slab = s * rows + row;  // (slice, batch, group)
      const acc_t* srcB = dB_p + slab * L * n;
      const acc_t* srcC = dC_p + slab * L * n;
      const acc_t* srcl = dl_p + slab * L * R;
      for (int64_t i = 0; i < L * n; ++i) {
        sumB[i] += srcB[i];
        sumC[i] += srcC[i];
      }
      for (int64_t i = 0; i < L * R; ++i) suml[i] += srcl[i];
    }
    if (p.route_grads_by_step) {  // every step's own rows, (batch, G, N or R, L)
      for (int64_t st = 0; st < n; ++st) {
        acc_t* outB = dB + (row * n + st) * L;
        acc_t* outC = dC + (row * n + st) * L;
        for (int64_t l = 0; l < L; ++l) {
          outB[l] = sumB[l * n + st];
          outC[l] = sumC[l * n + st];
        }
      }
      std::copy(suml, suml + R * L, dlow + row * R * L);
      return;
    }
    for (int64_t st = 0; st < n; ++st) {
      acc_t* outB = dB + (row * n + st) * T;
      acc_t* outC = dC + (row * n + st) * T;
      for (int64_t l = 0; l < L; ++l) {
        if (index[l] < 0) continue;
        outB[index[l]] += sumB[l * n + st];
        outC[index[l]] += sumC[l * n + st];
      }
    }
    for (int64_t q = 0; q < R; ++q) {
      acc_t* out = dlow + (row * R + q) * T;
      const acc_t* src = suml + q * L;
      for (int64_t l = 0; l < L; ++l) {
        if (index[l] >= 0) out[index[l]] += src[l];
      }
    }
  });
}

}  // namespace
}  // namespace cpu

void selective_scan_bwd_routes_cpu(const SelectiveScanBwdParams& p) {
  using namespace cpu;
  check_common(p);
  const bool empty = p.batch * p.dim == 0 || p.seqlen == 0;  // (null data pointers)
  if (!p.route_index || !p.delta_lowrank || p.z || p.tokens < 0 ||
      (!empty && (!p.ddelta_lowrank || !p.ddelta_weight || !p.chunk_states)) ||
      (p.route_grads_by_step && !p.route_rows_by_step) ||
      !(p.input_type == ScanDType::kFloat32 || p.input_type == ScanDType::kFloat64)) {
    throw std::invalid_argument(
        "selective_scan_cpu routed backward: needs route_index, a low-rank delta, the "
        "routed forward's chunk_states, d delta_lowrank / d delta_weight outputs and "
        "float32 / float64 inputs, takes no z, and gives gradients per step only for rows "
        "given per step");
  }
  const int64_t batch = p.batch, G = p.n_groups, n = p.dstate, L = p.seqlen;
  const int64_t R = p.delta_rank;
  if (empty) return;
  const int64_t elem = acc_size(p.input_type);
  const Kernels& k = kernels_for(p);
  const TileGrid grid(p, k.tile_width(p));

  // Tile slices per batch element, each with its own dB / dC / d delta_lowrank partial
  // rows (TileSlices).
  const TileSlices cut(batch, batch * G * L * (2 * n + R) * elem, grid.tiles_per_group, 16);
  const int64_t slices = cut.count, per_slice = cut.per_slice;

  const size_t slab = static_cast<size_t>(slices * batch * G * L);
  std::vector<double> dB_buf(slab * n * elem / 8 + 1), dC_buf(slab * n * elem / 8 + 1);
  std::vector<double> dl_buf(slab * R * elem / 8 + 1);
  std::vector<double> small_buf(static_cast<size_t>(batch * p.dim * (n + R + 2) * elem / 8 + 1));
  char* small = reinterpret_cast<char*>(small_buf.data());
  RoutesBwdPartials part;
  part.dB = dB_buf.data();
  part.dC = dC_buf.data();
  part.dlow = dl_buf.data();
  part.dA = small;
  part.dweight = small + batch * p.dim * n * elem;
  part.dD = small + batch * p.dim * (n + R) * elem;
  part.dbias = small + batch * p.dim * (n + R + 1) * elem;

  std::vector<RoutesBwdItem> items;
  items.reserve(static_cast<size_t>(batch * slices));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < slices; ++s) {
      const int64_t t0 = s * per_slice;
      items.push_back({b, s, t0, std::min(t0 + per_slice, grid.tiles_per_group)});
    }
  }
  run_items(p, static_cast<int64_t>(items.size()), batch * p.dim * L * n,
            k.bwd_routes_scratch_bytes(p), [&](int64_t i, void* scratch) {
              k.bwd_routes_item(p, grid, items[i], part, scratch);
            });

  if (p.input_type == ScanDType::kFloat64) {
    reduce_routes<double>(p, part, slices);
  } else {
    reduce_routes<float>(p, part, slices);
  }
}

}  // namespace mmssm
