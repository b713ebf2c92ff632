// The micro-kernel contract shared by every ISA: one register tile of up to kTileM output
// channels x tile_positions consecutive panel positions, reduced over C/group x Kh x Kw.
// A kernel knows pointers and counts only.
#pragma once

#include <cstdint>

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
  float* out;              // result: rm rows of out_stride floats
  int64_t out_stride;
};

using TileFn = void (*)(const TileArgs&);

struct IsaKernels {
  const char* name;
  int vector_len;      // floats per vector
  int tile_vectors;    // vectors of positions in a full tile
  // tile[rm][rv]: rm output channels (1..kTileM) x rv vectors of positions (1..tile_vectors);
  // narrower tiles finish a block without computing lanes that would be dropped.
  TileFn tile[kTileM + 1][kMaxTileVectors + 1];
  int tile_positions() const { return vector_len * tile_vectors; }
};

// One table per ISA, each defined in its own file compiled with that ISA's flags only.
const IsaKernels& GenericKernels();
const IsaKernels& Avx2Kernels();
const IsaKernels& Avx512Kernels();

}  // namespace im2win
