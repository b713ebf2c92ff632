// Weights packed once into the order the micro-kernels read them.
#pragma once

#include <cstdint>
#include <string>

#include "conv/conv_params.h"
#include "kernels/microkernel.h"

namespace im2win {

enum class TileFamily { kPositions, kChannels };
enum class TilePreference { kAuto, kPositions, kChannels };

// Channel tiles need whole blocks of kChannelBlock output channels per group and an ISA that has
// them; everything else (depthwise, odd channel counts, the portable path) uses position tiles.
// kAuto takes channel tiles where position tiles would spend more than a tenth of their lanes on
// other than outputs (the columns a window row carries past the output width; the end of a small
// image's last vector), and position tiles elsewhere, where they measure faster.
TileFamily ChooseTileFamily(const IsaKernels& isa, const ConvShape& s, TilePreference preference);

// name: "positions", "channels", "auto", or empty for IM2WIN_TILES (default auto). Forces a tile
// family where the layer allows it, so that tests can run every kernel on one machine.
TilePreference SelectTilePreference(const std::string& name = "");

// W is ONNX's OIHW: M x K with K = C/group * Kh * Kw.
//  - kPositions: within each group, output channels are cut into tiles of kTileM (the last one of
//    a group may be smaller), each stored as [k][channel in tile]; the tile that starts at output
//    channel m begins at m * K, and the packed array has W's size.
//  - kChannels: within each group, blocks of kChannelBlock output channels, each [k][16]; the block
//    that starts at output channel m begins at m * K.
// Either way the packed array has W's size.
void PackWeights(TileFamily family, const float* w, int64_t out_channels, int64_t group, int64_t k, float* packed);
// The inverse: packed weights back to OIHW.
void UnpackWeights(TileFamily family, const float* packed, int64_t out_channels, int64_t group, int64_t k, float* w);

// weight_layout attribute values: "OIHW" (ONNX's), or a packed order the rewriter writes so the
// session holds one copy of the weights: "im2win.positions6", "im2win.channels16".
const char* WeightLayoutName(TileFamily family);
// Returns false for "OIHW"; true and the family for a packed layout; throws ConvError otherwise.
bool ParseWeightLayout(const std::string& name, TileFamily* family);

}  // namespace im2win
