// AVX-512F micro-kernels: 16 floats per vector. Position tiles of 6 channels x 64 positions
// (24 accumulators + 4 input vectors of the 32 zmm registers); channel tiles of 32 channels x 12
// outputs in up to 12 / cols rows (24 accumulators + 2 weight vectors + 1 broadcast), or one row
// of 13 or 14 (28 accumulators: a 14-wide row in one tile, measured 1.15-1.22x the speed of two
// 32x1x7 tiles on 256x14x14 3x3 in a tile harness on the Xeon), or 16 channels x 28 outputs.
// The 3x3 reductions of the 6x64 position tile and of the one-row channel tiles of 7 to 14 outputs
// are scheduled by hand (kernels/asm_3x3_loop.h). Compiled with -mavx512f -mfma -mpopcnt (every
// AVX-512 CPU has POPCNT).
#include <immintrin.h>

#include "kernels/microkernel.h"

namespace im2win {
namespace avx512 {
namespace {

struct V {
  using T = __m512;
  static constexpr int kLanes = 16;
  static T Zero() { return _mm512_setzero_ps(); }
  static T Load(const float* p) { return _mm512_loadu_ps(p); }
  static T Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static T Fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static void Store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T Add(T a, T b) { return _mm512_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T Min(T a, T b) { return _mm512_min_ps(a, b); }
  static T Max(T a, T b) { return _mm512_max_ps(a, b); }
  static __mmask16 Mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }
  static T LoadPartial(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
  static void StorePartial(float* p, T v, int64_t n) { _mm512_mask_storeu_ps(p, Mask(n), v); }
  // 16 x 16: pairs interleaved, then 4-float groups, then 128-bit lanes twice.
  static void Transpose(T r[16]) {
    T t[16], u[16], v[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
      u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
      u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 4; ++i) {
        v[8 * h + i] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + 4 + i], 0x88);
        v[8 * h + 4 + i] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + 4 + i], 0xDD);
      }
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm512_shuffle_f32x4(v[i], v[8 + i], 0x88);
      r[8 + i] = _mm512_shuffle_f32x4(v[i], v[8 + i], 0xDD);
    }
  }
  // Compress and expand in registers: their memory forms are slow on some CPUs (Zen 4).
  static int64_t CompressStore(float* p, T v, uint32_t mask) {
    const int64_t n = _mm_popcnt_u32(mask);
    _mm512_mask_storeu_ps(p, Mask(n), _mm512_maskz_compress_ps(static_cast<__mmask16>(mask), v));
    return n;
  }
  static T ExpandLoad(const float* p, uint32_t mask) {
    return _mm512_maskz_expand_ps(static_cast<__mmask16>(mask), LoadPartial(p, _mm_popcnt_u32(mask)));
  }
};

#include "kernels/asm_3x3_loop.h"

// The 3x3 reduction of the position tile of 6 channels x 64 positions (TileKernel<6, 4>) scheduled
// by hand (kernels/asm_3x3_loop.h): 24 accumulators in zmm0-23 (zmm[4m + v]: channel m, vector v),
// the tap's four input vectors in zmm24-27, the weight broadcasts alternating between zmm28 and
// zmm29. Per channel: 9 taps x (4 vector loads, 6 broadcasts, 24 FMAs). The sums go to out[m][64].
#define IM2WIN_AVX512_3X3_ZERO \
  "vpxord %%zmm0, %%zmm0, %%zmm0\n\t" \
  "vpxord %%zmm1, %%zmm1, %%zmm1\n\t" \
  "vpxord %%zmm2, %%zmm2, %%zmm2\n\t" \
  "vpxord %%zmm3, %%zmm3, %%zmm3\n\t" \
  "vpxord %%zmm4, %%zmm4, %%zmm4\n\t" \
  "vpxord %%zmm5, %%zmm5, %%zmm5\n\t" \
  "vpxord %%zmm6, %%zmm6, %%zmm6\n\t" \
  "vpxord %%zmm7, %%zmm7, %%zmm7\n\t" \
  "vpxord %%zmm8, %%zmm8, %%zmm8\n\t" \
  "vpxord %%zmm9, %%zmm9, %%zmm9\n\t" \
  "vpxord %%zmm10, %%zmm10, %%zmm10\n\t" \
  "vpxord %%zmm11, %%zmm11, %%zmm11\n\t" \
  "vpxord %%zmm12, %%zmm12, %%zmm12\n\t" \
  "vpxord %%zmm13, %%zmm13, %%zmm13\n\t" \
  "vpxord %%zmm14, %%zmm14, %%zmm14\n\t" \
  "vpxord %%zmm15, %%zmm15, %%zmm15\n\t" \
  "vpxord %%zmm16, %%zmm16, %%zmm16\n\t" \
  "vpxord %%zmm17, %%zmm17, %%zmm17\n\t" \
  "vpxord %%zmm18, %%zmm18, %%zmm18\n\t" \
  "vpxord %%zmm19, %%zmm19, %%zmm19\n\t" \
  "vpxord %%zmm20, %%zmm20, %%zmm20\n\t" \
  "vpxord %%zmm21, %%zmm21, %%zmm21\n\t" \
  "vpxord %%zmm22, %%zmm22, %%zmm22\n\t" \
  "vpxord %%zmm23, %%zmm23, %%zmm23\n\t"
