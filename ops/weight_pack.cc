#include "weight_pack.h"

#include <algorithm>

#include "microkernel.h"

namespace im2win {

void PackWeights(const float* w, int64_t out_channels, int64_t group, int64_t k, float* packed) {
  const int64_t per_group = out_channels / group;
  for (int64_t g = 0; g < group; ++g) {
    for (int64_t m0 = 0; m0 < per_group; m0 += kTileM) {
      const int64_t rm = std::min<int64_t>(kTileM, per_group - m0);
      const int64_t first = g * per_group + m0;
      const float* src = w + first * k;
      float* dst = packed + first * k;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t m = 0; m < rm; ++m) dst[i * rm + m] = src[m * k + i];
    }
  }
}

}  // namespace im2win
