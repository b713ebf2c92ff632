#include "conv/conv_params.h"

#include <cfloat>
#include <sstream>

namespace im2win {
namespace {

std::string Join(const std::vector<int64_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

[[noreturn]] void Fail(const std::string& message) { throw ConvError(message); }

void CheckAll(const std::vector<int64_t>& v, const char* name, int64_t min_value) {
  for (int64_t x : v)
    if (x < min_value)
      Fail(std::string(name) + " must all be >= " + std::to_string(min_value) + ", got [" + Join(v) + "]");
}

std::string Str(int64_t v) { return std::to_string(v); }

// Resolves one spatial axis; returns the output size. i is the attribute index of the axis.
int64_t ResolveAxis(const std::string& auto_pad, int64_t in, int64_t k, int64_t s, int64_t d, int64_t* pad_begin,
                    int64_t* pad_end, const char* axis, size_t i) {
  // Messages name the attribute and its index; they are built only when needed.
  auto attr = [i](const char* name) { return std::string(name) + "[" + std::to_string(i) + "]"; };
  auto dilation_what = [&] { return attr("dilations") + " x (kernel size - 1)"; };
  const int64_t dilated = CheckedAdd(CheckedMul(k - 1, d, dilation_what), 1, dilation_what);
  if (dilated > kMaxOffset)
    Fail(attr("dilations") + "=" + Str(d) + " with kernel size " + Str(k) + " gives a dilated kernel of " +
         Str(dilated) + ", more than the " + Str(kMaxOffset) + " com.im2win::Conv addresses");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    // ONNX asks for out = ceil(in / s). The total padding follows ORT's Conv exactly, so that a
    // model gives the same answer on either op: it may be negative when the stride exceeds the
    // kernel (the input is cropped), ORT then adds one when padding the total on both sides
    // would fall short of the target, and the split uses C++'s truncating division.
    auto what = [&] { return "auto_pad=" + auto_pad + " with " + attr("strides") + "=" + Str(s); };
    const int64_t target = CheckedAdd(CheckedAdd(in, s, what), -1, what) / s;  // ORT sums in this order too
    int64_t total = CheckedAdd(CheckedMul(target - 1, s, what), dilated - in, what);
    const int64_t both = CheckedAdd(CheckedAdd(in, CheckedMul(2, total, what), what), -dilated, what);
    const double both_sides = static_cast<double>(both) / static_cast<double>(s) + 1.0;
    if (static_cast<int64_t>(both_sides) < target) total = CheckedAdd(total, 1, what);
    *pad_begin = auto_pad == "SAME_UPPER" ? total / 2 : CheckedAdd(total, 1, what) / 2;
    *pad_end = total - *pad_begin;
  } else if (auto_pad == "VALID") {
    *pad_begin = *pad_end = 0;
  }
  auto pads_what = [&] {
    return "pads on " + std::string(axis) + " (" + Str(*pad_begin) + "," + Str(*pad_end) +
           ") added to the input size " + Str(in);
  };
  const int64_t padded = CheckedAdd(CheckedAdd(in, *pad_begin, pads_what), *pad_end, pads_what);
  if (padded > kMaxOffset)
    Fail(pads_what() + " give " + Str(padded) + ", more than the " + Str(kMaxOffset) + " com.im2win::Conv addresses");
  const int64_t span = padded - dilated;
  if (span < 0) {
    std::ostringstream os;
    os << "input " << axis << " size " << in << " plus pads (" << *pad_begin << "," << *pad_end
       << ") is smaller than the dilated kernel size " << dilated << ", so the output would be empty";
    Fail(os.str());
  }
  return span / s + 1;
}

// The product of a tensor's dimensions, checked.
int64_t Elements(const std::vector<int64_t>& dims, const char* name) {
  int64_t n = 1;
  auto what = [&](const char* quantity) {
    return [&, quantity] { return std::string(name) + " " + DimsToString(dims) + quantity; };
  };
  for (int64_t d : dims) n = CheckedMul(n, d, what(" element count"));
  return CheckedMul(n, static_cast<int64_t>(sizeof(float)), what(" size in bytes"));
}

}  // namespace

std::string DimsToString(const std::vector<int64_t>& dims) { return "[" + Join(dims) + "]"; }

void ThrowOverflow(const std::string& what, int64_t a, const char* op, int64_t b) {
  Fail(what + " overflows 64-bit integers (" + Str(a) + " " + op + " " + Str(b) + ")");
}

std::vector<int64_t> ConvShape::output_dims() const {
  if (spatial_rank == 1) return {batch, out_channels, out_w};
  return {batch, out_channels, out_h, out_w};
}

Epilogue ParseEpilogue(const std::string& activation, const std::vector<float>& params) {
  Epilogue e;
  auto expect = [&](size_t n) {
    if (params.size() != n)
      Fail("activation " + activation + " takes " + std::to_string(n) + " activation_params, got " +
           std::to_string(params.size()));
  };
  if (activation.empty() || activation == "None") {
    expect(0);
  } else if (activation == "Relu") {
    e.activation = Activation::kRelu;
    expect(0);
  } else if (activation == "Clip") {
    e.activation = Activation::kClip;
    e.alpha = -FLT_MAX;
    e.beta = FLT_MAX;
    if (!params.empty()) {
      expect(2);
      e.alpha = params[0];
      e.beta = params[1];
    }
  } else if (activation == "LeakyRelu") {
    e.activation = Activation::kLeakyRelu;
    e.alpha = 0.01f;
    if (!params.empty()) {
      expect(1);
      e.alpha = params[0];
    }
  } else if (activation == "Sigmoid") {
    e.activation = Activation::kSigmoid;
    expect(0);
  } else if (activation == "HardSigmoid") {
    e.activation = Activation::kHardSigmoid;
    e.alpha = 0.2f;
    e.beta = 0.5f;
    if (!params.empty()) {
      expect(2);
      e.alpha = params[0];
      e.beta = params[1];
    }
  } else if (activation == "Tanh") {
    e.activation = Activation::kTanh;
    expect(0);
  } else if (activation == "HardSwish") {
    e.activation = Activation::kHardSwish;
    expect(0);
  } else {
    Fail("unknown activation '" + activation +
         "' (expected one of Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, Tanh, HardSwish)");
  }
  return e;
}

void ValidateAttributes(const ConvAttributes& a) {
  const std::string& ap = a.auto_pad;
  // An empty string is NOTSET, as ORT reads it.
  if (!ap.empty() && ap != "NOTSET" && ap != "VALID" && ap != "SAME_UPPER" && ap != "SAME_LOWER")
    Fail("auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got '" + ap + "'");
  if (a.group < 1) Fail("group must be >= 1, got " + std::to_string(a.group));
  CheckAll(a.strides, "strides", 1);
  CheckAll(a.dilations, "dilations", 1);
  CheckAll(a.kernel_shape, "kernel_shape", 1);
  CheckAll(a.pads, "pads", 0);
  // ONNX: pads "cannot be used simultaneously with auto_pad"; ORT refuses them even when all 0.
  if (!ap.empty() && ap != "NOTSET" && !a.pads.empty())
    Fail("pads [" + Join(a.pads) + "] cannot be used together with auto_pad=" + ap);
  if (!a.pads.empty() && a.pads.size() % 2 != 0)
    Fail("pads must hold a begin and an end value per spatial axis, got " + std::to_string(a.pads.size()) +
         " values");
  const size_t ranks[] = {a.strides.size(), a.dilations.size(), a.kernel_shape.size(), a.pads.size() / 2};
  for (size_t r : ranks)
    if (r > 2)
      Fail("attributes describe spatial rank " + std::to_string(r) + (r == 3 ? " (3-D convolution)" : "") +
           ", which com.im2win::Conv does not support; spatial rank 1 and 2 are");
}

void ValidateWeightShape(const ConvAttributes& a, const std::vector<int64_t>& w) {
  if (w.size() < 3) Fail("W must have rank >= 3 (M x C/group x kernel...), got shape " + DimsToString(w));
  if (w.size() > 4)
    Fail("spatial rank " + std::to_string(w.size() - 2) +
         " (3-D convolution) is not supported by com.im2win::Conv; spatial rank 1 and 2 are");
  // M = 0 gives an empty Y and C/group = 0 a Y of biases, as in ORT; a kernel size must be >= 1.
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i] < (i < 2 ? 0 : 1)) Fail("W has an invalid dimension, shape " + DimsToString(w));
  const size_t rank = w.size() - 2;
  Elements(w, "W");
  const int64_t taps = rank == 2 ? CheckedMul(w[2], w[3], "W's kernel size") : w[2];
  if (taps > kMaxTaps)
    Fail("W " + DimsToString(w) + " has a kernel of " + Str(taps) + " taps, more than the " + Str(kMaxTaps) +
         " com.im2win::Conv takes");
  if (!a.kernel_shape.empty()) {
    if (a.kernel_shape.size() != rank)
      Fail("kernel_shape " + DimsToString(a.kernel_shape) + " does not match W's spatial rank " +
           std::to_string(rank));
    for (size_t i = 0; i < rank; ++i)
      if (a.kernel_shape[i] != w[2 + i])
        Fail("kernel_shape " + DimsToString(a.kernel_shape) + " does not match W's shape " + DimsToString(w));
  }
  if (w[0] % a.group != 0)
    Fail("group " + std::to_string(a.group) + " does not divide the number of output channels M=" +
         std::to_string(w[0]));
}

