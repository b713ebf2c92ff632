// What every kernel of the library reads through ORT's C API: attributes (a present attribute of
// another type is an error, never a default), input tensors as float32 views, ORT's thread pool,
// and errors that name the node.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv/conv_driver.h"

namespace im2win {

// An ORT C API call failed; carries ORT's own message.
struct OrtCallError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws OrtCallError with ORT's message when `status` is an error (and releases it).
void Check(const OrtApi& api, OrtStatus* status);

// A list attribute of ints or floats ({} when absent); one of another type throws ConvError.
template <typename T>
std::vector<T> GetList(const OrtApi& api, const OrtKernelInfo* info, const char* name);
// A string attribute read whole (a NUL inside it is refused), or `def` when absent.
std::string GetString(const OrtApi& api, const OrtKernelInfo* info, const char* name, const std::string& def);
int64_t GetInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t def);

// The sliding-window attributes a Conv and a pool share: auto_pad, kernel_shape, pads, strides,
// dilations (group is left at 1; Conv reads its own).
ConvAttributes GetWindowAttributes(const OrtApi& api, const OrtKernelInfo* info);

struct TensorView {
  std::vector<int64_t> dims;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  const float* data = nullptr;
  int64_t elements() const;
};

// A float32 input as dims and data; another element type throws ConvError naming `name`.
TensorView View(const OrtApi& api, const OrtValue* value, const char* name);

// The dims ORT knows for an input at kernel creation (-1 where symbolic; empty if unknown).
std::vector<int64_t> StaticInputDims(const OrtApi& api, const OrtKernelInfo* info, size_t index);

// ORT's intra-op pool as a ParallelRunner (KernelContext_ParallelFor).
ParallelRunner OrtRunner(const OrtApi& api, OrtKernelContext* context);

// The node's name as ORT knows it ("" when it has none).
std::string KernelNodeName(const OrtApi& api, const OrtKernelInfo* info);

// Formats "com.im2win::OP node 'NAME': MESSAGE" as an ORT status.
OrtStatus* MakeNodeError(const OrtApi& api, const std::string& node_name, const std::string& message,
                         const char* op = "Conv");

}  // namespace im2win
