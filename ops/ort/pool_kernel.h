// The ORT kernels of com.im2win::MaxPool and com.im2win::AveragePool: ONNX pooling on channels-last
// (NHWC) tensors, so that a channels-last region passes through its pools.
#pragma once

#include <onnxruntime_c_api.h>

#include <string>

#include "conv/pool_nhwc.h"

namespace im2win {

class OrtPoolKernel {
 public:
  // Throws ConvError (bad attributes) or OrtCallError (an ORT call failed).
  OrtPoolKernel(const OrtApi& api, const OrtKernelInfo* info, PoolKind kind);
  // Returns null or an ORT status whose message names the node and the problem.
  OrtStatus* Compute(OrtKernelContext* context) const;

 private:
  void ComputeOrThrow(OrtKernelContext* context) const;
  const OrtApi& api_;
  PoolKind kind_;
  std::string node_name_;
  PoolAttributes attrs_;
};

const char* PoolOpName(PoolKind kind);

}  // namespace im2win
