// Output shape inference for com.im2win::Conv: with Y's shape known when the session is built,
// ORT's allocation planner can place Y ahead of time and reuse buffers, as it does for its own
// Conv, and can write Y over the residual Z (the op declares that in-place pair).
#pragma once

#include <onnxruntime_c_api.h>

#include "conv/pool_nhwc.h"

namespace im2win {

// Sets Y's type and shape from X's and W's (symbolic batch kept) and the node's attributes; leaves
// the shape unknown when the inputs' shapes are unknown or do not resolve (the kernel reports that).
OrtStatusPtr InferConvOutputShape(const OrtApi& api, OrtShapeInferContext* context);

// Y's shape of com.im2win::MaxPool / AveragePool (channels-last), when X's shape is known.
OrtStatusPtr InferPoolOutputShape(const OrtApi& api, OrtShapeInferContext* context, PoolKind kind);

}  // namespace im2win
