#include "window_layout.h"

#include <algorithm>

namespace im2win {

WindowLayout MakeWindowLayout(const ConvShape& s, int64_t rows_per_block, int64_t read_rows, int64_t read_floats) {
  WindowLayout L;
  L.rows = rows_per_block;
  L.row_len = s.out_w + ((s.kernel_w - 1) * s.dilation_w) / s.stride_w;
  L.channels = s.channels_per_group();
  // Only the phases some tap reads are stored: a stride larger than the kernel skips columns.
  std::vector<int64_t> kw_slot(s.kernel_w);
  for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
    const int64_t phase = (kw * s.dilation_w) % s.stride_w;
    auto it = std::find(L.slot_phase.begin(), L.slot_phase.end(), phase);
    kw_slot[kw] = it - L.slot_phase.begin();
    if (it == L.slot_phase.end()) L.slot_phase.push_back(phase);
  }
  L.num_phases = static_cast<int64_t>(L.slot_phase.size());
  L.plane = L.rows * L.row_len;
  L.channel_stride = s.kernel_h * L.num_phases * L.plane;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < s.kernel_w; ++kw)
      L.tap_offset.push_back(static_cast<int32_t>((kh * L.num_phases + kw_slot[kw]) * L.plane +
                                                  (kw * s.dilation_w) / s.stride_w));
  // Past the last position of the last plane a tile still reads its own extent plus, through
  // the taps, up to one window row.
  L.slack = (read_rows + 1) * L.row_len + read_floats;
  return L;
}

void BuildWindowPanel(const ConvShape& s, const WindowLayout& L, const float* x_group, int64_t first_row,
                      int64_t rows, float* panel) {
  const int64_t in_plane = s.in_h * s.in_w;
  for (int64_t c = 0; c < L.channels; ++c) {
    const float* xc = x_group + c * in_plane;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      for (int64_t p = 0; p < L.num_phases; ++p) {
        const int64_t phase = L.slot_phase[p];
        // Window columns t whose input column t*stride_w + phase - pad_left lies inside X.
        const int64_t first_col = phase - s.pad_left;
        const int64_t t_lo = std::min(L.row_len, first_col >= 0 ? 0 : (-first_col + s.stride_w - 1) / s.stride_w);
        const int64_t last = s.in_w - 1 - first_col;  // may be negative: floor-divide
        const int64_t t_hi =
            std::max(t_lo, std::min(L.row_len, last < 0 ? 0 : last / s.stride_w + 1));
        float* dst = panel + c * L.channel_stride + (kh * L.num_phases + p) * L.plane;
        for (int64_t r = 0; r < rows; ++r, dst += L.row_len) {
          const int64_t y = (first_row + r) * s.stride_h + kh * s.dilation_h - s.pad_top;
          // Plain loops rather than memcpy/memset: rows are often a few floats long, and the
          // stride-1 copy vectorizes.
          if (y < 0 || y >= s.in_h) {
            for (int64_t t = 0; t < L.row_len; ++t) dst[t] = 0.0f;
            continue;
          }
          const float* src = xc + y * s.in_w + first_col;
          for (int64_t t = 0; t < t_lo; ++t) dst[t] = 0.0f;
          if (s.stride_w == 1) {
            for (int64_t t = t_lo; t < t_hi; ++t) dst[t] = src[t];
          } else {
            for (int64_t t = t_lo; t < t_hi; ++t) dst[t] = src[t * s.stride_w];
          }
          for (int64_t t = t_hi; t < L.row_len; ++t) dst[t] = 0.0f;
        }
      }
    }
  }
}

}  // namespace im2win
