// Winograd's minimal filtering for channels-last 3x3 convs of stride 1 (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016): F(2x2, 3x3) takes each 2 x 2 tile of
// outputs from its 4 x 4 inputs with 16 products per input and output channel instead of 36 (2.25x
// fewer multiplications), F(4x4, 3x3) each 4 x 4 tile from 6 x 6 inputs with 36 instead of 144
// (4x). The inputs of a block of tiles are transformed (V = B^T d B, a x a matrices of tiles x C),
// the products are a x a GEMMs of V[i] by the transformed weights U[i] (C x M), run as 1x1 convs by
// the channels-last tiles (conv_nhwc.h), and each tile's products go back (A^T m A) with the fused
// epilogue to Y.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "conv/conv_driver.h"
#include "conv/conv_nhwc.h"
#include "conv/conv_params.h"
#include "kernels/microkernel.h"

namespace im2win {

// How a channels-last conv chooses its algorithm (the op's `algorithm` attribute): "auto" runs
// Winograd where the shape allows it and it pays (WinogradPays), "direct" never, "winograd"
// wherever the shape allows it.
enum class ConvAlgorithm { kAuto, kDirect, kWinograd };
// Throws ConvError naming the values for any other name ("" is "auto").
ConvAlgorithm ParseConvAlgorithm(const std::string& name);

// Whether Winograd F(2x2, 3x3) computes this conv: 2-D, 3x3, stride 1, no dilation, one group, X
// channels-last (not input_layout NCHW). If not and `why` is set, says why there.
bool WinogradApplies(const ConvShape& shape, bool x_nchw, std::string* why = nullptr);
// Whether it is chosen under "auto": where it applies and C and M are wide enough that the
// GEMMs, not the transforms, take the time (see design.md).
bool WinogradPays(const ConvShape& shape, bool x_nchw);
// The outputs a tile side (2: F(2x2, 3x3), or 4: F(4x4, 3x3)) a shape Winograd computes takes: 4
// where the output map is wide enough to fill its tiles (see design.md). Depends on the shape only,
// so the answer is the same on every CPU. IM2WIN_WINOGRAD_TILE (2 or 4) forces it, for measuring.
int WinogradTile(const ConvShape& shape);
// The algorithm a channels-last conv of this shape runs under `asked`: true for Winograd. Throws
// ConvError where "winograd" was asked of a shape it cannot compute.
bool UseWinograd(ConvAlgorithm asked, const ConvShape& shape, bool x_nchw);

struct WinogradPlan {
  int tile = 2;                      // outputs a tile side (WinogradTile)
  int alpha = 4;                     // inputs a tile side, tile + 2
  int products() const { return alpha * alpha; }
  ConvShape shape;
  Epilogue epilogue;
  const IsaKernels* isa = nullptr;
  int threads = 1;
  int64_t tiles_h = 0, tiles_w = 0;  // 2 x 2 output tiles of one image
  int64_t tiles = 0;                 // of every image
  // Blocks of consecutive tiles (across images at the ends of one), as even as PartBegin cuts.
  int64_t blocks = 1, block_tiles = 0;
  // Blocks run one per item of the pool where there are enough of them; else one at a time, each
  // step (transform, the 16 GEMMs, transform back) cut across the pool.
  bool blocks_parallel = false;
  NhwcPlan gemm;       // a 1x1 conv over the widest block's tiles, C -> M, one thread
  NhwcPlan gemm_last;  // over the narrowest block's
  int64_t v_floats() const { return products() * block_tiles * shape.in_channels; }
  int64_t m_floats() const { return products() * block_tiles * shape.out_channels; }
};

// l2_bytes as MakeNhwcPlan takes it (0: this CPU's); tile 2 or 4 where U was made for it (stored
// by the rewriter), else 0 (WinogradTile). The shape must be one WinogradApplies takes.
WinogradPlan MakeWinogradPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa,
                              int threads = 1, int64_t l2_bytes = 0, int tile = 0);

// weight_layout names of W stored as U by the rewriter, read in place (a session then holds U, not
// W and U): shape [M, C, a, a] (a = tile + 2) holding PackWeightsWinograd's order for that tile,
// M a multiple of 16 (no padding), for a 3x3 kernel.
inline constexpr const char kWinograd2WeightLayout[] = "im2win.winograd2";
inline constexpr const char kWinograd4WeightLayout[] = "im2win.winograd4";
// The tile of a Winograd weight_layout name: 2 or 4; 0 for any other name. And back.
int WinogradLayoutTile(const std::string& name);
const char* WinogradLayoutName(int tile);
// The conv's W dims for U stored for `tile`: [M, C, a, a] as [M, C, 3, 3]. Throws ConvError,
// naming the layout, for any other shape.
std::vector<int64_t> WinogradKernelDims(const std::vector<int64_t>& u_dims, int tile);

// Floats U takes for tiles of `tile` outputs a side: (tile + 2)^2 x the packed weights of a 1x1
// conv C -> M (PackedNhwcFloats).
int64_t WinogradPackedFloats(const ConvShape& shape, int tile);
// U[i] = (G g G^T)[i] for every output and input channel, each i in PackWeightsNhwc's order for a
// 1x1 conv, from W as ONNX gives it (OIHW) or, nhwc_packed, in kNhwcWeightLayout's order.
void PackWeightsWinograd(const ConvShape& shape, int tile, const float* w, bool nhwc_packed, float* u);

void RunWinogradNhwc(const WinogradPlan& plan, const float* x, const float* u, const float* bias,
                     const float* residual, float* y, const ParallelRunner& parallel);

}  // namespace im2win
