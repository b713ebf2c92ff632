#include "conv/depthwise.h"

#include <algorithm>
#include <vector>

#include "conv/epilogue.h"

namespace im2win {
namespace {

// Depthwise rows shorter than this are walked as one run across rows (see DepthwiseRowArgs).
constexpr int64_t kSpanRowsBelow = 32;

}  // namespace

// Depthwise: per channel, the window panel, then each output row in runs of up to a tile,
// stored with the epilogue fused (activations other than Relu and Clip follow on the row).
void RunDepthwise(const ConvPlan& p, const float* x_image, const float* w, const float* bias, const float* residual,
                  float* y_image, int64_t g_begin, int64_t g_end, int64_t first_row, int64_t rows, float* panel) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const IsaKernels& isa = *p.isa;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t taps = s.kernel_h * s.kernel_w;
  const int tp = isa.tile_positions();
  DepthwiseRowArgs a;
  a.taps = L.tap_offset.data();
  a.tap_count = taps;
  const bool activation_after = !ClampBounds(p.epilogue, &a.lo, &a.hi);  // then on the stored row
  // Short rows: runs of positions span rows, and each vector's output lanes are marked once here.
  const bool span_rows = s.out_w < kSpanRowsBelow;
  const int vl = isa.vector_len;
  const int64_t positions = L.positions(rows);
  thread_local std::vector<uint32_t> masks;
  if (span_rows) {
    masks.assign(CeilDiv(positions, vl), 0u);
    const int log2_vl = __builtin_ctz(static_cast<unsigned>(vl));  // vector lengths are powers of 2
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = r * L.row_len, end = q + s.out_w; q < end; ++q) masks[q >> log2_vl] |= 1u << (q & (vl - 1));
  }
  a.lane_masks = nullptr;
  for (int64_t g = g_begin; g < g_end; ++g) {
    BuildWindowPanel(s, L, x_image + g * in_plane, first_row, rows, panel);
    a.w = w + g * taps;
    a.bias = bias != nullptr ? bias[g] : 0.0f;
    if (span_rows) {
      for (int64_t q0 = 0; q0 < positions; q0 += tp) {
        // Outputs before position q0: whole rows, then the row's columns up to out_w.
        const int64_t before = (q0 / L.row_len) * s.out_w + std::min(q0 % L.row_len, s.out_w);
        const int64_t offset = g * out_plane + first_row * s.out_w + before;
        a.x = panel + q0;
        a.lane_masks = masks.data() + q0 / vl;
        a.y = y_image + offset;
        a.residual = residual != nullptr ? residual + offset : nullptr;
        isa.depthwise_row[CeilDiv(std::min<int64_t>(tp, positions - q0), vl)](a);
      }
      if (activation_after) {
        float* out = y_image + g * out_plane + first_row * s.out_w;
        ApplyEpilogue(out, 0.0f, nullptr, out, rows * s.out_w, p.epilogue);
      }
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t offset = g * out_plane + (first_row + r) * s.out_w;
      for (int64_t j0 = 0; j0 < s.out_w; j0 += tp) {
        a.count = std::min<int64_t>(tp, s.out_w - j0);
        a.x = panel + r * L.row_len + j0;
        a.y = y_image + offset + j0;
        a.residual = residual != nullptr ? residual + offset + j0 : nullptr;
        isa.depthwise_row[CeilDiv(a.count, isa.vector_len)](a);
      }
      if (activation_after)
        ApplyEpilogue(y_image + offset, 0.0f, nullptr, y_image + offset, s.out_w, p.epilogue);
    }
  }
}

void RunDepthwiseStride2(const ConvPlan& p, const float* x_image, const float* w, const float* bias,
                         const float* residual, float* y_image, int64_t g_begin, int64_t g_end, int64_t first_row,
                         int64_t rows) {
  const ConvShape& s = p.shape;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  DepthwiseStride2Args a;
  a.in_h = s.in_h;
  a.in_w = s.in_w;
  a.pad_top = s.pad_top;
  a.pad_left = s.pad_left;
  a.out_w = s.out_w;
  a.first_row = first_row;
  a.rows = rows;
  const bool activation_after = !ClampBounds(p.epilogue, &a.lo, &a.hi);
  for (int64_t g = g_begin; g < g_end; ++g) {
    a.x = x_image + g * in_plane;
    a.w = w + g * 9;
    a.bias = bias != nullptr ? bias[g] : 0.0f;
    a.y = y_image + g * out_plane;
    a.residual = residual != nullptr ? residual + g * out_plane : nullptr;
    p.isa->depthwise_3x3_stride2(a);
    if (activation_after) {
      float* out = a.y + first_row * s.out_w;
      ApplyEpilogue(out, 0.0f, nullptr, out, rows * s.out_w, p.epilogue);
    }
  }
}

// Depthwise with vector_len channels in the lanes, from channel g_begin (see DepthwiseLanesArgs).
void RunDepthwiseLanes(const ConvPlan& p, const float* x_image, const float* w, const float* bias,
                       const float* residual, float* y_image, int64_t g_begin, int64_t first_row, int64_t rows,
                       float* workspace) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const int lanes = p.isa->vector_len;
  const int64_t taps = s.kernel_h * s.kernel_w, out_plane = s.out_h * s.out_w;
  DepthwiseLanesArgs a;
  a.x = x_image + g_begin * s.in_h * s.in_w;
  a.in_h = s.in_h;
  a.in_w = s.in_w;
  a.stride_h = s.stride_h;
  a.stride_w = s.stride_w;
  a.pad_top = s.pad_top;
  a.pad_left = s.pad_left;
  a.row_phase = L.row_phase.data();
  a.row_phases = static_cast<int64_t>(L.row_phase.size());
  a.col_phase = L.col_phase.data();
  a.col_phases = static_cast<int64_t>(L.col_phase.size());
  a.column_dest = p.lanes_column_dest.data();
  a.plane_rows = L.plane_rows;
  a.row_len = L.row_len;
  a.first_row = first_row;
  a.outputs = rows * s.out_w;
  a.output_offset = p.lanes_output_offset.data();
  a.taps = L.tap_offset.data();
  a.tap_count = taps;
  a.panel = workspace;
  float* weights = workspace + lanes * L.channel_stride;  // [tap][channel]
  for (int64_t t = 0; t < taps; ++t)
    for (int l = 0; l < lanes; ++l) weights[t * lanes + l] = w[(g_begin + l) * taps + t];
  a.w = weights;
  a.bias = bias != nullptr ? bias + g_begin : nullptr;
  a.out_plane = out_plane;
  const int64_t offset = g_begin * out_plane + first_row * s.out_w;
  a.y = y_image + offset;
  a.residual = residual != nullptr ? residual + offset : nullptr;
  const bool activation_after = !ClampBounds(p.epilogue, &a.lo, &a.hi);
  p.isa->depthwise_lanes(a);
  if (activation_after)
    for (int l = 0; l < lanes; ++l) {
      float* out = a.y + l * out_plane;
      ApplyEpilogue(out, 0.0f, nullptr, out, a.outputs, p.epilogue);
    }
}

}  // namespace im2win
