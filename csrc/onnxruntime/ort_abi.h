// The part of ONNX Runtime's C ABI that mmssm's custom-operator library uses.
//
// ONNX Runtime ships no headers with its Python wheel, and this library must build with
// nothing but a C++ compiler, so it declares what it calls itself. These are facts of
// ONNX Runtime's stable, append-only C ABI (include/onnxruntime/core/session/
// onnxruntime_c_api.h, ORT_API_VERSION 13 and later), written out by us:
//  * `OrtGetApiBase()->GetApi(version)` returns a table of function pointers (`OrtApi`)
//    that only ever grows at the end; a function's slot number never changes. We read
//    the few slots we call by number (kSlot*), with the signatures the header declares.
//  * A custom operator is a struct of callbacks (`OrtCustomOp`) whose first member says
//    which API version it was written against; ONNX Runtime reads no member newer than
//    that version.
//  * A library registers itself through an exported C function
//    `OrtStatus* RegisterCustomOps(OrtSessionOptions*, const OrtApiBase*)`.
// Nothing here depends on torch, Python or ONNX Runtime's headers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmssm {
namespace ort {

// Opaque ONNX Runtime objects.
struct Status;
struct SessionOptions;
struct CustomOpDomain;
struct KernelInfo;
struct KernelContext;
struct Value;
struct TensorTypeAndShapeInfo;

// ONNXTensorElementDataType (the ONNX TensorProto data types).
enum ElementType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kDouble = 11,
};

// OrtErrorCode
enum ErrorCode : int32_t {
  kOk = 0,
  kFail = 1,
  kInvalidArgument = 2,
  kRuntimeException = 6,
};

// OrtCustomOpInputOutputCharacteristic
enum Characteristic : int32_t { kRequired = 0, kOptional = 1 };

// OrtMemType: kMemDefault is the execution provider's own memory (CPU here).
enum MemType : int32_t { kMemDefault = 0 };

// The API version the slots below (but the last) are declared for.
constexpr uint32_t kApiVersion = 13;

// Slot numbers in the OrtApi table and the signatures there.
constexpr int kSlotCreateStatus = 0;  // Status* (ErrorCode, const char* msg)
constexpr int kSlotGetErrorMessage = 2;  // const char* (const Status*)
constexpr int kSlotCreateCustomOpDomain = 26;  // (const char*, CustomOpDomain**)
constexpr int kSlotCustomOpDomainAdd = 27;  // (CustomOpDomain*, const CustomOp*)
constexpr int kSlotAddCustomOpDomain = 28;  // (SessionOptions*, CustomOpDomain*)
constexpr int kSlotGetTensorMutableData = 51;  // (Value*, void**)
constexpr int kSlotGetTensorElementType = 60;  // (const TensorTypeAndShapeInfo*, ElementType*)
constexpr int kSlotGetDimensionsCount = 61;  // (const TensorTypeAndShapeInfo*, size_t*)
constexpr int kSlotGetDimensions = 62;  // (const TensorTypeAndShapeInfo*, int64_t*, size_t)
constexpr int kSlotGetTensorTypeAndShape = 65;  // (const Value*, TensorTypeAndShapeInfo**)
constexpr int kSlotKernelInfoGetAttributeInt64 = 86;  // (const KernelInfo*, const char*, int64_t*)
constexpr int kSlotKernelContextGetInputCount = 88;  // (const KernelContext*, size_t*)
constexpr int kSlotKernelContextGetInput = 90;  // (const KernelContext*, size_t, const Value**)
// (KernelContext*, size_t index, const int64_t* dims, size_t ndims, Value**)
constexpr int kSlotKernelContextGetOutput = 91;
constexpr int kSlotReleaseStatus = 93;  // void (Status*)
constexpr int kSlotReleaseTensorTypeAndShapeInfo = 99;  // void (TensorTypeAndShapeInfo*)
// Added in API version 17 (ONNX Runtime 1.17):
// (const KernelContext*, void (*fn)(void* user_data, size_t i), size_t total,
//  size_t num_batch, void* user_data): fn(user_data, i) for every i < total on the
// session's intra-op thread pool; returns when all calls have returned.
constexpr uint32_t kParallelForApiVersion = 17;
constexpr int kSlotKernelContextParallelFor = 274;

// OrtApiBase
struct ApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// The OrtApi table, read by slot.
class Api {
 public:
  explicit Api(const void* table) : slots_(static_cast<void* const*>(table)) {}
  template <typename Fn>
  Fn slot(int index) const {
    return reinterpret_cast<Fn>(slots_[index]);
  }

 private:
  void* const* slots_;
};

// OrtCustomOp as of API version 13: `version` and 12 callbacks, in this order. (Later
// versions append members, which ONNX Runtime reads only when `version` is at least the
// version that added them; the spare null slots keep even a careless reader in bounds.)
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp* op, const void* api, const KernelInfo* info);
  const char* (*GetName)(const CustomOp* op);
  const char* (*GetExecutionProviderType)(const CustomOp* op);
  ElementType (*GetInputType)(const CustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp* op);
  ElementType (*GetOutputType)(const CustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp* op);
  void (*KernelCompute)(void* kernel, KernelContext* context);
  void (*KernelDestroy)(void* kernel);
  Characteristic (*GetInputCharacteristic)(const CustomOp* op, size_t index);
  Characteristic (*GetOutputCharacteristic)(const CustomOp* op, size_t index);
  MemType (*GetInputMemoryType)(const CustomOp* op, size_t index);
  void* spare[32];
};

}  // namespace ort
}  // namespace mmssm
