#include "conv/conv_driver.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "conv/depthwise.h"
#include "conv/epilogue.h"
#include "conv/workspace.h"

namespace im2win {
namespace {

// The calling thread's window panel (or tile copy) of one work item.
thread_local std::vector<float> thread_workspace;
float* ThreadWorkspace(int64_t floats) { return AlignedFloats(thread_workspace, floats); }

// The shared window panels of one call, held by the thread that runs the conv.
thread_local std::vector<float> shared_panels;

// Builds the panel of every image and group, all output rows, split over channels so that every
// thread takes part; the slack after each panel is zeroed (tiles read it, their results dropped).
void BuildSharedPanels(const ConvPlan& p, const float* x, float* panels, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const int64_t images = s.batch * s.group, cg = s.channels_per_group(), in_plane = s.in_h * s.in_w;
  const int64_t slices = std::clamp<int64_t>(CeilDiv(2 * p.threads, std::max<int64_t>(1, images)), 1, cg);
  parallel(images * slices, [&](int64_t item) {
    const int64_t image = item / slices, slice = item % slices;  // image = n * group + g
    const int64_t c0 = PartBegin(cg, slices, slice), c1 = PartBegin(cg, slices, slice + 1);
    float* panel = panels + image * L.panel_floats();
    BuildWindowPanel(s, L, x + (image * cg + c0) * in_plane, 0, s.out_h, panel + c0 * L.channel_stride, c1 - c0);
    if (slice == slices - 1) std::fill(panel + cg * L.channel_stride, panel + L.panel_floats(), 0.0f);
  });
}

// One work item's view of its inputs: the window panel (or X itself for a direct conv) and, when
// the block's last tile would read past X's end, a zero-padded copy of what that tile reads.
struct BlockInput {
  const float* x;
  int64_t channel_stride;
  const float* tail;       // null: no copy
  int64_t tail_start;      // the position (or column) where the copied tile starts
  int64_t tail_stride;
  // x is a strip panel of strips this long (ConvPlan::strip_panel), each channel_stride positions
  // wide; 0: none.
  int64_t strip_floats = 0;
  // Where a tile starting at `start` (offset `offset` in a plane) reads, and its channel stride.
  std::pair<const float*, int64_t> At(int64_t start, int64_t offset) const {
    if (tail != nullptr && start == tail_start) return {tail, tail_stride};
    if (strip_floats > 0) return {x + start / channel_stride * strip_floats + start % channel_stride, channel_stride};
    return {x + offset, channel_stride};
  }
};

// One item's block: the output channels [m_begin, m_end) of group g, rows [first_row, first_row + rows).
struct BlockWork {
  int64_t g, first_row, rows, m_begin, m_end;
  const float* w;         // packed weights
  const float* bias;      // all M, or null
  const float* residual;  // the image's Z, or null
  float* y;               // the image's Y
};

// The epilogue arguments every tile of the block shares: Y's channel stride, the clamp.
template <typename Args>
void SetTileEpilogue(const ConvPlan& p, Args* a) {
  a->y_stride = p.shape.out_h * p.shape.out_w;
  ClampBounds(p.epilogue, &a->lo, &a->hi);
}

void RunChannelTiles(const ConvPlan& p, const BlockInput& in, const BlockWork& b, float* sums) {
  const ConvShape& s = p.shape;
  const int64_t mg = s.outputs_per_group(), cg = s.channels_per_group(), k = cg * s.kernel_h * s.kernel_w;
  ChannelTileArgs a;
  a.block_stride = kChannelBlock * k;
  a.taps = p.layout.tap_offset.data();
  a.tap_count = s.kernel_h * s.kernel_w;
  a.row_stride = p.layout.row_len;
  SetTileEpilogue(p, &a);
  a.y_row_stride = s.out_w;
  const ChannelTileFn fn = p.isa->channel_tile[p.tile_vectors][p.tile_cols];
  const ChannelTileFn tail_fn = p.tail_cols > 0 ? p.isa->channel_tile[p.tile_vectors][p.tail_cols] : nullptr;
  const ChannelTileFn* const tail_tiles = p.ExactTail() ? p.isa->tail_tile[p.tile_vectors][p.tail_cols] : nullptr;
  // The block is height x width outputs (width = out_w, or the whole block as one run when window
  // rows carry no extra columns): either way output (r, j) of the block is Y's (first_row, 0) + r*out_w + j.
  const int64_t height = p.TileHeight(b.rows), width = p.TileWidth(b.rows);
  const int64_t run_channels = p.RunChannels(), sum_floats = p.ChannelTileSumFloats();
  int64_t first_channel = 0, c0 = 0, tile = 0;  // tile: the tile's slot in `sums`
  bool first_run = true, last_run = true;
  // The next run's (or channel block's) weights, a slice per tile of this run's tiles: a line of
  // kChannelBlock floats per (channel, tap) of each block.
  const int64_t tiles = p.ChannelTileCount(b.rows);
  const float* next = nullptr;
  int64_t next_lines = 0;
  // Tiles of up to tile_rows x tile_cols over columns [j_begin, j_end) of every row, for the
  // channels [c0, c0 + a.channels): the rows in runs of tile_rows (the last one shorter), or with
  // even_runs in as many runs as even as PartSize cuts them; tile_for(rows): the function for a run.
  auto run = [&](auto tile_for, int64_t tile_rows, bool even_runs, int64_t tile_cols, int64_t j_begin, int64_t j_end) {
    const int64_t runs = CeilDiv(height, tile_rows);
    for (int64_t i = 0; i < runs; ++i) {
      const int64_t r0 = even_runs ? PartBegin(height, runs, i) : i * tile_rows;
      const int64_t run_rows = even_runs ? PartSize(height, runs, i) : std::min(tile_rows, height - r0);
      const ChannelTileFn f = tile_for(run_rows);
      for (int64_t j0 = j_begin; j0 < j_end; j0 += tile_cols, ++tile) {
        std::tie(a.x, a.channel_stride) = in.At(j0, r0 * p.layout.row_len + j0);
        a.x += c0 * a.channel_stride;
        a.acc_in = first_run ? nullptr : sums + tile * sum_floats;
        a.acc_out = last_run ? nullptr : sums + tile * sum_floats;
        const int64_t offset = first_channel * a.y_stride + (b.first_row + r0) * s.out_w + j0;
        a.y = b.y + offset;
        a.residual = b.residual != nullptr ? b.residual + offset : nullptr;
        a.rows = run_rows;
        a.cols = std::min<int64_t>(tile_cols, j_end - j0);
        if (next != nullptr) {
          const int64_t l0 = tile * next_lines / tiles, l1 = (tile + 1) * next_lines / tiles;
          a.prefetch = next + l0 * kChannelBlock;
          a.prefetch_lines = l1 - l0;
        } else {
          a.prefetch_lines = 0;
        }
        f(a);
      }
    }
  };
  // The weights of the tile whose first output channel is m0 of the group: packed in blocks of
  // kChannelBlock channels, [k][kChannelBlock] each, a tile of fewer channels (AVX2's 8) starting
  // inside its block.
  auto tile_weights = [&](int64_t m0) {
    const int64_t channel = b.g * mg + m0;
    return b.w + (channel - channel % kChannelBlock) * k + channel % kChannelBlock;
  };
  for (int64_t m0 = b.m_begin; m0 < b.m_end; m0 += p.m_unit) {
    first_channel = b.g * mg + m0;
    const float* const w = tile_weights(m0);
    a.bias = b.bias != nullptr ? b.bias + first_channel : nullptr;
    for (c0 = 0; c0 < cg; c0 += run_channels) {  // every tile of the block, per run of channels
      a.channels = std::min(run_channels, cg - c0);
      a.w = w + c0 * a.tap_count * kChannelBlock;
      first_run = c0 == 0;
      last_run = c0 + a.channels == cg;
      tile = 0;
      next = nullptr;
      if (p.prefetch_weights) {
        const int64_t nm0 = last_run ? m0 + p.m_unit : m0, nc0 = last_run ? 0 : c0 + a.channels;
        if (nm0 < b.m_end) {
          next = tile_weights(nm0) + nc0 * a.tap_count * kChannelBlock;
          next_lines = std::min(run_channels, cg - nc0) * a.tap_count;
        }
      }
      run([&](int64_t) { return fn; }, p.tile_rows, false, p.tile_cols, 0, width - p.tail_cols);
      if (p.tail_cols > 0)  // exact tail tiles take even runs of rows, each its own height
        run([&](int64_t n) { return tail_tiles != nullptr ? tail_tiles[n] : tail_fn; }, p.tail_rows,
            tail_tiles != nullptr, p.tail_cols, width - p.tail_cols, width);
    }
  }
}

// Position tiles of this many tiles of channels (kTileM each) go along a block together, so that
// each input strip is read from L2 once per run rather than once per tile, while Y is written to
// no more than the run's channel planes at a time (all of a block's channels at once, Y's stores
// scattered over every plane, lost in a network). Measured on the Xeon, 1 thread, against one tile
// a run: 1x1 convs on 56x56 and 28x28 with the caches flushed 0.93-0.98x the time (AVX2
// 0.87-0.94x); runs of 8 lost on 64->256 on 56x56; 3x3 layers within +-2%; whole networks
// (with the 1x1 tiles' direct store) ResNet-50 0.98-1.00x, MobileNetV2 0.985x.
constexpr int64_t kPositionTileRun = 4;

void RunPositionTiles(const ConvPlan& p, const BlockInput& in, const BlockWork& b) {
  const ConvShape& s = p.shape;
  const int64_t mg = s.outputs_per_group(), k = s.channels_per_group() * s.kernel_h * s.kernel_w;
  const int tp = p.isa->tile_positions(), vl = p.isa->vector_len;
  const int64_t positions = p.layout.positions(b.rows);
  TileArgs a;
  a.taps = p.layout.tap_offset.data();
  a.tap_count = s.kernel_h * s.kernel_w;
  a.channels = s.channels_per_group();
  SetTileEpilogue(p, &a);
  a.row_len = p.layout.row_len;
  a.out_w = s.out_w;
  // A run's tiles take each strip of positions in turn: from L1 after the first. Each tile's
  // channel arguments are set once per run; only the strip changes along the block.
  TileArgs tiles[kPositionTileRun];
  int rms[kPositionTileRun];
  for (int64_t run = b.m_begin; run < b.m_end; run += kPositionTileRun * kTileM) {
    int n = 0;
    for (int64_t m0 = run; m0 < b.m_end && n < kPositionTileRun; m0 += kTileM, ++n) {
      const int64_t first_channel = b.g * mg + m0, offset = first_channel * a.y_stride + b.first_row * s.out_w;
      tiles[n] = a;
      tiles[n].w = b.w + first_channel * k;
      tiles[n].bias = b.bias != nullptr ? b.bias + first_channel : nullptr;
      tiles[n].y = b.y + offset;
      tiles[n].residual = b.residual != nullptr ? b.residual + offset : nullptr;
      rms[n] = static_cast<int>(std::min<int64_t>(kTileM, mg - m0));
    }
    for (int64_t q0 = 0; q0 < positions; q0 += tp) {
      const auto [x, channel_stride] = in.At(q0, q0);
      const int64_t count = std::min<int64_t>(tp, positions - q0);
      for (int i = 0; i < n; ++i) {
        tiles[i].x = x;
        tiles[i].channel_stride = channel_stride;
        tiles[i].first_position = q0;
        tiles[i].count = count;
        p.isa->tile[rms[i]][CeilDiv(count, vl)](tiles[i]);
      }
    }
  }
}

// An activation that is not a clamp, over the block's stored outputs (its rows are consecutive
// in each channel of Y).
void ApplyActivationAfter(const ConvPlan& p, const BlockWork& b) {
  const ConvShape& s = p.shape;
  const int64_t out_plane = s.out_h * s.out_w, first = b.g * s.outputs_per_group();
  for (int64_t ch = first + b.m_begin; ch < first + b.m_end; ++ch) {
    float* out = b.y + ch * out_plane + b.first_row * s.out_w;
    ApplyEpilogue(out, 0.0f, nullptr, out, b.rows * s.out_w, p.epilogue);
  }
}

// The strip panel of a 1x1 block: for strip k and channel c, the block's positions
// [k * strip, (k + 1) * strip) of channel c (strip = ConvPlan::StripPositions()) up to `tail_start`,
// the last strip's rest zeroed; then the positions from tail_start on (a channel tail tile's
// columns, which need not begin on a strip) as one strip of their own, returned.
const float* BuildStripPanel(const ConvPlan& p, const float* x_group, int64_t first_row, int64_t rows, float* panel,
                             int64_t tail_start) {
  const ConvShape& s = p.shape;
  const int64_t channels = p.layout.channels, run = rows * s.out_w, plane = s.in_h * s.in_w;
  const int64_t strip = p.StripPositions(), tail = run - tail_start;
  float* const tail_panel = panel + CeilDiv(tail_start, strip) * strip * channels;
  for (int64_t c = 0; c < channels; ++c) {
    const float* src = x_group + c * plane + first_row * s.in_w;
    for (int64_t at = 0; at < tail_start; at += strip) {
      float* dst = panel + (at * channels + c * strip);
      const int64_t n = std::min(strip, tail_start - at);
      std::copy(src + at, src + at + n, dst);
      std::fill(dst + n, dst + strip, 0.0f);
    }
    std::copy(src + tail_start, src + run, tail_panel + c * tail);
  }
  return tail_panel;
}

// The block's inputs: X itself for a direct (1x1, stride-1, unpadded) conv, else the window panel
// built in the workspace. A block's last tile may read past its outputs (whole vectors, whole
// tiles): from a panel that is slack; from X it is the next rows, or past the channel's plane the
// next channel's, which is harmless while it stays inside X. floats_after: how many floats of X
// follow this image's group; only a tile that would read past them gets a copy (with many threads
// every item of a small image would otherwise copy its block's tail: measured, 7M instructions
// a run on resnet50.16 at 16 threads).
BlockInput PrepareInput(const ConvPlan& p, const float* x_group, int64_t first_row, int64_t rows, float* workspace,
                        int64_t floats_after) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  if (p.strip_panel) {
    // Channel tiles: the block's tail tile (ConvPlan::tail_cols) gets a strip of its own.
    const int64_t run = rows * s.out_w;
    const int64_t tail_start = p.family == TileFamily::kChannels ? run - std::min<int64_t>(p.tail_cols, run) : run;
    const float* tail = BuildStripPanel(p, x_group, first_row, rows, workspace, tail_start);
    BlockInput in{workspace, p.StripPositions(), nullptr, 0, 0};
    in.strip_floats = L.channels * p.StripPositions();
    if (tail_start < run) {
      in.tail = tail;
      in.tail_start = tail_start;
      in.tail_stride = run - tail_start;
    }
    return in;
  }
  if (!p.direct) {
    BuildWindowPanel(s, L, x_group, first_row, rows, workspace);
    return {workspace, L.channel_stride, nullptr, 0, 0};
  }
  const int64_t plane = s.in_h * s.in_w;
  BlockInput in{x_group + first_row * s.in_w, plane, nullptr, 0, 0};
  const bool channels = p.family == TileFamily::kChannels;
  const int64_t run = channels ? p.TileWidth(rows) : L.positions(rows);
  const int64_t step = channels ? p.tile_cols : p.isa->tile_positions();
  const int64_t last = (run - 1) / step * step;
  const int64_t extent = channels ? p.tile_cols : CeilDiv(run - last, p.isa->vector_len) * p.isa->vector_len;
  // The last channel's last tile reads up to here (from x_group); the group ends at channels x plane.
  const int64_t read_end = (L.channels - 1) * plane + first_row * s.in_w + last + extent;
  if (last + extent > run && read_end > L.channels * plane + floats_after) {
    const int64_t valid = run - last;
    for (int64_t c = 0; c < L.channels; ++c) {
      const float* from = in.x + c * in.channel_stride + last;
      float* to = workspace + c * extent;
      std::copy(from, from + valid, to);
      std::fill(to + valid, to + extent, 0.0f);
    }
    in.tail = workspace;
    in.tail_start = last;
    in.tail_stride = extent;
  }
  return in;
}

}  // namespace

