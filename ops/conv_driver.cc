#include "conv_driver.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <thread>
#include <vector>

#include "epilogue.h"

namespace im2win {
namespace {

// A window panel of up to this many floats (512 KiB) stays in a Zen 4 / Skylake-SP L2 (1 MiB)
// beside a tile's weights.
constexpr int64_t kPanelBudgetFloats = 128 * 1024;
// Depthwise rows shorter than this are walked as one run across rows (see DepthwiseRowArgs).
constexpr int64_t kSpanRowsBelow = 32;
// Enough work items that a batch-1 layer keeps every thread of a small pool busy.
constexpr int64_t kMinWorkItems = 4;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

float* ThreadWorkspace(int64_t floats) {
  // Grows to the largest panel this thread has built, then is reused: no allocation per call.
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(floats, 0.0f);
  return buffer.data();
}

// Position tile: writes the valid positions (columns j < out_w of each row) through the epilogue.
void StorePositionTile(const ConvPlan& p, const float* tile, int rm, int64_t q0, int64_t count, int64_t first_row,
                       int64_t first_channel, const float* bias, const float* residual, float* y_image) {
  const ConvShape& s = p.shape;
  const int64_t row_len = p.layout.row_len;
  const int64_t out_plane = s.out_h * s.out_w;
  const int tp = p.isa->tile_positions();
  for (int64_t q = q0, end = q0 + count; q < end;) {
    const int64_t r = q / row_len, j = q % row_len;
    if (j >= s.out_w) {
      q += row_len - j;
      continue;
    }
    const int64_t n = std::min(s.out_w - j, end - q);
    const int64_t offset = (first_row + r) * s.out_w + j;
    for (int m = 0; m < rm; ++m) {
      const int64_t ch = first_channel + m;
      const float* res = residual != nullptr ? residual + ch * out_plane + offset : nullptr;
      ApplyEpilogue(tile + m * tp + (q - q0), bias != nullptr ? bias[ch] : 0.0f, res,
                    y_image + ch * out_plane + offset, n, p.epilogue);
    }
    q += n;
  }
}

// Channel tile: the tile holds one row of channels per output; writes the outputs inside the
// block (rows) and the image (columns) through the epilogue.
// The block is height x width outputs (width = out_w, or the whole block as one run when window
// rows carry no extra columns; either way output (r, j) of the block is Y's (first_row, 0) + r*out_w + j).
void StoreChannelTile(const ConvPlan& p, const float* tile, int64_t channels, int64_t r0, int64_t j0, int64_t height,
                      int64_t width, int64_t first_row, int64_t first_channel, const float* bias,
                      const float* residual, float* y_image) {
  const ConvShape& s = p.shape;
  const int64_t out_plane = s.out_h * s.out_w;
  const int64_t cols = std::min<int64_t>(p.tile_cols, width - j0);
  const int64_t tile_rows = std::min<int64_t>(p.tile_rows, height - r0);
  const int64_t stride = p.m_unit;
  float run[kMaxTileOutputs];
  for (int64_t m = 0; m < channels; ++m) {
    const int64_t ch = first_channel + m;
    for (int64_t a = 0; a < tile_rows; ++a) {
      for (int64_t b = 0; b < cols; ++b) run[b] = tile[(a * p.tile_cols + b) * stride + m];
      const int64_t offset = (first_row + r0 + a) * s.out_w + j0;
      const float* res = residual != nullptr ? residual + ch * out_plane + offset : nullptr;
      ApplyEpilogue(run, bias != nullptr ? bias[ch] : 0.0f, res, y_image + ch * out_plane + offset, cols,
                    p.epilogue);
    }
  }
}

// Channel tiles cover the block with rows x cols outputs; picks the shape that computes the
// fewest dropped outputs, preferring tiles with enough outputs to hide the FMA latency and, a
// little, two vectors of channels (a broadcast then feeds two FMAs).
// keep_vectors: choose only the rows x cols for the channel vectors already chosen.
void ChooseChannelTile(const IsaKernels& isa, int64_t out_w, int64_t rows, ConvPlan* p, bool keep_vectors = false) {
  double best = -1.0;
  for (int mv = 1; mv <= isa.channel_vectors; ++mv) {
    if (keep_vectors && mv != p->tile_vectors) continue;
    const int outputs = isa.max_outputs[mv];
    if (outputs == 0 || p->shape.outputs_per_group() % (mv * isa.vector_len) != 0) continue;  // whole tiles only
    for (int cols = outputs; cols >= 1; --cols) {  // on a tie, the widest tile (fewest rows to touch)
      const int ra = outputs / cols;
      const double computed = static_cast<double>(CeilDiv(out_w, cols) * cols) * (CeilDiv(rows, ra) * ra);
      const double useful = static_cast<double>(out_w * rows);
      const double score = useful / computed * std::min(1.0, ra * cols * mv / 16.0) *
                           (mv == isa.channel_vectors ? 1.0 : 0.97);
      if (score > best) {
        best = score;
        p->tile_vectors = mv;
        p->tile_rows = ra;
        p->tile_cols = cols;
      }
    }
  }
}

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
  constexpr float kInf = std::numeric_limits<float>::infinity();
  DepthwiseRowArgs a;
  a.taps = L.tap_offset.data();
  a.tap_count = taps;
  a.lo = -kInf;
  a.hi = kInf;
  bool activation_after = false;
  switch (p.epilogue.activation) {
    case Activation::kNone:
      break;
    case Activation::kRelu:
      a.lo = 0.0f;
      break;
    case Activation::kClip:
      a.lo = p.epilogue.alpha;
      a.hi = p.epilogue.beta;
      break;
    default:
      activation_after = true;
  }
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

// Depthwise with vector_len channels in the lanes, from channel g_begin (see DepthwiseLanesArgs).
void RunDepthwiseLanes(const ConvPlan& p, const float* x_image, const float* w, const float* bias,
                       const float* residual, float* y_image, int64_t g_begin, int64_t first_row, int64_t rows,
                       float* workspace) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const int lanes = p.isa->vector_len;
  const int64_t taps = s.kernel_h * s.kernel_w, out_plane = s.out_h * s.out_w;
  constexpr float kInf = std::numeric_limits<float>::infinity();
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
  thread_local std::vector<int32_t> col_slot, output_offset;
  col_slot.assign(s.stride_w, -1);
  for (size_t i = 0; i < L.col_phase.size(); ++i) col_slot[L.col_phase[i]] = static_cast<int32_t>(i);
  a.col_slot = col_slot.data();
  a.plane_rows = L.plane_rows;
  a.row_len = L.row_len;
  a.first_row = first_row;
  a.outputs = rows * s.out_w;
  output_offset.resize(a.outputs + lanes - 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < s.out_w; ++j) output_offset[r * s.out_w + j] = static_cast<int32_t>(r * L.row_len + j);
  std::fill(output_offset.begin() + a.outputs, output_offset.end(), output_offset[a.outputs - 1]);
  a.output_offset = output_offset.data();
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
  a.lo = -kInf;
  a.hi = kInf;
  const Activation act = p.epilogue.activation;
  if (act == Activation::kRelu) a.lo = 0.0f;
  if (act == Activation::kClip) {
    a.lo = p.epilogue.alpha;
    a.hi = p.epilogue.beta;
  }
  p.isa->depthwise_lanes(a);
  if (act != Activation::kNone && act != Activation::kRelu && act != Activation::kClip)
    for (int l = 0; l < lanes; ++l) {
      float* out = a.y + l * out_plane;
      ApplyEpilogue(out, 0.0f, nullptr, out, a.outputs, p.epilogue);
    }
}

// Position tiles compute whole vectors: picks the rows per block (at most max_rows) that compute
// the fewest positions in all over the image, the most rows on a tie.
int64_t ChooseBlockRows(int64_t out_h, int64_t row_len, int64_t max_rows, int vector_len) {
  int64_t best_rows = max_rows, best_cost = -1;
  for (int64_t rows = max_rows; rows >= std::max<int64_t>(1, max_rows / 2); --rows) {
    const int64_t full = out_h / rows, last = out_h % rows;
    const int64_t cost = full * CeilDiv(rows * row_len, vector_len) + CeilDiv(last * row_len, vector_len);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_rows = rows;
    }
  }
  return best_rows;
}

}  // namespace

