#include "conv/winograd_nhwc.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/epilogue.h"
#include "conv/workspace.h"

namespace im2win {
namespace {

// Tiles a block aims at: its GEMMs read U[i] (C x M) once per block, so wide blocks for deep layers
// (14x14x512 on Zen 3, F(2x2, 3x3): blocks of 49 tiles 0.53x the direct conv's time, of 14 tiles
// 0.81x); blocks of 28-56 tiles ran alike on 64-256 channels (0.55-0.62x).
constexpr double kBlockTiles = 48.0;
// Narrower C or M leaves the transforms most of the time: 56x56, C = M = 16 took 1.10x the direct
// conv's time, C = M = 32 0.84x, C = 128 -> M = 32 0.56-0.94x (Zen 3).
constexpr int64_t kMinChannels = 32;
// F(4x4, 3x3) where both sides of the output map are at least this; F(2x2, 3x3) on smaller maps,
// whose few 4 x 4 tiles make short GEMMs that read U (36 matrices, not 16) as often. Against
// F(2x2, 3x3) on Zen 3 (one layer, 1 thread): 56x56x64 0.66x the time, 28x28x128 0.76x, 28x28x512
// 0.66x, 224x224x64 and 112x112x128 0.64-0.65x; 14x14x256 1.10x, 14x14x512 0.96x, 7x7x512 1.25x.
constexpr int64_t kMinMapForTile4 = 16;

// The most a block's V and M take together (no network comes near: 7 MiB for F(4x4, 3x3) on 512
// channels), so that a model's sizes cannot make one block's workspace grow without bound.
constexpr double kMaxBlockBytes = 32.0 * (1 << 20);

thread_local std::vector<float> winograd_v, winograd_m, winograd_zeros;

// The 1x1 conv C -> M over `tiles` positions each GEMM runs.
ConvShape GemmShape(const ConvShape& s, int64_t tiles) {
  ConvShape g;
  g.batch = 1;
  g.in_channels = s.in_channels;
  g.out_channels = s.out_channels;
  g.in_h = g.out_h = 1;
  g.in_w = g.out_w = std::max<int64_t>(1, tiles);
  return g;
}

// One block's work: tiles [first, first + count) of all images, V and M its matrices (a x a each).
struct Block {
  const WinogradPlan& p;
  const float* x;
  const float* u;
  const float* bias;
  const float* residual;
  float* y;
  int64_t first, count;
  float* v;
  float* m;
  const float* zeros;  // C zeros, for inputs past X
  float lo, hi;
  bool activation_after;

  // Tile t (of all images): its image, tile row and column.
  void Locate(int64_t t, int64_t* n, int64_t* ti, int64_t* tj) const {
    const int64_t per_image = p.tiles_h * p.tiles_w;
    *n = t / per_image;
    *ti = t % per_image / p.tiles_w;
    *tj = t % p.tiles_w;
  }

  void Input(int64_t begin, int64_t end) const {
    const ConvShape& s = p.shape;
    const int64_t c = s.in_channels;
    WinogradInputArgs a;
    a.v_stride = count * c;
    a.channels = c;
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, ti, tj;
      Locate(first + t, &n, &ti, &tj);
      const float* x_n = x + n * s.in_h * s.in_w * c;
      const int64_t y0 = p.tile * ti - s.pad_top, x0 = p.tile * tj - s.pad_left;
      for (int r = 0; r < p.alpha; ++r)
        for (int q = 0; q < p.alpha; ++q) {
          const int64_t row = y0 + r, col = x0 + q;
          const bool inside = row >= 0 && row < s.in_h && col >= 0 && col < s.in_w;
          a.d[r * p.alpha + q] = inside ? x_n + (row * s.in_w + col) * c : zeros;
        }
      a.v = v + t * c;
      p.isa->winograd_input[p.tile == 4](a);
    }
  }

