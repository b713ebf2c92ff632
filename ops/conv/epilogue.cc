#include "conv/epilogue.h"

#include <cmath>
#include <limits>

namespace im2win {
namespace {

// min(max(v, lo), hi) as ONNX's Clip defines it: when lo > hi the result is hi.
inline float Clamp(float v, float lo, float hi) {
  const float low_clipped = v < lo ? lo : v;
  return low_clipped > hi ? hi : low_clipped;
}

template <typename F>
void Apply(const float* acc, float bias, const float* residual, float* dst, int64_t n, F activation) {
  if (residual != nullptr) {
    for (int64_t i = 0; i < n; ++i) dst[i] = activation(acc[i] + bias + residual[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = activation(acc[i] + bias);
  }
}

}  // namespace

void ApplyEpilogue(const float* acc, float bias, const float* residual, float* dst, int64_t n, const Epilogue& e) {
  const float a = e.alpha, b = e.beta;
  switch (e.activation) {
    case Activation::kNone:
      return Apply(acc, bias, residual, dst, n, [](float v) { return v; });
    case Activation::kRelu:
      return Apply(acc, bias, residual, dst, n, [](float v) { return v > 0.f ? v : 0.f; });
    case Activation::kClip:
      return Apply(acc, bias, residual, dst, n, [a, b](float v) { return Clamp(v, a, b); });
    case Activation::kLeakyRelu:
      return Apply(acc, bias, residual, dst, n, [a](float v) { return v >= 0.f ? v : a * v; });
    case Activation::kSigmoid:
      return Apply(acc, bias, residual, dst, n, [](float v) { return 1.f / (1.f + std::exp(-v)); });
    case Activation::kHardSigmoid:
      return Apply(acc, bias, residual, dst, n, [a, b](float v) { return Clamp(a * v + b, 0.f, 1.f); });
    case Activation::kTanh:
      return Apply(acc, bias, residual, dst, n, [](float v) { return std::tanh(v); });
    case Activation::kHardSwish:
      return Apply(acc, bias, residual, dst, n, [](float v) { return v * Clamp(v / 6.f + 0.5f, 0.f, 1.f); });
  }
}

bool ClampBounds(const Epilogue& e, float* lo, float* hi) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  *lo = -kInf;
  *hi = kInf;
  switch (e.activation) {
    case Activation::kNone:
      return true;
    case Activation::kRelu:
      *lo = 0.0f;
      return true;
    case Activation::kClip:
      *lo = e.alpha;
      *hi = e.beta;
      return true;
    default:
      return false;
  }
}

}  // namespace im2win