ConvPlan MakeConvPlan(const ConvShape& s, const Epilogue& epilogue, const IsaKernels& isa,
                      TilePreference preference) {
  ConvPlan p;
  p.shape = s;
  p.epilogue = epilogue;
  p.isa = &isa;
  p.family = ChooseTileFamily(isa, s, preference);
  const WindowLayout one_row = MakeWindowLayout(s, 1);
  // Each output row adds one panel row per phase pair; the windows' overhang is paid once.
  const int64_t row_floats = std::max<int64_t>(1, one_row.channels * one_row.channel_stride / one_row.plane_rows);
  const int64_t overhang = one_row.plane_rows - 1;
  int64_t rows = std::clamp<int64_t>(kPanelBudgetFloats / row_floats - overhang, 1, s.out_h);
  if (p.family == TileFamily::kPositions) rows = ChooseBlockRows(s.out_h, one_row.row_len, rows, isa.vector_len);
  int64_t row_blocks = CeilDiv(s.out_h, rows);
  if (p.family == TileFamily::kChannels) ChooseChannelTile(isa, p.TileWidth(rows), p.TileHeight(rows), &p);
  p.m_unit = p.family == TileFamily::kChannels ? p.tile_vectors * isa.vector_len : kTileM;
  p.m_tiles = CeilDiv(s.outputs_per_group(), p.m_unit);
  const int64_t images = std::max<int64_t>(1, s.batch * s.group);
  // Too few items: first split the channel tiles (no loss of tile width), then the rows.
  p.m_chunks = std::clamp<int64_t>(CeilDiv(kMinWorkItems, images * row_blocks), 1, std::max<int64_t>(1, p.m_tiles));
  if (images * row_blocks * p.m_chunks < kMinWorkItems) {
    row_blocks = std::min(s.out_h, CeilDiv(kMinWorkItems, images * p.m_chunks));
    rows = CeilDiv(s.out_h, row_blocks);
    row_blocks = CeilDiv(s.out_h, rows);
  }
  p.row_blocks = row_blocks;
  // Depthwise: a channel is little work, so an item takes several, enough for ~4 items a thread.
  p.depthwise = s.channels_per_group() == 1 && s.outputs_per_group() == 1;
  p.direct = !p.depthwise && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 &&
             s.pad_top == 0 && s.pad_left == 0 && s.pad_bottom == 0 && s.pad_right == 0;
  if (p.depthwise)
    p.groups_per_item = std::max<int64_t>(1, s.group * std::max<int64_t>(1, s.batch) * row_blocks / (4 * kMinWorkItems));
  p.depthwise_lanes = p.depthwise && isa.depthwise_lanes != nullptr && s.group % isa.vector_len == 0;
  if (p.depthwise_lanes) {
    // vector_len channels side by side: the block's rows shrink to keep the panel in budget.
    p.groups_per_item = isa.vector_len;
    rows = std::clamp<int64_t>(kPanelBudgetFloats / (row_floats * isa.vector_len) - overhang, 1, s.out_h);
    row_blocks = CeilDiv(s.out_h, rows);
    const int64_t items = std::max<int64_t>(1, s.batch) * (s.group / isa.vector_len);
    if (items * row_blocks < kMinWorkItems) {
      row_blocks = std::min(s.out_h, CeilDiv(kMinWorkItems, items));
      rows = CeilDiv(s.out_h, row_blocks);
      row_blocks = CeilDiv(s.out_h, rows);
    }
    p.row_blocks = row_blocks;
  }
  if (p.family == TileFamily::kChannels) {
    // Again, as the rows may have been split; the channels per tile are settled (m_unit).
    ChooseChannelTile(isa, p.TileWidth(rows), p.TileHeight(rows), &p, true);
    p.layout = MakeWindowLayout(s, rows, p.tile_rows, p.tile_cols);
  } else {
    p.layout = MakeWindowLayout(s, rows, 0, isa.tile_positions());
  }
  return p;
}

