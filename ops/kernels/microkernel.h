// The micro-kernel contract shared by every ISA. A tile is a block of outputs held in registers
// and reduced over C/group x Kh x Kw, in one of two families:
//  - position tiles: up to kTileM output channels x a run of consecutive panel positions in the
//    vector lanes (any number of output channels; depthwise);
//  - channel tiles: blocks of kChannelBlock output channels in the vector lanes x a small
//    rows x columns block of output positions, each broadcast from the panel (no lane is spent
//    on the columns a window row carries beyond the output width, so short rows run at full speed).
// A kernel knows pointers and counts only.
#pragma once

#include <cstdint>

#include "kernels/nhwc_microkernel.h"

namespace im2win {

// Output channels per register tile; weights are packed in tiles of this many (weight_pack.h).
constexpr int kTileM = 6;
// Most vectors of positions per tile of any ISA, and the most positions per tile.
constexpr int kMaxTileVectors = 4;
constexpr int kMaxTilePositions = 64;

struct TileArgs {
  const float* x;          // panel at the tile's first position (channel 0, tap 0)
  const float* w;          // packed weights of this channel tile: [channel][tap][rm]
  const int32_t* taps;     // per tap (kh, kw): offset inside one channel of the panel
  int64_t tap_count;       // Kh * Kw
  int64_t channels;        // C / group
  int64_t channel_stride;  // floats between channels in the panel
  // Stored into Y as y = min(max(acc + bias + z, lo), hi): the tile's positions
  // [first_position, first_position + count) of the block are its rows of row_len columns, of
  // which the first out_w are outputs, consecutive in Y by rows of out_w.
  float* y;                // Y at (the tile's first channel, the block's first output)
  int64_t y_stride;        // floats between channels in Y (and in Z)
  int64_t first_position, count, row_len, out_w;
  const float* bias;       // [rm], or null
  const float* residual;   // Z at the same place as y, or null
  float lo, hi;
};

using TileFn = void (*)(const TileArgs&);

// Channel tiles: weights packed in blocks of this many output channels, [channel][tap][16].
constexpr int kChannelBlock = 16;
constexpr int kMaxChannelVectors = 2;
constexpr int kMaxTileOutputs = 28;  // rows x columns of a channel tile, at most
// The widest tail (the columns a row's whole channel tiles leave) with exact tiles of fewer rows.
constexpr int kMaxTailColumns = 6;

struct ChannelTileArgs {
  const float* x;          // panel at the tile's first output (row r0, column j0), channel 0, tap 0
  const float* w;          // the tile's first channel block
  int64_t block_stride;    // floats between consecutive channel blocks
  const int32_t* taps;
  int64_t tap_count;
  int64_t channels;
  int64_t channel_stride;
  int64_t row_stride;      // floats between output rows in the panel (row_len)
  // Stored into Y (transposed to runs of outputs per channel) as y = min(max(acc + bias + z, lo),
  // hi), for the first `rows` x `cols` outputs of the tile.
  float* y;                // Y at (the tile's first channel, first output)
  int64_t y_stride;        // floats between channels in Y (and in Z)
  int64_t y_row_stride;    // floats between the tile's rows in Y
  int64_t rows, cols;
  const float* bias;       // per channel of the tile, or null
  const float* residual;   // Z at the same place as y, or null
  float lo, hi;
  // A reduction over C cut into runs of channels (weights of a run kept in L1): the accumulators
  // start from acc_in where it is set (the previous run's), and where acc_out is set they are
  // stored there as they are, [output][channel] (rows x cols outputs, MV vectors each), and the
  // epilogue waits for the last run. Sums are added in the same order either way.
  const float* acc_in = nullptr;
  float* acc_out = nullptr;
  // Weights the next tiles will read, to be fetched into L2 while this tile computes: lines of 64
  // bytes from `prefetch` on (and as many block_stride floats further, for a tile of two blocks),
  // spread over the tile's channels.
  const float* prefetch = nullptr;
  int64_t prefetch_lines = 0;
};

using ChannelTileFn = void (*)(const ChannelTileArgs&);

// Depthwise tile: one channel (C/group = M/group = 1), a run of up to tile_positions consecutive
// panel positions, with bias, residual and a clamp applied in registers and stored straight into
// Y (Relu and Clip are clamps; other activations run afterwards on the stored outputs).
//  - lane_masks null: the run lies in one output row and its first `count` outputs are stored.
//  - lane_masks set: the run spans rows (short rows); lane_masks[v] marks the lanes of vector v
//    that are outputs (column < out_w), which are packed together and stored in order, since
//    consecutive valid positions are consecutive outputs of Y.
struct DepthwiseRowArgs {
  const float* x;          // panel at the run's first position (tap 0)
  const float* w;          // the channel's Kh*Kw weights
  const int32_t* taps;
  int64_t tap_count;
  int64_t count;           // outputs to store, 1..tile_positions (lane_masks null)
  const uint32_t* lane_masks;
  float* y;                // Y at the run's first output
  const float* residual;   // Z at the same place, or null
  float bias, lo, hi;      // y = min(max(acc + bias + z, lo), hi)
};

using DepthwiseRowFn = void (*)(const DepthwiseRowArgs&);

// Depthwise over a block of vector_len channels at once, the channels in the lanes: every lane
// does useful work whatever the image size. The block's window rows are written to `panel`
// interleaved as [row phase][column phase][panel row][column][channel] (the window_layout.h panel
// of each channel, side by side), outputs are taken vector_len at a time in Y's order (so they
// may span rows), and each tile is transposed back to one run of outputs per channel, which is
// stored with bias, residual and the clamp fused (Y's order makes the run consecutive in Y).
struct DepthwiseLanesArgs {
  const float* x;              // X at the block's first channel (one image, NCHW)
  int64_t in_h, in_w;
  int64_t stride_h, stride_w, pad_top, pad_left;
  const int64_t* row_phase;    // window_layout.h's phases and, per phase value, its slot or -1
  int64_t row_phases;
  const int64_t* col_phase;
  int64_t col_phases;
  const int32_t* column_dest;  // per input column (then -1 up to a whole vector): where in a
                               // panel row it goes, column phase slot * plane + t, or -1 if unused
  int64_t plane_rows, row_len;
  int64_t first_row;           // the block's first output row; panel row u is input row (first_row+u)*stride_h+phase-pad
  int64_t outputs;             // outputs of the block per channel (rows * out_w)
  const int32_t* output_offset;  // per output of the block (at least): r * row_len + j, its
                                 // position in a plane
  const int32_t* taps;         // window_layout.h tap offsets (one channel's plain panel)
  int64_t tap_count;
  const float* w;              // weights interleaved [tap][channel]
  const float* bias;           // [channel], or null
  int64_t out_plane;           // floats between channels in Y
  float* y;                    // Y at (first channel, first output of the block)
  const float* residual;       // Z at the same place, or null
  float lo, hi;
  float* panel;                // workspace
};

using DepthwiseLanesFn = void (*)(const DepthwiseLanesArgs&);

// Depthwise 3x3 at stride 2, one channel read from X where it lies (no panel): each window row's
// columns for a vector of outputs are loaded as they lie and split into the even and odd ones in
// registers, where the lanes kernel would first transpose every input column into a panel (at
// stride 2 that is four inputs for each output). Inputs outside X (the padding) are zeros; bias,
// residual and the clamp are applied before the store, as in DepthwiseLanesArgs.
struct DepthwiseStride2Args {
  const float* x;           // the channel's plane of X
  int64_t in_h, in_w, pad_top, pad_left;
  const float* w;           // the channel's nine weights
  float bias, lo, hi;
  float* y;                 // the channel's plane of Y
  const float* residual;    // the channel's plane of Z, or null
  int64_t out_w, first_row, rows;
};

using DepthwiseStride2Fn = void (*)(const DepthwiseStride2Args&);

// Runs iterations x IsaKernels::fma_chains independent vector FMAs (for the peak-FLOP/s probe).
// The chains must cover FMA latency x FMA pipes (4-5 cycles x 2 pipes on current x86) and fit in
// the register file with the two operands: a chain kept in memory makes the probe under-read.
constexpr int kMaxFmaProbeChains = 24;
using FmaLoopFn = float (*)(int64_t iterations);

struct IsaKernels {
  const char* name;
  int vector_len;      // floats per vector
  int tile_vectors;    // vectors of positions in a full tile
  // tile[rm][rv]: rm output channels (1..kTileM) x rv vectors of positions (1..tile_vectors);
  // narrower tiles finish a block without computing lanes that would be dropped.
  TileFn tile[kTileM + 1][kMaxTileVectors + 1];
  // channel_tile[mv][cols]: mv vectors of channels x channel_tile_rows[mv][cols] rows x cols
  // columns, cols = 1..max_outputs[mv] (fewer channel vectors leave registers for more outputs:
  // tiny images fit in one tile); channel_vectors == 0 means this ISA has no channel tiles.
  int channel_vectors;
  // Accumulators (outputs x channel vectors) a channel tile needs to keep the FMA pipes busy,
  // measured: AVX-512 14 (32x1x7 beat 32x1x8 on Zen 4), AVX2 12 (on the Xeon, with a panel in L2,
  // 16x1x4, 16x1x5 and 16x1x6 ran at 0.89, 0.95 and 1 of the speed; conv_plan.cc's TileSpeed).
  // On the Xeon, 28 AVX-512 accumulators (32x1x14) ran 1.15-1.22x as fast as 14 (32x1x7); the
  // planner takes the widest of equally rated tiles, so 14-wide rows get 32x1x14 all the same. A
  // model with 28 here also moved 7x7 1x1 convs' tiles and was no faster on whole networks.
  int busy_accumulators;
  // Speed of a one-vector channel tile against a two-vector one with as many accumulators (a
  // broadcast feeds one FMA, not two), measured on the Xeon with a panel in L2: AVX2 0.85 (8x2x6
  // 102, 16x1x6 121 GFLOP/s), AVX-512 0.95 (medians over the table: 16 channels 193-195, 32
  // channels 200-202).
  double narrow_tile_speed;
  int max_outputs[kMaxChannelVectors + 1];  // the most outputs (rows x cols) of a channel tile
  ChannelTileFn channel_tile[kMaxChannelVectors + 1][kMaxTileOutputs + 1];
  int channel_tile_rows[kMaxChannelVectors + 1][kMaxTileOutputs + 1];
  // tail_tile[mv][cols][rows]: mv vectors of channels x rows x cols, cols = 1..kMaxTailColumns and
  // rows = 1..channel_tile_rows[mv][cols]: a tail of cols columns cut into even runs of rows, each
  // an exact tile, so a 7-high block runs a one-column tail as 4 + 3 rows, not 6 + 6, and a
  // two-column one (AVX2's 3 x 2) as 3 + 2 + 2, not 3 + 3 + 3. Null for mv below channel_vectors
  // (their tails run channel_tile[mv][cols], its extra rows dropped).
  ChannelTileFn tail_tile[kMaxChannelVectors + 1][kMaxTailColumns + 1][kMaxTileOutputs + 1];
  DepthwiseRowFn depthwise_row[kMaxTileVectors + 1];  // by vectors of outputs, 1..tile_vectors
  DepthwiseLanesFn depthwise_lanes;
  FmaLoopFn fma_loop;
  int fma_chains;      // independent accumulator chains fma_loop runs (see kMaxFmaProbeChains)
  // Null where splitting columns in registers does not beat the lanes kernel's transposes: AVX2
  // takes two shuffles a split (AVX-512's vpermt2ps: one), and its version (8 outputs a vector,
  // a row's first and last vectors copied with zeros around them) took 1.57x the lanes kernel's
  // time on 144x56x56 and 1.22x on 96x112x112 (the Xeon, 1 thread, one layer).
  DepthwiseStride2Fn depthwise_3x3_stride2 = nullptr;
  // Channels-last tiles (nhwc_microkernel.h): nhwc_vectors vectors of output channels (whole
  // channel blocks) by nhwc_tile[cols], cols = 1..nhwc_columns outputs of a row.
  int nhwc_vectors = 0, nhwc_columns = 0;
  NhwcTileFn nhwc_tile[kMaxNhwcColumns + 1] = {};
  // One vector of output channels by nhwc_tile1[cols], cols = 1..nhwc_columns1: the last channels
  // of a group that a whole tile would mostly compute for nothing (M = 16 or 24 on AVX-512).
  int nhwc_columns1 = 0;
  NhwcTileFn nhwc_tile1[kMaxNhwcColumns + 1] = {};
  // Three vectors of output channels by nhwc_tile3[cols], cols = 1..nhwc_columns3 (0: none), for
  // a group of more than two vectors' channels and at most three (NhwcPlan::three_vectors). On
  // AVX2, M = 24 as 24 x 4 (3 weight loads and 4 broadcasts for 12 FMAs) in place of 16 x 6 and
  // 8 x 6: MobileNetV2's 56x56 projections to 24 took 0.84x the time (Zen 3, one layer, hot).
  int nhwc_columns3 = 0;
  NhwcTileFn nhwc_tile3[kMaxNhwcColumns + 1] = {};
  DepthwiseNhwcFn depthwise_nhwc = nullptr;
  // Winograd transforms (nhwc_microkernel.h), [0] for F(2x2, 3x3), [1] for F(4x4, 3x3).
  WinogradInputFn winograd_input[2] = {};
  WinogradOutputFn winograd_output[2] = {};
  // Where the reduction is one run, each tile of outputs runs a chunk's channel tiles in turn
  // (NhwcPlan::positions_outer). Measured on AVX2 only (Zen 3: whole ResNet-50 channels-last
  // 0.96-0.98x); AVX-512 keeps channel tiles outer until it is measured there.
  bool nhwc_positions_outer = false;
  int tile_positions() const { return vector_len * tile_vectors; }
  int nhwc_channels() const { return vector_len * nhwc_vectors; }
};

// One table per ISA, each defined in its own file compiled with that ISA's flags only.
const IsaKernels& GenericKernels();
const IsaKernels& Avx2Kernels();
const IsaKernels& Avx512Kernels();

}  // namespace im2win
