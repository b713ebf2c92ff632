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

#include "kernels/microkernel_tile.inc"

constexpr IsaKernels kTable = MakeKernelTable<12, 2, 6, 12>("avx2", 12);

}  // namespace
}  // namespace avx2

const IsaKernels& Avx2Kernels() { return avx2::kTable; }

}  // namespace im2win
