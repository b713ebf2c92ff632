// Portable micro-kernels for any x86-64 (or other) CPU: a 4-float "vector" of plain floats (tiles of 6 x 8) that
// the compiler maps onto the baseline SIMD registers. Compiled with the default flags.
#include "kernels/microkernel.h"

namespace im2win {
namespace generic {
namespace {

struct V {
  struct T {
    float f[4];
  };
  static constexpr int kLanes = 4;
  static T Zero() { return {{0.f, 0.f, 0.f, 0.f}}; }
  static T Load(const float* p) { return {{p[0], p[1], p[2], p[3]}}; }
  static T Broadcast(const float* p) { return {{*p, *p, *p, *p}}; }
  static T Fma(T a, T b, T c) {
    for (int i = 0; i < 4; ++i) c.f[i] += a.f[i] * b.f[i];
    return c;
  }
  static void Store(float* p, T v) {
    for (int i = 0; i < 4; ++i) p[i] = v.f[i];
  }
  static T Add(T a, T b) {
    for (int i = 0; i < 4; ++i) a.f[i] += b.f[i];
    return a;
  }
  static T Sub(T a, T b) {
    for (int i = 0; i < 4; ++i) a.f[i] -= b.f[i];
    return a;
  }
  // As the x86 instructions: the second operand when either is NaN.
  static T Min(T a, T b) {
    for (int i = 0; i < 4; ++i) a.f[i] = a.f[i] < b.f[i] ? a.f[i] : b.f[i];
    return a;
  }
  static T Max(T a, T b) {
    for (int i = 0; i < 4; ++i) a.f[i] = a.f[i] > b.f[i] ? a.f[i] : b.f[i];
    return a;
  }
  static T LoadPartial(const float* p, int64_t n) {
    T v = Zero();
    for (int i = 0; i < 4 && i < n; ++i) v.f[i] = p[i];
    return v;
  }
  static void Transpose(T r[4]) {
    for (int i = 0; i < 4; ++i)
      for (int j = i + 1; j < 4; ++j) {
        const float swap = r[i].f[j];
        r[i].f[j] = r[j].f[i];
        r[j].f[i] = swap;
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
  static void StorePartial(float* p, T v, int64_t n) {
    for (int i = 0; i < 4 && i < n; ++i) p[i] = v.f[i];
  }
};

#include "kernels/microkernel_tile.inc"

#include "kernels/nhwc_tile.inc"

constexpr IsaKernels kTable = WithNhwcTiles<4, 2, 4, true>(MakeKernelTable<12, 2>("generic"));

}  // namespace
}  // namespace generic

const IsaKernels& GenericKernels() { return generic::kTable; }

}  // namespace im2win
