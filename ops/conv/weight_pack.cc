#include "conv/weight_pack.h"

#include <algorithm>
#include <cstdlib>

namespace im2win {

TileFamily ChooseTileFamily(const IsaKernels& isa, const ConvShape& s, TilePreference preference) {
  const bool channels_possible = isa.channel_vectors > 0 && s.outputs_per_group() % kChannelBlock == 0;
  if (!channels_possible || preference == TilePreference::kPositions) return TileFamily::kPositions;
  if (preference == TilePreference::kChannels) return TileFamily::kChannels;
  // Share of position-tile lanes that are outputs: not the columns a window row carries past the
  // output width, nor the rest of the image's last vector.
  const int64_t row_len = s.out_w + ((s.kernel_w - 1) * s.dilation_w) / s.stride_w;
  const int64_t positions = s.out_h * row_len;
  const int64_t lanes = (positions + isa.vector_len - 1) / isa.vector_len * isa.vector_len;
  const double position_lanes_used = static_cast<double>(s.out_w * s.out_h) / static_cast<double>(lanes);
  if (position_lanes_used < 0.9) return TileFamily::kChannels;
  // A long reduction hides the channel tile's transposing store; on short rows it also beats the
  // position tiles' columns past the output width (measured on the benchmark's layers: e.g.
  // 512x28x28 3x3 +10%, 1024x14x14 1x1 +15%; while 64x56x56 1x1 loses 17% as channels). From 256
  // on rows of 14 (was 384): 256->1024 1x1 on 14x14 took 0.83-0.94x the time as channels on the
  // Xeon (AVX2 within 2%), whole ResNet-50 0.99x (1 thread), 0.95x (2 threads), 1.00x (AVX2).
  const int64_t k = s.channels_per_group() * s.kernel_h * s.kernel_w;
  return k >= 1024 || (k >= 256 && s.out_w <= 14) ? TileFamily::kChannels : TileFamily::kPositions;
}

namespace {

// Visits every weight as (index in OIHW, index when packed).
template <typename F>
void ForEachWeight(TileFamily family, int64_t out_channels, int64_t group, int64_t k, F visit) {
  const int64_t per_group = out_channels / group;
  const int64_t block = family == TileFamily::kChannels ? kChannelBlock : kTileM;
  for (int64_t g = 0; g < group; ++g) {
    for (int64_t m0 = 0; m0 < per_group; m0 += block) {
      const int64_t rm = std::min<int64_t>(block, per_group - m0);
      const int64_t first = g * per_group + m0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t m = 0; m < rm; ++m) visit(first * k + m * k + i, first * k + i * rm + m);
    }
  }
}

}  // namespace

void PackWeights(TileFamily family, const float* w, int64_t out_channels, int64_t group, int64_t k, float* packed) {
  ForEachWeight(family, out_channels, group, k, [&](int64_t plain, int64_t tiled) { packed[tiled] = w[plain]; });
}

void UnpackWeights(TileFamily family, const float* packed, int64_t out_channels, int64_t group, int64_t k, float* w) {
  ForEachWeight(family, out_channels, group, k, [&](int64_t plain, int64_t tiled) { w[plain] = packed[tiled]; });
}

const char* WeightLayoutName(TileFamily family) {
  return family == TileFamily::kChannels ? "im2win.channels16" : "im2win.positions6";
}

bool ParseWeightLayout(const std::string& name, TileFamily* family) {
  if (name == "OIHW") return false;
  for (TileFamily f : {TileFamily::kPositions, TileFamily::kChannels})
    if (name == WeightLayoutName(f)) {
      *family = f;
      return true;
    }
  throw ConvError("weight_layout '" + name + "' is not supported (OIHW, " + WeightLayoutName(TileFamily::kPositions) +
                  " or " + WeightLayoutName(TileFamily::kChannels) + ")");
}

TilePreference SelectTilePreference(const std::string& requested) {
  std::string name = requested;
  if (name.empty()) {
    const char* env = std::getenv("IM2WIN_TILES");
    if (env != nullptr) name = env;
  }
  if (name.empty() || name == "auto") return TilePreference::kAuto;
  if (name == "positions") return TilePreference::kPositions;
  if (name == "channels") return TilePreference::kChannels;
  throw ConvError("unknown tile family '" + name + "' (IM2WIN_TILES takes positions, channels or auto)");
}

}  // namespace im2win
