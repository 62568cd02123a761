// Host emulation of the small CUDA subset the selective-scan kernels use, so that the
// unmodified kernel code runs (slowly) on a CPU for testing. Enabled by compiling the
// kernel sources as C++ with -DMMSSM_SCAN_EMULATION (see docs/kernels.md); never part of
// the CUDA build.
//
// Model: a launch runs its blocks one after another. The threads of a block are
// cooperative fibers (ucontext) on one OS thread; a fiber only yields inside a barrier
// (__syncthreads, __syncwarp, and the warp shuffles, which are a write / barrier / read /
// barrier sequence). What it checks beyond plain execution:
//   * every barrier is reached by all threads it covers, at the same source line
//     (a divergent or missing barrier aborts with a message instead of hanging);
//   * dynamic shared memory starts as NaN bytes (0xff) in every block, so reading a slot
//     before it was written shows up as NaN in the results;
//   * by default each warp runs alone until it blocks on a block-wide barrier (warps in a
//     random order), so a shared buffer reused without a __syncthreads in between gets
//     overwritten before a slower warp reads it; and threads within a warp run in a new
//     random order after every barrier (MMSSM_EMU_SEED, default 1), so a missing
//     __syncwarp shows too (MMSSM_EMU_SCHEDULE=lockstep, MMSSM_EMU_SEED=0: fixed order);
//   * shuffle masks must be full and block sizes a multiple of 32.
// Global memory is ordinary host memory; atomicAdd is a plain add (one OS thread).
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MMSSM_EMU_ASAN 1
#endif

// ----- CUDA keywords and types ------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
using cudaError_t = int;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
using cudaStream_t = struct mmssm_emu_stream*;

// fp16 / bf16 storage types with round-to-nearest-even conversions (as the hardware does).
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline float mmssm_emu_bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t mmssm_emu_float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline float __half2float(__half h) {
  const uint32_t sign = (h.bits & 0x8000u) << 16;
  const uint32_t exponent = (h.bits >> 10) & 0x1fu;
  const uint32_t mantissa = h.bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return mmssm_emu_bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return mmssm_emu_bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline __half __float2half_rn(float f) {
  const uint32_t x = mmssm_emu_float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return __half{static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0u))};
  const int e = static_cast<int>(exponent) - 127 + 15;
  if (e >= 31) return __half{static_cast<uint16_t>(sign | 0x7c00u)};
  if (e <= 0) {  // half subnormal (or zero): units of 2^-24
    if (e < -10) return __half{sign};
    mantissa |= 0x800000u;
    const int shift = 14 - e;
    uint32_t result = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t half_way = 1u << (shift - 1);
    if (rest > half_way || (rest == half_way && (result & 1u))) ++result;
    return __half{static_cast<uint16_t>(sign | result)};
  }
  uint32_t result = (static_cast<uint32_t>(e) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;  // may carry to inf
  return __half{static_cast<uint16_t>(sign | result)};
}

inline float __bfloat162float(__nv_bfloat16 h) {
  return mmssm_emu_bits_to_float(static_cast<uint32_t>(h.bits) << 16);
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t x = mmssm_emu_float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<uint16_t>((x >> 16) | 0x40u)};
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return __nv_bfloat16{static_cast<uint16_t>(rounded >> 16)};
}

namespace mmssm_emu {

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
  const char* file = nullptr;
  int line = 0;
};

struct Fiber {
  ucontext_t context;
  std::vector<unsigned char> stack;
  bool finished = false;
};

struct Runtime {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  int current = -1;
  unsigned threads = 0;
  unsigned block_index = 0;
  unsigned grid_blocks = 0;
  std::vector<unsigned char> shared;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<uint64_t> shuffle_slots;
  uint64_t progress = 0;
  const std::function<void()>* body = nullptr;
  uint64_t rng = 0;
  bool lockstep = false;
#if defined(MMSSM_EMU_ASAN)
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

inline Runtime& runtime() {
  static Runtime r;
  return r;
}

constexpr size_t kFiberStackBytes = 256 * 1024;

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "cuda emulation: %s (%s:%d, block %u, thread %d)\n", what,
               file ? file : "?", line, runtime().block_index, runtime().current);
  std::abort();
}

