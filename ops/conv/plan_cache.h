// The plans a kernel keeps, one per input shape it has run, with bounds: a session fed a few
// shapes in turn plans (and times) each once, and one fed endless shapes holds bounded memory and
// spends bounded time timing.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/plan_measure.h"

namespace im2win {

class PlanCache {
 public:
  // Whole plans kept, the most recently used first. A plan is a few hundred bytes (a depthwise
  // one also holds tables as long as its rows), and a session that switches among more shapes
  // than this (dynamic batch and image sizes) rebuilds the plan of the least recently used one
  // from its recorded choice, without timing it again.
  static constexpr size_t kPlans = 16;
  // Shapes whose candidates a kernel times (about 20 ms of runs each): past them, a new shape takes
  // the planner's rules, so a stream of new shapes cannot keep the kernel timing. Each timed
  // shape's choice is kept (a shape and three numbers), so no shape is ever timed twice.
  static constexpr size_t kTimedShapes = 64;

  // The kept plan of `shape` (now the most recently used), or null.
  std::shared_ptr<const ConvPlan> Find(const ConvShape& shape);
  void Insert(std::shared_ptr<const ConvPlan> plan);

  // The choice timing made for `shape`, if it was timed.
  std::optional<PlanRequest> TimedChoice(const ConvShape& shape) const;
  bool MayTime() const { return timed_.size() < kTimedShapes; }
  void RecordTimed(const ConvShape& shape, const PlanRequest& choice);
  size_t timed_shapes() const { return timed_.size(); }

 private:
  std::vector<std::shared_ptr<const ConvPlan>> plans_;
  std::vector<std::pair<ConvShape, PlanRequest>> timed_;
};

}  // namespace im2win
