#include "conv/conv_nhwc.h"

#include <algorithm>
#include <cstdlib>

#include "conv/conv_plan.h"
#include "conv/epilogue.h"
#include "conv/workspace.h"

namespace im2win {
namespace {

// Items per thread a split aims at, where the rows and channel tiles allow it.
constexpr int64_t kNhwcItemsPerThread = 2;
// Weights a run of the reduction reads for one channel tile: kept in L1 (32-48 KiB) beside the
// inputs its tiles broadcast.
constexpr int64_t kRunWeightBytes = 16 << 10;
// X larger than this comes from DRAM rather than the L3 (MobileNetV2 at batch 16: 10-29 MB).
constexpr int64_t kColdInputBytes = 8 << 20;

thread_local std::vector<float> nhwc_panel;

// The padded panel of a block: `rows` input rows from `first_in_row` (rows outside X are zeros),
// each pad_left zeros, X's row of in_w x C floats, pad_right zeros.
// With X channels-first (NhwcPlan::x_nchw) the row is gathered from X's C planes.
void BuildNhwcPanel(const NhwcPlan& p, const float* x_image, int64_t first_in_row, int64_t rows, float* panel) {
  const ConvShape& s = p.shape;
  const int64_t c = s.in_channels, left = s.pad_left * c, row = s.in_w * c, plane = s.in_h * s.in_w;
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = panel + r * p.row_floats;
    const int64_t in_row = first_in_row + r;
    if (in_row < 0 || in_row >= s.in_h) {
      std::fill(dst, dst + p.row_floats, 0.0f);
      continue;
    }
    std::fill(dst, dst + left, 0.0f);
    if (p.x_nchw) {
      const float* src = x_image + in_row * s.in_w;
      float* out = dst + left;
      if (c == 3) {  // an image: the three planes interleaved, written in order
        for (int64_t iw = 0; iw < s.in_w; ++iw, out += 3) {
          out[0] = src[iw];
          out[1] = src[plane + iw];
          out[2] = src[2 * plane + iw];
        }
      } else {
        for (int64_t iw = 0; iw < s.in_w; ++iw, out += c)
          for (int64_t ch = 0; ch < c; ++ch) out[ch] = src[ch * plane + iw];
      }
    } else {
      std::copy(x_image + in_row * row, x_image + (in_row + 1) * row, dst + left);
    }
    std::fill(dst + left + row, dst + p.row_floats, 0.0f);
  }
}

// The compact panel of a block: for each of `rows` output rows from `first_row`, the input
// position of each output (a 1x1 window), C floats each, one after another.
void BuildCompactPanel(const NhwcPlan& p, const float* x_image, int64_t first_row, int64_t rows, float* panel) {
  const ConvShape& s = p.shape;
  const int64_t c = s.in_channels;
  for (int64_t r = 0; r < rows; ++r) {
    const float* in_row = x_image + (first_row + r) * s.stride_h * s.in_w * c;
    for (int64_t j = 0; j < s.out_w; ++j, panel += c) {
      const float* in = in_row + j * s.stride_w * c;
      std::copy(in, in + c, panel);
    }
  }
}

// `floats` floats from `in` in each of `cols` columns `col_stride` apart, fetched toward L2
// (always inlined, as PrefetchLines).
__attribute__((always_inline)) inline void PrefetchColumns(const float* in, int64_t cols, int64_t col_stride,
                                                           int64_t floats) {
  for (int64_t c = 0; c < cols; ++c, in += col_stride) PrefetchLines(in, 0, CeilDiv(floats, kCacheLineFloats));
}

// The rows of X output row out_row + 1 reads and out_row does not, as one range (with dilation,
// the rows between them as well): from *first, *floats long; none (0) past the last output row.
void NextOutputRowNewRows(const NhwcPlan& p, const float* x_n, int64_t out_row, const float** first,
                          int64_t* floats) {
  const ConvShape& s = p.shape;
  *first = nullptr;
  *floats = 0;
  if (out_row + 1 >= s.out_h) return;
  const int64_t last_read = out_row * s.stride_h - s.pad_top + (s.kernel_h - 1) * s.dilation_h;
  const int64_t next_first = (out_row + 1) * s.stride_h - s.pad_top;
  const int64_t lo = std::max<int64_t>({last_read + 1, next_first, 0});
  const int64_t hi = std::min(s.in_h - 1, next_first + (s.kernel_h - 1) * s.dilation_h);
  if (hi < lo) return;
  *first = x_n + lo * s.in_w * s.in_channels;
  *floats = (hi - lo + 1) * s.in_w * s.in_channels;
}

// Part `part` of `parts` of the cache lines of `blocks` ranges of `floats` floats, `block_stride`
// apart from `base`, fetched toward L2: the weights of the next pass of tiles, a slice before each
// tile of this one, so that the next pass's first tile does not wait on memory for each line.
// (Always inlined, as PrefetchLines.)
__attribute__((always_inline)) inline void PrefetchSlice(const float* base, int64_t floats, int64_t block_stride,
                                                         int64_t blocks, int64_t part, int64_t parts) {
  const int64_t lines = CeilDiv(floats, kCacheLineFloats);
  const int64_t first = lines * part / parts, last = lines * (part + 1) / parts;
  for (int64_t b = 0; b < blocks; ++b) PrefetchLines(base + b * block_stride, first, last);
}

thread_local std::vector<int64_t> depthwise_taps;

// One output row of a depthwise conv with padding, X read in place (NhwcPlan::depthwise_in_place):
// only the kernel rows inside X, the interior columns from X, the edge columns from a panel of
// their few input columns (zeros outside X) in `edge`.
void DepthwiseRowInPlace(const NhwcPlan& p, const float* x_n, int64_t out_row, const float* packed_w,
                         const float* bias, const float* z_n, float* y_n, float lo, float hi, float* edge) {
  const ConvShape& s = p.shape;
  const int64_t c = s.in_channels, kw_n = s.kernel_w;
  const int64_t ih0 = out_row * s.stride_h - s.pad_top;
  // Kernel rows [kh0, kh1) read rows of X.
  const int64_t kh0 = ih0 >= 0 ? 0 : std::min(s.kernel_h, CeilDiv(-ih0, s.dilation_h));
  const int64_t kh1 = std::max(kh0, std::min(s.kernel_h, s.in_h - 1 - ih0 >= 0 ? (s.in_h - 1 - ih0) / s.dilation_h + 1 : 0));
  const int64_t y_row = out_row * s.out_w * s.out_channels;
  DepthwiseNhwcArgs a;
  a.col_stride = s.stride_w * c;
  a.tap_count = (kh1 - kh0) * kw_n;
  a.rows_of_three = kw_n == 3 && s.dilation_w == 1 && s.stride_w <= 2 ? static_cast<int>(s.stride_w) : 0;
  a.w = packed_w + kh0 * kw_n * s.out_channels;
  a.w_stride = s.out_channels;
  a.channels = s.group;
  a.y_col_stride = s.out_channels;
  a.bias = bias;
  a.lo = lo;
  a.hi = hi;
  // The interior's blocks fetch the next output row's new rows of X (NhwcPlan::prefetch_inputs).
  const float* next_rows = nullptr;
  int64_t next_floats = 0;
  if (p.prefetch_inputs) NextOutputRowNewRows(p, x_n, out_row, &next_rows, &next_floats);
  std::vector<int64_t>& taps = depthwise_taps;
  // Columns [j0, j1) with their window origins in `source`, rows `row_floats` apart, the first
  // window `offset` floats in (with no kernel row inside X, only the epilogue runs).
  // prefetch: next_rows (next_floats long) for the interior, which fetches them; null for the edges.
  auto run = [&](const float* source, int64_t offset, int64_t row_floats, int64_t j0, int64_t j1,
                 const float* prefetch = nullptr) {
    if (j1 <= j0) return;
    taps.clear();
    for (int64_t kh = kh0; kh < kh1; ++kh)
      for (int64_t kw = 0; kw < kw_n; ++kw) taps.push_back((kh - kh0) * row_floats + kw * s.dilation_w * c);
    a.x = a.tap_count > 0 ? source + offset : source;
    a.taps = taps.data();
    a.y = y_n + y_row + j0 * s.out_channels;
    a.residual = z_n != nullptr ? z_n + y_row + j0 * s.out_channels : nullptr;
    a.cols = j1 - j0;
    a.prefetch = prefetch;
    a.prefetch_floats = prefetch != nullptr ? next_floats : 0;
    p.isa->depthwise_nhwc(a);
  };
  const int64_t first_row = ih0 + kh0 * s.dilation_h;  // X's row of kernel row kh0 (when there is one)
  run(x_n, (first_row * s.in_w + p.interior_begin * s.stride_w - s.pad_left) * c, s.dilation_h * s.in_w * c,
      p.interior_begin, p.interior_end, next_rows);
  // An edge: outputs [j0, j1), their windows over X's columns from iw0 on, copied with zeros.
  auto edge_run = [&](int64_t j0, int64_t j1) {
    if (j1 <= j0) return;
    const int64_t iw0 = j0 * s.stride_w - s.pad_left;
    const int64_t cols = (j1 - j0 - 1) * s.stride_w + (kw_n - 1) * s.dilation_w + 1;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      const float* src = x_n + (ih0 + kh * s.dilation_h) * s.in_w * c;
      float* dst = edge + (kh - kh0) * p.edge_cols * c;
      for (int64_t e = 0; e < cols; ++e) {
        const int64_t iw = iw0 + e;
        if (iw < 0 || iw >= s.in_w)
          std::fill(dst + e * c, dst + (e + 1) * c, 0.0f);
        else
          std::copy(src + iw * c, src + (iw + 1) * c, dst + e * c);
      }
    }
    run(edge, 0, p.edge_cols * c, j0, j1);
  };
  edge_run(0, p.interior_begin);
  edge_run(p.interior_end, s.out_w);
}

}  // namespace