void RunConv(const ConvPlan& p, const float* x, const float* packed_w, const float* bias, const float* residual,
             float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group();
  const int64_t in_plane = s.in_h * s.in_w;
  const int64_t x_image = s.in_channels * in_plane;
  const int64_t y_image = s.out_channels * s.out_h * s.out_w;
  if (cg == 0) {  // no input channels: the sums are empty and Y = activation(B + Z), as ORT gives
    const int64_t plane = s.out_h * s.out_w;
    const std::vector<float> zeros(plane, 0.0f);
    for (int64_t n = 0; n < s.batch; ++n)
      for (int64_t m = 0; m < s.out_channels; ++m) {
        const int64_t at = n * y_image + m * plane;
        ApplyEpilogue(zeros.data(), bias != nullptr ? bias[m] : 0.0f, residual != nullptr ? residual + at : nullptr,
                      y + at, plane, p.epilogue);
      }
    return;
  }

  float* shared = nullptr;
  if (p.shared_panel) {
    shared = AlignedFloats(shared_panels, p.shared_floats());
    BuildSharedPanels(p, x, shared, parallel);
  }
  // Whatever ends the call (an error in a worker too), the shared panels are trimmed after it.
  struct TrimShared {
    ~TrimShared() { ReleaseIfLarge(shared_panels, kKeptSharedFloats); }
  } trim_shared;

  // Work item = (image, block of groups, block of output rows, chunk of output-channel tiles).
  auto body = [&](int64_t item) {
    const int64_t chunk = item % p.m_chunks;
    const int64_t block = (item / p.m_chunks) % p.row_blocks;
    BlockWork b;
    b.g = (item / (p.m_chunks * p.row_blocks)) % p.group_blocks() * p.groups_per_item;
    const int64_t n = item / (p.m_chunks * p.row_blocks * p.group_blocks());
    b.first_row = p.BlockFirstRow(block);
    b.rows = p.BlockRows(block);
    b.m_begin = PartBegin(p.m_tiles, p.m_chunks, chunk) * p.m_unit;
    b.m_end = std::min(mg, PartBegin(p.m_tiles, p.m_chunks, chunk + 1) * p.m_unit);
    if (b.rows <= 0 || b.m_begin >= b.m_end) return;
    b.w = packed_w;
    b.bias = bias;
    b.residual = residual != nullptr ? residual + n * y_image : nullptr;
    b.y = y + n * y_image;
    const float* x_image_n = x + n * x_image;

    float* workspace = ThreadWorkspace(p.workspace_floats());
    if (p.depthwise_stride2) {
      RunDepthwiseStride2(p, x_image_n, packed_w, bias, b.residual, b.y, b.g, std::min(s.group, b.g + p.groups_per_item),
                          b.first_row, b.rows);
    } else if (p.depthwise_lanes) {
      RunDepthwiseLanes(p, x_image_n, packed_w, bias, b.residual, b.y, b.g, b.first_row, b.rows, workspace);
    } else if (p.depthwise) {
      RunDepthwise(p, x_image_n, packed_w, bias, b.residual, b.y, b.g, std::min(s.group, b.g + p.groups_per_item),
                   b.first_row, b.rows, workspace);
    } else {
      const BlockInput in =
          shared != nullptr
              ? BlockInput{shared + (n * s.group + b.g) * p.layout.panel_floats() + b.first_row * p.layout.row_len,
                           p.layout.channel_stride, nullptr, 0, 0}
              : PrepareInput(p, x_image_n + b.g * cg * in_plane, b.first_row, b.rows, workspace,
                             ((s.batch - 1 - n) * s.in_channels + (s.group - 1 - b.g) * cg) * in_plane);
      if (p.family == TileFamily::kChannels)
        RunChannelTiles(p, in, b, workspace + p.input_floats());
      else
        RunPositionTiles(p, in, b);
      float lo, hi;
      if (!ClampBounds(p.epilogue, &lo, &hi)) ApplyActivationAfter(p, b);
    }
    ReleaseIfLarge(thread_workspace, kKeptWorkspaceFloats);
  };
  parallel(p.work_items(), body);
}

ParallelRunner ThreadRunner(int threads) {
  return [threads](int64_t count, const std::function<void(int64_t)>& body) {
    const int64_t workers = std::min<int64_t>(std::max(threads, 1), count);
    if (workers <= 1) {
      for (int64_t i = 0; i < count; ++i) body(i);
      return;
    }
    std::atomic<int64_t> next{0};
    auto worker = [&] {
      for (int64_t i = next++; i < count; i = next++) body(i);
    };
    std::vector<std::thread> pool;
    try {
      for (int64_t t = 1; t < workers; ++t) pool.emplace_back(worker);
    } catch (const std::exception& e) {
      // Stop the started threads at their next item and join them: a joinable std::thread left
      // to unwind would terminate the process.
      next = count;
      for (auto& t : pool) t.join();
      throw std::runtime_error("could not start thread " + std::to_string(pool.size() + 2) + " of " +
                               std::to_string(workers) + ": " + e.what());
    }
    worker();
    for (auto& t : pool) t.join();
  };
}

}  // namespace im2win
