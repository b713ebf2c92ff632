// The channels-last (NHWC) convolution: X is N x H x W x C, Y (and Z) N x Ho x Wo x M, W as ONNX
// gives it (M x C/group x Kh x Kw), packed once into blocks of output channels. Each work item takes
// a block of output rows of one image and a chunk of output-channel tiles; rows that need padding
// are copied once into a padded panel (the im2win row copy), others are read where they lie.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "conv/conv_driver.h"
#include "conv/conv_params.h"
#include "conv/conv_plan.h"
#include "kernels/microkernel.h"

namespace im2win {

struct NhwcPlan {
  ConvShape shape;
  Epilogue epilogue;
  const IsaKernels* isa = nullptr;
  bool depthwise = false;   // C/group = M/group = 1: channels in the lanes, no packing into blocks
  // X arrives channels-first (N x C x H x W, input_layout "NCHW"; Y and Z stay channels-last): every
  // block gathers its rows into the padded panel, nothing is read in place.
  bool x_nchw = false;
  bool in_place = false;    // no padding: rows read from X, no panel
  // 1x1 with a stride, no padding: a block's strided inputs gathered into a panel of rows x out_w
  // positions, then run as one flat row (ResNet's downsamples: rows of 7 outputs tile as 4 + 3).
  bool compact = false;
  int64_t panel_cols = 0;   // columns of a panel row (the padded width), or in_w in place
  int64_t row_floats = 0;   // floats between input rows in the panel (or X)
  int64_t rows_per_block = 1, row_blocks = 1;
  int64_t tile_channels = 0, m_tiles = 0, m_chunks = 1;  // tiles of output channels per group
  // The most outputs of a row a tile takes (isa->nhwc_columns, or fewer when asked), and a
  // one-vector tile (isa->nhwc_columns1, likewise).
  int columns = 1, columns1 = 1;
  // The group's channels (more than two vectors, at most three) in one three-vector tile of up to
  // `columns` outputs (isa->nhwc_tile3) where the ISA has one.
  bool three_vectors = false;
  int64_t run = 0;                                      // floats each tap reduces over
  // The reduction (taps x run) in runs of this many k, whose weights stay in L1 across a block's
  // tiles; each tile's sums wait in the workspace between runs.
  int64_t k_run = 0;
  int64_t reduction() const { return static_cast<int64_t>(taps.size()) * run; }
  // Outputs of the widest block (a flat block of 1x1 rows is one row of rows x out_w).
  int64_t block_outputs() const { return rows_per_block * shape.out_w; }
  std::vector<int64_t> taps;                            // per tap: offset from the window origin
  int threads = 1;
  // The reduction in one run: each tile of outputs runs all tiles of a chunk of chunk_channels
  // output channels (whole channel tiles) before the next tile of outputs.
  bool positions_outer = false;
  int64_t chunk_channels = 0;
  // X too large for the L3 (it comes from DRAM): positions outer over one tap (1x1) fetch the next
  // tile's inputs toward L2 before each tile, depthwise the rows of X the next output row adds
  // before each row. Their streams (`cols` of them C floats apart, or a few columns of every
  // channel at a time) are not followed by the hardware prefetchers: MobileNetV2's 56x56x144 -> 24
  // at batch 16 alone took 0.67-0.74x the time, its 3x3 depthwise 0.87-0.90x (Zen 3); where X is in
  // the L3 the same prefetches cost 4-16%.
  bool prefetch_inputs = false;
  // Blocks cut out_h as evenly as PartBegin cuts (rows_per_block: the tallest).
  int64_t BlockFirstRow(int64_t block) const { return PartBegin(shape.out_h, row_blocks, block); }
  int64_t BlockRows(int64_t block) const { return BlockFirstRow(block + 1) - BlockFirstRow(block); }
  // Input rows a block of `rows` output rows reads (its panel's rows).
  int64_t PanelRows(int64_t rows) const {
    return (rows - 1) * shape.stride_h + (shape.kernel_h - 1) * shape.dilation_h + 1;
  }
  int64_t work_items() const { return shape.batch * shape.group * row_blocks * m_chunks; }
  // Depthwise with padding reads X in place: the output columns whose windows lie inside X, [
  // interior_begin, interior_end), straight from X; the columns left and right of them from an
  // edge panel of the kernel rows inside X, edge_cols columns wide (zeros outside X).
  bool depthwise_in_place = false;
  int64_t interior_begin = 0, interior_end = 0, edge_cols = 0;
  int64_t panel_floats() const {
    if (depthwise_in_place) return shape.kernel_h * edge_cols * shape.in_channels;
    if (compact) return rows_per_block * shape.out_w * shape.in_channels;
    return in_place ? 0 : PanelRows(rows_per_block) * row_floats;
  }
  int64_t sums_floats() const { return k_run < reduction() ? block_outputs() * tile_channels : 0; }
  int64_t workspace_floats() const {
    constexpr int64_t kLine = 16;  // the sums begin on a cache line
    return CeilDiv(panel_floats(), kLine) * kLine + sums_floats();
  }
};

// l2_bytes as MakeConvPlan takes it (0: this CPU's). The environment variable IM2WIN_NHWC_COLUMNS
// (1 up to the ISA's widest tile) caps the tiles' columns, for measuring narrower tiles;
// IM2WIN_NHWC_POSITIONS_OUTER (0 or 1) forces the order of a one-run reduction's tiles.
NhwcPlan MakeNhwcPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa, int threads = 1,
                      int64_t l2_bytes = 0, bool x_nchw = false);

// Floats W takes packed for the plan (whole blocks of output channels per group, zero-filled).
int64_t PackedNhwcFloats(const NhwcPlan& plan);
// W (M x C/group x Kh x Kw) into the plan's order: depthwise [tap][channel]; else per group and
// block of kChannelBlock output channels, [kh][kw][c][kChannelBlock]. The order depends on W's
// shape and the group only, not on the ISA.
void PackWeightsNhwc(const NhwcPlan& plan, const float* w, float* packed);

// weight_layout of W stored in PackWeightsNhwc's order, which the rewriter writes for channels-last
// nodes where that order is a permutation of W (whole blocks, not depthwise): the op reads ORT's
// copy in place and the session holds one copy of the weights.
inline constexpr const char kNhwcWeightLayout[] = "im2win.nhwc16";
// Throws ConvError, saying why, where W of C/group input and M/group output channels per group
// cannot arrive in kNhwcWeightLayout.
void CheckNhwcPackedWeights(int64_t channels_per_group, int64_t outputs_per_group);

void RunConvNhwc(const NhwcPlan& plan, const float* x, const float* packed_w, const float* bias,
                 const float* residual, float* y, const ParallelRunner& parallel);

// X's dims in NHWC order (N, [H,] W, C) as ONNX's NCHW order, and Y's NCHW dims as NHWC.
std::vector<int64_t> NhwcToNchwDims(const std::vector<int64_t>& dims);
std::vector<int64_t> NchwToNhwcDims(const std::vector<int64_t>& dims);

}  // namespace im2win
