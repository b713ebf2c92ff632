// How a convolution is cut into work: the tile family and shape, the window panel's rows per
// block, the split into work items, and the workspace each thread reserves.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv/conv_params.h"
#include "kernels/microkernel.h"
#include "conv/weight_pack.h"
#include "conv/window_layout.h"

namespace im2win {

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
// A tail `height` rows high runs in the fewest runs of at most max_rows rows, as even as PartSize
// cuts them (7 rows, at most 6: 4 + 3; at most 3: 3 + 2 + 2): the longest run's rows.
inline int64_t TailRunRows(int64_t height, int64_t max_rows) { return CeilDiv(height, CeilDiv(height, max_rows)); }
// Whether a tail of `tail_cols` columns runs in even runs of rows, each its exact tile
// (IsaKernels::tail_tile), where the ISA has them for mv vectors of channels.
inline bool HasTailTiles(const IsaKernels& isa, int mv, int tail_cols) {
  return tail_cols >= 1 && tail_cols <= kMaxTailColumns && isa.tail_tile[mv][tail_cols][1] != nullptr;
}
// Whether a one-column tail runs so: a block's flat run of positions (one row) takes such a tail.
inline bool IsColumnTail(const IsaKernels& isa, int mv, int tail_cols) {
  return tail_cols == 1 && HasTailTiles(isa, mv, 1);
}

// n things cut into `parts` runs whose sizes differ by at most one: where run i begins, and its size.
inline int64_t PartBegin(int64_t n, int64_t parts, int64_t i) { return i * n / parts; }
inline int64_t PartSize(int64_t n, int64_t parts, int64_t i) {
  return PartBegin(n, parts, i + 1) - PartBegin(n, parts, i);
}

// Positions per strip of a strip panel (ConvPlan::strip_panel): a whole number of position tiles on
// every ISA (AVX-512 one, AVX2 four). Measured on the Xeon: strips of 64 and 128 within 2% of each
// other; of 256 lost most of the gain; of AVX2's 16 (one tile) ran 1.07-1.13x the planar panel's time.
constexpr int64_t kStripPositions = 64;

// How a layer is cut for a pool: blocks of rows (of whole quanta of `quantum` rows) and chunks of
// channel tiles per image, and the share of the pool's time that does work (1.0: every thread busy
// to the end; less the estimated cost of lines of Y that two blocks share).
struct SplitChoice {
  int64_t row_blocks, m_chunks;
  double efficiency;
  int64_t quantum = 1;
};

struct ConvPlan {
  ConvShape shape;
  Epilogue epilogue;
  const IsaKernels* isa = nullptr;
  TileFamily family = TileFamily::kPositions;  // must match how the weights were packed
  WindowLayout layout;
  // Work items are cut equal to within a row or a tile, so that a pool that hands items out in
  // order keeps every thread busy to the end (ORT gives each thread a run of items first).
  int64_t row_blocks = 0;       // blocks of output rows per image, of layout.rows rows at most
  // Blocks hold whole quanta of this many rows (a divisor of out_h), cut as evenly as PartBegin
  // cuts the quanta: on a pool, every block then begins on a cache line in every plane of Y, so
  // no two threads write one line (LineRowQuantum in conv_plan.cc).
  int64_t row_quantum = 1;
  int64_t BlockFirstRow(int64_t block) const {
    return PartBegin(shape.out_h / row_quantum, row_blocks, block) * row_quantum;
  }
  int64_t BlockRows(int64_t block) const { return BlockFirstRow(block + 1) - BlockFirstRow(block); }
  int64_t TallestBlockRows() const { return CeilDiv(shape.out_h / row_quantum, row_blocks) * row_quantum; }
  int64_t m_unit = 0;           // output channels per register tile (kTileM or a channel tile)
  int64_t m_tiles = 0;          // register tiles of output channels per group
  int64_t m_chunks = 0;         // runs of channel tiles split across work items
  bool depthwise = false;       // one input and one output channel per group: depthwise row tiles
  bool depthwise_lanes = false; // depthwise with vector_len channels in the lanes (C a multiple of it)
  // Depthwise 3x3 at stride 2 read from X in place (IsaKernels::depthwise_3x3_stride2), items cut as
  // the lanes kernel's; no workspace.
  bool depthwise_stride2 = false;
  bool direct = false;          // 1x1, stride 1, no padding: X is read in place, no panel
  // A 1x1, stride-1, unpadded conv that copies its block may copy it as strips of
  // StripPositions() positions, all channels of a strip together: a tile then reads one contiguous
  // run of C/group x its positions rather than C/group lines a plane apart. Position tiles that do
  // not read X in place (not direct, no shared panel) take strips of kStripPositions; channel tiles,
  // where conv_plan.cc's rule takes them (long reductions over small planes), strips of one tile's
  // columns, so that each step of their reduction broadcasts from the floats right after the last's.
  bool strip_panel = false;
  int64_t StripPositions() const { return family == TileFamily::kChannels ? tile_cols : kStripPositions; }
  int64_t groups_per_item = 1;
  int threads = 1;              // the pool size the items are cut for
  // One window panel per image and group, built once by all threads and read by every item (a
  // layer split finer than its panel budget for the pool); else each item builds its block's.
  bool shared_panel = false;
  double split_efficiency = 1.0;  // see SplitChoice
  int tile_vectors = 0, tile_rows = 0, tile_cols = 0;  // channel tile: vectors of channels x outputs
  // The columns a window row's whole channel tiles leave (out_w % tile_cols) run as tiles of
  // exactly that many columns, at most as many rows as such a tile holds (tail_rows:
  // channel_tile_rows[vectors][cols]), rather than as a whole tile whose extra columns are dropped.
  // 0: none (whole rows). Flat rows take one-row tails only (conv_plan.cc's TailColumns). Where the
  // ISA has exact tail tiles (ExactTail) the block's rows are cut into even runs, each its exact
  // tile (TailRunRows); else into runs of tail_rows, the last one's extra rows dropped.
  int tail_rows = 0, tail_cols = 0;
  // Channel tiles reduce over C/group in runs of this many channels, so that a run's weights stay
  // in L1 across the block's tiles; each tile's sums wait in the workspace between runs (the sums
  // are added in the same order). 0: one run of all the channels.
  int64_t channel_run = 0;
  int64_t RunChannels() const { return channel_run > 0 ? channel_run : shape.channels_per_group(); }  // per run
  // Channel tiles fetch the next run's (or the next block's) weights into L2 while they compute, a
  // slice a tile, so that weights from memory arrive while the FMAs run instead of on the next
  // run's first tile (ChannelTileArgs::prefetch).
  bool prefetch_weights = false;
  // Depthwise in lanes, the same for every block (see DepthwiseLanesArgs): where each input column
  // goes in a panel row, and where each output of a block of layout.rows rows sits in a plane.
  std::vector<int32_t> lanes_column_dest, lanes_output_offset;
  // Channel tiles cover a block of `rows` output rows as TileHeight x TileWidth outputs: rows x
  // out_w, or one run of rows * out_w when window rows carry no columns past the output width.
  bool ExactTail() const { return HasTailTiles(*isa, tile_vectors, tail_cols); }
  bool FlatRows() const { return shape.out_w + ((shape.kernel_w - 1) * shape.dilation_w) / shape.stride_w == shape.out_w; }
  int64_t TileWidth(int64_t rows) const { return FlatRows() ? rows * shape.out_w : shape.out_w; }
  int64_t TileHeight(int64_t rows) const { return FlatRows() ? 1 : rows; }
  // Channel tiles of a block of `rows` output rows (of at most the plan's rows): whole tiles, then
  // the tail's, one per run of at most tail_rows rows (even runs or not, as many).
  int64_t ChannelTileCount(int64_t rows) const {
    const int64_t height = TileHeight(rows), width = TileWidth(rows);
    const int64_t whole = CeilDiv(height, tile_rows) * CeilDiv(width - tail_cols, tile_cols);
    return whole + (tail_cols > 0 ? CeilDiv(height, tail_rows) : 0);
  }
  // Floats a channel tile's sums take between runs of channels (the most outputs any tile holds).
  int64_t ChannelTileSumFloats() const { return static_cast<int64_t>(isa->max_outputs[tile_vectors]) * m_unit; }
  // The sums of every channel tile of the tallest block, kept between runs of channels.
  int64_t partial_floats() const {
    return channel_run > 0 ? ChannelTileCount(TallestBlockRows()) * ChannelTileSumFloats() : 0;
  }
  int64_t group_blocks() const { return (shape.group + groups_per_item - 1) / groups_per_item; }
  int64_t work_items() const { return shape.batch * group_blocks() * row_blocks * m_chunks; }
  // Bytes each thread reserves, independent of the batch: the window panel, or for a direct conv
  // the copy of a block's last tile of inputs.
  int64_t workspace_floats() const {
    if (depthwise_stride2) return 0;
    if (depthwise_lanes)  // the channels' panels side by side, then their weights
      return isa->vector_len * (layout.channel_stride + shape.kernel_h * shape.kernel_w);
    return input_floats() + partial_floats();
  }
  // The part of the workspace that holds the block's input: its window panel, or for a direct conv
  // the copy of its last tile of inputs (the channel tiles' sums follow it).
  int64_t input_floats() const {
    if (shared_panel) return 0;
    const int64_t tail = family == TileFamily::kChannels ? tile_cols : isa->tile_positions();
    if (strip_panel) {  // channel tiles: the tail tile's columns in a strip of their own
      if (family == TileFamily::kChannels)
        return (CeilDiv(TileWidth(layout.rows), tile_cols) * tile_cols + tail_cols) * layout.channels;
      return CeilDiv(layout.positions(layout.rows), kStripPositions) * kStripPositions * layout.channels;
    }
    return direct ? layout.channels * tail : layout.panel_floats();
  }
  int64_t workspace_bytes() const { return workspace_floats() * static_cast<int64_t>(sizeof(float)); }
  // The shared panels of all images and groups (0 without a shared panel), reserved once per call.
  int64_t shared_floats() const {
    return shared_panel ? std::max<int64_t>(1, shape.batch) * shape.group * layout.panel_floats() : 0;
  }
  // The share of the pool's time spent working when the items are handed out in equal runs.
  double Balance() const {
    if (!depthwise) return split_efficiency;
    const int64_t items = work_items();
    return items == 0 ? 1.0 : static_cast<double>(items) / static_cast<double>(threads * CeilDiv(items, threads));
  }
  int64_t shared_bytes() const { return shared_floats() * static_cast<int64_t>(sizeof(float)); }
};

// kSizesOnly leaves out the depthwise lookup tables (as long as X's rows): for reporting a plan
// of a shape that is only described, never run.
enum class PlanTables { kBuild, kSizesOnly };

// Whether a 1x1, stride-1, unpadded conv reads X in place (ConvPlan::direct) or through a
// window panel like any other: by the planner's rule, or as asked (where the shape allows it).
enum class DirectInput { kByRule, kOff, kOn };

// channel_vectors > 0 asks channel tiles for that many vectors of channels (where the ISA has such
// tiles and M/group is a multiple of them); 0 lets the planner choose. l2_bytes: the core's L2 the
// plan is sized for; 0 is this CPU's (L2CacheBytes), another value plans for another CPU.
ConvPlan MakeConvPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa,
                      TilePreference preference = TilePreference::kAuto, PlanTables tables = PlanTables::kBuild,
                      int threads = 1, int channel_vectors = 0, DirectInput direct = DirectInput::kByRule,
                      int64_t l2_bytes = 0);

// A 1x1, stride-1, unpadded conv, whose X can be its own panel.
bool CanReadInPlace(const ConvShape& shape);

// Whether channel tiles of `vectors` vectors of channels can run this shape on this ISA.
bool ChannelVectorsFit(const IsaKernels& isa, const ConvShape& shape, int vectors);

// The most floats a block's window panel takes with an L2 of l2_bytes (0: this CPU's; see conv_plan.cc).
int64_t PanelBudgetFloats(int64_t l2_bytes = 0);
// l2_bytes, or this CPU's L2 when it is 0.
int64_t PlanL2Bytes(int64_t l2_bytes);

// What im2col + GEMM would reserve for the same layer (one image, one group at a time).
int64_t Im2colWorkspaceBytes(const ConvShape& s);

}  // namespace im2win
