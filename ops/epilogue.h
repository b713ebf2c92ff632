// The fused epilogue: dst = activation(acc + bias + residual), applied as a tile is stored.
#pragma once

#include <cstdint>

#include "conv_params.h"

namespace im2win {

// residual may be null. n consecutive outputs of one channel.
void ApplyEpilogue(const float* acc, float bias, const float* residual, float* dst, int64_t n, const Epilogue& e);

// An activation that is a clamp (none, Relu, Clip) is min(max(v, lo), hi), which a kernel applies
// while the tile is in registers: sets lo and hi and returns true; false for the others.
bool ClampBounds(const Epilogue& e, float* lo, float* hi);

}  // namespace im2win
