// Winograd F(2x2, 3x3) for channels-last 3x3 convs of stride 1 (Lavin and Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2016): each 2 x 2 tile of outputs from its 4 x 4 inputs with
// 16 products per input and output channel instead of 36, 2.25x fewer multiplications. The inputs
// of a block of tiles are transformed (V = B^T d B, 16 matrices of tiles x C), the 16 products are
// 16 GEMMs of V[i] by the transformed weights U[i] (C x M), run as 1x1 convs by the channels-last
// tiles (conv_nhwc.h), and each tile's products go back (A^T m A) with the fused epilogue to Y.
#pragma once

#include <cstdint>
#include <string>

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
// 16 GEMMs, not the transforms, take the time (see design.md).
bool WinogradPays(const ConvShape& shape, bool x_nchw);
// The algorithm a channels-last conv of this shape runs under `asked`: true for Winograd. Throws
// ConvError where "winograd" was asked of a shape it cannot compute.
bool UseWinograd(ConvAlgorithm asked, const ConvShape& shape, bool x_nchw);

struct WinogradPlan {
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
  int64_t v_floats() const { return 16 * block_tiles * shape.in_channels; }
  int64_t m_floats() const { return 16 * block_tiles * shape.out_channels; }
};

// l2_bytes as MakeNhwcPlan takes it (0: this CPU's). The shape must be one WinogradApplies takes.
WinogradPlan MakeWinogradPlan(const ConvShape& shape, const Epilogue& epilogue, const IsaKernels& isa,
                              int threads = 1, int64_t l2_bytes = 0);

// Floats U takes: 16 x the packed weights of a 1x1 conv C -> M (PackedNhwcFloats).
int64_t WinogradPackedFloats(const ConvShape& shape);
// U[i] = (G g G^T)[i] for every output and input channel, each i in PackWeightsNhwc's order for a
// 1x1 conv, from W as ONNX gives it (OIHW) or, nhwc_packed, in kNhwcWeightLayout's order.
void PackWeightsWinograd(const ConvShape& shape, const float* w, bool nhwc_packed, float* u);

void RunWinogradNhwc(const WinogradPlan& plan, const float* x, const float* u, const float* bias,
                     const float* residual, float* y, const ParallelRunner& parallel);

}  // namespace im2win
