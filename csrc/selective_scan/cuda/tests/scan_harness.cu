// Standalone correctness (and speed) harness for the CUDA selective-scan kernels.
// No torch: it drives the backend through the params structs of ../../scan.h and checks
// every output of forward and backward against a float64 reference loop in this file,
// whose gradients are themselves checked against central finite differences first.
//
// On a GPU (nvcc only):
//   nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr -arch=native
//     -I csrc/selective_scan csrc/selective_scan/cuda/*.cu
//     csrc/selective_scan/cuda/tests/scan_harness.cu -o /tmp/scan_harness
//   /tmp/scan_harness            # full suite (all tiers, dtypes, options, strides)
//   /tmp/scan_harness --bench    # timings of the vision shapes of spec §4.4
//   /tmp/scan_harness --filter "L=197"   # only the cases whose name contains it
// On a CPU, through the emulator (tests/cuda_emulation.h):
//   g++ -std=c++17 -O1 -DMMSSM_SCAN_EMULATION -I csrc/selective_scan -x c++
//     csrc/selective_scan/cuda/*.cu csrc/selective_scan/cuda/tests/scan_harness.cu
//     -o /tmp/scan_emulated && /tmp/scan_emulated --quick
// Exit status 0 iff every case passes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../launch_policy.cuh"
#include "../scan_common.cuh"
#include "../scan_launch.cuh"

using mmssm::ScanDType;
using mmssm::SelectiveScanBwdParams;
using mmssm::SelectiveScanFwdParams;
namespace cs = mmssm::cuda_scan;

// ------------------------------------------------------------------------------------
// Device memory: cudaMalloc on a GPU, host memory under emulation.
namespace dev {

#if defined(MMSSM_SCAN_EMULATION)
void* alloc(size_t bytes) {
  void* p = std::calloc(bytes ? bytes : 1, 1);
  if (!p) std::abort();
  return p;
}
void release(void* p) { std::free(p); }
void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
void fill_nan(void* p, size_t bytes) { std::memset(p, 0xff, bytes); }
void synchronize() {}
#else
void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(err));
    std::exit(2);
  }
}
void* alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return p;
}
void release(void* p) { check(cudaFree(p), "cudaFree"); }
void upload(void* dst, const void* src, size_t bytes) {
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload");
}
void download(void* dst, const void* src, size_t bytes) {
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download");
}
void zero(void* p, size_t bytes) { check(cudaMemset(p, 0, bytes), "cudaMemset"); }
void fill_nan(void* p, size_t bytes) { check(cudaMemset(p, 0xff, bytes), "cudaMemset"); }
void synchronize() { check(cudaDeviceSynchronize(), "synchronize"); }
#endif

// Owning buffer.
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  Buffer() = default;
  explicit Buffer(size_t n) : ptr(alloc(n)), bytes(n) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Buffer() {
    if (ptr) release(ptr);
  }
};

}  // namespace dev

// ------------------------------------------------------------------------------------
// Input dtype helpers (host side).
size_t dtype_size(ScanDType t) { return t == ScanDType::kFloat32 ? 4 : 2; }
const char* dtype_name(ScanDType t) {
  return t == ScanDType::kFloat32 ? "fp32" : t == ScanDType::kFloat16 ? "fp16" : "bf16";
}

