#include "conv/plan_measure.h"

#include <algorithm>
#include <chrono>
#include <limits>

namespace im2win {

PlanMode ParsePlanMode(const std::string& name) {
  if (name.empty() || name == "measure") return PlanMode::kMeasure;
  if (name == "heuristic") return PlanMode::kHeuristic;
  if (name == "positions") return PlanMode::kPositions;
  if (name == "channels") return PlanMode::kChannels;
  throw ConvError("unknown plan mode '" + name + "' (im2win.plan takes measure, heuristic, positions or channels)");
}

TilePreference PreferenceOf(PlanMode mode) {
  if (mode == PlanMode::kPositions) return TilePreference::kPositions;
  if (mode == PlanMode::kChannels) return TilePreference::kChannels;
  return TilePreference::kAuto;
}

ConvPlan MakeRequestedPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa, int threads,
                           const PlanRequest& request) {
  return MakeConvPlan(shape, epilogue, isa, request.preference, PlanTables::kBuild, threads, request.channel_vectors,
                      request.direct);
}

std::vector<ConvPlan> CandidatePlans(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa,
                                     int threads, const TileFamily* family, std::vector<PlanRequest>* requests) {
  const std::vector<DirectInput> inputs =
      CanReadInPlace(shape) ? std::vector<DirectInput>{DirectInput::kOn, DirectInput::kOff}
                            : std::vector<DirectInput>{DirectInput::kByRule};
  std::vector<ConvPlan> plans;
  if (requests != nullptr) requests->clear();
  auto add = [&](TilePreference preference, int channel_vectors) {
    for (DirectInput input : inputs) {
      const PlanRequest request{preference, channel_vectors, input};
      plans.push_back(MakeRequestedPlan(shape, epilogue, isa, threads, request));
      if (requests != nullptr) requests->push_back(request);
    }
  };
  if (family == nullptr || *family == TileFamily::kPositions) add(TilePreference::kPositions, 0);
  // Depthwise plans ignore the family; a shape without whole channel blocks gets positions only.
  const ConvPlan channels = MakeConvPlan(shape, epilogue, isa, TilePreference::kChannels, PlanTables::kSizesOnly, threads);
  if (channels.depthwise || channels.family != TileFamily::kChannels) {
    if (plans.empty()) add(TilePreference::kPositions, 0);  // asked for channels, which cannot run it
    return plans;
  }
  if (family != nullptr && *family != TileFamily::kChannels) return plans;
  add(TilePreference::kChannels, 0);
  // Channel tiles of the other width too (AVX2: 8 or 16 channels; AVX-512: 16 or 32): fewer
  // channels leave registers for more outputs, which the rules weigh but only timing settles.
  for (int mv = 1; mv <= isa.channel_vectors; ++mv)
    if (mv != channels.tile_vectors && ChannelVectorsFit(isa, shape, mv)) add(TilePreference::kChannels, mv);
  return plans;
}

PlanTiming TimeCandidates(size_t candidates, const std::function<void(size_t)>& run) {
  using Clock = std::chrono::steady_clock;
  auto time = [&](size_t i) {
    const auto start = Clock::now();
    run(i);
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  PlanTiming t;
  // First runs, one each: they set which candidates go on (within 1.5x of the fastest: a first
  // run also pays first touches) and how many rounds fit in about 20 ms.
  for (size_t i = 0; i < candidates; ++i) t.seconds.push_back(time(i));
  const double fastest_first = *std::min_element(t.seconds.begin(), t.seconds.end());
  std::vector<size_t> kept;
  double round_seconds = 0.0;
  for (size_t i = 0; i < candidates; ++i)
    if (t.seconds[i] <= 1.5 * fastest_first) {
      kept.push_back(i);
      round_seconds += t.seconds[i];
      t.seconds[i] = std::numeric_limits<double>::infinity();
    }
  const int rounds = kept.size() < 2 ? 0 : static_cast<int>(std::clamp(0.02 / std::max(round_seconds, 1e-9), 1.0, 3.0));
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < kept.size(); ++k) {
      const size_t i = kept[r % 2 == 0 ? k : kept.size() - 1 - k];
      t.seconds[i] = std::min(t.seconds[i], time(i));
    }
  if (rounds == 0) t.seconds[kept[0]] = fastest_first;
  t.chosen = kept[0];
  for (size_t i : kept)
    if (t.seconds[i] < t.seconds[t.chosen]) t.chosen = i;
  return t;
}

std::string TileFamilyName(const ConvPlan& plan) {
  if (plan.depthwise) return "depthwise";
  return plan.family == TileFamily::kChannels ? "channels" : "positions";
}

std::string TileName(const ConvPlan& plan) {
  std::string tile;
  if (plan.depthwise_stride2) {
    tile = "3x3 stride 2 in place";
  } else if (plan.depthwise_lanes) {
    tile = std::to_string(plan.isa->vector_len) + " channels in lanes";
  } else if (plan.depthwise) {
    tile = "rows";
  } else if (plan.family == TileFamily::kChannels) {
    tile = std::to_string(plan.m_unit) + "x" + std::to_string(plan.tile_rows) + "x" + std::to_string(plan.tile_cols);
    // An exact tail: its longest run's rows in a block of layout.rows rows (one, for flat rows).
    const int64_t tail_rows =
        plan.ExactTail() ? TailRunRows(plan.TileHeight(plan.layout.rows), plan.tail_rows) : plan.tail_rows;
    if (plan.tail_cols > 0) tile += " + " + std::to_string(tail_rows) + "x" + std::to_string(plan.tail_cols);
  } else {
    tile = std::to_string(kTileM) + "x" + std::to_string(plan.isa->tile_positions());
  }
  return plan.strip_panel ? tile + " strips" : plan.direct ? tile + " direct" : tile;
}

}  // namespace im2win