#define IM2WIN_AVX512_3X3_STORE \
  "vmovups %%zmm0, 0(%[n])\n\t" \
  "vmovups %%zmm1, 64(%[n])\n\t" \
  "vmovups %%zmm2, 128(%[n])\n\t" \
  "vmovups %%zmm3, 192(%[n])\n\t" \
  "vmovups %%zmm4, 256(%[n])\n\t" \
  "vmovups %%zmm5, 320(%[n])\n\t" \
  "vmovups %%zmm6, 384(%[n])\n\t" \
  "vmovups %%zmm7, 448(%[n])\n\t" \
  "vmovups %%zmm8, 512(%[n])\n\t" \
  "vmovups %%zmm9, 576(%[n])\n\t" \
  "vmovups %%zmm10, 640(%[n])\n\t" \
  "vmovups %%zmm11, 704(%[n])\n\t" \
  "vmovups %%zmm12, 768(%[n])\n\t" \
  "vmovups %%zmm13, 832(%[n])\n\t" \
  "vmovups %%zmm14, 896(%[n])\n\t" \
  "vmovups %%zmm15, 960(%[n])\n\t" \
  "vmovups %%zmm16, 1024(%[n])\n\t" \
  "vmovups %%zmm17, 1088(%[n])\n\t" \
  "vmovups %%zmm18, 1152(%[n])\n\t" \
  "vmovups %%zmm19, 1216(%[n])\n\t" \
  "vmovups %%zmm20, 1280(%[n])\n\t" \
  "vmovups %%zmm21, 1344(%[n])\n\t" \
  "vmovups %%zmm22, 1408(%[n])\n\t" \
  "vmovups %%zmm23, 1472(%[n])\n\t"

#define IM2WIN_AVX512_3X3_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31"

// One tap: its 64 positions at base + 0, 64, 128, 192, its six channels' weights at
// w + woff + 0, 4, ..., 20.
#define IM2WIN_AVX512_POSITION_TAP \
  "vmovups 0\\base, %%zmm24\n\t" \
  "vmovups 64\\base, %%zmm25\n\t" \
  "vmovups 128\\base, %%zmm26\n\t" \
  "vmovups 192\\base, %%zmm27\n\t" \
  "vbroadcastss \\woff+0(%[w]), %%zmm28\n\t" \
  "vfmadd231ps %%zmm24, %%zmm28, %%zmm0\n\t" \
  "vfmadd231ps %%zmm25, %%zmm28, %%zmm1\n\t" \
  "vfmadd231ps %%zmm26, %%zmm28, %%zmm2\n\t" \
  "vfmadd231ps %%zmm27, %%zmm28, %%zmm3\n\t" \
  "vbroadcastss \\woff+4(%[w]), %%zmm29\n\t" \
  "vfmadd231ps %%zmm24, %%zmm29, %%zmm4\n\t" \
  "vfmadd231ps %%zmm25, %%zmm29, %%zmm5\n\t" \
  "vfmadd231ps %%zmm26, %%zmm29, %%zmm6\n\t" \
  "vfmadd231ps %%zmm27, %%zmm29, %%zmm7\n\t" \
  "vbroadcastss \\woff+8(%[w]), %%zmm28\n\t" \
  "vfmadd231ps %%zmm24, %%zmm28, %%zmm8\n\t" \
  "vfmadd231ps %%zmm25, %%zmm28, %%zmm9\n\t" \
  "vfmadd231ps %%zmm26, %%zmm28, %%zmm10\n\t" \
  "vfmadd231ps %%zmm27, %%zmm28, %%zmm11\n\t" \
  "vbroadcastss \\woff+12(%[w]), %%zmm29\n\t" \
  "vfmadd231ps %%zmm24, %%zmm29, %%zmm12\n\t" \
  "vfmadd231ps %%zmm25, %%zmm29, %%zmm13\n\t" \
  "vfmadd231ps %%zmm26, %%zmm29, %%zmm14\n\t" \
  "vfmadd231ps %%zmm27, %%zmm29, %%zmm15\n\t" \
  "vbroadcastss \\woff+16(%[w]), %%zmm28\n\t" \
  "vfmadd231ps %%zmm24, %%zmm28, %%zmm16\n\t" \
  "vfmadd231ps %%zmm25, %%zmm28, %%zmm17\n\t" \
  "vfmadd231ps %%zmm26, %%zmm28, %%zmm18\n\t" \
  "vfmadd231ps %%zmm27, %%zmm28, %%zmm19\n\t" \
  "vbroadcastss \\woff+20(%[w]), %%zmm29\n\t" \
  "vfmadd231ps %%zmm24, %%zmm29, %%zmm20\n\t" \
  "vfmadd231ps %%zmm25, %%zmm29, %%zmm21\n\t" \
  "vfmadd231ps %%zmm26, %%zmm29, %%zmm22\n\t" \
  "vfmadd231ps %%zmm27, %%zmm29, %%zmm23\n\t"