// Rounds v to the dtype and writes its bytes at dst[i]; returns the rounded value.
float store_as(ScanDType t, void* dst, size_t i, float v) {
  if (t == ScanDType::kFloat32) {
    static_cast<float*>(dst)[i] = v;
    return v;
  }
  if (t == ScanDType::kFloat16) {
    const __half h = __float2half_rn(v);
    static_cast<__half*>(dst)[i] = h;
    return __half2float(h);
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  static_cast<__nv_bfloat16*>(dst)[i] = h;
  return __bfloat162float(h);
}

float load_as(ScanDType t, const void* src, size_t i) {
  if (t == ScanDType::kFloat32) return static_cast<const float*>(src)[i];
  if (t == ScanDType::kFloat16) return __half2float(static_cast<const __half*>(src)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
}

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 2654435761ull + 12345) {}
  double uniform() {  // [0, 1)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) * (1.0 / 9007199254740992.0);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    const double u1 = std::max(uniform(), 1e-12), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// ------------------------------------------------------------------------------------
// Problem description and float64 reference.
struct Case {
  std::string name;
  int64_t batch = 2, dim = 8, seqlen = 49, dstate = 4, groups = 2;
  ScanDType type = ScanDType::kFloat32;
  bool has_D = true, has_z = false, has_bias = true, softplus = true;
  bool strided = false;      // non-contiguous u/delta/z/dout and permuted B/C storage
  bool large_delta = false;  // some pre-activations above the softplus threshold
  cs::Tier fwd_tier{0, 0};   // {0,0}: the launch policy's
  int64_t chunk = 0;         // 0: the launch policy's; else one of 64 .. 1024
};

// Plain (contiguous, float64) problem data: what the kernel sees after dtype rounding.
struct Problem {
  int64_t batch, dim, L, N, G;
  std::vector<double> u, delta, z, dout;  // (batch, dim, L)
  std::vector<double> A;                  // (dim, N)
  std::vector<double> B, C;               // (batch, G, N, L)
  std::vector<double> D, bias;            // (dim,) or empty
  bool softplus;
  size_t x(int64_t b, int64_t d, int64_t l) const { return (b * dim + d) * L + l; }
  size_t bc(int64_t b, int64_t g, int64_t n, int64_t l) const { return ((b * G + g) * N + n) * L + l; }
};

struct Result {
  std::vector<double> out, last_state;                  // (batch, dim, L), (batch, dim, N)
  std::vector<double> du, ddelta, dz, dA, dB, dC, dD, dbias;
};

double softplus_ref(double x) { return x <= 20.0 ? std::log1p(std::exp(x)) : x; }
double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Forward (and, if want_grad, backward) of spec §1.1 / §1.2 in float64.
Result reference(const Problem& P, bool want_grad) {
  const int64_t batch = P.batch, dim = P.dim, L = P.L, N = P.N, G = P.G;
  Result r;
  r.out.assign(batch * dim * L, 0.0);
  r.last_state.assign(batch * dim * N, 0.0);
  if (want_grad) {
    r.du.assign(batch * dim * L, 0.0);
    r.ddelta.assign(batch * dim * L, 0.0);
    r.dz.assign(P.z.empty() ? 0 : batch * dim * L, 0.0);
    r.dA.assign(dim * N, 0.0);
    r.dB.assign(batch * G * N * L, 0.0);
    r.dC.assign(batch * G * N * L, 0.0);
    r.dD.assign(P.D.empty() ? 0 : dim, 0.0);
    r.dbias.assign(P.bias.empty() ? 0 : dim, 0.0);
  }
  std::vector<double> pre(L), dt(L), y(L), dy(L), h(L * N), decay(L * N);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t d = 0; d < dim; ++d) {
      const int64_t g = d / (dim / G);
      const double Dd = P.D.empty() ? 0.0 : P.D[d];
      for (int64_t l = 0; l < L; ++l) {
        pre[l] = P.delta[P.x(b, d, l)] + (P.bias.empty() ? 0.0 : P.bias[d]);
        dt[l] = P.softplus ? softplus_ref(pre[l]) : pre[l];
        y[l] = Dd * P.u[P.x(b, d, l)];
      }
      for (int64_t n = 0; n < N; ++n) {
        double state = 0.0;
        for (int64_t l = 0; l < L; ++l) {
          decay[l * N + n] = std::exp(dt[l] * P.A[d * N + n]);
          state = decay[l * N + n] * state + dt[l] * P.B[P.bc(b, g, n, l)] * P.u[P.x(b, d, l)];
          h[l * N + n] = state;
          y[l] += P.C[P.bc(b, g, n, l)] * state;
        }
        r.last_state[(b * dim + d) * N + n] = state;
      }
      for (int64_t l = 0; l < L; ++l) {
        double o = y[l];
        if (!P.z.empty()) {
          const double zz = P.z[P.x(b, d, l)];
          o *= zz * sigmoid_ref(zz);
        }
        r.out[P.x(b, d, l)] = o;
      }
      if (!want_grad) continue;

      for (int64_t l = 0; l < L; ++l) {
        const double go = P.dout[P.x(b, d, l)];
        if (!P.z.empty()) {
          const double zz = P.z[P.x(b, d, l)], s = sigmoid_ref(zz);
          dy[l] = go * zz * s;
          r.dz[P.x(b, d, l)] = go * y[l] * s * (1.0 + zz * (1.0 - s));
        } else {
          dy[l] = go;
        }
      }
      std::vector<double> ddt(L, 0.0);
      for (int64_t n = 0; n < N; ++n) {
        const double An = P.A[d * N + n];
        double adj = 0.0;  // g_{l+1}
        for (int64_t l = L - 1; l >= 0; --l) {
          const double a_next = l + 1 < L ? decay[(l + 1) * N + n] : 1.0;
          adj = P.C[P.bc(b, g, n, l)] * dy[l] + a_next * adj;  // g_l
          const double hprev = l > 0 ? h[(l - 1) * N + n] : 0.0;
          const double u = P.u[P.x(b, d, l)], Bv = P.B[P.bc(b, g, n, l)];
          const double decayed = decay[l * N + n] * hprev;
          r.du[P.x(b, d, l)] += adj * dt[l] * Bv;
          ddt[l] += adj * (Bv * u + An * decayed);
          r.dA[d * N + n] += adj * dt[l] * decayed;
          r.dB[P.bc(b, g, n, l)] += adj * dt[l] * u;
          r.dC[P.bc(b, g, n, l)] += dy[l] * h[l * N + n];
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        const double u = P.u[P.x(b, d, l)];
        r.du[P.x(b, d, l)] += Dd * dy[l];
        const double dd = P.softplus && pre[l] <= 20.0 ? ddt[l] * sigmoid_ref(pre[l]) : ddt[l];
        r.ddelta[P.x(b, d, l)] = dd;
        if (!P.D.empty()) r.dD[d] += dy[l] * u;
        if (!P.bias.empty()) r.dbias[d] += dd;
      }
    }
  }
  return r;
}

// Checks the reference's analytic gradients against central differences of
// loss = sum(out * dout) on a tiny problem. Returns true when they agree.
bool check_reference_gradients() {
  Problem P{1, 4, 6, 2, 2, {}, {}, {}, {}, {}, {}, {}, {}, {}, true};
  Rng rng(7);
  const int64_t E = P.batch * P.dim * P.L, EB = P.batch * P.G * P.N * P.L;
  auto fill = [&](std::vector<double>& v, int64_t n, double lo, double hi) {
    v.resize(n);
    for (auto& x : v) x = rng.uniform(lo, hi);
  };
  fill(P.u, E, -1, 1);
  fill(P.delta, E, -1.5, 1.0);
  fill(P.z, E, -2, 2);
  fill(P.dout, E, -1, 1);
  fill(P.A, P.dim * P.N, -1.5, -0.2);
  fill(P.B, EB, -1, 1);
  fill(P.C, EB, -1, 1);
  fill(P.D, P.dim, -1, 1);
  fill(P.bias, P.dim, -0.5, 0.5);
  P.delta[3] = 21.0;  // above the softplus threshold: identity branch
  const Result grad = reference(P, true);
  auto loss = [&]() {
    const Result r = reference(P, false);
    double s = 0;
    for (size_t i = 0; i < r.out.size(); ++i) s += r.out[i] * P.dout[i];
    return s;
  };
  double worst = 0;
  auto probe = [&](std::vector<double>& v, const std::vector<double>& g, const char* name) {
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i], eps = 1e-6;
      v[i] = keep + eps;
      const double up = loss();
      v[i] = keep - eps;
      const double down = loss();
      v[i] = keep;
      const double fd = (up - down) / (2 * eps);
      const double err = std::fabs(fd - g[i]) / (1e-6 + 1e-5 * std::fabs(fd));
      if (err > worst) worst = err;
      if (err > 1.0) {
        std::printf("reference gradient mismatch: %s[%zu] analytic %.9g numeric %.9g\n", name, i,
                    g[i], fd);
        return false;
      }
    }
    return true;
  };
  bool ok = probe(P.u, grad.du, "u") && probe(P.delta, grad.ddelta, "delta") &&
            probe(P.z, grad.dz, "z") && probe(P.A, grad.dA, "A") && probe(P.B, grad.dB, "B") &&
            probe(P.C, grad.dC, "C") && probe(P.D, grad.dD, "D") &&
            probe(P.bias, grad.dbias, "delta_bias");
  std::printf("%-44s %s (worst error/tolerance %.3f)\n", "reference vs finite differences",
              ok ? "PASS" : "FAIL", worst);
  return ok;
}

