// The im2win convolution: splits the work, builds window panels in a per-thread workspace and
// runs the micro-kernel tiles. Knows shapes and pointers; the caller supplies the thread pool.
#pragma once

#include <cstdint>
#include <functional>

#include "conv/conv_plan.h"

namespace im2win {

// Runs body(i) for every i in [0, count), possibly in parallel; returns when all are done.
using ParallelRunner = std::function<void(int64_t count, const std::function<void(int64_t)>& body)>;

// packed_w from PackWeights; bias (M) and residual (Y's shape) may be null.
void RunConv(const ConvPlan& plan, const float* x, const float* packed_w, const float* bias, const float* residual,
             float* y, const ParallelRunner& parallel);

// Runs body serially, or on `threads` std::threads when threads > 1 (for callers without ORT).
ParallelRunner ThreadRunner(int threads);

}  // namespace im2win
