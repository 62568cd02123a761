// mmssm's ONNX Runtime custom-operator library: `mmssm.SelectiveScan` (domain "mmssm",
// version 1), the selective scan of a file exported with scan_op='custom'
// (mmssm/ops/scan_lowering.py, SelectiveScanCustomOp), run by the C++ CPU kernels
// (../selective_scan/cpu). Load it in ONNX Runtime with
//     options.register_custom_ops_library(mmssm.deployment.custom_op_library())
//
// Node: inputs u (batch, dim, L), delta (batch, dim, L), A (dim, N), B (batch, G, N, L),
// C (batch, G, N, L), D (dim), delta_bias (dim) and optionally z (batch, dim, L), all
// float32 and contiguous (ONNX Runtime's tensors are); attribute delta_softplus (0/1);
// output (batch, dim, L) float32. Semantics: ../selective_scan/scan.h.
//
// Threads: the kernel's tiles run on ONNX Runtime's intra-op thread pool
// (KernelContext_ParallelFor) where the runtime has it, so the library starts no
// threads and never spins against the runtime's; else on the calling thread.
// Errors (wrong shapes or dtypes) are thrown as std::runtime_error, which ONNX Runtime
// turns into a failed run carrying the message.
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../selective_scan/scan.h"
#include "ort_abi.h"