// ------------------------------------------------------------------------------------
// Device run of one case.
struct Tolerance {
  double rtol, atol;  // |got - ref| <= atol * max|ref| + rtol * |ref|
};

Tolerance tolerance_for(ScanDType t) {
  switch (t) {
    case ScanDType::kFloat32: return {1e-3, 2e-5};
    case ScanDType::kFloat16: return {3e-3, 1e-3};
    default: return {2e-2, 8e-3};
  }
}

// Compares, prints the worst ratio, and returns whether it is within tolerance.
bool compare(const char* what, const std::vector<double>& got, const std::vector<double>& ref,
             Tolerance tol, double& worst_ratio) {
  if (got.size() != ref.size()) {
    std::printf("    %s: size %zu vs reference %zu\n", what, got.size(), ref.size());
    return false;
  }
  double scale = 1e-12;
  for (double v : ref) scale = std::max(scale, std::fabs(v));
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double diff = std::fabs(got[i] - ref[i]);
    const double ratio = std::isfinite(got[i]) ? diff / (tol.atol * scale + tol.rtol * std::fabs(ref[i]))
                                               : INFINITY;
    if (!(ratio <= worst)) {
      worst = ratio;
      at = i;
    }
  }
  worst_ratio = std::max(worst_ratio, worst);
  if (!(worst <= 1.0)) {
    std::printf("    %s: worst at [%zu] got %.8g ref %.8g (ratio %.3g)\n", what, at, got[at], ref[at],
                worst);
    return false;
  }
  return true;
}

// A strided (batch, rows, L) tensor of the input dtype: element (b, r, l) at
// b * batch_stride + r * row_stride + l.
struct Strided {
  dev::Buffer buffer;
  int64_t batch_stride = 0, row_stride = 0;
};

