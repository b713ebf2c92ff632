// The fused epilogue: dst = activation(acc + bias + residual), applied as a tile is stored.
#pragma once

#include <cstdint>

#include "conv/conv_params.h"

namespace im2win {

// residual may be null. n consecutive outputs of one channel.
void ApplyEpilogue(const float* acc, float bias, const float* residual, float* dst, int64_t n, const Epilogue& e);

// The clamp a kernel applies while the tile is in registers, min(max(v, lo), hi): the activation
// itself when it is one (none, Relu, Clip; returns true), else -inf, inf (returns false: the
// activation is applied afterwards, on the stored outputs).
bool ClampBounds(const Epilogue& e, float* lo, float* hi);

}  // namespace im2win
