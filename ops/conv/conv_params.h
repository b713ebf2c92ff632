// Conv geometry and epilogue: ONNX Conv attribute rules, resolved to one 2-D description.
// Knows shapes only; no ORT, no kernels. Errors are thrown as im2win::ConvError with a message
// that names the attribute or input at fault.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace im2win {

struct ConvError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

[[noreturn]] void ThrowOverflow(const std::string& what, int64_t a, const char* op, int64_t b);

// Sizes from a model are untrusted numbers: every sum and product of them goes through these,
// which throw ConvError naming `what` where int64 would wrap around. `what` is text, or a callable
// that makes it: the message is built only on overflow (these run on every Compute).
template <typename What>
std::string OverflowText(const What& what) {
  if constexpr (std::is_invocable_v<What>)
    return what();
  else
    return std::string(what);
}
template <typename What>
int64_t CheckedAdd(int64_t a, int64_t b, const What& what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) ThrowOverflow(OverflowText(what), a, "+", b);
  return r;
}
template <typename What>
int64_t CheckedMul(int64_t a, int64_t b, const What& what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) ThrowOverflow(OverflowText(what), a, "x", b);
  return r;
}

// The kernels address one channel's window panel and their lookup tables with 32-bit offsets:
// every spatial size (X padded, the dilated kernel, Y) and one channel's panel stay below this.
constexpr int64_t kMaxOffset = 0x7fffffff;
// Taps per kernel (kh x kw) at most: the plan keeps a table of them; 2^24 taps is a 64 MiB W per
// pair of channels, far past any real network, and bounds the planner's time and memory.
constexpr int64_t kMaxTaps = int64_t{1} << 24;

enum class Activation { kNone, kRelu, kClip, kLeakyRelu, kSigmoid, kHardSigmoid, kTanh, kHardSwish };

// Y = activation(conv + bias + residual); alpha/beta hold the activation's parameters
// (Clip: min, max; LeakyRelu: alpha; HardSigmoid: alpha, beta), defaults as in ONNX.
struct Epilogue {
  Activation activation = Activation::kNone;
  float alpha = 0.0f;
  float beta = 0.0f;
};

Epilogue ParseEpilogue(const std::string& activation, const std::vector<float>& params);

// Where the channels are in X, Y and Z: second (ONNX's NCHW) or last (channels-last, NHWC).
enum class Layout { kNchw, kNhwc };
// "NCHW" (or "", the default) or "NHWC"; throws ConvError otherwise.
Layout ParseLayout(const std::string& name);
// input_layout: X's layout where it differs from Y's. Empty (X as `layout` says) or "NHWC" with
// layout NHWC is false; "NCHW" with layout NHWC (X channels-first, Y and Z channels-last) is true;
// anything else throws ConvError naming it.
bool ParseInputLayout(const std::string& name, bool nhwc);

// The node's attributes as written; empty vectors mean "not given".
struct ConvAttributes {
  std::string auto_pad = "NOTSET";
  std::vector<int64_t> dilations, kernel_shape, pads, strides;
  int64_t group = 1;
};

// Checks what can be checked without input shapes (done once, at kernel creation).
void ValidateAttributes(const ConvAttributes& attrs);

// A convolution fully resolved to 2-D: spatial rank 1 is carried as H = 1.
struct ConvShape {
  int spatial_rank = 2;
  int64_t batch = 0, in_channels = 0, in_h = 1, in_w = 1;
  int64_t out_channels = 0, group = 1;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t out_h = 1, out_w = 1;

  int64_t channels_per_group() const { return in_channels / group; }
  int64_t outputs_per_group() const { return out_channels / group; }
  // The output tensor's shape in ONNX order (N, M, [H,] W).
  std::vector<int64_t> output_dims() const;
  bool operator==(const ConvShape& o) const {
    return std::tie(spatial_rank, batch, in_channels, in_h, in_w, out_channels, group, kernel_h, kernel_w, stride_h,
                    stride_w, dilation_h, dilation_w, pad_top, pad_left, pad_bottom, pad_right, out_h, out_w) ==
           std::tie(o.spatial_rank, o.batch, o.in_channels, o.in_h, o.in_w, o.out_channels, o.group, o.kernel_h,
                    o.kernel_w, o.stride_h, o.stride_w, o.dilation_h, o.dilation_w, o.pad_top, o.pad_left,
                    o.pad_bottom, o.pad_right, o.out_h, o.out_w);
  }
};

// Resolves attributes against the shapes of X and W (ONNX Conv rules, auto_pad included).
// Refuses spatial rank 3 and above with a clear message, and any size the kernels cannot address
// (see kMaxOffset, kMaxTaps) or whose arithmetic would overflow, naming the attribute.
ConvShape ResolveConvShape(const ConvAttributes& attrs, const std::vector<int64_t>& x_dims,
                           const std::vector<int64_t>& w_dims);

// Checks W's shape alone (rank, kernel_shape agreement), for weights known at kernel creation.
void ValidateWeightShape(const ConvAttributes& attrs, const std::vector<int64_t>& w_dims);

std::string DimsToString(const std::vector<int64_t>& dims);

}  // namespace im2win
