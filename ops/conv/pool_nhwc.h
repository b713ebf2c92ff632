// Max and average pooling in channels-last (NHWC) layout, so a channels-last region runs through
// the pools between its convs without leaving NHWC. ONNX MaxPool / AveragePool semantics: auto_pad,
// pads, strides, dilations (MaxPool), ceil_mode, count_include_pad (AveragePool).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "conv/conv_driver.h"
#include "conv/conv_params.h"

namespace im2win {

enum class PoolKind { kMax, kAverage };

// The window attributes are a Conv's (its group is ignored: a pool's group is X's channels).
struct PoolAttributes {
  ConvAttributes window;
  int64_t ceil_mode = 0, count_include_pad = 0;
};

// The pooling resolved to 2-D (spatial rank 1 as H = 1), as ConvShape with C = M = group.
struct PoolShape {
  ConvShape geometry;
  bool count_include_pad = false;
};

// Checks the attributes (kernel_shape required; AveragePool takes no dilations); throws ConvError.
void ValidatePoolAttributes(PoolKind kind, const PoolAttributes& attrs);

// x_dims in NHWC order (N, [H,] W, C); the output dims are NHWC too (PoolOutputDims). SAME padding
// follows ORT's pooling, which differs from its Conv's where the stride exceeds the window.
PoolShape ResolvePoolShape(const PoolAttributes& attrs, const std::vector<int64_t>& x_dims_nhwc);
std::vector<int64_t> PoolOutputDims(const PoolShape& shape);

void RunPoolNhwc(PoolKind kind, const PoolShape& shape, const float* x, float* y, const ParallelRunner& parallel);

}  // namespace im2win
