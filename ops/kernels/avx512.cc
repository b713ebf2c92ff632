// AVX-512F micro-kernels: 16 floats per vector. Position tiles of 6 channels x 64 positions
// (24 accumulators + 4 input vectors of the 32 zmm registers); channel tiles of 32 channels x 12
// outputs (24 accumulators + 2 weight vectors + 1 broadcast) or 16 channels x 28 outputs.
// Compiled with -mavx512f -mfma -mpopcnt (every AVX-512 CPU has POPCNT).
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

#include "kernels/microkernel_tile.inc"

constexpr IsaKernels kTable = MakeKernelTable<24, 4, 12, 28>("avx512", 14);

}  // namespace
}  // namespace avx512

const IsaKernels& Avx512Kernels() { return avx512::kTable; }

}  // namespace im2win
