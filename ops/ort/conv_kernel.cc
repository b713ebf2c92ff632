#include "ort/conv_kernel.h"

#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "conv/conv_driver.h"
#include "kernels/cpu_dispatch.h"
#include "conv/weight_pack.h"

namespace im2win {

OrtConvKernel::OrtConvKernel(const OrtApi& api, const OrtKernelInfo* info, const KernelOptions& options)
    : api_(api), threads_(options.threads) {
  node_name_ = KernelNodeName(api, info);
  attrs_ = GetWindowAttributes(api, info);
  attrs_.group = GetInt(api, info, "group", 1);
  ValidateAttributes(attrs_);
  epilogue_ = ParseEpilogue(GetString(api, info, "activation", ""), GetList<float>(api, info, "activation_params"));
  nhwc_ = ParseLayout(GetString(api, info, "layout", "NCHW")) == Layout::kNhwc;
  x_nchw_ = ParseInputLayout(GetString(api, info, "input_layout", ""), nhwc_);
  algorithm_ = ParseConvAlgorithm(GetString(api, info, "algorithm", "auto"));
  if (!nhwc_ && algorithm_ == ConvAlgorithm::kWinograd)
    throw ConvError("algorithm \"winograd\" needs layout NHWC");
  const std::string weight_layout = GetString(api, info, "weight_layout", "OIHW");
  if (weight_layout == kNhwcWeightLayout) {
    if (!nhwc_) throw ConvError("weight_layout " + weight_layout + " is the channels-last order: it needs layout NHWC");
    w_nhwc_packed_ = true;
  } else if (const int tile = WinogradLayoutTile(weight_layout)) {
    const std::string what = "weight_layout " + weight_layout + " is Winograd's transformed W: ";
    if (!nhwc_) throw ConvError(what + "it needs layout NHWC");
    if (algorithm_ == ConvAlgorithm::kDirect) throw ConvError(what + "algorithm \"direct\" cannot read it");
    w_winograd_tile_ = tile;
  } else {
    w_prepacked_ = ParseWeightLayout(weight_layout, &w_family_);
    if (nhwc_ && w_prepacked_)
      throw ConvError("layout NHWC takes W as ONNX gives it (weight_layout OIHW) or as " +
                      std::string(kNhwcWeightLayout) + ": " + weight_layout + " is an NCHW tile order");
  }
  isa_ = &SelectIsa();

  // IM2WIN_TILES pins the tile family for the process; else the session's im2win.plan decides,
  // except for weights the rewriter packed: they run the family they were packed for (timing the
  // other would take a second copy of W, and keeping it a third), which the rewriter chose by
  // timing or by the rules (im2win-ort rewrite --plan); what else a plan leaves open is timed.
  tile_preference_ = SelectTilePreference();
  if (tile_preference_ == TilePreference::kAuto) {
    tile_preference_ = PreferenceOf(options.plan_mode);
    if (w_prepacked_ && tile_preference_ == TilePreference::kAuto)
      tile_preference_ = w_family_ == TileFamily::kChannels ? TilePreference::kChannels : TilePreference::kPositions;
    measure_ = options.plan_mode == PlanMode::kMeasure;
  }

  // Constant weights are validated here and packed once; others are packed on every run.
  int is_constant = 0;
  const OrtValue* w = nullptr;
  Check(api, api.KernelInfoGetConstantInput_tensor(info, 1, &is_constant, &w));
  if (is_constant && w != nullptr) {
    const TensorView wv = View(api, w, "W");
    ValidateWeightShape(attrs_, KernelDims(wv.dims));
    // (W's first two dims are M and C/group: ValidateWeightShape checked its rank.)
    if (w_nhwc_packed_) CheckNhwcPackedWeights(wv.dims[1], wv.dims[0] / std::max<int64_t>(1, attrs_.group));
    w_dims_ = wv.dims;
    weights_constant_ = true;
    // With X's channels and spatial size known (the batch may be symbolic), the shapes are checked
    // now and the weights packed for the tile family the runs will use.
    // (Channels-last weights are packed at the first run: their packing needs no input size.)
    std::vector<int64_t> x_dims = StaticInputDims(api, info, 0);
    if (!nhwc_ && !w_prepacked_ && x_dims.size() == wv.dims.size() && x_dims[1] > 0 && x_dims[2] > 0 &&
        x_dims.back() > 0) {
      x_dims[0] = 1;
      const ConvShape shape = ResolveConvShape(attrs_, x_dims, wv.dims);
      PackedConstantWeights(ChooseTileFamily(*isa_, shape, tile_preference_), wv.data);
    }
  }
}

std::vector<int64_t> OrtConvKernel::KernelDims(const std::vector<int64_t>& w_dims) const {
  return w_winograd_tile_ != 0 ? WinogradKernelDims(w_dims, w_winograd_tile_) : w_dims;
}

void OrtConvKernel::PackFrom(const float* w, const std::vector<int64_t>& w_dims, int64_t group, TileFamily family,
                             float* out) const {
  int64_t elements = 1;
  for (int64_t d : w_dims) elements *= d;
  if (elements == 0) return;  // M = 0 or C = 0: nothing to pack
  const int64_t m = w_dims[0], k = elements / m;
  if (!w_prepacked_) {
    PackWeights(family, w, m, group, k, out);
  } else if (family == w_family_) {
    std::copy(w, w + elements, out);
  } else {  // packed for another tile family (another CPU or input size): through OIHW
    std::vector<float> plain(elements);
    UnpackWeights(w_family_, w, m, group, k, plain.data());
    PackWeights(family, plain.data(), m, group, k, out);
  }
}

OrtConvKernel::Packing OrtConvKernel::PackedConstantWeights(TileFamily family, const float* w) const {
  std::lock_guard<std::mutex> lock(pack_mutex_);
  Packing& packed = packed_[static_cast<int>(family)];
  if (packed == nullptr) {
    int64_t elements = 1;
    for (int64_t d : w_dims_) elements *= d;
    auto fresh = std::make_shared<std::vector<float>>(elements);
    PackFrom(w, w_dims_, attrs_.group, family, fresh->data());
    packed = std::move(fresh);
  }
  return packed;
}

void OrtConvKernel::ReleasePacked(TileFamily family) const {
  std::lock_guard<std::mutex> lock(pack_mutex_);
  packed_[static_cast<int>(family)].reset();  // a run still using it holds its own reference
}

OrtConvKernel::RunWeights OrtConvKernel::WeightsFor(TileFamily family, const float* w,
                                                    const std::vector<int64_t>& w_dims, const ConvShape& shape) const {
  if (w_prepacked_ && family == w_family_) return {w, nullptr};  // the rewriter's packing: ORT's copy is the only one
  if (weights_constant_ && w_dims == w_dims_) {
    Packing packed = PackedConstantWeights(family, w);
    return {packed->data(), packed};
  }
  int64_t elements = 1;
  for (int64_t d : w_dims) elements *= d;
  auto fresh = std::make_shared<std::vector<float>>(elements);  // weights that arrive at run time
  PackFrom(w, w_dims, shape.group, family, fresh->data());
  return {fresh->data(), std::move(fresh)};
}

void OrtConvKernel::LogTimings(OrtKernelContext* context, const std::vector<ConvPlan>& plans,
                               const PlanTiming& timing) const {
  const OrtLogger* logger = nullptr;
  OrtLoggingLevel level = ORT_LOGGING_LEVEL_FATAL;
  if (OrtStatus* st = api_.KernelContext_GetLogger(context, &logger)) {
    api_.ReleaseStatus(st);
    return;
  }
  if (OrtStatus* st = api_.Logger_GetLoggingSeverityLevel(logger, &level)) {
    api_.ReleaseStatus(st);
    return;
  }
  if (level > ORT_LOGGING_LEVEL_INFO) return;
  std::string message = "com.im2win::Conv node '" + node_name_ + "': plan timed for X " +
                        DimsToString({plans[0].shape.batch, plans[0].shape.in_channels, plans[0].shape.in_h,
                                      plans[0].shape.in_w}) + ":";
  for (size_t i = 0; i < plans.size(); ++i) {
    char ms[32];
    std::snprintf(ms, sizeof(ms), "%.3f", timing.seconds[i] * 1e3);
    message += " " + TileFamilyName(plans[i]) + " " + TileName(plans[i]) + " " + ms + " ms" +
               (i + 1 < plans.size() ? "," : "");
  }
  message += "; runs " + TileFamilyName(plans[timing.chosen]) + " " + TileName(plans[timing.chosen]);
  if (OrtStatus* st = api_.Logger_LogMessage(logger, ORT_LOGGING_LEVEL_INFO, message.c_str(), __FILE__, __LINE__,
                                             "OrtConvKernel::PlanFor"))
    api_.ReleaseStatus(st);
}

std::shared_ptr<const ConvPlan> OrtConvKernel::CachedPlan(const ConvShape& shape) const {
  std::lock_guard<std::mutex> lock(plan_mutex_);
  return plans_.Find(shape);
}

std::shared_ptr<const ConvPlan> OrtConvKernel::PlanFor(const ConvShape& shape, const float* x, const float* w,
                                                       const std::vector<int64_t>& w_dims, const float* bias,
                                                       const float* residual, float* y, OrtKernelContext* context,
                                                       bool* y_done) const {
  *y_done = false;
  const ParallelRunner runner = OrtRunner(api_, context);
  if (auto cached = CachedPlan(shape)) return cached;
  std::unique_lock<std::mutex> measuring(measure_mutex_, std::defer_lock);
  std::vector<ConvPlan> plans;
  std::vector<PlanRequest> requests;
  std::optional<PlanRequest> timed;
  bool may_time = false;
  if (measure_) {
    measuring.lock();
    if (auto cached = CachedPlan(shape)) return cached;  // another run timed this shape meanwhile
    std::lock_guard<std::mutex> lock(plan_mutex_);
    timed = plans_.TimedChoice(shape);
    may_time = plans_.MayTime();
  }
  if (timed) {  // timed before, its plan since dropped from the cache: rebuilt as chosen then
    plans.push_back(MakeRequestedPlan(shape, epilogue_, *isa_, threads_, *timed));
  } else if (may_time) {
    plans = CandidatePlans(shape, epilogue_, *isa_, threads_, w_prepacked_ ? &w_family_ : nullptr, &requests);
  } else {  // not measuring, or the timing budget is spent: the rules' plan
    plans.push_back(MakeConvPlan(shape, epilogue_, *isa_, tile_preference_, PlanTables::kBuild, threads_));
  }
  size_t chosen = 0;
  if (plans.size() > 1) {
    std::vector<RunWeights> weights;
    for (const ConvPlan& p : plans) weights.push_back(WeightsFor(p.family, w, w_dims, shape));
    // Y may share Z's buffer (computed in place): every run reads a copy of Z.
    const int64_t y_elements = CheckedMul(shape.batch, shape.out_channels * shape.out_h * shape.out_w, "Y");
    std::vector<float> z_copy;
    if (residual != nullptr) z_copy.assign(residual, residual + y_elements);
    const float* z = residual != nullptr ? z_copy.data() : nullptr;
    size_t last = SIZE_MAX;
    auto run = [&](size_t i) {
      RunConv(plans[i], x, weights[i].data, bias, z, y, runner);
      last = i;
    };
    const PlanTiming timing = TimeCandidates(plans.size(), run);
    chosen = timing.chosen;
    if (last != chosen) run(chosen);
    LogTimings(context, plans, timing);
    *y_done = true;
    weights.clear();
    for (const ConvPlan& p : plans)
      if (p.family != plans[chosen].family) ReleasePacked(p.family);
#ifdef __GLIBC__
    // The packing let go is one W; glibc keeps freed blocks of that size for reuse (its mmap
    // threshold rises with each one freed), which would hold it in the process's memory for good.
    malloc_trim(0);
#endif
  }
  auto plan = std::make_shared<const ConvPlan>(std::move(plans[chosen]));
  std::lock_guard<std::mutex> lock(plan_mutex_);
  if (plans.size() > 1) plans_.RecordTimed(shape, requests[chosen]);
  plans_.Insert(plan);
  return plan;
}

OrtStatus* OrtConvKernel::Compute(OrtKernelContext* context) const {
  try {
    ComputeOrThrow(context);
    return nullptr;
  } catch (const std::exception& e) {
    return MakeNodeError(api_, node_name_, e.what());
  } catch (...) {
    return MakeNodeError(api_, node_name_, "unknown error");
  }
}

void OrtConvKernel::ComputeOrThrow(OrtKernelContext* context) const {
  size_t input_count = 0;
  Check(api_, api_.KernelContext_GetInputCount(context, &input_count));
  auto input = [&](size_t i) -> const OrtValue* {
    const OrtValue* v = nullptr;
    if (i < input_count) Check(api_, api_.KernelContext_GetInput(context, i, &v));
    return v;
  };
  const OrtValue* x_value = input(0);
  const OrtValue* w_value = input(1);
  if (x_value == nullptr || w_value == nullptr) throw ConvError("inputs X and W are required");
  const TensorView x = View(api_, x_value, "X");
  const TensorView w = View(api_, w_value, "W");
  const ConvShape shape =
      ResolveConvShape(attrs_, nhwc_ && !x_nchw_ ? NhwcToNchwDims(x.dims) : x.dims, KernelDims(w.dims));

  const float* bias = nullptr;
  if (const OrtValue* b_value = input(2)) {
    const TensorView b = View(api_, b_value, "B");
    if (b.dims.size() != 1 || b.dims[0] != shape.out_channels)
      throw ConvError("B must have shape [" + std::to_string(shape.out_channels) + "], got " + DimsToString(b.dims));
    bias = b.data;
  }
  const std::vector<int64_t> y_dims = nhwc_ ? NchwToNhwcDims(shape.output_dims()) : shape.output_dims();
  const float* residual = nullptr;
  if (const OrtValue* z_value = input(3)) {
    const TensorView z = View(api_, z_value, "Z");
    if (z.dims != y_dims)
      throw ConvError("Z must have the output's shape " + DimsToString(y_dims) + ", got " + DimsToString(z.dims));
    residual = z.data;
  }

  OrtValue* y_value = nullptr;
  Check(api_, api_.KernelContext_GetOutput(context, 0, y_dims.data(), y_dims.size(), &y_value));
  int64_t y_elements = 1;
  for (int64_t d : y_dims) y_elements *= d;
  if (y_elements == 0) return;  // batch 0: nothing to compute
  void* y_data = nullptr;
  Check(api_, api_.GetTensorMutableData(y_value, &y_data));

  float* y = static_cast<float*>(y_data);
  if (nhwc_) {
    ComputeNhwc(context, x.data, w.data, w.dims, bias, residual, y, shape);
    return;
  }
  bool y_done = false;
  const std::shared_ptr<const ConvPlan> plan = PlanFor(shape, x.data, w.data, w.dims, bias, residual, y, context, &y_done);
  if (y_done) return;
  const RunWeights weights = WeightsFor(plan->family, w.data, w.dims, shape);
  RunConv(*plan, x.data, weights.data, bias, residual, y, OrtRunner(api_, context));
}

namespace {

// The plan kept for the last shape, or a new one made by `make` and kept in its place (cheap to
// make: channels-last plans take no timing and no tables).
template <typename Plan, typename Make>
std::shared_ptr<const Plan> LastShapePlan(std::mutex& mutex, std::shared_ptr<const Plan>& kept, const ConvShape& shape,
                                          Make make) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (kept != nullptr && kept->shape == shape) return kept;
  }
  auto plan = std::make_shared<const Plan>(make());
  std::lock_guard<std::mutex> lock(mutex);
  kept = plan;
  return plan;
}

