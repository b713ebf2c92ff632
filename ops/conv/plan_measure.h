// Chooses among a layer's plans by timing them on the CPU that runs them (as FFTW's MEASURE plans
// do): which tile family is faster depends on the CPU's caches and vector width more than any rule
// tuned on one CPU can say.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "conv/conv_plan.h"

namespace im2win {

// How a session chooses a layer's plan (the session config entry im2win.plan).
enum class PlanMode {
  kMeasure,    // time the candidates the first time a shape is run, keep the fastest (default)
  kHeuristic,  // the planner's rules alone: no timing, the same plan on every run of a CPU class
  kPositions,  // pinned tile families
  kChannels,
};

// "measure", "heuristic", "positions", "channels", or "" (the default, measure); throws ConvError otherwise.
PlanMode ParsePlanMode(const std::string& name);

// The tile preference a mode gives the planner (measure and heuristic: kAuto).
TilePreference PreferenceOf(PlanMode mode);

// What MakeConvPlan is asked for to make one candidate: the same request makes the same plan.
struct PlanRequest {
  TilePreference preference = TilePreference::kAuto;
  int channel_vectors = 0;
  DirectInput direct = DirectInput::kByRule;
};

// The plan a request makes for a shape (tables built: a plan to run).
ConvPlan MakeRequestedPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa, int threads,
                           const PlanRequest& request);

// The plans worth timing for a layer: position tiles, and when its output channels per group are
// whole channel blocks, channel tiles of each width the ISA has (the planner's choice first), each
// shaped by the planner; for a 1x1 conv that can read X in place, each of them both in place and
// through a panel. `family` (if not null) keeps to one tile family (weights packed for it). A
// single plan needs no timing. `requests` (if not null) receives what made each candidate.
std::vector<ConvPlan> CandidatePlans(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa,
                                     int threads, const TileFamily* family = nullptr,
                                     std::vector<PlanRequest>* requests = nullptr);

struct PlanTiming {
  size_t chosen = 0;
  std::vector<double> seconds;  // each candidate's fastest timed run
};

// Times run(i) for every candidate i: one run each (which also pays first touches), then, for the
// candidates within 1.5x of the fastest of those, up to three rounds that visit them in turn (so
// that a drift of a shared machine hits them alike; about 20 ms of runs in all, at least one
// round). Chooses the fastest run; seconds holds each candidate's fastest run (a candidate left
// out: its first).
PlanTiming TimeCandidates(size_t candidates, const std::function<void(size_t)>& run);

// The plan's path ("positions", "channels" or "depthwise") and its register tile: output channels x
// a run of positions, channels x rows x columns of outputs, or the depthwise kind ("6x64",
// "32x1x7", "16 channels in lanes"); " direct" when X is read in place.
std::string TileFamilyName(const ConvPlan& plan);
std::string TileName(const ConvPlan& plan);

}  // namespace im2win