namespace mmssm {
namespace ort {
namespace {

constexpr const char* kDomain = "mmssm";
constexpr const char* kOpName = "SelectiveScan";
constexpr size_t kInputs = 8;  // u, delta, A, B, C, D, delta_bias, z (optional)
const char* const kInputNames[kInputs] = {"u", "delta", "A", "B", "C", "D", "delta_bias", "z"};

struct Runtime {
  const void* table = nullptr;  // the OrtApi in use
  bool parallel_for = false;    // table has KernelContext_ParallelFor
};
Runtime g_runtime;

void check(const Api& api, Status* status, const char* what) {
  if (status == nullptr) return;
  std::string msg = std::string("mmssm.SelectiveScan: ") + what + ": " +
                    api.slot<const char* (*)(const Status*)>(kSlotGetErrorMessage)(status);
  api.slot<void (*)(Status*)>(kSlotReleaseStatus)(status);
  throw std::runtime_error(msg);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += std::to_string(shape[i]);
    if (i + 1 < shape.size()) s += ", ";
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

struct Input {
  bool present = false;
  const void* data = nullptr;
  std::vector<int64_t> shape;
};

Input read_input(const Api& api, KernelContext* ctx, size_t index) {
  Input in;
  const Value* value = nullptr;
  check(api,
        api.slot<Status* (*)(const KernelContext*, size_t, const Value**)>(
            kSlotKernelContextGetInput)(ctx, index, &value),
        "KernelContext_GetInput");
  if (value == nullptr) return in;  // an omitted optional input
  in.present = true;
  TensorTypeAndShapeInfo* info = nullptr;
  check(api,
        api.slot<Status* (*)(const Value*, TensorTypeAndShapeInfo**)>(
            kSlotGetTensorTypeAndShape)(value, &info),
        "GetTensorTypeAndShape");
  ElementType type = kUndefined;
  size_t rank = 0;
  Status* st = api.slot<Status* (*)(const TensorTypeAndShapeInfo*, ElementType*)>(
      kSlotGetTensorElementType)(info, &type);
  if (st == nullptr) {
    st = api.slot<Status* (*)(const TensorTypeAndShapeInfo*, size_t*)>(
        kSlotGetDimensionsCount)(info, &rank);
  }
  if (st == nullptr) {
    in.shape.resize(rank);
    st = api.slot<Status* (*)(const TensorTypeAndShapeInfo*, int64_t*, size_t)>(
        kSlotGetDimensions)(info, in.shape.data(), rank);
  }
  api.slot<void (*)(TensorTypeAndShapeInfo*)>(kSlotReleaseTensorTypeAndShapeInfo)(info);
  check(api, st, "reading a tensor's type and shape");
  if (type != kFloat) {
    throw std::runtime_error(std::string("mmssm.SelectiveScan: input ") +
                             kInputNames[index] + " must be float32 (ONNX type 1), got ONNX "
                             "type " + std::to_string(type));
  }
  void* data = nullptr;
  check(api,
        api.slot<Status* (*)(Value*, void**)>(kSlotGetTensorMutableData)(
            const_cast<Value*>(value), &data),
        "GetTensorMutableData");
  in.data = data;
  return in;
}

void expect_shape(const Input& in, size_t index, const std::vector<int64_t>& want,
                  const char* what) {
  if (in.shape != want) {
    throw std::runtime_error(std::string("mmssm.SelectiveScan: input ") + kInputNames[index] +
                             " has shape " + shape_str(in.shape) + ", expected " +
                             shape_str(want) + " " + what);
  }
}

// ---- threads ------------------------------------------------------------------------------
// KernelContext_ParallelFor(context, fn(user_data, i), total, num_batch, user_data) runs
// fn for every i in [0, total) on the session's intra-op pool and returns when all have.
struct WorkerJob {
  void (*body)(void*, int32_t);
  void* ctx;
};
thread_local KernelContext* t_context = nullptr;

void run_job(void* job, size_t worker) {
  auto* j = static_cast<WorkerJob*>(job);
  j->body(j->ctx, static_cast<int32_t>(worker));
}

void run_on_ort_pool(int32_t workers, void (*body)(void*, int32_t), void* ctx) {
  WorkerJob job{body, ctx};
  const Api api(g_runtime.table);
  check(api,
        api.slot<Status* (*)(const KernelContext*, void (*)(void*, size_t), size_t, size_t,
                             void*)>(kSlotKernelContextParallelFor)(
            t_context, &run_job, static_cast<size_t>(workers), 0, &job),
        "KernelContext_ParallelFor");
}

// ---- the kernel -----------------------------------------------------------------------------
struct Kernel {
  bool delta_softplus = false;
};

void compute(void* kernel, KernelContext* ctx) {
  const Api api(g_runtime.table);
  const auto* k = static_cast<const Kernel*>(kernel);
  size_t count = 0;
  check(api,
        api.slot<Status* (*)(const KernelContext*, size_t*)>(kSlotKernelContextGetInputCount)(
            ctx, &count),
        "KernelContext_GetInputCount");
  if (count < kInputs - 1 || count > kInputs) {
    throw std::runtime_error("mmssm.SelectiveScan: expected 7 or 8 inputs (u, delta, A, B, "
                             "C, D, delta_bias[, z]), got " + std::to_string(count));
  }
  Input in[kInputs];
  for (size_t i = 0; i < count; ++i) in[i] = read_input(api, ctx, i);
  for (size_t i = 0; i + 1 < kInputs; ++i) {
    if (!in[i].present) {
      throw std::runtime_error(std::string("mmssm.SelectiveScan: input ") + kInputNames[i] +
                               " is missing (only z is optional)");
    }
  }
  const Input& u = in[0];
  if (u.shape.size() != 3) {
    throw std::runtime_error("mmssm.SelectiveScan: input u must be (batch, dim, L), got " +
                             shape_str(u.shape));
  }
  const int64_t batch = u.shape[0], dim = u.shape[1], L = u.shape[2];
  if (in[2].shape.size() != 2 || in[2].shape[0] != dim || in[2].shape[1] < 1) {
    throw std::runtime_error("mmssm.SelectiveScan: input A has shape " +
                             shape_str(in[2].shape) + ", expected (dim, N) = (" +
                             std::to_string(dim) + ", N), N >= 1");
  }
  const int64_t N = in[2].shape[1];
  if (in[3].shape.size() != 4 || in[3].shape[1] < 1 || dim % in[3].shape[1] != 0) {
    throw std::runtime_error("mmssm.SelectiveScan: input B has shape " +
                             shape_str(in[3].shape) + ", expected (batch, G, N, L) with dim = " +
                             std::to_string(dim) + " divisible by G");
  }
  const int64_t G = in[3].shape[1];
  expect_shape(in[1], 1, {batch, dim, L}, "(batch, dim, L) like u");
  expect_shape(in[3], 3, {batch, G, N, L}, "(batch, G, N, L)");
  expect_shape(in[4], 4, {batch, G, N, L}, "(batch, G, N, L) like B");
  expect_shape(in[5], 5, {dim}, "(dim,)");
  expect_shape(in[6], 6, {dim}, "(dim,)");
  const bool gated = count == kInputs && in[7].present;
  if (gated) expect_shape(in[7], 7, {batch, dim, L}, "(batch, dim, L) like u");

  const std::vector<int64_t> out_shape{batch, dim, L};
  Value* out_value = nullptr;
  check(api,
        api.slot<Status* (*)(KernelContext*, size_t, const int64_t*, size_t, Value**)>(
            kSlotKernelContextGetOutput)(ctx, 0, out_shape.data(), out_shape.size(),
                                         &out_value),
        "KernelContext_GetOutput");
  void* out = nullptr;
  check(api, api.slot<Status* (*)(Value*, void**)>(kSlotGetTensorMutableData)(out_value, &out),
        "GetTensorMutableData (output)");

  SelectiveScanFwdParams p;
  p.batch = batch;
  p.dim = dim;
  p.seqlen = L;
  p.dstate = N;
  p.n_groups = G;
  p.input_type = ScanDType::kFloat32;
  p.delta_softplus = k->delta_softplus;
  p.u = u.data;
  p.u_batch_stride = dim * L;
  p.u_dim_stride = L;
  p.delta = in[1].data;
  p.delta_batch_stride = dim * L;
  p.delta_dim_stride = L;
  if (gated) {
    p.z = in[7].data;
    p.z_batch_stride = dim * L;
    p.z_dim_stride = L;
  }
  p.B = in[3].data;
  p.B_batch_stride = G * N * L;
  p.B_group_stride = N * L;
  p.B_dstate_stride = L;
  p.C = in[4].data;
  p.C_batch_stride = G * N * L;
  p.C_group_stride = N * L;
  p.C_dstate_stride = L;
  p.A = in[2].data;
  p.D = in[5].data;
  p.delta_bias = in[6].data;
  p.out = out;
  if (g_runtime.parallel_for) {
    const unsigned hw = std::thread::hardware_concurrency();
    p.num_threads = static_cast<int32_t>(hw > 0 ? hw : 1);
    p.run_workers = &run_on_ort_pool;
  }
  t_context = ctx;
  try {
    selective_scan_fwd_cpu(p);
  } catch (const std::exception& err) {
    t_context = nullptr;
    throw std::runtime_error(std::string("mmssm.SelectiveScan: ") + err.what());
  }
  t_context = nullptr;
}

// ---- the operator's callbacks ---------------------------------------------------------------
void* create_kernel(const CustomOp*, const void* api_table, const KernelInfo* info) {
  const Api api(api_table);
  int64_t softplus = 0;
  Status* st = api.slot<Status* (*)(const KernelInfo*, const char*, int64_t*)>(
      kSlotKernelInfoGetAttributeInt64)(info, "delta_softplus", &softplus);
  if (st != nullptr) {  // attribute absent: default 0
    api.slot<void (*)(Status*)>(kSlotReleaseStatus)(st);
    softplus = 0;
  }
  auto* k = new Kernel;
  k->delta_softplus = softplus != 0;
  return k;
}
const char* op_name(const CustomOp*) { return kOpName; }
const char* op_provider(const CustomOp*) { return nullptr; }  // the CPU provider
ElementType op_input_type(const CustomOp*, size_t) { return kFloat; }
size_t op_input_count(const CustomOp*) { return kInputs; }
ElementType op_output_type(const CustomOp*, size_t) { return kFloat; }
size_t op_output_count(const CustomOp*) { return 1; }
void op_destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }
Characteristic op_input_characteristic(const CustomOp*, size_t index) {
  return index == kInputs - 1 ? kOptional : kRequired;
}
Characteristic op_output_characteristic(const CustomOp*, size_t) { return kRequired; }
MemType op_input_memory(const CustomOp*, size_t) { return kMemDefault; }

CustomOp make_op() {
  CustomOp op{};
  op.version = kApiVersion;
  op.CreateKernel = &create_kernel;
  op.GetName = &op_name;
  op.GetExecutionProviderType = &op_provider;
  op.GetInputType = &op_input_type;
  op.GetInputTypeCount = &op_input_count;
  op.GetOutputType = &op_output_type;
  op.GetOutputTypeCount = &op_output_count;
  op.KernelCompute = &compute;
  op.KernelDestroy = &op_destroy;
  op.GetInputCharacteristic = &op_input_characteristic;
  op.GetOutputCharacteristic = &op_output_characteristic;
  op.GetInputMemoryType = &op_input_memory;
  return op;
}
const CustomOp g_op = make_op();

}  // namespace
}  // namespace ort
}  // namespace mmssm