  void Gemm(int64_t i) const {
    const ConvShape& s = p.shape;
    const NhwcPlan& g = count == p.gemm.shape.in_w ? p.gemm : p.gemm_last;
    static const ParallelRunner serial = ThreadRunner(1);
    // (U[i] as WinogradPackedFloats lays it out: with C = M = 1 the GEMM's plan is a depthwise one,
    // which reads the one weight where the block order has it.)
    RunConvNhwc(g, v + i * count * s.in_channels, u + i * (WinogradPackedFloats(s, p.tile) / p.products()), nullptr,
                nullptr,
                m + i * count * s.out_channels, serial);
  }

  void Output(int64_t begin, int64_t end) const {
    const ConvShape& s = p.shape;
    const int64_t mc = s.out_channels;
    WinogradOutputArgs a;
    a.m_stride = count * mc;
    a.bias = bias;
    a.channels = mc;
    a.lo = lo;
    a.hi = hi;
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, ti, tj;
      Locate(first + t, &n, &ti, &tj);
      const int64_t image = n * s.out_h * s.out_w * mc;
      for (int r = 0; r < p.tile; ++r)
        for (int q = 0; q < p.tile; ++q) {
          const int64_t row = p.tile * ti + r, col = p.tile * tj + q;
          const bool inside = row < s.out_h && col < s.out_w;
          const int64_t at = image + (row * s.out_w + col) * mc;
          a.y[r * p.tile + q] = inside ? y + at : nullptr;
          a.z[r * p.tile + q] = inside && residual != nullptr ? residual + at : nullptr;
        }
      a.m = m + t * mc;
      p.isa->winograd_output[p.tile == 4](a);
      if (activation_after)
        for (int i = 0; i < p.tile * p.tile; ++i)
          if (a.y[i] != nullptr) ApplyEpilogue(a.y[i], 0.0f, nullptr, a.y[i], mc, p.epilogue);
    }
  }
};

}  // namespace

ConvAlgorithm ParseConvAlgorithm(const std::string& name) {
  if (name.empty() || name == "auto") return ConvAlgorithm::kAuto;
  if (name == "direct") return ConvAlgorithm::kDirect;
  if (name == "winograd") return ConvAlgorithm::kWinograd;
  throw ConvError("attribute 'algorithm' must be \"auto\", \"direct\" or \"winograd\", got \"" + name + "\"");
}

bool WinogradApplies(const ConvShape& s, bool x_nchw, std::string* why) {
  const char* reason = nullptr;
  if (s.spatial_rank != 2 || s.kernel_h != 3 || s.kernel_w != 3)
    reason = "a 2-D 3x3 kernel";
  else if (s.stride_h != 1 || s.stride_w != 1)
    reason = "strides 1";
  else if (s.dilation_h != 1 || s.dilation_w != 1)
    reason = "dilations 1";
  else if (s.group != 1)
    reason = "group 1";
  else if (x_nchw)
    reason = "X channels-last (no input_layout NCHW)";
  if (reason != nullptr && why != nullptr) *why = reason;
  return reason == nullptr;
}

bool WinogradPays(const ConvShape& s, bool x_nchw) {
  return WinogradApplies(s, x_nchw) && s.in_channels >= kMinChannels && s.out_channels >= kMinChannels;
}

int WinogradTile(const ConvShape& s) {
  if (const char* forced = std::getenv("IM2WIN_WINOGRAD_TILE")) {  // 2 or 4, for measuring
    const int tile = std::atoi(forced);
    if (tile == 2 || tile == 4) return tile;
  }
  return s.out_h >= kMinMapForTile4 && s.out_w >= kMinMapForTile4 ? 4 : 2;
}

bool UseWinograd(ConvAlgorithm asked, const ConvShape& s, bool x_nchw) {
  switch (asked) {
    case ConvAlgorithm::kDirect: return false;
    case ConvAlgorithm::kAuto: return WinogradPays(s, x_nchw);
    case ConvAlgorithm::kWinograd: break;
  }
  std::string why;
  if (!WinogradApplies(s, x_nchw, &why)) throw ConvError("algorithm \"winograd\" needs " + why);
  return true;
}