// `floats` packed by pack(out): once into `kept` where the weights are constant (`reuse`), else
// afresh for this run.
template <typename Pack>
std::shared_ptr<const std::vector<float>> PackedOnce(std::mutex& mutex, std::shared_ptr<const std::vector<float>>& kept,
                                                     bool reuse, int64_t floats, Pack pack) {
  auto fresh_packing = [&] {
    auto fresh = std::make_shared<std::vector<float>>(floats);
    pack(fresh->data());
    return std::shared_ptr<const std::vector<float>>(std::move(fresh));
  };
  if (!reuse) return fresh_packing();
  std::lock_guard<std::mutex> lock(mutex);
  if (kept == nullptr) kept = fresh_packing();
  return kept;
}

}  // namespace

void OrtConvKernel::ComputeNhwc(OrtKernelContext* context, const float* x, const float* w,
                                const std::vector<int64_t>& w_dims, const float* bias, const float* residual,
                                float* y, const ConvShape& shape) const {
  if (w_winograd_tile_ != 0) {  // U stored: Winograd whatever the shape's size
    std::string why;
    if (!WinogradApplies(shape, x_nchw_, &why))
      throw ConvError("weight_layout " + std::string(WinogradLayoutName(w_winograd_tile_)) +
                      " is Winograd's transformed W: it needs " + why);
    ComputeWinograd(context, x, w, w_dims, bias, residual, y, shape);
    return;
  }
  if (UseWinograd(algorithm_, shape, x_nchw_)) {
    ComputeWinograd(context, x, w, w_dims, bias, residual, y, shape);
    return;
  }
  const std::shared_ptr<const NhwcPlan> plan = LastShapePlan(
      plan_mutex_, nhwc_plan_, shape, [&] { return MakeNhwcPlan(shape, epilogue_, *isa_, threads_, 0, x_nchw_); });
  if (w_nhwc_packed_) {  // the rewriter's packing: ORT's copy is the only one
    CheckNhwcPackedWeights(shape.channels_per_group(), shape.outputs_per_group());
    RunConvNhwc(*plan, x, w, bias, residual, y, OrtRunner(api_, context));
    return;
  }
  // The packing depends on W's shape and the group only: constant weights are packed once.
  const Packing packed = PackedOnce(pack_mutex_, packed_nhwc_, weights_constant_ && w_dims == w_dims_,
                                    PackedNhwcFloats(*plan), [&](float* out) { PackWeightsNhwc(*plan, w, out); });
  RunConvNhwc(*plan, x, packed->data(), bias, residual, y, OrtRunner(api_, context));
}