std::vector<int64_t> NhwcToNchwDims(const std::vector<int64_t>& d) {
  if (d.size() < 3) return d;
  std::vector<int64_t> out{d[0], d.back()};
  out.insert(out.end(), d.begin() + 1, d.end() - 1);
  return out;
}

std::vector<int64_t> NchwToNhwcDims(const std::vector<int64_t>& d) {
  if (d.size() < 3) return d;
  std::vector<int64_t> out{d[0]};
  out.insert(out.end(), d.begin() + 2, d.end());
  out.push_back(d[1]);
  return out;
}

NhwcPlan MakeNhwcPlan(const ConvShape& s, const Epilogue& epilogue, const IsaKernels& isa, int threads,
                      int64_t l2_bytes, bool x_nchw) {
  NhwcPlan p;
  p.shape = s;
  p.x_nchw = x_nchw;
  p.epilogue = epilogue;
  p.isa = &isa;
  p.threads = std::clamp(threads, 1, 1024);
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group();
  p.depthwise = cg == 1 && mg == 1;
  p.in_place = !x_nchw && s.pad_top == 0 && s.pad_left == 0 && s.pad_bottom == 0 && s.pad_right == 0;
  p.compact = p.in_place && !p.depthwise && s.kernel_h == 1 && s.kernel_w == 1 && (s.stride_h > 1 || s.stride_w > 1);
  p.panel_cols = p.in_place ? s.in_w : CheckedAdd(CheckedAdd(s.in_w, s.pad_left, "padded W"), s.pad_right, "padded W");
  if (p.depthwise && !p.in_place && !x_nchw) {
    // Memory-bound: a padded copy of every row doubled what these layers move (MobileNetV2's
    // 144x56x56 3x3 took 1.37x our NCHW kernel's time through the panel).
    p.depthwise_in_place = true;
    const int64_t reach = (s.kernel_w - 1) * s.dilation_w;  // (sizes checked by ResolveConvShape)
    p.interior_begin = std::min(s.out_w, CeilDiv(s.pad_left, s.stride_w));
    const int64_t last = s.in_w - 1 + s.pad_left - reach;  // the last window origin inside X, padded
    p.interior_end = std::clamp<int64_t>(last >= 0 ? last / s.stride_w + 1 : 0, p.interior_begin, s.out_w);
    const int64_t left = p.interior_begin, right = s.out_w - p.interior_end;
    const int64_t widest = std::max(left, right);
    p.edge_cols = widest > 0 ? (widest - 1) * s.stride_w + reach + 1 : 0;
  }
  p.row_floats = CheckedMul(p.panel_cols, s.in_channels, "a padded row of X");
  // Taps: per (kh, kw) a run of C/group channels; where the columns' runs lie end to end (one
  // group, no dilation along W) one run of Kw x C per kernel row.
  const bool merge = !p.depthwise && s.group == 1 && (s.dilation_w == 1 || s.kernel_w == 1);
  p.run = p.depthwise ? 1 : merge ? s.kernel_w * cg : cg;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < (merge ? 1 : s.kernel_w); ++kw)
      p.taps.push_back(kh * s.dilation_h * p.row_floats + kw * s.dilation_w * s.in_channels);
  p.columns = isa.nhwc_columns;
  p.columns1 = isa.nhwc_columns1;
  if (const char* cap = std::getenv("IM2WIN_NHWC_COLUMNS")) {
    const int asked = std::atoi(cap);
    if (asked >= 1) {
      p.columns = std::min(p.columns, asked);
      p.columns1 = std::min(p.columns1, asked);
    }
  }
  p.tile_channels = isa.nhwc_channels();
  p.three_vectors = !p.depthwise && isa.nhwc_columns3 > 0 && mg > 2 * isa.vector_len && mg <= 3 * isa.vector_len;
  if (p.three_vectors) {
    p.tile_channels = 3 * isa.vector_len;
    p.columns = std::min(p.columns, isa.nhwc_columns3);
  }
  p.m_tiles = p.depthwise ? 1 : CeilDiv(mg, p.tile_channels);
  const int64_t k = p.reduction();
  bool positions_outer = isa.nhwc_positions_outer;
  if (const char* order = std::getenv("IM2WIN_NHWC_POSITIONS_OUTER"))  // forced either way, for measuring
    positions_outer = std::atoi(order) != 0;
  // The reduction in one run where the ISA runs it positions outer and one channel tile's weights
  // fit the panel's budget (half the L2, at most 512 KiB): each tile of outputs then takes its
  // inputs from L1 and the weights stream from L2. Else in runs whose weights stay in L1 across a
  // block's tiles, each tile's sums waiting in the workspace between runs (see design.md).
  const int64_t budget = PanelBudgetFloats(l2_bytes);
  const bool one_run =
      p.depthwise || (positions_outer && static_cast<double>(k) * static_cast<double>(p.tile_channels) <=
                                             static_cast<double>(budget));
  const int64_t longest = std::max<int64_t>(1, kRunWeightBytes / (4 * p.tile_channels));
  p.k_run = std::max<int64_t>(1, one_run || k <= longest ? k : CeilDiv(k, CeilDiv(k, longest)));
  // One run of the reduction: tiles of outputs outer, each over a chunk of channels whose weights
  // take at most a quarter of the L2 (the block's panel has half), or one tile's.
  p.positions_outer = positions_outer && !p.depthwise && p.k_run >= k;
  const bool cold_input = static_cast<double>(std::max<int64_t>(1, s.batch)) * s.in_h * s.in_w * s.in_channels * 4 >
                          static_cast<double>(kColdInputBytes);
  p.prefetch_inputs = cold_input && ((p.in_place && p.positions_outer && p.taps.size() == 1) || p.depthwise_in_place);
  const int64_t chunk_floats = std::max<int64_t>(1, budget / 2);
  p.chunk_channels = std::max<int64_t>(1, chunk_floats / std::max<int64_t>(1, k) / p.tile_channels) * p.tile_channels;
  // Rows a block: its panel within the plan's budget (half the L2, at most 512 KiB).
  const int64_t per_row = std::max<int64_t>(1, p.compact ? s.out_w * s.in_channels : s.stride_h * p.row_floats);
  p.rows_per_block = std::clamp<int64_t>(budget / per_row, 1, std::max<int64_t>(1, s.out_h));
  // Enough items for the pool: more row blocks first (each reads only its rows), then chunks of
  // channel tiles; but where a group's weights outweigh its input (deep layers on small maps),
  // chunks of channel tiles first: every block of rows reads all its channels' weights, so rows
  // cut for the pool would read the weights once a block (ResNet-50's 7x7 layers, 7 blocks of one
  // row at 2 threads, ran no faster than on one).
  const int64_t images = std::max<int64_t>(1, s.batch) * (p.depthwise ? 1 : s.group);
  const int64_t wanted = p.threads > 1 ? kNhwcItemsPerThread * p.threads : 1;
  const int64_t budget_blocks = images * CeilDiv(std::max<int64_t>(1, s.out_h), p.rows_per_block);
  const bool weights_heavier = !p.depthwise && static_cast<double>(k) * static_cast<double>(mg) >
                                                   static_cast<double>(s.in_h) * static_cast<double>(s.in_w) * cg;
  if (weights_heavier && budget_blocks < wanted)
    p.m_chunks = std::clamp<int64_t>(CeilDiv(wanted, budget_blocks), 1, p.m_tiles);
  if (budget_blocks * p.m_chunks < wanted)
    p.rows_per_block = std::max<int64_t>(1, s.out_h / std::max<int64_t>(1, CeilDiv(wanted, images * p.m_chunks)));
  p.row_blocks = CeilDiv(std::max<int64_t>(1, s.out_h), p.rows_per_block);
  const int64_t items = images * p.row_blocks * p.m_chunks;
  if (items < wanted) p.m_chunks = std::clamp<int64_t>(CeilDiv(wanted, images * p.row_blocks), 1, p.m_tiles);
  // Blocks of even rows, as many as make the items a multiple of the pool's threads where the rows
  // allow: 56 rows in blocks of at most 18 were 18 + 18 + 18 + 2, 36 rows against 20 on 2 threads.
  if (p.threads > 1)
    while (p.row_blocks < s.out_h && (images * p.row_blocks * p.m_chunks) % p.threads != 0) ++p.row_blocks;
  p.rows_per_block = CeilDiv(std::max<int64_t>(1, s.out_h), p.row_blocks);
  return p;
}