// Fiber -> scheduler.
inline void yield_to_scheduler() {
  Runtime& r = runtime();
  Fiber& f = r.fibers[r.current];
#if defined(MMSSM_EMU_ASAN)
  void* fake_stack = nullptr;  // this fiber's, kept on its own stack
  __sanitizer_start_switch_fiber(&fake_stack, r.scheduler_stack_bottom, r.scheduler_stack_size);
#endif
  swapcontext(&f.context, &r.scheduler);
#if defined(MMSSM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

inline void fiber_main() {
  Runtime& r = runtime();
#if defined(MMSSM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &r.scheduler_stack_bottom, &r.scheduler_stack_size);
#endif
  (*r.body)();
  r.fibers[r.current].finished = true;
  ++r.progress;
  Fiber& f = r.fibers[r.current];
#if defined(MMSSM_EMU_ASAN)
  __sanitizer_start_switch_fiber(nullptr, r.scheduler_stack_bottom, r.scheduler_stack_size);
#endif
  swapcontext(&f.context, &r.scheduler);  // never resumed
}

inline void arrive_and_wait(Barrier& barrier, int participants, const char* file, int line) {
  Runtime& r = runtime();
  if (barrier.arrived == 0) {
    barrier.file = file;
    barrier.line = line;
  } else if (barrier.line != line || std::strcmp(barrier.file, file) != 0) {
    std::fprintf(stderr, "cuda emulation: divergent barrier: %s:%d vs %s:%d\n", barrier.file,
                 barrier.line, file, line);
    fail("threads of one barrier reached different barrier sites", file, line);
  }
  ++r.progress;
  const uint64_t generation = barrier.generation;
  if (++barrier.arrived == participants) {
    barrier.arrived = 0;
    ++barrier.generation;
    return;
  }
  while (barrier.generation == generation) yield_to_scheduler();
}

inline void sync_block(const char* file, int line) {
  Runtime& r = runtime();
  arrive_and_wait(r.block_barrier, static_cast<int>(r.threads), file, line);
}

inline void sync_warp(const char* file, int line) {
  Runtime& r = runtime();
  arrive_and_wait(r.warp_barriers[r.current / 32], 32, file, line);
}

enum class ShuffleMode { kUp, kDown, kXor, kIndex };

template <typename T>
T shuffle(unsigned mask, T value, int arg, ShuffleMode mode, int width, const char* file,
          int line) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a wide type");
  if (mask != 0xffffffffu) fail("shuffle with a partial mask", file, line);
  if (width != 32) fail("shuffle with width != 32", file, line);
  Runtime& r = runtime();
  const int lane = r.current % 32;
  const int warp = r.current / 32;
  uint64_t mine = 0;
  std::memcpy(&mine, &value, sizeof(T));
  r.shuffle_slots[warp * 32 + lane] = mine;
  sync_warp(file, line);
  int source = lane;
  switch (mode) {
    case ShuffleMode::kUp: source = lane - arg; break;
    case ShuffleMode::kDown: source = lane + arg; break;
    case ShuffleMode::kXor: source = lane ^ arg; break;
    case ShuffleMode::kIndex: source = arg; break;
  }
  if (source < 0 || source >= 32) source = lane;  // CUDA: out-of-range keeps own value
  T result;
  std::memcpy(&result, &r.shuffle_slots[warp * 32 + source], sizeof(T));
  sync_warp(file, line);
  return result;
}

inline uint64_t next_random(uint64_t& state) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return state >> 33;
}

// Runs the fibers listed in `group` (in a random order per pass when seeded) until a
// whole pass makes no progress, i.e. each is finished or waits on a barrier that needs
// threads outside the group. Returns whether anything progressed.
inline bool run_group(const std::vector<unsigned>& group) {
  Runtime& r = runtime();
  std::vector<unsigned> order = group;
  const uint64_t start = r.progress;
  for (;;) {
    if (r.rng != 0) {
      for (size_t i = order.size() - 1; i > 0; --i) {
        const size_t j = static_cast<size_t>(next_random(r.rng) % (i + 1));
        std::swap(order[i], order[j]);
      }
    }
    const uint64_t before = r.progress;
    for (unsigned t : order) {
      Fiber& f = r.fibers[t];
      if (f.finished) continue;
      r.current = static_cast<int>(t);
#if defined(MMSSM_EMU_ASAN)
      void* fake = nullptr;
      __sanitizer_start_switch_fiber(&fake, f.stack.data(), f.stack.size());
#endif
      swapcontext(&r.scheduler, &f.context);
#if defined(MMSSM_EMU_ASAN)
      __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    }
    r.current = -1;
    if (r.progress == before) break;
  }
  return r.progress != start;
}

