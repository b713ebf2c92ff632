// The channels-last (NHWC) micro-kernel contract. In NHWC the window of an output position is, per
// tap, one consecutive run of input channels (per kernel row, when the columns' taps are adjacent,
// one run of Kw x C), so a tile is GEMM-shaped: broadcast one input, load packed weights for a
// block of output channels, and the sums are already in Y's order (no transpose to store).
#pragma once

#include <cstdint>

namespace im2win {

// Most vectors of output channels and most output columns of an NHWC tile of any ISA.
constexpr int kMaxNhwcVectors = 4;
constexpr int kMaxNhwcColumns = 16;

// MV vectors of output channels x up to RB consecutive outputs of one output row.
struct NhwcTileArgs {
  const float* x;          // input at the tile's first output's window origin
  int64_t col_stride;      // floats between consecutive outputs' windows (stride_w x C)
  const int64_t* taps;     // per tap: the offset of its run, from x
  int64_t tap_count;
  int64_t run;             // consecutive floats each tap reduces over
  const float* w;          // packed [tap][run][kChannelBlock] at the tile's first channel
  int64_t block_stride;    // floats between consecutive blocks of kChannelBlock output channels
  // The part of the reduction this call runs: k over taps x run, [k_begin, k_end). A reduction cut
  // into runs (their weights kept in L1 across a block's tiles) starts from acc_in where it is set,
  // and where acc_out is set stores its sums there, [column][channel], for the next run; the
  // epilogue waits for the last. Sums are added in the same order either way.
  int64_t k_begin, k_end;
  const float* acc_in;
  float* acc_out;
  // Stored as y = min(max(acc + bias + z, lo), hi) for the first `cols` outputs and `channels`
  // channels of the tile.
  float* y;                // Y at the tile's first output, first channel
  int64_t y_col_stride;    // floats between consecutive outputs in Y and Z (the output channels)
  int64_t cols, channels;
  const float* bias;       // per channel of the tile, or null
  const float* residual;   // Z at the same place as y, or null
  float lo, hi;
  // Whole tiles (MV vectors of channels each, `channels` that many) one call runs side by side:
  // each next one's weights tile_w_stride floats on, its y, bias and residual MV vectors on. Only
  // with one run of the reduction (no acc_in, acc_out).
  int64_t tiles = 1, tile_w_stride = 0;
};

using NhwcTileFn = void (*)(const NhwcTileArgs&);

// Depthwise in NHWC: the channels in the lanes, `cols` consecutive outputs of one row, all taps.
struct DepthwiseNhwcArgs {
  const float* x;          // input at the first output's window origin, first channel
  int64_t col_stride;      // floats between consecutive outputs' windows (stride_w x C)
  const int64_t* taps;     // per tap (kh, kw): offset from x
  int64_t tap_count;
  // Taps in rows of three adjacent columns (3-wide kernel, dilation 1 along W), outputs this many
  // columns apart (the stride along W: 1 or 2; 0 otherwise): each input vector then serves every
  // output whose window holds it from registers.
  int rows_of_three;
  const float* w;          // weights [tap][channels], channel-contiguous
  int64_t w_stride;        // floats between taps in w (the layer's C)
  int64_t channels;        // channels to compute from x's first
  float* y;                // Y at the first output, first channel
  int64_t y_col_stride;    // floats between consecutive outputs in Y and Z
  int64_t cols;
  const float* bias;       // per channel, or null
  const float* residual;   // Z at the same place as y, or null
  float lo, hi;
  // Fetched toward L2 while the call runs, a share before each block of outputs: prefetch_floats
  // floats from prefetch (the rows of X the next output row adds), or none. Spread so: issued all
  // at once before the row, a row's prefetches stalled the loads behind them.
  const float* prefetch = nullptr;
  int64_t prefetch_floats = 0;
};

using DepthwiseNhwcFn = void (*)(const DepthwiseNhwcArgs&);

// Winograd F(2x2, 3x3) and F(4x4, 3x3) in NHWC (conv/winograd_nhwc.h), one tile of outputs a call,
// every vector of channels. The input transform: V = B^T d B of the tile's a x a inputs (a = 4 or 6).
struct WinogradInputArgs {
  const float* d[36];      // the inputs, row by row, `channels` each (zeros where the tile is past X)
  float* v;                // transformed i (of a x a) at v + i * v_stride
  int64_t v_stride;
  int64_t channels;
};

using WinogradInputFn = void (*)(const WinogradInputArgs&);

// The output transform: Y = A^T m A of the tile's a x a products (2 x 2 or 4 x 4 outputs), then the
// epilogue's bias, residual and clamp, min(max(y + bias + z, lo), hi).
struct WinogradOutputArgs {
  const float* m;          // product i at m + i * m_stride
  int64_t m_stride;
  float* y[16];            // the outputs, row by row, or null where the tile is past Y
  const float* z[16];      // Z at the same outputs, or null
  const float* bias;       // per channel, or null
  int64_t channels;
  float lo, hi;
};

using WinogradOutputFn = void (*)(const WinogradOutputArgs&);

// Cache lines [first, last) from base (kCacheLineFloats floats each), fetched toward L2: the one
// loop every channels-last prefetch goes through. Always inlined: GCC takes a function whose only
// effect is a prefetch for one without side effects and drops its calls where it does not inline.
constexpr int64_t kCacheLineFloats = 16;
__attribute__((always_inline)) inline void PrefetchLines(const float* base, int64_t first, int64_t last) {
  for (int64_t l = first; l < last; ++l) __builtin_prefetch(base + l * kCacheLineFloats, 0, 2);
}

}  // namespace im2win