// The 3x3 reduction of the channel tiles of 32 channels x RB = 7..14 outputs in one row
// (ChannelTileKernel<2, 1, RB>) scheduled by hand: 2 x RB accumulators in zmm0-27 (zmm[2p + v]:
// output p, vector v of channels), the tap's two weight vectors (two channel blocks, %[bs] bytes
// apart) in zmm28-29, the input broadcasts alternating between zmm30 and zmm31. Per channel:
// 9 taps x (2 weight loads, RB broadcasts, 2 x RB FMAs); the sums go to out[p][32]. GCC's code for
// 32x1x14 keeps 28 of the 32 registers for sums and shuffles the rest (22 register moves a
// channel, on the FMA ports) and reloads the tap offsets from memory. No weights are prefetched
// into L1 tap by tap: they stream in order, and the prefetches cost more than they saved (a tile
// harness on the Xeon, 32x1x14 over C = 256, L2-resident weights: 86% of the FMA peak with them,
// 89-91% without, GCC's code 81-83%).
#define IM2WIN_AVX512_CHANNEL_OUT(p, b, a0, a1) \
  "vbroadcastss 4*" #p "\\base, %%zmm" #b "\n\t" \
  "vfmadd231ps %%zmm28, %%zmm" #b ", %%zmm" #a0 "\n\t" \
  "vfmadd231ps %%zmm29, %%zmm" #b ", %%zmm" #a1 "\n\t"