// The entry point ONNX Runtime looks up after loading the library.
extern "C" __attribute__((visibility("default"))) mmssm::ort::Status* RegisterCustomOps(
    mmssm::ort::SessionOptions* options, const mmssm::ort::ApiBase* base) {
  using namespace mmssm::ort;
  const void* table = nullptr;
  bool parallel_for = false;
  table = base->GetApi(kParallelForApiVersion);
  parallel_for = table != nullptr;
  if (table == nullptr) table = base->GetApi(kApiVersion);
  if (table == nullptr) {
    std::fprintf(stderr, "mmssm.SelectiveScan: ONNX Runtime %s is too old (its C API has no "
                 "version %u); mmssm's operator library needs 1.13 or newer\n",
                 base->GetVersionString(), kApiVersion);
    return nullptr;  // nothing to report the error through; the op stays unknown
  }
  const Api api(table);
  if (g_runtime.table != nullptr && g_runtime.table != table) {
    return api.slot<Status* (*)(ErrorCode, const char*)>(kSlotCreateStatus)(
        kFail, "mmssm.SelectiveScan: registered with two different ONNX Runtime APIs");
  }
  g_runtime.table = table;
  g_runtime.parallel_for = parallel_for;
  // The domain must outlive every session that uses it: one per registration, kept.
  CustomOpDomain* domain = nullptr;
  Status* st = api.slot<Status* (*)(const char*, CustomOpDomain**)>(kSlotCreateCustomOpDomain)(
      kDomain, &domain);
  if (st == nullptr) {
    st = api.slot<Status* (*)(CustomOpDomain*, const CustomOp*)>(kSlotCustomOpDomainAdd)(
        domain, &g_op);
  }
  if (st == nullptr) {
    st = api.slot<Status* (*)(SessionOptions*, CustomOpDomain*)>(kSlotAddCustomOpDomain)(
        options, domain);
  }
  return st;
}