void OrtConvKernel::ComputeWinograd(OrtKernelContext* context, const float* x, const float* w,
                                    const std::vector<int64_t>& w_dims, const float* bias, const float* residual,
                                    float* y, const ConvShape& shape) const {
  const std::shared_ptr<const WinogradPlan> plan = LastShapePlan(plan_mutex_, winograd_plan_, shape, [&] {
    return MakeWinogradPlan(shape, epilogue_, *isa_, threads_, 0, w_winograd_tile_);
  });
  if (w_winograd_tile_ != 0) {  // the rewriter's U: ORT's copy is the only one
    RunWinogradNhwc(*plan, x, w, bias, residual, y, OrtRunner(api_, context));
    return;
  }
  if (w_nhwc_packed_) CheckNhwcPackedWeights(shape.channels_per_group(), shape.outputs_per_group());
  // The transform depends on W's shape and the tile only: constant weights are transformed once a tile.
  const Packing packed = PackedOnce(
      pack_mutex_, packed_winograd_[plan->tile == 4], weights_constant_ && w_dims == w_dims_,
      WinogradPackedFloats(shape, plan->tile),
      [&](float* out) { PackWeightsWinograd(shape, plan->tile, w, w_nhwc_packed_, out); });
  RunWinogradNhwc(*plan, x, packed->data(), bias, residual, y, OrtRunner(api_, context));
}

}  // namespace im2win