WinogradPlan MakeWinogradPlan(const ConvShape& s, const Epilogue& epilogue, const IsaKernels& isa, int threads,
                              int64_t l2_bytes, int tile) {
  WinogradPlan p;
  p.tile = tile == 2 || tile == 4 ? tile : WinogradTile(s);
  p.alpha = p.tile + 2;
  p.shape = s;
  p.epilogue = epilogue;
  p.isa = &isa;
  p.threads = std::clamp(threads, 1, 1024);
  p.tiles_h = CeilDiv(s.out_h, p.tile);
  p.tiles_w = CeilDiv(s.out_w, p.tile);
  p.tiles = CheckedMul(CheckedMul(std::max<int64_t>(0, s.batch), p.tiles_h, "tiles"), p.tiles_w, "tiles");
  p.blocks = std::max<int64_t>(1, std::llround(static_cast<double>(p.tiles) / kBlockTiles));
  // A block's V and M within kMaxBlockBytes, however wide C and M are (sizes a model gives).
  const double tile_bytes = static_cast<double>(p.products()) * (static_cast<double>(s.in_channels) + s.out_channels) * 4;
  const double most_tiles = std::max(1.0, std::floor(kMaxBlockBytes / tile_bytes));
  if (static_cast<double>(p.tiles) / static_cast<double>(p.blocks) > most_tiles)
    p.blocks = static_cast<int64_t>(std::ceil(static_cast<double>(p.tiles) / most_tiles));
  // Enough blocks for the pool: a multiple of its threads, where the tiles allow.
  if (p.threads > 1 && p.blocks >= p.threads) p.blocks = CeilDiv(p.blocks, p.threads) * p.threads;
  p.blocks = std::clamp<int64_t>(p.blocks, 1, std::max<int64_t>(1, p.tiles));
  p.blocks_parallel = p.threads == 1 || p.blocks >= p.threads;
  p.block_tiles = CeilDiv(std::max<int64_t>(1, p.tiles), p.blocks);
  p.gemm = MakeNhwcPlan(GemmShape(s, p.block_tiles), Epilogue{}, isa, 1, l2_bytes);
  p.gemm_last = MakeNhwcPlan(GemmShape(s, std::max<int64_t>(1, p.tiles) / p.blocks), Epilogue{}, isa, 1, l2_bytes);
  return p;
}

int WinogradLayoutTile(const std::string& name) {
  if (name == kWinograd2WeightLayout) return 2;
  if (name == kWinograd4WeightLayout) return 4;
  return 0;
}

const char* WinogradLayoutName(int tile) { return tile == 4 ? kWinograd4WeightLayout : kWinograd2WeightLayout; }

std::vector<int64_t> WinogradKernelDims(const std::vector<int64_t>& u, int tile) {
  const int64_t alpha = tile + 2;
  if (u.size() != 4 || u[0] <= 0 || u[0] % kChannelBlock != 0 || u[1] <= 0 || u[2] != alpha || u[3] != alpha)
    throw ConvError("weight_layout " + std::string(WinogradLayoutName(tile)) +
                    " holds U of a 3x3 kernel as [M, C, " + std::to_string(alpha) + ", " + std::to_string(alpha) +
                    "] with M a multiple of " + std::to_string(kChannelBlock) + ", got W " + DimsToString(u));
  return {u[0], u[1], 3, 3};
}

int64_t WinogradPackedFloats(const ConvShape& s, int tile) {
  const int64_t products = (tile + 2) * (tile + 2);
  return CheckedMul(products, CheckedMul(CeilDiv(s.out_channels, kChannelBlock) * kChannelBlock, s.in_channels, "U"),
                    "U");
}