Strided upload_rows(ScanDType t, const std::vector<double>& values, int64_t batch, int64_t rows,
                    int64_t L, bool strided, std::vector<double>& rounded) {
  Strided s;
  // Strided: rows padded by 3 elements and batches stored in reverse-interleaved order.
  s.row_stride = strided ? L + 3 : L;
  s.batch_stride = rows * s.row_stride + (strided ? 5 : 0);
  const size_t elems = static_cast<size_t>(batch * s.batch_stride);
  std::vector<unsigned char> host(elems * dtype_size(t), 0);
  rounded.assign(values.size(), 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t l = 0; l < L; ++l) {
        const size_t src = (b * rows + r) * L + l;
        rounded[src] = store_as(t, host.data(), b * s.batch_stride + r * s.row_stride + l,
                                static_cast<float>(values[src]));
      }
  s.buffer = dev::Buffer(host.size());
  dev::upload(s.buffer.ptr, host.data(), host.size());
  return s;
}

// B/C (batch, G, N, L); strided storage is (G, batch, N, L + 2).
struct StridedBC {
  dev::Buffer buffer;
  int64_t batch_stride, group_stride, dstate_stride;
};

StridedBC upload_bc(ScanDType t, const std::vector<double>& values, const Problem& P, bool strided,
                    std::vector<double>& rounded) {
  StridedBC s;
  const int64_t Lp = strided ? P.L + 2 : P.L;
  s.dstate_stride = Lp;
  if (strided) {
    s.batch_stride = P.N * Lp;
    s.group_stride = P.batch * P.N * Lp;
  } else {
    s.group_stride = P.N * Lp;
    s.batch_stride = P.G * P.N * Lp;
  }
  const size_t elems = static_cast<size_t>(P.batch * P.G * P.N * Lp);
  std::vector<unsigned char> host(elems * dtype_size(t), 0);
  rounded.assign(values.size(), 0.0);
  for (int64_t b = 0; b < P.batch; ++b)
    for (int64_t g = 0; g < P.G; ++g)
      for (int64_t n = 0; n < P.N; ++n)
        for (int64_t l = 0; l < P.L; ++l) {
          const size_t src = P.bc(b, g, n, l);
          rounded[src] = store_as(
              t, host.data(), b * s.batch_stride + g * s.group_stride + n * s.dstate_stride + l,
              static_cast<float>(values[src]));
        }
  s.buffer = dev::Buffer(host.size());
  dev::upload(s.buffer.ptr, host.data(), host.size());
  return s;
}

dev::Buffer upload_floats(const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  dev::Buffer b(f.size() * 4);
  dev::upload(b.ptr, f.data(), f.size() * 4);
  return b;
}

std::vector<double> download_floats(const dev::Buffer& b, size_t n) {
  std::vector<float> f(n);
  dev::download(f.data(), b.ptr, n * 4);
  return std::vector<double>(f.begin(), f.end());
}

std::vector<double> download_typed(ScanDType t, const dev::Buffer& b, size_t n) {
  std::vector<unsigned char> host(n * dtype_size(t));
  dev::download(host.data(), b.ptr, host.size());
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = load_as(t, host.data(), i);
  return out;
}

