// Registration of com.im2win::Conv, and of the channels-last MaxPool and AveragePool, with ONNX
// Runtime: the ops' schemas (inputs, types, versions, output shape, in-place pair) and the library's
// single exported entry point, RegisterCustomOps.
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "ort/conv_kernel.h"
#include "ort/pool_kernel.h"
#include "ort/shape_inference.h"

namespace im2win {
namespace {

constexpr const char* kDomain = "com.im2win";
constexpr const char* kThreadsEntry = "im2win.intra_op_num_threads";
constexpr const char* kPlanEntry = "im2win.plan";

// What every op of the library declares alike: CPU, float32 inputs, one float32 output, any opset.
struct Float32CpuOp : OrtCustomOp {
  Float32CpuOp() : OrtCustomOp{} {
    version = ORT_API_VERSION;
    GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // CPU
    GetInputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
    GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
    GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
    GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
    GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    GetStartVersion = [](const OrtCustomOp*) { return 1; };
    GetEndVersion = [](const OrtCustomOp*) { return INT_MAX; };
  }
  const OrtApi* api = nullptr;  // for shape inference, which ORT calls with the op alone
};

struct ConvOp : Float32CpuOp {
  explicit ConvOp(const KernelOptions& kernel_options) : options(kernel_options) {
    GetName = [](const OrtCustomOp*) { return "Conv"; };
    // X, W, optional B, optional Z -> Y.
    GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 4; };
    GetInputCharacteristic = [](const OrtCustomOp*, size_t i) {
      return i < 2 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
    };
    CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                        void** kernel) -> OrtStatusPtr {
      try {
        *kernel = new OrtConvKernel(*api, info, static_cast<const ConvOp*>(op)->options);
        return nullptr;
      } catch (const std::exception& e) {
        return MakeNodeError(*api, KernelNodeName(*api, info), e.what());
      }
    };
    KernelComputeV2 = [](void* kernel, OrtKernelContext* context) -> OrtStatusPtr {
      return static_cast<const OrtConvKernel*>(kernel)->Compute(context);
    };
    KernelDestroy = [](void* kernel) { delete static_cast<OrtConvKernel*>(kernel); };
    InferOutputShapeFn = [](const OrtCustomOp* op, OrtShapeInferContext* context) -> OrtStatusPtr {
      return InferConvOutputShape(*static_cast<const ConvOp*>(op)->api, context);
    };
    // Y may be written over the residual Z: each output reads its own Z element just before it
    // is stored, and nothing else reads Z.
    GetMayInplace = [](int** input_index, int** output_index) -> size_t {
      *input_index = new int[1]{3};
      *output_index = new int[1]{0};
      return 1;
    };
    ReleaseMayInplace = [](int* input_index, int* output_index) {
      delete[] input_index;
      delete[] output_index;
    };
  };
  KernelOptions options;          // the pool the kernels cut their work for, how they choose plans
};

// com.im2win::MaxPool and AveragePool: X -> Y, float32, channels-last.
struct PoolOp : Float32CpuOp {
  explicit PoolOp(PoolKind pool_kind) : kind(pool_kind) {
    GetName = [](const OrtCustomOp* op) { return PoolOpName(static_cast<const PoolOp*>(op)->kind); };
    GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
    GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                        void** kernel) -> OrtStatusPtr {
      const PoolKind k = static_cast<const PoolOp*>(op)->kind;
      try {
        *kernel = new OrtPoolKernel(*api, info, k);
        return nullptr;
      } catch (const std::exception& e) {
        return MakeNodeError(*api, KernelNodeName(*api, info), e.what(), PoolOpName(k));
      }
    };
    KernelComputeV2 = [](void* kernel, OrtKernelContext* context) -> OrtStatusPtr {
      return static_cast<const OrtPoolKernel*>(kernel)->Compute(context);
    };
    KernelDestroy = [](void* kernel) { delete static_cast<OrtPoolKernel*>(kernel); };
    InferOutputShapeFn = [](const OrtCustomOp* op, OrtShapeInferContext* context) -> OrtStatusPtr {
      const PoolOp* pool = static_cast<const PoolOp*>(op);
      return InferPoolOutputShape(*pool->api, context, pool->kind);
    };
  }
  PoolKind kind;
};

// A session config entry's value, or "" when the session has none.
std::string ConfigEntry(const OrtApi* api, const OrtSessionOptions* options, const char* key) {
  char value[64] = {0};
  size_t size = sizeof(value);
  if (OrtStatus* st = api->GetSessionConfigEntry(options, key, value, &size)) {  // absent, or longer than any valid value
    api->ReleaseStatus(st);
    return size > sizeof(value) ? "<a value of " + std::to_string(size) + " characters>" : "";
  }
  return value;
}