#define IM2WIN_AVX512_CHANNEL_OUTS_1 IM2WIN_AVX512_CHANNEL_OUT(0, 30, 0, 1)
#define IM2WIN_AVX512_CHANNEL_OUTS_2 IM2WIN_AVX512_CHANNEL_OUTS_1 IM2WIN_AVX512_CHANNEL_OUT(1, 31, 2, 3)
#define IM2WIN_AVX512_CHANNEL_OUTS_3 IM2WIN_AVX512_CHANNEL_OUTS_2 IM2WIN_AVX512_CHANNEL_OUT(2, 30, 4, 5)
#define IM2WIN_AVX512_CHANNEL_OUTS_4 IM2WIN_AVX512_CHANNEL_OUTS_3 IM2WIN_AVX512_CHANNEL_OUT(3, 31, 6, 7)
#define IM2WIN_AVX512_CHANNEL_OUTS_5 IM2WIN_AVX512_CHANNEL_OUTS_4 IM2WIN_AVX512_CHANNEL_OUT(4, 30, 8, 9)
#define IM2WIN_AVX512_CHANNEL_OUTS_6 IM2WIN_AVX512_CHANNEL_OUTS_5 IM2WIN_AVX512_CHANNEL_OUT(5, 31, 10, 11)
#define IM2WIN_AVX512_CHANNEL_OUTS_7 IM2WIN_AVX512_CHANNEL_OUTS_6 IM2WIN_AVX512_CHANNEL_OUT(6, 30, 12, 13)
#define IM2WIN_AVX512_CHANNEL_OUTS_8 IM2WIN_AVX512_CHANNEL_OUTS_7 IM2WIN_AVX512_CHANNEL_OUT(7, 31, 14, 15)
#define IM2WIN_AVX512_CHANNEL_OUTS_9 IM2WIN_AVX512_CHANNEL_OUTS_8 IM2WIN_AVX512_CHANNEL_OUT(8, 30, 16, 17)
#define IM2WIN_AVX512_CHANNEL_OUTS_10 IM2WIN_AVX512_CHANNEL_OUTS_9 IM2WIN_AVX512_CHANNEL_OUT(9, 31, 18, 19)
#define IM2WIN_AVX512_CHANNEL_OUTS_11 IM2WIN_AVX512_CHANNEL_OUTS_10 IM2WIN_AVX512_CHANNEL_OUT(10, 30, 20, 21)
#define IM2WIN_AVX512_CHANNEL_OUTS_12 IM2WIN_AVX512_CHANNEL_OUTS_11 IM2WIN_AVX512_CHANNEL_OUT(11, 31, 22, 23)
#define IM2WIN_AVX512_CHANNEL_OUTS_13 IM2WIN_AVX512_CHANNEL_OUTS_12 IM2WIN_AVX512_CHANNEL_OUT(12, 30, 24, 25)
#define IM2WIN_AVX512_CHANNEL_OUTS_14 IM2WIN_AVX512_CHANNEL_OUTS_13 IM2WIN_AVX512_CHANNEL_OUT(13, 31, 26, 27)
#define IM2WIN_AVX512_ZERO_ONE(r) "vpxord %%zmm" #r ", %%zmm" #r ", %%zmm" #r "\n\t"
#define IM2WIN_AVX512_STORE_ONE(r) "vmovups %%zmm" #r ", 64*" #r "(%[n])\n\t"
#define IM2WIN_AVX512_CHANNEL_ACCS_1(op) op(0) op(1)
#define IM2WIN_AVX512_CHANNEL_ACCS_2(op) IM2WIN_AVX512_CHANNEL_ACCS_1(op) op(2) op(3)
#define IM2WIN_AVX512_CHANNEL_ACCS_3(op) IM2WIN_AVX512_CHANNEL_ACCS_2(op) op(4) op(5)
#define IM2WIN_AVX512_CHANNEL_ACCS_4(op) IM2WIN_AVX512_CHANNEL_ACCS_3(op) op(6) op(7)
#define IM2WIN_AVX512_CHANNEL_ACCS_5(op) IM2WIN_AVX512_CHANNEL_ACCS_4(op) op(8) op(9)
#define IM2WIN_AVX512_CHANNEL_ACCS_6(op) IM2WIN_AVX512_CHANNEL_ACCS_5(op) op(10) op(11)
#define IM2WIN_AVX512_CHANNEL_ACCS_7(op) IM2WIN_AVX512_CHANNEL_ACCS_6(op) op(12) op(13)
#define IM2WIN_AVX512_CHANNEL_ACCS_8(op) IM2WIN_AVX512_CHANNEL_ACCS_7(op) op(14) op(15)
#define IM2WIN_AVX512_CHANNEL_ACCS_9(op) IM2WIN_AVX512_CHANNEL_ACCS_8(op) op(16) op(17)
#define IM2WIN_AVX512_CHANNEL_ACCS_10(op) IM2WIN_AVX512_CHANNEL_ACCS_9(op) op(18) op(19)
#define IM2WIN_AVX512_CHANNEL_ACCS_11(op) IM2WIN_AVX512_CHANNEL_ACCS_10(op) op(20) op(21)
#define IM2WIN_AVX512_CHANNEL_ACCS_12(op) IM2WIN_AVX512_CHANNEL_ACCS_11(op) op(22) op(23)
#define IM2WIN_AVX512_CHANNEL_ACCS_13(op) IM2WIN_AVX512_CHANNEL_ACCS_12(op) op(24) op(25)
#define IM2WIN_AVX512_CHANNEL_ACCS_14(op) IM2WIN_AVX512_CHANNEL_ACCS_13(op) op(26) op(27)
// Per channel, two lines of the next tiles' weights in each of the two blocks.
#define IM2WIN_AVX512_CHANNEL_PREFETCH \
  "prefetcht1 (%[pf])\n\t" \
  "prefetcht1 64(%[pf])\n\t" \
  "prefetcht1 (%[pf],%[bs])\n\t" \
  "prefetcht1 64(%[pf],%[bs])\n\t" \
  "add %[pfs], %[pf]\n\t"