void PackWeightsWinograd(const ConvShape& s, int tile, const float* w, bool nhwc_packed, float* u) {
  // G of F(2x2, 3x3) and of F(4x4, 3x3) (interpolation points 0, 1, -1, (2, -2,) infinity).
  static const double g2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static const double g4[6][3] = {{0.25, 0, 0},
                                  {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                  {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                  {0, 0, 1}};
  const int alpha = tile + 2;
  const double(*gm)[3] = tile == 4 ? g4 : g2;
  const int64_t c_count = s.in_channels, m_count = s.out_channels;
  const int64_t per_i = WinogradPackedFloats(s, tile) / (alpha * alpha), k = c_count * 9;
  std::fill(u, u + WinogradPackedFloats(s, tile), 0.0f);
  for (int64_t m = 0; m < m_count; ++m)
    for (int64_t c = 0; c < c_count; ++c) {
      // g[kh][kw]: OIHW, or kNhwcWeightLayout's [block][kh][kw][c][16] (one group).
      double g[3][3];
      for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw)
          g[kh][kw] = nhwc_packed ? w[((m / kChannelBlock) * k + (kh * 3 + kw) * c_count + c) * kChannelBlock +
                                      m % kChannelBlock]
                                  : w[(m * c_count + c) * 9 + kh * 3 + kw];
      // G g G^T, in double: U is rounded once.
      double t[6][3] = {};
      for (int r = 0; r < alpha; ++r)
        for (int j = 0; j < 3; ++j)
          for (int i = 0; i < 3; ++i) t[r][j] += gm[r][i] * g[i][j];
      for (int r = 0; r < alpha; ++r)
        for (int q = 0; q < alpha; ++q) {
          double sum = 0;
          for (int j = 0; j < 3; ++j) sum += t[r][j] * gm[q][j];
          u[(r * alpha + q) * per_i + ((m / kChannelBlock) * c_count + c) * kChannelBlock + m % kChannelBlock] =
              static_cast<float>(sum);
        }
    }
}

void RunWinogradNhwc(const WinogradPlan& p, const float* x, const float* u, const float* bias, const float* residual,
                     float* y, const ParallelRunner& parallel) {
  const ConvShape& s = p.shape;
  if (p.tiles == 0) return;
  float lo, hi;
  const bool activation_after = !ClampBounds(p.epilogue, &lo, &hi);
  auto block_at = [&](int64_t b, float* v, float* m, const float* zeros) {
    return Block{p, x, u, bias, residual, y, PartBegin(p.tiles, p.blocks, b), PartSize(p.tiles, p.blocks, b),
                 v, m, zeros, lo, hi, activation_after};
  };
  auto zeros_here = [&] {
    if (static_cast<int64_t>(winograd_zeros.size()) < s.in_channels) winograd_zeros.assign(s.in_channels, 0.0f);
    return winograd_zeros.data();
  };
  if (p.blocks_parallel) {
    // A block an item: its V and M stay in this thread's cache from one step to the next.
    parallel(p.blocks, [&](int64_t b) {
      float* const v = AlignedFloats(winograd_v, p.v_floats());
      float* const m = AlignedFloats(winograd_m, p.m_floats());
      const Block block = block_at(b, v, m, zeros_here());
      block.Input(0, block.count);
      for (int64_t i = 0; i < p.products(); ++i) block.Gemm(i);
      block.Output(0, block.count);
      ReleaseIfLarge(winograd_v, kKeptWorkspaceFloats);
      ReleaseIfLarge(winograd_m, kKeptWorkspaceFloats);
    });
    return;
  }
  // Fewer blocks than threads (deep layers on small maps): each step of a block across the pool,
  // the GEMMs one an item, each reading its own U[i].
  float* const v = AlignedFloats(winograd_v, p.v_floats());
  float* const m = AlignedFloats(winograd_m, p.m_floats());
  const float* const zeros = zeros_here();
  for (int64_t b = 0; b < p.blocks; ++b) {
    const Block block = block_at(b, v, m, zeros);
    const int64_t parts = std::min<int64_t>(block.count, 2 * p.threads);
    parallel(parts, [&](int64_t i) {
      block.Input(PartBegin(block.count, parts, i), PartBegin(block.count, parts, i + 1));
    });
    parallel(p.products(), [&](int64_t i) { block.Gemm(i); });
    parallel(parts, [&](int64_t i) {
      block.Output(PartBegin(block.count, parts, i), PartBegin(block.count, parts, i + 1));
    });
  }
  ReleaseIfLarge(winograd_v, kKeptWorkspaceFloats);
  ReleaseIfLarge(winograd_m, kKeptWorkspaceFloats);
}

}  // namespace im2win