// The pool size a session's kernels plan for. ORT tells a custom op neither the session's
// intra_op_num_threads nor its pool, so the session says it in a config entry, set before the
// library is registered (im2win_ort.session_options does both); without it, every hardware thread
// (ORT's default pool is one thread per core): items cut for more threads than run stay balanced.
int PoolThreads(const OrtApi* api, const OrtSessionOptions* options) {
  int threads = 0;
  if (std::sscanf(ConfigEntry(api, options, kThreadsEntry).c_str(), "%d", &threads) != 1) threads = 0;
  if (threads < 1) threads = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(threads, 1, 1024);
}

OrtStatus* TooOldRuntime(const OrtApiBase* api_base) {
  const std::string message = "im2win_ort was built for ONNX Runtime API version " + std::to_string(ORT_API_VERSION) +
                              " (ONNX Runtime 1." + std::to_string(ORT_API_VERSION) +
                              " or newer), but this runtime is ONNX Runtime " + api_base->GetVersionString() +
                              "; upgrade onnxruntime";
  const OrtApi* oldest = api_base->GetApi(1);
  return oldest != nullptr ? oldest->CreateStatus(ORT_FAIL, message.c_str()) : nullptr;
}

// ONNX Runtime 1.23 and older build a custom op's shape-inference context from the type of every
// input and crash (at session creation) on a node that leaves out an optional input before a
// present one: X, W, "", Z. With those runtimes Y's shape is left to the kernel, as it would be
// without InferOutputShapeFn.
bool ShapeInferenceIsSafe(const OrtApiBase* api_base) {
  int major = 0, minor = 0;
  return std::sscanf(api_base->GetVersionString(), "%d.%d", &major, &minor) == 2 &&
         (major > 1 || (major == 1 && minor >= 24));
}

}  // namespace
}  // namespace im2win

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return im2win::TooOldRuntime(api_base);
  // One domain per pool size and plan mode for the whole process: ORT requires a domain to outlive every session
  // that uses it.
  struct Registered {
    std::unique_ptr<im2win::ConvOp> op;
    std::unique_ptr<im2win::PoolOp> pools[2];
    OrtCustomOpDomain* domain = nullptr;
  };
  static std::map<std::pair<int, im2win::PlanMode>, Registered> registered;
  static std::mutex mutex;
  im2win::KernelOptions kernel_options;
  kernel_options.threads = im2win::PoolThreads(api, options);
  try {
    // The session's entry, else IM2WIN_PLAN (a default for a whole deployment), else measure.
    std::string plan = im2win::ConfigEntry(api, options, im2win::kPlanEntry);
    if (plan.empty() && std::getenv("IM2WIN_PLAN") != nullptr) plan = std::getenv("IM2WIN_PLAN");
    kernel_options.plan_mode = im2win::ParsePlanMode(plan);
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string("im2win_ort: ") + e.what()).c_str());
  }
  std::lock_guard<std::mutex> lock(mutex);
  Registered& entry = registered[{kernel_options.threads, kernel_options.plan_mode}];
  if (entry.domain == nullptr) {
    entry.op = std::make_unique<im2win::ConvOp>(kernel_options);
    entry.op->api = api;
    if (!im2win::ShapeInferenceIsSafe(api_base)) entry.op->InferOutputShapeFn = nullptr;
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* st = api->CreateCustomOpDomain(im2win::kDomain, &domain)) return st;
    if (OrtStatus* st = api->CustomOpDomain_Add(domain, entry.op.get())) {
      api->ReleaseCustomOpDomain(domain);
      return st;
    }
    const im2win::PoolKind kinds[2] = {im2win::PoolKind::kMax, im2win::PoolKind::kAverage};
    for (int i = 0; i < 2; ++i) {
      entry.pools[i] = std::make_unique<im2win::PoolOp>(kinds[i]);
      entry.pools[i]->api = api;
      if (!im2win::ShapeInferenceIsSafe(api_base)) entry.pools[i]->InferOutputShapeFn = nullptr;
      if (OrtStatus* st = api->CustomOpDomain_Add(domain, entry.pools[i].get())) {
        api->ReleaseCustomOpDomain(domain);
        return st;
      }
    }
    entry.domain = domain;
  }
  OrtCustomOpDomain* domain = entry.domain;
  return api->AddCustomOpDomain(options, domain);
}