bool run_case(const Case& c) {
  const auto case_start = std::chrono::steady_clock::now();
  Problem P{c.batch, c.dim, c.seqlen, c.dstate, c.groups, {}, {}, {}, {}, {}, {}, {}, {}, {},
            c.softplus};
  const int64_t E = P.batch * P.dim * P.L, EB = P.batch * P.G * P.N * P.L;
  Rng rng(static_cast<uint64_t>(P.batch * 1000003 + P.dim * 1009 + P.L * 31 + P.N) ^
          std::hash<std::string>()(c.name));
  auto gen = [&](int64_t n, double lo, double hi) {
    std::vector<double> v(n);
    for (auto& x : v) x = rng.uniform(lo, hi);
    return v;
  };
  auto gen_normal = [&](int64_t n) {
    std::vector<double> v(n);
    for (auto& x : v) x = rng.normal();
    return v;
  };
  std::vector<double> u = gen_normal(E), delta = gen(E, c.softplus ? -2.0 : 0.0, c.softplus ? 1.0 : 0.6);
  if (c.large_delta) {
    for (int64_t i = 0; i < E; i += 7) delta[i] = rng.uniform(20.5, 24.0);
  }
  std::vector<double> z = c.has_z ? gen_normal(E) : std::vector<double>();
  std::vector<double> dout = gen_normal(E);
  P.A = gen(P.dim * P.N, -1.2, -0.05);
  std::vector<double> B = gen_normal(EB), C = gen_normal(EB);
  if (c.has_D) P.D = gen(P.dim, -1.0, 1.0);
  if (c.has_bias) P.bias = gen(P.dim, -0.5, 0.5);
  // weights are fp32 on the device: round them so the reference sees the same values
  for (auto* w : {&P.A, &P.D, &P.bias})
    for (auto& x : *w) x = static_cast<float>(x);

  const ScanDType t = c.type;
  Strided du_in = upload_rows(t, u, P.batch, P.dim, P.L, c.strided, P.u);
  Strided delta_in = upload_rows(t, delta, P.batch, P.dim, P.L, c.strided, P.delta);
  Strided z_in;
  if (c.has_z) z_in = upload_rows(t, z, P.batch, P.dim, P.L, c.strided, P.z);
  Strided dout_in = upload_rows(t, dout, P.batch, P.dim, P.L, c.strided, P.dout);
  StridedBC B_in = upload_bc(t, B, P, c.strided, P.B);
  StridedBC C_in = upload_bc(t, C, P, c.strided, P.C);
  dev::Buffer A_in = upload_floats(P.A);
  dev::Buffer D_in = c.has_D ? upload_floats(P.D) : dev::Buffer();
  dev::Buffer bias_in = c.has_bias ? upload_floats(P.bias) : dev::Buffer();

  const int64_t chunk = c.chunk ? c.chunk : cs::chunk_size_for(P.batch, P.dim, P.L);
  const int64_t n_chunks = cs::num_chunks_for(P.L, chunk);
  const size_t isz = dtype_size(t);
  dev::Buffer out(E * isz), last_state(P.batch * P.dim * P.N * 4),
      states(P.batch * P.dim * n_chunks * P.N * 4);
  dev::fill_nan(out.ptr, out.bytes);  // every output element must be written
  dev::fill_nan(last_state.ptr, last_state.bytes);
  dev::fill_nan(states.ptr, states.bytes);

  SelectiveScanFwdParams fp;
  fp.batch = P.batch;
  fp.dim = P.dim;
  fp.seqlen = P.L;
  fp.dstate = P.N;
  fp.n_groups = P.G;
  fp.input_type = t;
  fp.delta_softplus = c.softplus;
  fp.u = du_in.buffer.ptr;
  fp.u_batch_stride = du_in.batch_stride;
  fp.u_dim_stride = du_in.row_stride;
  fp.delta = delta_in.buffer.ptr;
  fp.delta_batch_stride = delta_in.batch_stride;
  fp.delta_dim_stride = delta_in.row_stride;
  if (c.has_z) {
    fp.z = z_in.buffer.ptr;
    fp.z_batch_stride = z_in.batch_stride;
    fp.z_dim_stride = z_in.row_stride;
  }
  fp.B = B_in.buffer.ptr;
  fp.B_batch_stride = B_in.batch_stride;
  fp.B_group_stride = B_in.group_stride;
  fp.B_dstate_stride = B_in.dstate_stride;
  fp.C = C_in.buffer.ptr;
  fp.C_batch_stride = C_in.batch_stride;
  fp.C_group_stride = C_in.group_stride;
  fp.C_dstate_stride = C_in.dstate_stride;
  fp.A = A_in.ptr;
  fp.D = c.has_D ? D_in.ptr : nullptr;
  fp.delta_bias = c.has_bias ? bias_in.ptr : nullptr;
  fp.out = out.ptr;
  fp.last_state = last_state.ptr;
  fp.chunk_states = states.ptr;
  fp.chunk_size = chunk;
  fp.n_chunks = n_chunks;

  int err = c.fwd_tier.warps ? cs::selective_scan_fwd_cuda_tier(fp, nullptr, c.fwd_tier)
                             : mmssm::selective_scan_fwd_cuda(fp, nullptr);
  dev::synchronize();
  if (err != 0) {
    std::printf("%-44s FAIL (forward launch returned %d)\n", c.name.c_str(), err);
    return false;
  }

  SelectiveScanBwdParams bp;
  static_cast<SelectiveScanFwdParams&>(bp) = fp;
  bp.out = nullptr;
  bp.last_state = nullptr;
  bp.dout = dout_in.buffer.ptr;
  bp.dout_batch_stride = dout_in.batch_stride;
  bp.dout_dim_stride = dout_in.row_stride;
  dev::Buffer du(E * isz), ddelta(E * isz), dz(c.has_z ? E * isz : 0), dA(P.dim * P.N * 4),
      dB(EB * 4), dC(EB * 4), dD(c.has_D ? P.dim * 4 : 0), dbias(c.has_bias ? P.dim * 4 : 0);
  dev::fill_nan(du.ptr, du.bytes);
  dev::fill_nan(ddelta.ptr, ddelta.bytes);
  if (c.has_z) dev::fill_nan(dz.ptr, dz.bytes);
  for (dev::Buffer* acc : {&dA, &dB, &dC, &dD, &dbias})
    if (acc->bytes) dev::zero(acc->ptr, acc->bytes);
  bp.du = du.ptr;
  bp.ddelta = ddelta.ptr;
  bp.dz = c.has_z ? dz.ptr : nullptr;
  bp.dA = dA.ptr;
  bp.dB = dB.ptr;
  bp.dC = dC.ptr;
  bp.dD = c.has_D ? dD.ptr : nullptr;
  bp.ddelta_bias = c.has_bias ? dbias.ptr : nullptr;
  err = mmssm::selective_scan_bwd_cuda(bp, nullptr);
  dev::synchronize();
  if (err != 0) {
    std::printf("%-44s FAIL (backward launch returned %d)\n", c.name.c_str(), err);
    return false;
  }

  const Result ref = reference(P, true);
  const Tolerance tol = tolerance_for(t);
  const Tolerance grad_tol{tol.rtol * 2, tol.atol * 2};
  double worst = 0;
  bool ok = true;
  ok &= compare("out", download_typed(t, out, E), ref.out, tol, worst);
  ok &= compare("last_state", download_floats(last_state, P.batch * P.dim * P.N), ref.last_state,
                Tolerance{1e-3, 2e-5}, worst);
  // chunk_states[b, d, k] must equal h at min((k + 1) * chunk, L) - 1
  {
    std::vector<double> got = download_floats(states, P.batch * P.dim * n_chunks * P.N);
    std::vector<double> want(got.size());
    Problem prefix = P;
    for (int64_t k = 0; k < n_chunks; ++k) {
      const int64_t end = std::min((k + 1) * chunk, P.L);
      // the state after `end` steps is the last state of the first `end` steps
      prefix.L = end;
      auto cut = [&](const std::vector<double>& v, int64_t rows) {  // first `end` steps
        std::vector<double> o(rows * end);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t l = 0; l < end; ++l) o[r * end + l] = v[r * P.L + l];
        return o;
      };
      prefix.u = cut(P.u, P.batch * P.dim);
      prefix.delta = cut(P.delta, P.batch * P.dim);
      prefix.z.clear();
      prefix.B = cut(P.B, P.batch * P.G * P.N);
      prefix.C = cut(P.C, P.batch * P.G * P.N);
      const Result part = reference(prefix, false);
      for (int64_t bd = 0; bd < P.batch * P.dim; ++bd)
        for (int64_t n = 0; n < P.N; ++n)
          want[(bd * n_chunks + k) * P.N + n] = part.last_state[bd * P.N + n];
    }
    ok &= compare("chunk_states", got, want, Tolerance{1e-3, 2e-5}, worst);
  }
  ok &= compare("du", download_typed(t, du, E), ref.du, grad_tol, worst);
  ok &= compare("ddelta", download_typed(t, ddelta, E), ref.ddelta,
                Tolerance{tol.rtol * 5, tol.atol * 5}, worst);
  if (c.has_z) ok &= compare("dz", download_typed(t, dz, E), ref.dz, grad_tol, worst);
  const Tolerance acc_tol{2e-3, 5e-5};  // fp32 accumulations
  ok &= compare("dA", download_floats(dA, P.dim * P.N), ref.dA, acc_tol, worst);
  ok &= compare("dB", download_floats(dB, EB), ref.dB, acc_tol, worst);
  ok &= compare("dC", download_floats(dC, EB), ref.dC, acc_tol, worst);
  if (c.has_D) ok &= compare("dD", download_floats(dD, P.dim), ref.dD, acc_tol, worst);
  if (c.has_bias) ok &= compare("ddelta_bias", download_floats(dbias, P.dim), ref.dbias, acc_tol, worst);

  const cs::Tier ft = c.fwd_tier.warps ? c.fwd_tier : cs::scan_tier(P.batch, P.dim, P.L);
  const cs::Tier bt = cs::backward_tier_for_chunk(chunk);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - case_start).count();
  std::printf("%-44s %s  (worst %.3f; fwd %dx%d bwd %dx%d rows %d; %.2f s)\n", c.name.c_str(),
              ok ? "PASS" : "FAIL", worst, ft.warps, ft.items, bt.warps, bt.items,
              cs::rows_per_block(bt.warps, P.dim, P.G), seconds);
  return ok;
}

