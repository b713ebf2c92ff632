// The ORT kernel object of com.im2win::Conv: reads the node's attributes and constant weights
// through ORT's C API and hands shapes and pointers to the im2win driver.
#pragma once

#include <onnxruntime_c_api.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "conv/conv_params.h"
#include "conv/conv_plan.h"
#include "kernels/microkernel.h"
#include "conv/weight_pack.h"

namespace im2win {

class OrtConvKernel {
 public:
  // Throws ConvError (bad attributes or weights) or OrtCallError (an ORT call failed).
  // threads: the intra-op pool size the work is cut for (see register.cc).
  OrtConvKernel(const OrtApi& api, const OrtKernelInfo* info, int threads);
  // Returns null or an ORT status whose message names the node and the problem.
  OrtStatus* Compute(OrtKernelContext* context) const;
  const std::string& node_name() const { return node_name_; }

 private:
  void ComputeOrThrow(OrtKernelContext* context) const;

  // Constant weights, packed once per tile family the node's shapes need (one in practice): at
  // kernel creation when X's spatial shape is known, else at the first run. Read-only once ready.
  const float* PackedConstantWeights(TileFamily family, const float* w) const;

  const OrtApi& api_;
  std::string node_name_;
  ConvAttributes attrs_;
  Epilogue epilogue_;
  const IsaKernels* isa_ = nullptr;
  int threads_ = 1;
  TilePreference tile_preference_ = TilePreference::kAuto;
  bool w_prepacked_ = false;  // W arrives packed (weight_layout): used in place, no copy of ours
  TileFamily w_family_ = TileFamily::kPositions;
  bool weights_constant_ = false;
  std::vector<int64_t> w_dims_;  // of the constant W
  mutable std::mutex pack_mutex_;
  mutable std::vector<float> packed_[2];  // by TileFamily
  mutable std::atomic<bool> packed_ready_[2] = {false, false};
  // The plan of the last shape run: sessions mostly run one shape, which is then planned once
  // (tables, the split search) instead of on every run.
  mutable std::mutex plan_mutex_;
  mutable std::shared_ptr<const ConvPlan> plan_;
};

// The node's name as ORT knows it ("" when it has none).
std::string KernelNodeName(const OrtApi& api, const OrtKernelInfo* info);

// Formats "com.im2win::Conv node 'NAME': MESSAGE" as an ORT status.
OrtStatus* MakeNodeError(const OrtApi& api, const std::string& node_name, const std::string& message);

}  // namespace im2win
