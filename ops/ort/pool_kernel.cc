#include "ort/pool_kernel.h"

#include "ort/kernel_io.h"
#include "ort/shape_inference.h"

namespace im2win {

const char* PoolOpName(PoolKind kind) { return kind == PoolKind::kMax ? "MaxPool" : "AveragePool"; }

OrtPoolKernel::OrtPoolKernel(const OrtApi& api, const OrtKernelInfo* info, PoolKind kind) : api_(api), kind_(kind) {
  node_name_ = KernelNodeName(api, info);
  attrs_.window = GetWindowAttributes(api, info);
  attrs_.ceil_mode = GetInt(api, info, "ceil_mode", 0);
  attrs_.count_include_pad = kind == PoolKind::kAverage ? GetInt(api, info, "count_include_pad", 0) : 0;
  if (kind == PoolKind::kMax && GetInt(api, info, "storage_order", 0) != 0)
    throw ConvError("attribute 'storage_order' must be 0 (the Indices output is not produced)");
  if (GetString(api, info, "layout", "NHWC") != "NHWC")
    throw ConvError("attribute 'layout' must be \"NHWC\": the op pools channels-last tensors");
  ValidatePoolAttributes(kind, attrs_);
}

OrtStatus* OrtPoolKernel::Compute(OrtKernelContext* context) const {
  try {
    ComputeOrThrow(context);
    return nullptr;
  } catch (const std::exception& e) {
    return MakeNodeError(api_, node_name_, e.what(), PoolOpName(kind_));
  } catch (...) {
    return MakeNodeError(api_, node_name_, "unknown error", PoolOpName(kind_));
  }
}

void OrtPoolKernel::ComputeOrThrow(OrtKernelContext* context) const {
  const OrtValue* x_value = nullptr;
  Check(api_, api_.KernelContext_GetInput(context, 0, &x_value));
  if (x_value == nullptr) throw ConvError("input X is required");
  const TensorView x = View(api_, x_value, "X");
  const PoolShape shape = ResolvePoolShape(attrs_, x.dims);
  const std::vector<int64_t> y_dims = PoolOutputDims(shape);
  OrtValue* y_value = nullptr;
  Check(api_, api_.KernelContext_GetOutput(context, 0, y_dims.data(), y_dims.size(), &y_value));
  int64_t y_elements = 1;
  for (int64_t d : y_dims) y_elements *= d;
  if (y_elements == 0) return;
  void* y = nullptr;
  Check(api_, api_.GetTensorMutableData(y_value, &y));
  RunPoolNhwc(kind_, shape, x.data, static_cast<float*>(y), OrtRunner(api_, context));
}

}  // namespace im2win