// Schedules (MMSSM_EMU_SCHEDULE): "warp" (default) runs one warp at a time, in a random
// order, until it blocks on a block-wide barrier, so warps drift as far apart as the
// barriers allow (exposes missing __syncthreads / reused shared buffers); "lockstep"
// advances all threads one barrier at a time. MMSSM_EMU_SEED (default 1; 0 = fixed
// order) also shuffles the threads within each pass (exposes missing __syncwarp).
inline void run_block(unsigned block, unsigned threads) {
  Runtime& r = runtime();
  r.block_index = block;
  r.threads = threads;
  r.block_barrier = Barrier{};
  r.warp_barriers.assign(threads / 32, Barrier{});
  r.shuffle_slots.assign(threads, 0);
  std::fill(r.shared.begin(), r.shared.end(), static_cast<unsigned char>(0xff));
  if (r.fibers.size() < threads) r.fibers.resize(threads);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = r.fibers[t];
    if (f.stack.size() != kFiberStackBytes) f.stack.resize(kFiberStackBytes);
    f.finished = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.data();
    f.context.uc_stack.ss_size = f.stack.size();
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  std::vector<std::vector<unsigned>> groups;
  if (r.lockstep) {
    groups.emplace_back();
    for (unsigned t = 0; t < threads; ++t) groups[0].push_back(t);
  } else {
    groups.resize(threads / 32);
    for (unsigned t = 0; t < threads; ++t) groups[t / 32].push_back(t);
  }
  for (;;) {
    if (r.rng != 0) {
      for (size_t i = groups.size() - 1; i > 0; --i) {
        const size_t j = static_cast<size_t>(next_random(r.rng) % (i + 1));
        std::swap(groups[i], groups[j]);
      }
    }
    bool progressed = false;
    for (const auto& group : groups) progressed = run_group(group) || progressed;
    bool alive = false;
    for (unsigned t = 0; t < threads; ++t) alive = alive || !r.fibers[t].finished;
    if (!alive) break;
    if (!progressed) {
      std::fprintf(stderr, "cuda emulation: deadlock in block %u: block barrier %d/%u at %s:%d\n",
                   block, r.block_barrier.arrived, threads,
                   r.block_barrier.file ? r.block_barrier.file : "-", r.block_barrier.line);
      std::abort();
    }
  }
}

inline void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  Runtime& r = runtime();
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) {
    fail("only 1-D launches are emulated", __FILE__, __LINE__);
  }
  if (block.x == 0 || block.x % 32 != 0 || block.x > 1024) {
    fail("block size must be a positive multiple of 32, at most 1024", __FILE__, __LINE__);
  }
  if (shared_bytes > 48 * 1024) fail("more than 48 KiB of dynamic shared memory", __FILE__, __LINE__);
  const char* seed = std::getenv("MMSSM_EMU_SEED");
  r.rng = seed ? std::strtoull(seed, nullptr, 10) : 1;
  const char* schedule = std::getenv("MMSSM_EMU_SCHEDULE");
  r.lockstep = schedule != nullptr && std::strcmp(schedule, "lockstep") == 0;
  // Exactly the requested size (a fresh vector), so that sanitizers see any overrun.
  r.shared = std::vector<unsigned char>(shared_bytes, 0xff);
  r.body = &body;
  r.grid_blocks = grid.x;
  for (unsigned b = 0; b < grid.x; ++b) run_block(b, block.x);
  r.body = nullptr;
}

inline uint3 thread_idx() { return uint3{static_cast<unsigned>(runtime().current), 0, 0}; }
inline uint3 block_idx() { return uint3{runtime().block_index, 0, 0}; }
inline uint3 block_dim() { return uint3{runtime().threads, 0, 0}; }
inline uint3 grid_dim() { return uint3{runtime().grid_blocks, 0, 0}; }

}  // namespace mmssm_emu

#define threadIdx (::mmssm_emu::thread_idx())
#define blockIdx (::mmssm_emu::block_idx())
#define blockDim (::mmssm_emu::block_dim())
#define gridDim (::mmssm_emu::grid_dim())
#define __syncthreads() ::mmssm_emu::sync_block(__FILE__, __LINE__)
#define __syncwarp(...) ::mmssm_emu::sync_warp(__FILE__, __LINE__)
#define __shfl_up_sync(mask, value, delta) \
  ::mmssm_emu::shuffle(mask, value, delta, ::mmssm_emu::ShuffleMode::kUp, 32, __FILE__, __LINE__)
#define __shfl_down_sync(mask, value, delta) \
  ::mmssm_emu::shuffle(mask, value, delta, ::mmssm_emu::ShuffleMode::kDown, 32, __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask) \
  ::mmssm_emu::shuffle(mask, value, lane_mask, ::mmssm_emu::ShuffleMode::kXor, 32, __FILE__, __LINE__)
#define __shfl_sync(mask, value, src_lane) \
  ::mmssm_emu::shuffle(mask, value, src_lane, ::mmssm_emu::ShuffleMode::kIndex, 32, __FILE__, __LINE__)

inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "emulated cuda error";
}

namespace mmssm {
namespace cuda_scan {
template <typename T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(::mmssm_emu::runtime().shared.data());
}
}  // namespace cuda_scan
}  // namespace mmssm

#define MMSSM_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                   \
  do {                                                                              \
    (void)(stream); /* launches run synchronously, in order */                      \
    ::mmssm_emu::launch((grid), (block), (smem_bytes), [&]() { kernel(__VA_ARGS__); }); \
  } while (0)