int64_t PackedNhwcFloats(const NhwcPlan& p) {
  const ConvShape& s = p.shape;
  const int64_t k = s.channels_per_group() * s.kernel_h * s.kernel_w;
  if (p.depthwise) return s.out_channels * s.kernel_h * s.kernel_w;
  // No tile reads past a group's last block: a tile of two or more blocks runs only where more
  // channels than its first block holds are left, and a narrower one stays in its block.
  const int64_t blocks = CeilDiv(s.outputs_per_group(), kChannelBlock);
  return CheckedMul(CheckedMul(s.group, blocks, "packed W"), CheckedMul(k, kChannelBlock, "packed W"), "packed W");
}

void PackWeightsNhwc(const NhwcPlan& p, const float* w, float* packed) {
  const ConvShape& s = p.shape;
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group(), taps = s.kernel_h * s.kernel_w;
  if (p.depthwise) {  // [tap][channel]
    for (int64_t c = 0; c < s.out_channels; ++c)
      for (int64_t t = 0; t < taps; ++t) packed[t * s.out_channels + c] = w[c * taps + t];
    return;
  }
  std::fill(packed, packed + PackedNhwcFloats(p), 0.0f);
  const int64_t k = cg * taps, blocks = CeilDiv(mg, kChannelBlock);
  for (int64_t g = 0; g < s.group; ++g)
    for (int64_t m = 0; m < mg; ++m) {
      float* block = packed + ((g * blocks + m / kChannelBlock) * k) * kChannelBlock + m % kChannelBlock;
      const float* wm = w + (g * mg + m) * k;  // [c][kh][kw]
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t t = 0; t < taps; ++t) block[(t * cg + c) * kChannelBlock] = wm[c * taps + t];
    }
}

