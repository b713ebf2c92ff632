// The im2win window panel: for a block of output rows, the input rows their windows cover are
// copied once, with padding and dilation folded in, in the order the micro-kernels read them.
//
// Rows and columns are both split by phase (index mod stride), and only the phases some kernel tap
// reads are kept. For channels c < C/group, row phases a < A, column phases p < P, panel rows
// u < plane_rows and window columns t < row_len:
//     panel[c][a][p][u][t] = X[c][(first_row + u)*stride_h + row_phase[a] - pad_top]
//                               [t*stride_w + col_phase[p] - pad_left]          (0 outside X)
// Output (r, j) of the block reads, for kernel tap (kh, kw),
//     panel[c][a(kh)][p(kw)][r + row_shift(kh)][j + col_shift(kw)]
// with row_shift(kh) = kh*dilation_h / stride_h, col_shift(kw) = kw*dilation_w / stride_w. So
// the window of output row r is a run of consecutive panel rows (the im2win window, shared with
// the next output row instead of copied again), consecutive outputs read consecutive floats for
// any stride and dilation, and the rows of a block can be walked as one flat run of positions
// q = r*row_len + j (columns j >= out_w are computed and dropped).
#pragma once

#include <cstdint>
#include <vector>

#include "conv/conv_params.h"

namespace im2win {

struct WindowLayout {
  int64_t rows = 0;          // output rows per block
  int64_t row_len = 0;       // out_w + ((kernel_w - 1) * dilation_w) / stride_w
  int64_t plane_rows = 0;    // rows + the largest row_shift
  std::vector<int64_t> row_phase;  // input row phase held by each row slot
  std::vector<int64_t> col_phase;  // input column phase held by each column slot
  std::vector<int32_t> tap_offset; // per tap (kh, kw): float offset inside one channel
  int64_t plane = 0;           // plane_rows * row_len
  int64_t channel_stride = 0;  // row_phase.size() * col_phase.size() * plane
  int64_t channels = 0;        // C / group
  int64_t slack = 0;           // floats after the panel, covering a tile's over-read
  int64_t panel_floats() const { return channels * channel_stride + slack; }
  int64_t positions(int64_t rows_in_block) const { return rows_in_block * row_len; }
};

// A micro-kernel may read up to read_rows window rows plus read_floats past the block's last
// position; that much slack follows the panel.
WindowLayout MakeWindowLayout(const ConvShape& s, int64_t rows_per_block, int64_t read_rows = 0,
                              int64_t read_floats = 0);

// Fills the panel for output rows [first_row, first_row + rows) of one image and group.
// x_group points at that image's first channel of the group (C/group planes of in_h x in_w).
// channels: how many of the group's channels, from x_group's first (default all, layout.channels).
void BuildWindowPanel(const ConvShape& s, const WindowLayout& layout, const float* x_group, int64_t first_row,
                      int64_t rows, float* panel, int64_t channels = -1);

}  // namespace im2win
