#include "conv/pool_nhwc.h"

#include <algorithm>
#include <limits>

#include "conv/conv_nhwc.h"

namespace im2win {

void ValidatePoolAttributes(PoolKind kind, const PoolAttributes& attrs) {
  const ConvAttributes& a = attrs.window;
  if (a.kernel_shape.empty()) throw ConvError("attribute 'kernel_shape' is required");
  if (attrs.ceil_mode != 0 && attrs.ceil_mode != 1) throw ConvError("attribute 'ceil_mode' must be 0 or 1");
  if (attrs.count_include_pad != 0 && attrs.count_include_pad != 1)
    throw ConvError("attribute 'count_include_pad' must be 0 or 1");
  const bool dilated = std::any_of(a.dilations.begin(), a.dilations.end(), [](int64_t d) { return d != 1; });
  if (kind == PoolKind::kAverage && dilated) throw ConvError("AveragePool takes no dilations other than 1");
  // ORT sizes SAME padding from the undilated kernel, ONNX from the dilated one: refused rather
  // than answered differently from one of them.
  if (dilated && (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER"))
    throw ConvError("auto_pad " + a.auto_pad + " with dilations is not supported: give pads instead");
  ConvAttributes conv = a;
  conv.group = 1;
  ValidateAttributes(conv);
}

PoolShape ResolvePoolShape(const PoolAttributes& attrs, const std::vector<int64_t>& x_dims_nhwc) {
  const ConvAttributes& a = attrs.window;
  const std::vector<int64_t> x = NhwcToNchwDims(x_dims_nhwc);
  if (x.size() != a.kernel_shape.size() + 2)
    throw ConvError("X has rank " + std::to_string(x_dims_nhwc.size()) + " but kernel_shape has " +
                    std::to_string(a.kernel_shape.size()) + " spatial axes");
  ConvAttributes conv = a;
  conv.group = std::max<int64_t>(1, x[1]);
  std::vector<int64_t> w{x[1], 1};
  w.insert(w.end(), a.kernel_shape.begin(), a.kernel_shape.end());
  PoolShape p;
  p.geometry = ResolveConvShape(conv, x, w);
  p.count_include_pad = attrs.count_include_pad != 0;
  ConvShape& s = p.geometry;
  if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
    // ORT's pooling sizes SAME padding by its own rule, not its Conv's: the total (out-1)*s + k - in
    // with out = ceil(in/s), negative where the stride exceeds the window (each window then starts
    // inside X), the head half of it truncated toward zero. The output size is out either way. ORT's
    // NCHWc pools (ENABLE_ALL) and its AveragePool-19 answer the negative case so; its reference
    // MaxPool and older AveragePool refuse it.
    const bool upper = a.auto_pad == "SAME_UPPER";
    auto same_axis = [&](int64_t in, int64_t k, int64_t st, int64_t* begin, int64_t* end) {
      const int64_t out = (in + st - 1) / st;  // in and st were bounded by ResolveConvShape
      const int64_t needed = (out - 1) * st + k - in;
      *begin = upper ? needed / 2 : (needed + 1) / 2;
      *end = needed - *begin;
      return out;
    };
    s.out_w = same_axis(s.in_w, s.kernel_w, s.stride_w, &s.pad_left, &s.pad_right);
    if (s.spatial_rank == 2) s.out_h = same_axis(s.in_h, s.kernel_h, s.stride_h, &s.pad_top, &s.pad_bottom);
  }
  if (attrs.ceil_mode != 0 && (a.auto_pad.empty() || a.auto_pad == "NOTSET")) {
    // Rounded up, as ONNX's ceil_mode, but the last window still starts inside X or its leading
    // padding (ORT's and PyTorch's rule).
    auto ceil_axis = [](int64_t in, int64_t k, int64_t st, int64_t d, int64_t begin, int64_t end) {
      const int64_t span = in + begin + end - ((k - 1) * d + 1);
      int64_t out = (span + st - 1) / st + 1;
      if ((out - 1) * st >= in + begin) --out;
      return std::max<int64_t>(out, 0);
    };
    s.out_w = ceil_axis(s.in_w, s.kernel_w, s.stride_w, s.dilation_w, s.pad_left, s.pad_right);
    if (s.spatial_rank == 2) s.out_h = ceil_axis(s.in_h, s.kernel_h, s.stride_h, s.dilation_h, s.pad_top, s.pad_bottom);
  }
  return p;
}

std::vector<int64_t> PoolOutputDims(const PoolShape& p) {
  const ConvShape& s = p.geometry;
  return s.spatial_rank == 1 ? std::vector<int64_t>{s.batch, s.out_w, s.in_channels}
                             : std::vector<int64_t>{s.batch, s.out_h, s.out_w, s.in_channels};
}

void RunPoolNhwc(PoolKind kind, const PoolShape& p, const float* x, float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.geometry;
  const int64_t c = s.in_channels;
  if (c == 0 || s.out_h == 0 || s.out_w == 0) return;
  parallel(s.batch * s.out_h, [&](int64_t item) {
    const int64_t n = item / s.out_h, oh = item % s.out_h;
    const float* x_n = x + n * s.in_h * s.in_w * c;
    float* y_row = y + (n * s.out_h + oh) * s.out_w * c;
    const int64_t h0 = oh * s.stride_h - s.pad_top;
    for (int64_t ow = 0; ow < s.out_w; ++ow) {
      float* out = y_row + ow * c;
      const int64_t w0 = ow * s.stride_w - s.pad_left;
      if (kind == PoolKind::kMax) {
        std::fill(out, out + c, std::numeric_limits<float>::lowest());
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          const int64_t ih = h0 + kh * s.dilation_h;
          if (ih < 0 || ih >= s.in_h) continue;
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t iw = w0 + kw * s.dilation_w;
            if (iw < 0 || iw >= s.in_w) continue;
            const float* in = x_n + (ih * s.in_w + iw) * c;
            for (int64_t i = 0; i < c; ++i) out[i] = std::max(out[i], in[i]);
          }
        }
        continue;
      }
      // Average: over the window's elements inside X, or with count_include_pad over the window
      // clipped to the padded input (ORT's divisor where ceil_mode reaches past the padding).
      const int64_t h_end = std::min(h0 + s.kernel_h, s.in_h + s.pad_bottom);
      const int64_t w_end = std::min(w0 + s.kernel_w, s.in_w + s.pad_right);
      const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h_end, s.in_h);
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w_end, s.in_w);
      const int64_t count = p.count_include_pad ? (h_end - h0) * (w_end - w0) : (he - hs) * (we - ws);
      std::fill(out, out + c, 0.0f);
      for (int64_t ih = hs; ih < he; ++ih)
        for (int64_t iw = ws; iw < we; ++iw) {
          const float* in = x_n + (ih * s.in_w + iw) * c;
          for (int64_t i = 0; i < c; ++i) out[i] += in[i];
        }
      const float divisor = static_cast<float>(std::max<int64_t>(count, 1));
      for (int64_t i = 0; i < c; ++i) out[i] /= divisor;
    }
  });
}

}  // namespace im2win
