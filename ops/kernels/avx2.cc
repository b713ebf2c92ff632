// AVX2 + FMA micro-kernels: 8 floats per vector. Position tiles of 6 channels x 16 positions,
// channel tiles of 16 channels x 6 outputs (12 accumulators + 2 vectors + 1 broadcast of the 16
// ymm registers) or 8 channels x 12 outputs (7-wide rows fit whole: 8x1x7).
// Compiled with -mavx2 -mfma.
#include <immintrin.h>

#include "kernels/microkernel.h"

namespace im2win {
namespace avx2 {
namespace {

struct V {
  using T = __m256;
  static constexpr int kLanes = 8;
  static T Zero() { return _mm256_setzero_ps(); }
  static T Load(const float* p) { return _mm256_loadu_ps(p); }
  static T Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static T Fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static void Store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T Add(T a, T b) { return _mm256_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T Min(T a, T b) { return _mm256_min_ps(a, b); }
  static T Max(T a, T b) { return _mm256_max_ps(a, b); }
  // Lane i is on when i < n: compare a lane index vector against n.
  static __m256i Mask(int64_t n) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)), index);
  }
  // Whole vectors take the plain load (a masked one costs more on some CPUs).
  static T LoadPartial(const float* p, int64_t n) { return n >= kLanes ? Load(p) : _mm256_maskload_ps(p, Mask(n)); }
  // 8 x 8: pairs interleaved, then 4-float groups, then the 128-bit halves.
  static void Transpose(T r[8]) {
    T t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
      r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
  }
  // Packing by lanes: no single instruction here, so through memory.
  static int64_t CompressStore(float* p, T v, uint32_t mask) {
    float lanes[kLanes];
    Store(lanes, v);
    int64_t n = 0;
    for (int i = 0; i < kLanes; ++i)
      if (mask >> i & 1u) p[n++] = lanes[i];
    return n;
  }
  static T ExpandLoad(const float* p, uint32_t mask) {
    float lanes[kLanes];
    for (int i = 0, n = 0; i < kLanes; ++i) lanes[i] = (mask >> i & 1u) ? p[n++] : 0.0f;
    return Load(lanes);
  }
  // A partial vector as 4-, 2- and 1-float stores: vmaskmovps to memory is microcoded on AMD Zen
  // (one per ~12 cycles), and channel tiles store a partial vector per channel (a 6-wide tile: all).
  static void StorePartial(float* p, T v, int64_t n) {
    if (n >= kLanes) {
      Store(p, v);
      return;
    }
    __m128 part = _mm256_castps256_ps128(v);
    if (n >= 4) {
      _mm_storeu_ps(p, part);
      part = _mm256_extractf128_ps(v, 1);
      p += 4;
      n -= 4;
    }
    if (n >= 2) {
      _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
      part = _mm_movehl_ps(part, part);
      p += 2;
      n -= 2;
    }
    if (n >= 1) _mm_store_ss(p, part);
  }
};

#include "kernels/asm_3x3_loop.h"

// The 3x3 reductions of the two tiles most AVX2 3x3 layers run, 16 channels x 6 outputs
// (ChannelTileKernel<2, 1, 6>) and 6 channels x 16 positions (TileKernel<6, 2>), scheduled by hand
// (kernels/asm_3x3_loop.h): 12 accumulators in ymm0-11 (ymm[2i + v]: output or channel i, vector
// v), two vectors in ymm12-13, the broadcasts alternating between ymm14 and ymm15. Per channel:
// 9 taps x (2 vector loads, 6 broadcasts, 12 FMAs). The sums go to out[i][16]. Measured against
// GCC's code for the shared loop on the Xeon: 0.93-0.99x the time (channels), 0.92-0.98x (positions).
#define IM2WIN_AVX2_3X3_ZERO \
  "vxorps %%xmm0, %%xmm0, %%xmm0\n\t" \
  "vxorps %%xmm1, %%xmm1, %%xmm1\n\t" \
  "vxorps %%xmm2, %%xmm2, %%xmm2\n\t" \
  "vxorps %%xmm3, %%xmm3, %%xmm3\n\t" \
  "vxorps %%xmm4, %%xmm4, %%xmm4\n\t" \
  "vxorps %%xmm5, %%xmm5, %%xmm5\n\t" \
  "vxorps %%xmm6, %%xmm6, %%xmm6\n\t" \
  "vxorps %%xmm7, %%xmm7, %%xmm7\n\t" \
  "vxorps %%xmm8, %%xmm8, %%xmm8\n\t" \
  "vxorps %%xmm9, %%xmm9, %%xmm9\n\t" \
  "vxorps %%xmm10, %%xmm10, %%xmm10\n\t" \
  "vxorps %%xmm11, %%xmm11, %%xmm11\n\t"
