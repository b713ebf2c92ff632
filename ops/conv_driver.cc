#include "conv_driver.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "epilogue.h"

namespace im2win {
namespace {

// A window panel of about this many floats stays in a Zen 4 / Skylake-SP L2 beside a tile's weights.
constexpr int64_t kPanelBudgetFloats = 64 * 1024;
// Enough work items that a batch-1 layer keeps every thread of a small pool busy.
constexpr int64_t kMinWorkItems = 8;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

float* ThreadWorkspace(int64_t floats) {
  // Grows to the largest panel this thread has built, then is reused: no allocation per call.
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(floats, 0.0f);
  return buffer.data();
}

// Writes the valid positions of one tile (columns j < out_w of each row) through the epilogue.
void StoreTile(const ConvPlan& p, const float* tile, int rm, int64_t q0, int64_t count, int64_t first_row,
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

}  // namespace

ConvPlan MakeConvPlan(const ConvShape& s, const Epilogue& epilogue, const IsaKernels& isa) {
  ConvPlan p;
  p.shape = s;
  p.epilogue = epilogue;
  p.isa = &isa;
  const WindowLayout one_row = MakeWindowLayout(s, 1, isa.tile_positions());
  const int64_t row_floats = std::max<int64_t>(1, one_row.channels * one_row.channel_stride);
  int64_t rows = std::clamp<int64_t>(kPanelBudgetFloats / row_floats, 1, s.out_h);
  int64_t row_blocks = CeilDiv(s.out_h, rows);
  p.m_tiles = CeilDiv(s.outputs_per_group(), kTileM);
  const int64_t images = std::max<int64_t>(1, s.batch * s.group);
  // Too few items: first split the channel tiles (no loss of tile width), then the rows.
  p.m_chunks = std::clamp<int64_t>(CeilDiv(kMinWorkItems, images * row_blocks), 1, std::max<int64_t>(1, p.m_tiles));
  if (images * row_blocks * p.m_chunks < kMinWorkItems) {
    row_blocks = std::min(s.out_h, CeilDiv(kMinWorkItems, images * p.m_chunks));
    rows = CeilDiv(s.out_h, row_blocks);
    row_blocks = CeilDiv(s.out_h, rows);
  }
  p.row_blocks = row_blocks;
  p.layout = MakeWindowLayout(s, rows, isa.tile_positions());
  return p;
}

void RunConv(const ConvPlan& p, const float* x, const float* packed_w, const float* bias, const float* residual,
             float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  const WindowLayout& L = p.layout;
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group();
  const int64_t k = cg * s.kernel_h * s.kernel_w;
  const int64_t x_image = s.in_channels * s.in_h * s.in_w;
  const int64_t y_image = s.out_channels * s.out_h * s.out_w;
  const int64_t tiles_per_chunk = CeilDiv(p.m_tiles, p.m_chunks);
  const int tp = p.isa->tile_positions();
  const int vl = p.isa->vector_len;

  auto body = [&](int64_t item) {
    const int64_t chunk = item % p.m_chunks;
    const int64_t block = (item / p.m_chunks) % p.row_blocks;
    const int64_t g = (item / (p.m_chunks * p.row_blocks)) % s.group;
    const int64_t n = item / (p.m_chunks * p.row_blocks * s.group);
    const int64_t first_row = block * L.rows;
    const int64_t rows = std::min(L.rows, s.out_h - first_row);
    const int64_t m_begin = chunk * tiles_per_chunk * kTileM;
    const int64_t m_end = std::min(mg, (chunk + 1) * tiles_per_chunk * kTileM);
    if (rows <= 0 || m_begin >= m_end) return;

    float* panel = ThreadWorkspace(L.panel_floats());
    BuildWindowPanel(s, L, x + n * x_image + g * cg * s.in_h * s.in_w, first_row, rows, panel);

    const int64_t positions = L.positions(rows);
    alignas(64) float tile[kTileM * kMaxTilePositions];
    TileArgs args;
    args.taps = L.tap_offset.data();
    args.tap_count = s.kernel_h * s.kernel_w;
    args.channels = cg;
    args.channel_stride = L.channel_stride;
    args.out = tile;
    args.out_stride = tp;
    const float* res_image = residual != nullptr ? residual + n * y_image : nullptr;
    for (int64_t m0 = m_begin; m0 < m_end; m0 += kTileM) {
      const int rm = static_cast<int>(std::min<int64_t>(kTileM, mg - m0));
      const int64_t first_channel = g * mg + m0;
      args.w = packed_w + first_channel * k;
      for (int64_t q0 = 0; q0 < positions; q0 += tp) {
        const int64_t count = std::min<int64_t>(tp, positions - q0);
        args.x = panel + q0;
        p.isa->tile[rm][CeilDiv(count, vl)](args);
        StoreTile(p, tile, rm, q0, count, first_row, first_channel, bias, res_image, y + n * y_image);
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
