// Weights packed once into the order the micro-kernels read them.
#pragma once

#include <cstdint>

namespace im2win {

// W is ONNX's OIHW: M x K with K = C/group * Kh * Kw. Within each group, output channels are cut
// into tiles of kTileM (the last tile of a group may be smaller) and each tile is stored as
// [k][channel in tile], so a tile's weights are one consecutive stream. The packed array has the
// same size as W, and the tile that starts at output channel m begins at m * K.
void PackWeights(const float* w, int64_t out_channels, int64_t group, int64_t k, float* packed);

}  // namespace im2win
