// The ORT kernel object of com.im2win::Conv: reads the node's attributes and constant weights
// through ORT's C API and hands shapes and pointers to the im2win driver.
#pragma once

#include <onnxruntime_c_api.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "conv/conv_params.h"
#include "conv/conv_driver.h"
#include "conv/conv_nhwc.h"
#include "conv/conv_plan.h"
#include "conv/plan_cache.h"
#include "conv/plan_measure.h"
#include "conv/winograd_nhwc.h"
#include "kernels/microkernel.h"
#include "ort/kernel_io.h"
#include "conv/weight_pack.h"

namespace im2win {

// What a session tells its kernels (register.cc reads it from the session's config entries).
struct KernelOptions {
  int threads = 1;                        // the intra-op pool size the work is cut for
  PlanMode plan_mode = PlanMode::kMeasure;  // how a layer's plan is chosen
};

class OrtConvKernel {
 public:
  // Throws ConvError (bad attributes or weights) or OrtCallError (an ORT call failed).
  OrtConvKernel(const OrtApi& api, const OrtKernelInfo* info, const KernelOptions& options);
  // Returns null or an ORT status whose message names the node and the problem.
  OrtStatus* Compute(OrtKernelContext* context) const;
  const std::string& node_name() const { return node_name_; }

 private:
  using Packing = std::shared_ptr<const std::vector<float>>;
  // Weights in one tile family's order for a run: ORT's W itself, or a packing `holder` keeps alive.
  struct RunWeights {
    const float* data = nullptr;
    Packing holder;
  };

  void ComputeOrThrow(OrtKernelContext* context) const;

  // The plan of this shape: a kept one, or a new one. Under im2win.plan=measure a shape never
  // timed (while the cache's timing budget lasts) has its candidates timed on this run's inputs,
  // which leaves Y computed (*y_done), and the timings go to ORT's log (INFO) through `context`'s
  // logger.
  std::shared_ptr<const ConvPlan> PlanFor(const ConvShape& shape, const float* x, const float* w,
                                          const std::vector<int64_t>& w_dims, const float* bias,
                                          const float* residual, float* y, OrtKernelContext* context,
                                          bool* y_done) const;
  void LogTimings(OrtKernelContext* context, const std::vector<ConvPlan>& plans, const PlanTiming& timing) const;
  std::shared_ptr<const ConvPlan> CachedPlan(const ConvShape& shape) const;

  RunWeights WeightsFor(TileFamily family, const float* w, const std::vector<int64_t>& w_dims,
                        const ConvShape& shape) const;
  // W (as ORT holds it: OIHW, or packed for w_family_) packed for `family` into `out`.
  // W's dims as the conv sees them (stored U's as its 3x3 kernel's; throws ConvError for a bad U).
  std::vector<int64_t> KernelDims(const std::vector<int64_t>& w_dims) const;
  void PackFrom(const float* w, const std::vector<int64_t>& w_dims, int64_t group, TileFamily family,
                float* out) const;
  // Constant weights packed once per tile family a plan uses: at kernel creation when X's spatial
  // shape is known, else at the first run. A family no plan uses any more is released.
  Packing PackedConstantWeights(TileFamily family, const float* w) const;
  void ReleasePacked(TileFamily family) const;

  const OrtApi& api_;
  std::string node_name_;
  ConvAttributes attrs_;
  Epilogue epilogue_;
  const IsaKernels* isa_ = nullptr;
  int threads_ = 1;
  TilePreference tile_preference_ = TilePreference::kAuto;
  bool measure_ = false;      // time the candidate plans of each new shape
  bool w_prepacked_ = false;  // W arrives packed (weight_layout): used in place, no copy of ours
  bool w_nhwc_packed_ = false;  // W arrives in the channels-last order (kNhwcWeightLayout), likewise
  int w_winograd_tile_ = 0;  // W arrives as Winograd's U for this tile (kWinograd*WeightLayout), likewise
  TileFamily w_family_ = TileFamily::kPositions;
  bool weights_constant_ = false;
  bool nhwc_ = false;  // layout="NHWC": X, Z and Y channels-last (conv_nhwc.h)
  bool x_nchw_ = false;  // layout="NHWC" with input_layout="NCHW": X channels-first, Z and Y channels-last
  std::vector<int64_t> w_dims_;  // of the constant W
  mutable std::mutex pack_mutex_;
  mutable Packing packed_[2];  // by TileFamily
  // Plans by shape (PlanCache's bounds): each shape is planned once (tables, the split search, the
  // timing) instead of on every run, however the session alternates among them.
  mutable std::mutex plan_mutex_;
  mutable PlanCache plans_;
  mutable std::mutex measure_mutex_;  // one timing at a time: concurrent first runs wait for it
  // Channels-last: the last shape's plan (cheap to make: no timing, no tables) and the constant
  // weights packed for it once.
  void ComputeNhwc(OrtKernelContext* context, const float* x, const float* w, const std::vector<int64_t>& w_dims,
                   const float* bias, const float* residual, float* y, const ConvShape& shape) const;
  void ComputeWinograd(OrtKernelContext* context, const float* x, const float* w, const std::vector<int64_t>& w_dims,
                       const float* bias, const float* residual, float* y, const ConvShape& shape) const;
  mutable std::shared_ptr<const NhwcPlan> nhwc_plan_;
  mutable Packing packed_nhwc_;
  // Winograd where `algorithm` chooses it (winograd_nhwc.h): the last shape's plan and the constant
  // weights transformed once for each tile size a shape used (16/9 or 4x W; ORT's W stays), unless
  // the rewriter stored U (w_winograd_tile_).
  ConvAlgorithm algorithm_ = ConvAlgorithm::kAuto;
  mutable std::shared_ptr<const WinogradPlan> winograd_plan_;
  mutable Packing packed_winograd_[2];
};

}  // namespace im2win