void CheckNhwcPackedWeights(int64_t cg, int64_t mg) {
  if (cg == 1 && mg == 1) throw ConvError("a depthwise conv reads W as ONNX gives it (weight_layout OIHW)");
  if (mg % kChannelBlock != 0)
    throw ConvError("weight_layout " + std::string(kNhwcWeightLayout) + " needs whole blocks of " +
                    std::to_string(kChannelBlock) + " output channels per group, got M/group = " + std::to_string(mg));
}

void RunConvNhwc(const NhwcPlan& p, const float* x, const float* packed_w, const float* bias, const float* residual,
                 float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  const IsaKernels& isa = *p.isa;
  const int64_t cg = s.channels_per_group(), mg = s.outputs_per_group();
  const int64_t x_image = s.in_h * s.in_w * s.in_channels, y_image = s.out_h * s.out_w * s.out_channels;
  const int64_t k = cg * s.kernel_h * s.kernel_w, blocks = CeilDiv(mg, kChannelBlock);
  float lo, hi;
  const bool activation_after = !ClampBounds(p.epilogue, &lo, &hi);
  const int64_t col_stride = p.compact ? s.in_channels : s.stride_w * s.in_channels;
  auto body = [&](int64_t item) {
    const int64_t chunk = item % p.m_chunks;
    const int64_t block = (item / p.m_chunks) % p.row_blocks;
    const int64_t g = (item / (p.m_chunks * p.row_blocks)) % s.group;
    const int64_t n = item / (p.m_chunks * p.row_blocks * s.group);
    const int64_t r0 = p.BlockFirstRow(block), rows = p.BlockRows(block);
    if (rows <= 0) return;
    const int64_t m0 = PartBegin(p.m_tiles, p.m_chunks, chunk) * p.tile_channels;
    const int64_t m1 = p.depthwise ? mg : std::min(mg, PartBegin(p.m_tiles, p.m_chunks, chunk + 1) * p.tile_channels);
    if (m0 >= m1) return;
    const float* x_n = x + n * x_image;
    // Input row r (of the block's panel, or of X) for output row r0 + r's window origin.
    const float* rows_base;
    float* const workspace = AlignedFloats(nhwc_panel, p.workspace_floats());
    float* const sums = workspace + (p.workspace_floats() - p.sums_floats());
    if (p.depthwise_in_place) {
      rows_base = x_n;  // (unused: each row finds its own)
    } else if (p.compact) {
      BuildCompactPanel(p, x_n, r0, rows, workspace);
      rows_base = workspace;
    } else if (p.in_place) {
      rows_base = x_n + r0 * s.stride_h * p.row_floats;
    } else {
      BuildNhwcPanel(p, x_n, r0 * s.stride_h - s.pad_top, p.PanelRows(rows), workspace);
      rows_base = workspace;
    }
    float* y_n = y + n * y_image;
    const float* z_n = residual != nullptr ? residual + n * y_image : nullptr;
    // Where a block's outputs are one run in Y and their inputs one run in X or the compact panel
    // (1x1, read in place or gathered) its rows are one flat row: tiles cross row ends, and only
    // the block's last tile may be narrow.
    const bool flat =
        p.compact || (p.in_place && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1);
    const int64_t width = flat ? rows * s.out_w : s.out_w;
    if (p.depthwise_in_place) {
      for (int64_t r = 0; r < rows; ++r) {
        DepthwiseRowInPlace(p, x_n, r0 + r, packed_w, bias, z_n, y_n, lo, hi, workspace);
      }
    } else if (p.depthwise) {
      for (int64_t r = 0; r < (flat ? 1 : rows); ++r) {  // (flat: the block's rows as one, 1x1 in place)
        const float* x_row = rows_base + r * s.stride_h * p.row_floats;
        const int64_t y_row = (r0 + r) * s.out_w * s.out_channels;
        DepthwiseNhwcArgs a;
        a.x = x_row;
        a.col_stride = col_stride;
        a.taps = p.taps.data();
        a.tap_count = static_cast<int64_t>(p.taps.size());
        a.rows_of_three = s.kernel_w == 3 && s.dilation_w == 1 && s.stride_w <= 2 ? static_cast<int>(s.stride_w) : 0;
        a.w = packed_w + g;
        a.w_stride = s.out_channels;
        a.channels = s.group;  // depthwise items take every channel (group = C = M)
        a.y = y_n + y_row;
        a.y_col_stride = s.out_channels;
        a.cols = width;
        a.bias = bias;
        a.residual = z_n != nullptr ? z_n + y_row : nullptr;
        a.lo = lo;
        a.hi = hi;
        isa.depthwise_nhwc(a);
      }
    }
    const int64_t reduction = p.reduction();
    const int64_t narrow = isa.vector_len;  // channels of a one-vector tile
    // The tile for channels from m on, `left` of the chunk's channels remaining: the group's last
    // channels, if one vector holds them, take one-vector tiles.
    struct Kind {
      int64_t step;
      int columns;
      const NhwcTileFn* fns;
    };
    auto kind = [&](int64_t left) {
      const bool one_vector = left <= narrow && left < p.tile_channels;
      if (one_vector) return Kind{narrow, p.columns1, isa.nhwc_tile1};
      return Kind{p.tile_channels, p.columns, p.three_vectors ? isa.nhwc_tile3 : isa.nhwc_tile};
    };
    auto weights_of = [&](int64_t m) {
      return packed_w + ((g * blocks + m / kChannelBlock) * k) * kChannelBlock + m % kChannelBlock;
    };
    const int64_t tile_w_stride = p.tile_channels / kChannelBlock * k * kChannelBlock;  // one whole tile's weights
    // The tile of `channels` channels from m, `cols` outputs from j of row r, reduction [k0, k1).
    auto run_tile = [&](const NhwcTileFn* fns, int64_t m, int64_t channels, int64_t r, int64_t j, int64_t cols,
                        int64_t k0, int64_t k1, int64_t tiles = 1) {
      const int64_t y_at = (r0 + r) * s.out_w * s.out_channels + g * mg + j * s.out_channels + m;
      NhwcTileArgs a;
      a.x = rows_base + r * s.stride_h * p.row_floats + g * cg + j * col_stride;
      a.col_stride = col_stride;
      a.taps = p.taps.data();
      a.tap_count = static_cast<int64_t>(p.taps.size());
      a.run = p.run;
      a.w = weights_of(m);
      a.block_stride = k * kChannelBlock;
      a.y = y_n + y_at;
      a.y_col_stride = s.out_channels;
      a.cols = cols;
      a.channels = channels;
      a.bias = bias != nullptr ? bias + g * mg + m : nullptr;
      a.residual = z_n != nullptr ? z_n + y_at : nullptr;
      a.lo = lo;
      a.hi = hi;
      a.k_begin = k0;
      a.k_end = k1;
      float* const tile_sums = sums + (r * width + j) * p.tile_channels;
      a.acc_in = k0 > 0 ? tile_sums : nullptr;
      a.acc_out = k1 < reduction ? tile_sums : nullptr;
      a.tiles = tiles;
      a.tile_w_stride = tile_w_stride;
      fns[cols](a);
    };
    if (!p.depthwise && p.positions_outer) {
      // One run of the reduction: each tile of outputs takes a chunk's channels in turn, so the
      // tile's inputs stay in L1, the chunk's weights in L2, and its Y rows are written whole.
      for (int64_t c0 = m0; c0 < m1; c0 += p.chunk_channels) {
        const int64_t c1 = std::min(m1, c0 + p.chunk_channels);
        for (int64_t r = 0; r < (flat ? 1 : rows); ++r) {
          const int64_t tiles = CeilDiv(width, p.columns);
          for (int64_t t = 0; t < tiles; ++t) {
            const int64_t j = PartBegin(width, tiles, t), cols = PartSize(width, tiles, t);
            if (p.prefetch_inputs && t + 1 < tiles)  // the next tile's inputs (NhwcPlan::prefetch_inputs)
              PrefetchColumns(rows_base + r * s.stride_h * p.row_floats + g * cg + p.taps[0] +
                                  PartBegin(width, tiles, t + 1) * col_stride,
                              PartSize(width, tiles, t + 1), col_stride, reduction);
            for (int64_t m = c0, step = 0; m < c1; m += step) {
              const Kind tile = kind(c1 - m);
              // The whole tiles from m in one call, then what is left.
              const int64_t whole = tile.step == p.tile_channels ? (c1 - m) / p.tile_channels : 0;
              step = whole > 0 ? whole * p.tile_channels : tile.step;
              run_tile(tile.fns, m, whole > 0 ? p.tile_channels : std::min(step, c1 - m), r, j, cols, 0, reduction,
                       std::max<int64_t>(1, whole));
            }
          }
        }
      }
    }
    for (int64_t m = m0, step = 0; m < m1 && !p.depthwise && !p.positions_outer; m += step) {
      const Kind tile = kind(m1 - m);
      step = tile.step;
      const int64_t tile_blocks = CeilDiv(step, kChannelBlock);
      // (One run at least: with no input channels the tiles store B + Z.)
      for (int64_t k0 = 0; k0 == 0 || k0 < reduction; k0 += p.k_run) {
        const int64_t k1 = std::min(reduction, k0 + p.k_run);
        // The next pass: this tile's next run, else the next tile's first.
        const float* next_w = nullptr;
        int64_t next_floats = 0, next_blocks = tile_blocks;
        if (k1 < reduction) {
          next_w = weights_of(m) + k1 * kChannelBlock;
          next_floats = (std::min(reduction, k1 + p.k_run) - k1) * kChannelBlock;
        } else if (m + step < m1) {
          const int64_t next_block = (m + step) / kChannelBlock;
          next_w = weights_of(m + step);
          next_floats = std::min(p.k_run, reduction) * kChannelBlock;
          next_blocks = std::min(tile_blocks, blocks - next_block);
        }
        // The row in the fewest tiles, as even as PartSize cuts them (7 on AVX2: 4 + 3, not 6 + 1):
        // a narrow tile has too few accumulators to keep the FMAs busy.
        const int64_t tiles = CeilDiv(width, tile.columns);
        const int64_t pass_tiles = (flat ? 1 : rows) * tiles;
        int64_t pass_tile = 0;
        for (int64_t r = 0; r < (flat ? 1 : rows); ++r) {
          for (int64_t t = 0; t < tiles; ++t) {
            const int64_t j = PartBegin(width, tiles, t), cols = PartSize(width, tiles, t);
            if (next_w != nullptr)
              PrefetchSlice(next_w, next_floats, k * kChannelBlock, next_blocks, pass_tile++, pass_tiles);
            run_tile(tile.fns, m, std::min(step, m1 - m), r, j, cols, k0, k1);
          }
        }
      }
    }
    if (activation_after) {
      const int64_t c0 = p.depthwise ? 0 : g * mg + m0, count = p.depthwise ? s.out_channels : m1 - m0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < s.out_w; ++j) {
          float* out = y_n + ((r0 + r) * s.out_w + j) * s.out_channels + c0;
          ApplyEpilogue(out, 0.0f, nullptr, out, count, p.epilogue);
        }
    }
    ReleaseIfLarge(nhwc_panel, kKeptWorkspaceFloats);
  };
  // Depthwise items take all channels of a block of rows: one "group" per item, not one per channel.
  if (p.depthwise) {
    const int64_t items = std::max<int64_t>(1, s.batch) * p.row_blocks;
    parallel(s.batch == 0 ? 0 : items,
             [&](int64_t item) { body((item / p.row_blocks) * s.group * p.row_blocks + item % p.row_blocks); });
  } else {
    parallel(p.work_items(), body);
  }
}

}  // namespace im2win