void RunConv(const ConvPlan& p, const float* x, const float* packed_w, const float* bias, const float* residual,
             float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const IsaKernels& isa = *p.isa;
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group();
  const int64_t k = cg * s.kernel_h * s.kernel_w;
  const int64_t x_image = s.in_channels * s.in_h * s.in_w;
  const int64_t y_image = s.out_channels * s.out_h * s.out_w;
  const int64_t tiles_per_chunk = CeilDiv(p.m_tiles, p.m_chunks);
  const int tp = isa.tile_positions();
  const int vl = isa.vector_len;

  auto body = [&](int64_t item) {
    const int64_t chunk = item % p.m_chunks;
    const int64_t block = (item / p.m_chunks) % p.row_blocks;
    const int64_t g = (item / (p.m_chunks * p.row_blocks)) % p.group_blocks() * p.groups_per_item;
    const int64_t n = item / (p.m_chunks * p.row_blocks * p.group_blocks());
    const int64_t first_row = block * L.rows;
    const int64_t rows = std::min(L.rows, s.out_h - first_row);
    const int64_t m_begin = chunk * tiles_per_chunk * p.m_unit;
    const int64_t m_end = std::min(mg, (chunk + 1) * tiles_per_chunk * p.m_unit);
    if (rows <= 0 || m_begin >= m_end) return;

    float* panel = ThreadWorkspace(p.workspace_floats());
    const float* res_image = residual != nullptr ? residual + n * y_image : nullptr;
    float* y_out = y + n * y_image;
    if (p.depthwise_lanes) {
      RunDepthwiseLanes(p, x + n * x_image, packed_w, bias, res_image, y_out, g, first_row, rows, panel);
      return;
    }
    if (p.depthwise) {
      RunDepthwise(p, x + n * x_image, packed_w, bias, res_image, y_out, g, std::min(s.group, g + p.groups_per_item),
                   first_row, rows, panel);
      return;
    }
    // A 1x1, stride-1, unpadded conv reads X itself: it is its own window panel.
    const float* src = panel;
    int64_t channel_stride = L.channel_stride;
    if (p.direct) {
      src = x + n * x_image + g * cg * s.in_h * s.in_w + first_row * s.in_w;
      channel_stride = s.in_h * s.in_w;
    } else {
      BuildWindowPanel(s, L, x + n * x_image + g * cg * s.in_h * s.in_w, first_row, rows, panel);
    }
    // A block's last tile may read past its outputs (whole vectors, whole tiles). From a panel that
    // is slack; from X it could pass X's end, so that tile reads a zero-padded copy instead.
    const int64_t run = p.family == TileFamily::kChannels ? p.TileWidth(rows) : L.positions(rows);
    const int64_t step = p.family == TileFamily::kChannels ? p.tile_cols : tp;
    const int64_t last = (run - 1) / step * step;
    const int64_t tail_extent = p.family == TileFamily::kChannels ? p.tile_cols : CeilDiv(run - last, vl) * vl;
    const bool tail_copy = p.direct && last + tail_extent > run;
    if (tail_copy) {
      for (int64_t c = 0; c < cg; ++c) {
        float* dst = panel + c * tail_extent;
        const float* from = src + c * channel_stride + last;
        for (int64_t i = 0; i < tail_extent; ++i) dst[i] = i < run - last ? from[i] : 0.0f;
      }
    }
    constexpr int kChannelTileFloats = kMaxTileOutputs * kChannelBlock * kMaxChannelVectors;
    alignas(64) float tile[std::max(kChannelTileFloats, kTileM * kMaxTilePositions)];

    if (p.family == TileFamily::kChannels) {
      ChannelTileArgs a;
      a.block_stride = kChannelBlock * k;
      a.taps = L.tap_offset.data();
      a.tap_count = s.kernel_h * s.kernel_w;
      a.channels = cg;
      a.row_stride = L.row_len;
      a.out = tile;
      a.out_stride = p.m_unit;
      for (int64_t m0 = m_begin; m0 < m_end; m0 += p.m_unit) {
        const int64_t count = std::min<int64_t>(p.m_unit, mg - m0);
        const int64_t first_channel = g * mg + m0;
        const ChannelTileFn fn = isa.channel_tile[p.tile_vectors][p.tile_cols];
        a.w = packed_w + first_channel * k;
        const int64_t height = p.TileHeight(rows), width = p.TileWidth(rows);
        for (int64_t r0 = 0; r0 < height; r0 += p.tile_rows) {
          for (int64_t j0 = 0; j0 < width; j0 += p.tile_cols) {
            const bool from_tail = tail_copy && j0 == last;
            a.x = from_tail ? panel : src + r0 * L.row_len + j0;
            a.channel_stride = from_tail ? tail_extent : channel_stride;
            fn(a);
            StoreChannelTile(p, tile, count, r0, j0, height, width, first_row, first_channel, bias, res_image,
                             y_out);
          }
        }
      }
      return;
    }

    const int64_t positions = L.positions(rows);
    TileArgs args;
    args.taps = L.tap_offset.data();
    args.tap_count = s.kernel_h * s.kernel_w;
    args.channels = cg;
    args.out = tile;
    args.out_stride = tp;
    for (int64_t m0 = m_begin; m0 < m_end; m0 += kTileM) {
      const int rm = static_cast<int>(std::min<int64_t>(kTileM, mg - m0));
      const int64_t first_channel = g * mg + m0;
      args.w = packed_w + first_channel * k;
      for (int64_t q0 = 0; q0 < positions; q0 += tp) {
        const int64_t count = std::min<int64_t>(tp, positions - q0);
        const bool from_tail = tail_copy && q0 == last;
        args.x = from_tail ? panel : src + q0;
        args.channel_stride = from_tail ? tail_extent : channel_stride;
        isa.tile[rm][CeilDiv(count, vl)](args);
        StorePositionTile(p, tile, rm, q0, count, first_row, first_channel, bias, res_image, y_out);
      }
    }
  };
  parallel(p.work_items(), body);
}

int64_t Im2colWorkspaceBytes(const ConvShape& s) {
  return s.channels_per_group() * s.kernel_h * s.kernel_w * s.out_h * s.out_w * static_cast<int64_t>(sizeof(float));
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
    for (int64_t t = 1; t < workers; ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
  };
}

}  // namespace im2win