ConvShape ResolveConvShape(const ConvAttributes& a, const std::vector<int64_t>& x, const std::vector<int64_t>& w) {
  ValidateAttributes(a);  // here too, so that no caller can divide by a zero stride or group
  if (x.size() < 3) Fail("X must have rank >= 3 (N x C x spatial...), got shape " + DimsToString(x));
  if (x.size() > 4)
    Fail("spatial rank " + std::to_string(x.size() - 2) +
         " (3-D convolution) is not supported by com.im2win::Conv; spatial rank 1 and 2 are");
  if (w.size() != x.size())
    Fail("X " + DimsToString(x) + " and W " + DimsToString(w) + " must have the same rank");
  ValidateWeightShape(a, w);
  const size_t rank = x.size() - 2;
  auto check_len = [&](const std::vector<int64_t>& v, size_t n, const char* name) {
    if (!v.empty() && v.size() != n)
      Fail(std::string(name) + " " + DimsToString(v) + " must have " + std::to_string(n) +
           " values for spatial rank " + std::to_string(rank));
  };
  check_len(a.strides, rank, "strides");
  check_len(a.dilations, rank, "dilations");
  check_len(a.pads, 2 * rank, "pads");
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] < 0 || (i >= 2 && x[i] == 0)) Fail("X has an invalid or empty dimension, shape " + DimsToString(x));
  Elements(x, "X");

  ConvShape s;
  s.spatial_rank = static_cast<int>(rank);
  s.batch = x[0];
  s.in_channels = x[1];
  s.out_channels = w[0];
  s.group = a.group;
  if (s.in_channels % s.group != 0)
    Fail("group " + std::to_string(s.group) + " does not divide the number of input channels C=" +
         std::to_string(s.in_channels));
  if (CheckedMul(w[1], s.group, "W's input channels x group") != s.in_channels)
    Fail("X has C=" + std::to_string(s.in_channels) + " channels but W " + DimsToString(w) + " with group " +
         std::to_string(s.group) + " expects C=" + std::to_string(w[1] * s.group));

  auto at = [](const std::vector<int64_t>& v, size_t i, int64_t def) { return v.empty() ? def : v[i]; };
  // Axis 0 of a 1-D conv maps to W; for 2-D axes 0, 1 map to H, W.
  const size_t ax_w = rank - 1;
  s.in_w = x[2 + ax_w];
  s.kernel_w = w[2 + ax_w];
  s.stride_w = at(a.strides, ax_w, 1);
  s.dilation_w = at(a.dilations, ax_w, 1);
  s.pad_left = at(a.pads, ax_w, 0);
  s.pad_right = at(a.pads, rank + ax_w, 0);
  s.out_w = ResolveAxis(a.auto_pad, s.in_w, s.kernel_w, s.stride_w, s.dilation_w, &s.pad_left, &s.pad_right, "W",
                         ax_w);
  if (rank == 2) {
    s.in_h = x[2];
    s.kernel_h = w[2];
    s.stride_h = at(a.strides, 0, 1);
    s.dilation_h = at(a.dilations, 0, 1);
    s.pad_top = at(a.pads, 0, 0);
    s.pad_bottom = at(a.pads, 2, 0);
    s.out_h = ResolveAxis(a.auto_pad, s.in_h, s.kernel_h, s.stride_h, s.dilation_h, &s.pad_top, &s.pad_bottom,
                           "H", 0);
  }
  Elements(s.output_dims(), "Y");
  return s;
}

Layout ParseLayout(const std::string& name) {
  if (name.empty() || name == "NCHW") return Layout::kNchw;
  if (name == "NHWC") return Layout::kNhwc;
  throw ConvError("attribute 'layout' must be \"NCHW\" or \"NHWC\", got \"" + name + "\"");
}

bool ParseInputLayout(const std::string& name, bool nhwc) {
  if (name.empty() || name == (nhwc ? "NHWC" : "NCHW")) return false;
  if (nhwc && name == "NCHW") return true;
  if (name == "NHWC") throw ConvError("attribute 'input_layout' \"NHWC\" needs layout \"NHWC\"");
  throw ConvError("attribute 'input_layout' must be \"NCHW\" or \"NHWC\", got \"" + name + "\"");
}

}  // namespace im2win
