#include "conv/plan_cache.h"

#include <algorithm>

namespace im2win {

std::shared_ptr<const ConvPlan> PlanCache::Find(const ConvShape& shape) {
  const auto it = std::find_if(plans_.begin(), plans_.end(), [&](const auto& p) { return p->shape == shape; });
  if (it == plans_.end()) return nullptr;
  std::rotate(plans_.begin(), it, it + 1);  // to the front: the least recently used stays last
  return plans_.front();
}

void PlanCache::Insert(std::shared_ptr<const ConvPlan> plan) {
  const auto same = std::find_if(plans_.begin(), plans_.end(), [&](const auto& p) { return p->shape == plan->shape; });
  if (same != plans_.end()) plans_.erase(same);
  if (plans_.size() >= kPlans) plans_.pop_back();
  plans_.insert(plans_.begin(), std::move(plan));
}

std::optional<PlanRequest> PlanCache::TimedChoice(const ConvShape& shape) const {
  for (const auto& [timed, choice] : timed_)
    if (timed == shape) return choice;
  return std::nullopt;
}

void PlanCache::RecordTimed(const ConvShape& shape, const PlanRequest& choice) {
  if (!TimedChoice(shape) && MayTime()) timed_.emplace_back(shape, choice);
}

}  // namespace im2win
