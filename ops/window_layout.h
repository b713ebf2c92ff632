// The im2win window panel: for a block of output rows, each input window row is copied once,
// with padding and dilation folded in, in the order the micro-kernels read it.
//
// Panel layout for channels c < C/group, kernel rows kh < Kh, column phases p < P, output rows
// r < rows, window columns t < row_len:
//     panel[c][kh][p][r][t] = X[c][(first_row + r)*stride_h + kh*dilation_h - pad_top]
//                               [t*stride_w + phase[p] - pad_left]        (0 outside X)
// This is the paper's N x C x Ho x W x Kh window tensor with Kh moved outward and the columns
// split by phase (column mod stride_w): output (r, j) reads, for kernel tap (kh, kw),
//     panel[c][kh][slot(kw)][r][j + shift(kw)]
// so consecutive outputs read consecutive floats for any stride and dilation, and the rows of a
// block can be walked as one flat run of positions q = r*row_len + j (columns j >= out_w are
// computed and dropped).
#pragma once

#include <cstdint>
#include <vector>

#include "conv_params.h"

namespace im2win {

struct WindowLayout {
  int64_t rows = 0;            // output rows per block
  int64_t row_len = 0;         // out_w + ((kernel_w - 1) * dilation_w) / stride_w
  int64_t num_phases = 0;      // distinct column phases used by the kernel taps
  std::vector<int64_t> slot_phase;   // column phase held by each slot
  std::vector<int32_t> tap_offset;   // per tap (kh, kw): float offset inside one channel
  int64_t plane = 0;           // rows * row_len
  int64_t channel_stride = 0;  // kernel_h * num_phases * plane
  int64_t channels = 0;        // C / group
  int64_t slack = 0;           // zeroed floats after the panel, covering a tile's over-read
  int64_t panel_floats() const { return channels * channel_stride + slack; }
  int64_t positions(int64_t rows_in_block) const { return rows_in_block * row_len; }
};

// A micro-kernel may read up to read_rows window rows plus read_floats past the block's last
// position; that much slack follows the panel.
WindowLayout MakeWindowLayout(const ConvShape& s, int64_t rows_per_block, int64_t read_rows = 0,
                              int64_t read_floats = 0);

// Fills the panel for output rows [first_row, first_row + rows) of one image and group.
// x_group points at that image's first channel of the group (C/group planes of in_h x in_w).
void BuildWindowPanel(const ConvShape& s, const WindowLayout& layout, const float* x_group, int64_t first_row,
                      int64_t rows, float* panel);

}  // namespace im2win