#define IM2WIN_AVX2_3X3_STORE \
  "vmovups %%ymm0, 0(%[n])\n\t" \
  "vmovups %%ymm1, 32(%[n])\n\t" \
  "vmovups %%ymm2, 64(%[n])\n\t" \
  "vmovups %%ymm3, 96(%[n])\n\t" \
  "vmovups %%ymm4, 128(%[n])\n\t" \
  "vmovups %%ymm5, 160(%[n])\n\t" \
  "vmovups %%ymm6, 192(%[n])\n\t" \
  "vmovups %%ymm7, 224(%[n])\n\t" \
  "vmovups %%ymm8, 256(%[n])\n\t" \
  "vmovups %%ymm9, 288(%[n])\n\t" \
  "vmovups %%ymm10, 320(%[n])\n\t" \
  "vmovups %%ymm11, 352(%[n])\n\t"
#define IM2WIN_AVX2_3X3_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

// One channel-tile tap: its 16 channels' weights at w + woff (those 16 steps ahead prefetched, as
// in the shared loop), its six outputs' inputs at base + 0, 4, ..., 20.
#define IM2WIN_AVX2_CHANNEL_TAP \
  "prefetcht0 \\woff+1024(%[w])\n\t" \
  "vmovups \\woff(%[w]), %%ymm12\n\t" \
  "vmovups \\woff+32(%[w]), %%ymm13\n\t" \
  "vbroadcastss 0\\base, %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm0\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm1\n\t" \
  "vbroadcastss 4\\base, %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t" \
  "vbroadcastss 8\\base, %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm4\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm5\n\t" \
  "vbroadcastss 12\\base, %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t" \
  "vbroadcastss 16\\base, %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm8\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm9\n\t" \
  "vbroadcastss 20\\base, %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"
// Per channel of a channel tile, two lines of the next tiles' weights (ChannelTileArgs::prefetch).
#define IM2WIN_AVX2_CHANNEL_PREFETCH \
  "prefetcht1 (%[pf])\n\t" \
  "prefetcht1 64(%[pf])\n\t" \
  "add %[pfs], %[pf]\n\t"

// One position-tile tap: its 16 positions at base, base + 32, its six channels' weights at
// w + woff + 0, 4, ..., 20.
#define IM2WIN_AVX2_POSITION_TAP \
  "vmovups \\base, %%ymm12\n\t" \
  "vmovups 32\\base, %%ymm13\n\t" \
  "vbroadcastss \\woff+0(%[w]), %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm0\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm1\n\t" \
  "vbroadcastss \\woff+4(%[w]), %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t" \
  "vbroadcastss \\woff+8(%[w]), %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm4\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm5\n\t" \
  "vbroadcastss \\woff+12(%[w]), %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t" \
  "vbroadcastss \\woff+16(%[w]), %%ymm14\n\t" \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm8\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm9\n\t" \
  "vbroadcastss \\woff+20(%[w]), %%ymm15\n\t" \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t" \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"

// The tiles with a hand-scheduled 3x3 loop, for microkernel_tile.inc.
#define IM2WIN_3X3_POSITION_VECTORS 2
// (AVX2's two vectors of 8 channels share one block of 16: block_stride is not needed.)
#define IM2WIN_3X3_CHANNEL_TILE_COLUMNS(MV, RA, RB) ((MV) == 2 && (RA) == 1 && (RB) == 6)
template <int RB>
void ChannelTile3x3(const float* w, const float* x, const int32_t* taps, int64_t channels, int64_t channel_stride,
                    int64_t /*block_stride*/, uintptr_t pf, uintptr_t pf_stride, float* out) {
  static_assert(RB == 6);
  IM2WIN_3X3_REDUCE(IM2WIN_AVX2_CHANNEL_TAP, IM2WIN_AVX2_3X3_ZERO, IM2WIN_AVX2_3X3_STORE, IM2WIN_AVX2_CHANNEL_PREFETCH,
                    64, IM2WIN_AVX2_3X3_CLOBBERS);
}

void PositionTile3x3(const float* w, const float* x, const int32_t* taps, int64_t channels, int64_t channel_stride,
                     float* out) {
  uintptr_t pf = 0;  // no prefetch operand in this tile's lines
  const uintptr_t pf_stride = 0;
  IM2WIN_3X3_REDUCE(IM2WIN_AVX2_POSITION_TAP, IM2WIN_AVX2_3X3_ZERO, IM2WIN_AVX2_3X3_STORE, "", 24, IM2WIN_AVX2_3X3_CLOBBERS);
}

#include "kernels/microkernel_tile.inc"

#include "kernels/nhwc_tile.inc"

// NHWC: 16 channels x 6 outputs, 12 accumulators (the SGEMM kernel's 6x16); 8 x 12 for channel tails;
// 24 x 4 for groups of 17-24 output channels.
constexpr IsaKernels kTable =
    WithThreeVectorTiles<4>(WithNhwcTiles<2, 6, 12, true>(MakeKernelTable<12, 2, 6, 12>("avx2", 12, 0.85)));

}  // namespace
}  // namespace avx2

const IsaKernels& Avx2Kernels() { return avx2::kTable; }

}  // namespace im2win