// ------------------------------------------------------------------------------------
std::vector<Case> quick_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c, const std::string& name) {
    c.name = name + " " + dtype_name(c.type);
    cases.push_back(c);
  };
  const ScanDType types[] = {ScanDType::kFloat32, ScanDType::kFloat16, ScanDType::kBFloat16};
  // Policy tiers across the vision lengths (1 and 5 are edge cases; 49/196/197/784 odd).
  for (ScanDType t : types) {
    for (int64_t L : {1, 5, 49, 64, 65, 197, 300}) {
      Case c;
      c.type = t;
      c.seqlen = L;
      c.has_z = (L % 2) == 1;
      add(c, "L=" + std::to_string(L));
    }
  }
  // Every explicit tier, forward tile != saved chunk, multiple tiles per row.
  const cs::Tier tiers[] = {{1, 2}, {1, 4}, {1, 8}, {2, 8}, {4, 8}};
  const int64_t chunks[] = {64, 128, 256, 512, 1024};
  for (int i = 0; i < 5; ++i) {
    Case c;
    c.seqlen = 1100;
    c.dstate = 2;
    c.dim = 4;
    c.groups = 1;
    c.fwd_tier = tiers[i];
    c.chunk = chunks[(i + 2) % 5];
    c.has_z = i % 2 == 0;
    add(c, "tier fwd " + std::to_string(tiers[i].warps) + "x" + std::to_string(tiers[i].items) +
               " chunk " + std::to_string(c.chunk));
  }
  // Rows per block 4 / 2 / 1 (channels per group 8, 6, 3) and N = 1 (VMamba), N = 16 (Vim).
  {
    Case c;
    c.dim = 12; c.groups = 2; c.seqlen = 77; c.dstate = 1;
    add(c, "dim 12 G 2 (rows 2) N=1");
    c.dim = 9; c.groups = 3; c.dstate = 3;
    add(c, "dim 9 G 3 (rows 1)");
    c.dim = 8; c.groups = 1; c.dstate = 16; c.has_z = true; c.seqlen = 197; c.groups = 1;
    add(c, "Vim-like N=16 z G=1");
    c.dstate = 1; c.groups = 4; c.dim = 16; c.has_z = false; c.seqlen = 196;
    c.type = ScanDType::kFloat16;
    add(c, "VMamba-like N=1 G=4");
  }
  // Options off / on, strides, thresholds.
  {
    Case c;
    c.seqlen = 130;
    c.has_D = false; c.has_bias = false; c.softplus = false;
    add(c, "no D, no bias, no softplus");
    c.has_D = true; c.has_bias = true; c.softplus = true; c.strided = true; c.has_z = true;
    c.type = ScanDType::kBFloat16;
    add(c, "strided inputs");
    c.type = ScanDType::kFloat32; c.strided = false; c.large_delta = true; c.has_z = false;
    add(c, "softplus threshold");
    c.large_delta = false; c.dstate = 256; c.seqlen = 40; c.dim = 2; c.groups = 1;
    c.batch = 1;
    add(c, "N=256");
    c.dstate = 2; c.seqlen = 2500; c.dim = 2; c.batch = 1;
    c.chunk = 256; c.fwd_tier = cs::Tier{1, 8};
    add(c, "long L one-warp rows");
  }
  return cases;
}

