// The fused epilogue: dst = activation(acc + bias + residual), applied as a tile is stored.
#pragma once

#include <cstdint>

#include "conv_params.h"

namespace im2win {

// residual may be null. n consecutive outputs of one channel.
void ApplyEpilogue(const float* acc, float bias, const float* residual, float* dst, int64_t n, const Epilogue& e);

}  // namespace im2win
