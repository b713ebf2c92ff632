// The depthwise paths (one input and one output channel per group), called per work item by the
// driver: channels in the vector lanes when C is a multiple of the vector length (3x3 at stride 2
// read in place where the ISA can), else one channel at a time along the output rows.
#pragma once

#include <cstdint>

#include "conv/conv_plan.h"

namespace im2win {

// Channels [g_begin, g_begin + vector_len) of one image, output rows [first_row, first_row + rows).
void RunDepthwiseLanes(const ConvPlan& p, const float* x_image, const float* w, const float* bias,
                       const float* residual, float* y_image, int64_t g_begin, int64_t first_row, int64_t rows,
                       float* workspace);

// 3x3 at stride 2 read in place (ConvPlan::depthwise_stride2): channels [g_begin, g_end) of one
// image, output rows [first_row, first_row + rows).
void RunDepthwiseStride2(const ConvPlan& p, const float* x_image, const float* w, const float* bias,
                         const float* residual, float* y_image, int64_t g_begin, int64_t g_end, int64_t first_row,
                         int64_t rows);

// Channels [g_begin, g_end) of one image, output rows [first_row, first_row + rows).
void RunDepthwise(const ConvPlan& p, const float* x_image, const float* w, const float* bias, const float* residual,
                  float* y_image, int64_t g_begin, int64_t g_end, int64_t first_row, int64_t rows, float* panel);

}  // namespace im2win