std::vector<Case> full_cases() {
  std::vector<Case> cases = quick_cases();
  const ScanDType types[] = {ScanDType::kFloat32, ScanDType::kFloat16, ScanDType::kBFloat16};
  for (ScanDType t : types) {
    for (int64_t L : {49, 196, 784, 3136, 6000}) {
      for (int64_t N : {1, 16}) {
        for (bool z : {false, true}) {
          Case c;
          c.type = t;
          c.seqlen = L;
          c.dstate = N;
          c.has_z = z;
          c.batch = 2;
          c.dim = 48;
          c.groups = N == 1 ? 4 : 1;
          c.name = std::string("full L=") + std::to_string(L) + " N=" + std::to_string(N) +
                   (z ? " z " : " ") + dtype_name(t);
          cases.push_back(c);
        }
      }
    }
    // Many rows: the one-warp policy tier for long L (batch * dim >= 4096).
    Case c;
    c.type = t;
    c.batch = 4;
    c.dim = 1024;
    c.groups = 4;
    c.dstate = 1;
    c.seqlen = 600;
    c.name = std::string("full many rows ") + dtype_name(t);
    cases.push_back(c);
  }
  return cases;
}

#if !defined(MMSSM_SCAN_EMULATION)
// Timing of the vision shapes (spec §4.4), fp16 in/out, against the byte floor at 3 TB/s.
void bench() {
  struct Shape {
    const char* name;
    int64_t batch, dim, L, N, G;
    bool z;
  };
  const Shape shapes[] = {
      {"VMamba-T s1 (128,384,3136) N1 G4", 128, 384, 3136, 1, 4, false},
      {"VMamba-T s2 (128,768,784)", 128, 768, 784, 1, 4, false},
      {"VMamba-T s3 (128,1536,196)", 128, 1536, 196, 1, 4, false},
      {"VMamba-T s4 (128,3072,49)", 128, 3072, 49, 1, 4, false},
      {"det s1 (2,384,64000)", 2, 384, 64000, 1, 4, false},
      {"Vim-Ti (128,384,197) N16 z", 128, 384, 197, 16, 1, true},
  };
  for (const Shape& s : shapes) {
    const ScanDType t = ScanDType::kFloat16;
    const int64_t E = s.batch * s.dim * s.L, EB = s.batch * s.G * s.N * s.L;
    const int64_t chunk = cs::chunk_size_for(s.batch, s.dim, s.L);
    const int64_t n_chunks = cs::num_chunks_for(s.L, chunk);
    dev::Buffer u(E * 2), delta(E * 2), z(s.z ? E * 2 : 0), B(EB * 2), C(EB * 2), A(s.dim * s.N * 4),
        D(s.dim * 4), bias(s.dim * 4), out(E * 2), last(s.batch * s.dim * s.N * 4),
        states(s.batch * s.dim * n_chunks * s.N * 4), dout(E * 2), du(E * 2), ddelta(E * 2),
        dz(s.z ? E * 2 : 0), dA(s.dim * s.N * 4), dB(EB * 4), dC(EB * 4), dD(s.dim * 4),
        dbias(s.dim * 4);
    {
      std::vector<__half> h(std::max(E, EB));
      Rng rng(1);
      for (auto& x : h) x = __float2half_rn(static_cast<float>(rng.uniform(-1, 1)));
      for (dev::Buffer* b : {&u, &delta, &z, &dout}) if (b->bytes) dev::upload(b->ptr, h.data(), b->bytes);
      for (dev::Buffer* b : {&B, &C}) dev::upload(b->ptr, h.data(), b->bytes);
      std::vector<float> w(s.dim * s.N, -0.5f);
      dev::upload(A.ptr, w.data(), A.bytes);
      dev::upload(D.ptr, w.data(), D.bytes);
      dev::upload(bias.ptr, w.data(), bias.bytes);
    }
    SelectiveScanBwdParams p;
    p.batch = s.batch; p.dim = s.dim; p.seqlen = s.L; p.dstate = s.N; p.n_groups = s.G;
    p.input_type = t; p.delta_softplus = true;
    p.u = u.ptr; p.u_batch_stride = s.dim * s.L; p.u_dim_stride = s.L;
    p.delta = delta.ptr; p.delta_batch_stride = s.dim * s.L; p.delta_dim_stride = s.L;
    if (s.z) { p.z = z.ptr; p.z_batch_stride = s.dim * s.L; p.z_dim_stride = s.L; }
    p.B = B.ptr; p.B_batch_stride = s.G * s.N * s.L; p.B_group_stride = s.N * s.L; p.B_dstate_stride = s.L;
    p.C = C.ptr; p.C_batch_stride = s.G * s.N * s.L; p.C_group_stride = s.N * s.L; p.C_dstate_stride = s.L;
    p.A = A.ptr; p.D = D.ptr; p.delta_bias = bias.ptr;
    p.out = out.ptr; p.last_state = last.ptr; p.chunk_states = states.ptr;
    p.chunk_size = chunk; p.n_chunks = n_chunks;
    p.dout = dout.ptr; p.dout_batch_stride = s.dim * s.L; p.dout_dim_stride = s.L;
    p.du = du.ptr; p.ddelta = ddelta.ptr; p.dz = s.z ? dz.ptr : nullptr; p.dA = dA.ptr;
    p.dB = dB.ptr; p.dC = dC.ptr; p.dD = dD.ptr; p.ddelta_bias = dbias.ptr;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const int reps = 20;
    float fwd_ms = 0, bwd_ms = 0;
    for (int pass = 0; pass < 2; ++pass) {  // pass 0 warms up
      cudaEventRecord(e0);
      for (int r = 0; r < reps; ++r) mmssm::selective_scan_fwd_cuda(p, nullptr);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      cudaEventElapsedTime(&fwd_ms, e0, e1);
      cudaEventRecord(e0);
      for (int r = 0; r < reps; ++r) {
        cudaMemsetAsync(dB.ptr, 0, dB.bytes);
        cudaMemsetAsync(dC.ptr, 0, dC.bytes);
        mmssm::selective_scan_bwd_cuda(p, nullptr);
      }
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      cudaEventElapsedTime(&bwd_ms, e0, e1);
    }
    dev::check(cudaGetLastError(), "bench");
    // Bytes that must move (fp16): fwd u, delta (, z) in, out; bwd u, delta, dout (, z) in,
    // du, ddelta (, dz) out; plus B, C (and fp32 dB, dC) per group element.
    const double fwd_bytes = E * 2.0 * (3 + (s.z ? 1 : 0)) + EB * 2.0 * 2;
    const double bwd_bytes = E * 2.0 * (5 + (s.z ? 2 : 0)) + EB * (2.0 * 2 + 4.0 * 2);
    const double f_us = fwd_ms * 1000 / reps, b_us = bwd_ms * 1000 / reps;
    std::printf("%-36s fwd %8.1f us (%5.0f GB/s, floor %6.1f us)  bwd %8.1f us (%5.0f GB/s, floor %6.1f us)\n",
                s.name, f_us, fwd_bytes / f_us / 1e3, fwd_bytes / 3e6, b_us, bwd_bytes / b_us / 1e3,
                bwd_bytes / 3e6);
  }
}
#endif

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up in redirected logs
  bool quick = false, bench_mode = false;
  std::string filter;  // run only the cases whose name contains it
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--bench") == 0) bench_mode = true;
    else if (std::strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--bench] [--filter SUBSTRING]\n", argv[0]);
      return 2;
    }
  }
#if !defined(MMSSM_SCAN_EMULATION)
  if (bench_mode) {
    bench();
    return 0;
  }
#else
  if (bench_mode) {
    std::fprintf(stderr, "--bench needs a GPU build\n");
    return 2;
  }
#endif
  const auto start = std::chrono::steady_clock::now();
  bool ok = check_reference_gradients();
  int failed = ok ? 0 : 1, total = 1;
  for (const Case& c : quick ? quick_cases() : full_cases()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    ++total;
    if (!run_case(c)) ++failed;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d/%d passed in %.1f s\n", total - failed, total, seconds);
  return failed == 0 ? 0 : 1;
}