#define IM2WIN_AVX512_CHANNEL_REDUCE(k)                                                                         \
  IM2WIN_3X3_REDUCE_WITH("vmovups \\woff(%[w]), %%zmm28\n\t"                                                  \
                         "vmovups \\woff(%[w],%[bs]), %%zmm29\n\t" IM2WIN_AVX512_CHANNEL_OUTS_##k,            \
                         IM2WIN_AVX512_CHANNEL_ACCS_##k(IM2WIN_AVX512_ZERO_ONE),                                \
                         IM2WIN_AVX512_CHANNEL_ACCS_##k(IM2WIN_AVX512_STORE_ONE), IM2WIN_AVX512_CHANNEL_PREFETCH, \
                         64, (, [bs] "r"(block_bytes)), IM2WIN_AVX512_3X3_CLOBBERS)

// The tiles with a hand-scheduled 3x3 loop, for microkernel_tile.inc.
#define IM2WIN_3X3_POSITION_VECTORS 4
#define IM2WIN_3X3_CHANNEL_TILE_COLUMNS(MV, RA, RB) ((MV) == 2 && (RA) == 1 && (RB) >= 7)
template <int RB>
void ChannelTile3x3(const float* w, const float* x, const int32_t* taps, int64_t channels, int64_t channel_stride,
                    int64_t block_stride, uintptr_t pf, uintptr_t pf_stride, float* out) {
  static_assert(RB >= 7 && RB <= 14);
  const int64_t block_bytes = 4 * block_stride;
  // One asm block per width: the tap's lines are a string literal for each.
#define IM2WIN_AVX512_IF_COLUMNS(k)  \
  if constexpr (RB == k) {           \
    IM2WIN_AVX512_CHANNEL_REDUCE(k); \
  } else
  IM2WIN_AVX512_IF_COLUMNS(7) IM2WIN_AVX512_IF_COLUMNS(8) IM2WIN_AVX512_IF_COLUMNS(9) IM2WIN_AVX512_IF_COLUMNS(10)
  IM2WIN_AVX512_IF_COLUMNS(11) IM2WIN_AVX512_IF_COLUMNS(12) IM2WIN_AVX512_IF_COLUMNS(13) {
    IM2WIN_AVX512_CHANNEL_REDUCE(14);
  }
#undef IM2WIN_AVX512_IF_COLUMNS
}

void PositionTile3x3(const float* w, const float* x, const int32_t* taps, int64_t channels, int64_t channel_stride,
                     float* out) {
  uintptr_t pf = 0;  // no prefetch operand in this tile's lines
  const uintptr_t pf_stride = 0;
  IM2WIN_3X3_REDUCE(IM2WIN_AVX512_POSITION_TAP, IM2WIN_AVX512_3X3_ZERO, IM2WIN_AVX512_3X3_STORE, "", 24,
                    IM2WIN_AVX512_3X3_CLOBBERS);
}

// The lanes of 16 columns of a row of X from column c (c >= 0) that lie inside the row.
inline __mmask16 ColumnsInside(int64_t c, int64_t in_w) {
  const int64_t n = in_w - c;
  return n <= 0 ? __mmask16(0) : V::Mask(n);
}

// DepthwiseStride2Args: 16 outputs of a row at a time. Window row kh gives them three vectors,
// columns 2j - pad_left + kw for kw = 0, 1, 2, picked by vpermt2ps from two pairs of masked loads
// (from the vector's first column inside the row, and from two columns on), lanes left of X
// zeroed by the permute's mask: no address outside the row, each vector's indices and masks
// worked out once for all rows, and each input row split once for the two output rows it serves.
void Depthwise3x3Stride2(const DepthwiseStride2Args& a) {
  const float* const x = a.x;
  const int64_t in_h = a.in_h, in_w = a.in_w, out_w = a.out_w;
  __m512 w[9];
  for (int t = 0; t < 9; ++t) w[t] = _mm512_set1_ps(a.w[t]);
  const __m512 bias = _mm512_set1_ps(a.bias), lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j0 = 0; j0 < out_w; j0 += 16) {
    const int64_t c = 2 * j0 - a.pad_left;  // column of output j0's kw = 0
    // Loads from column b (kw = 0, 1) and b2 (kw = 2), the first at or right of X's column 0.
    const int64_t b = c > 0 ? c : 0, b2 = c + 2 > 0 ? c + 2 : 0;
    const __mmask16 in_p = ColumnsInside(b, in_w), in_q = ColumnsInside(b + 16, in_w);
    const __mmask16 in_p2 = ColumnsInside(b2, in_w), in_q2 = ColumnsInside(b2 + 16, in_w);
    // Lane i of tap kw: column c + 2i + kw, at index c + 2i + kw - (b or b2) of the pair; left of
    // X where that is negative.
    __m512i index[3];
    __mmask16 inside[3];
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t shift = c + kw - (kw < 2 ? b : b2);
      index[kw] = _mm512_add_epi32(_mm512_add_epi32(lane, lane), _mm512_set1_epi32(static_cast<int>(shift)));
      inside[kw] = _mm512_cmpge_epi32_mask(index[kw], _mm512_setzero_si512());
    }
    const __mmask16 outputs = V::Mask(out_w - j0);
    // The three vectors (kw = 0, 1, 2) of input row y_in for this vector of outputs; zero outside X.
    auto taps_of_row = [&](int64_t y_in, __m512 (&v)[3]) {
      if (y_in < 0 || y_in >= in_h) {
        v[0] = v[1] = v[2] = _mm512_setzero_ps();
        return;
      }
      const float* const row = x + y_in * in_w;
      const __m512 p = _mm512_maskz_loadu_ps(in_p, row + b), q = _mm512_maskz_loadu_ps(in_q, row + b + 16);
      const __m512 p2 = _mm512_maskz_loadu_ps(in_p2, row + b2), q2 = _mm512_maskz_loadu_ps(in_q2, row + b2 + 16);
      v[0] = _mm512_maskz_permutex2var_ps(inside[0], p, index[0], q);
      v[1] = _mm512_maskz_permutex2var_ps(inside[1], p, index[1], q);
      v[2] = _mm512_maskz_permutex2var_ps(inside[2], p2, index[2], q2);
    };
    // Output row r reads input rows 2r - pad_top + 0, 1, 2; its last is row r + 1's first, so
    // each input row is split once.
    __m512 top[3], mid[3], bottom[3];
    taps_of_row(2 * a.first_row - a.pad_top, top);
    for (int64_t r = a.first_row; r < a.first_row + a.rows; ++r) {
      taps_of_row(2 * r + 1 - a.pad_top, mid);
      taps_of_row(2 * r + 2 - a.pad_top, bottom);
      __m512 acc[3];  // one sum per window row: three short chains instead of one of nine
      acc[0] = _mm512_fmadd_ps(w[2], top[2], _mm512_fmadd_ps(w[1], top[1], _mm512_mul_ps(w[0], top[0])));
      acc[1] = _mm512_fmadd_ps(w[5], mid[2], _mm512_fmadd_ps(w[4], mid[1], _mm512_mul_ps(w[3], mid[0])));
      acc[2] = _mm512_fmadd_ps(w[8], bottom[2], _mm512_fmadd_ps(w[7], bottom[1], _mm512_mul_ps(w[6], bottom[0])));
      __m512 v = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]), bias);
      const int64_t at = r * out_w + j0;
      if (a.residual != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(outputs, a.residual + at));
      _mm512_mask_storeu_ps(a.y + at, outputs, _mm512_min_ps(hi, _mm512_max_ps(lo, v)));
      for (int kw = 0; kw < 3; ++kw) top[kw] = bottom[kw];
    }
  }
}

#include "kernels/microkernel_tile.inc"

constexpr IsaKernels WithDepthwiseStride2(IsaKernels k) {
  k.depthwise_3x3_stride2 = &Depthwise3x3Stride2;
  return k;
}
#include "kernels/nhwc_tile.inc"

// NHWC: 32 channels x 12 outputs, 24 accumulators; 16 x 16 for channel tails.
constexpr IsaKernels kTable =
    WithNhwcTiles<2, 12, 16, false>(WithDepthwiseStride2(MakeKernelTable<24, 4, 12, 28, 14>("avx512", 14, 0.95)));

}  // namespace
}  // namespace avx512

const IsaKernels& Avx512Kernels() { return avx512::kTable; }

}  // namespace im2win
