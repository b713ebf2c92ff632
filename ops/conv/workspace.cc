#include "conv/workspace.h"

#include <malloc.h>

#include <cstdint>

namespace im2win {

float* AlignedFloats(std::vector<float>& buffer, int64_t floats) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  if (static_cast<int64_t>(buffer.size()) < floats + kLineFloats) buffer.resize(floats + kLineFloats, 0.0f);
  const auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + (-address / sizeof(float)) % kLineFloats;
}

void ReleaseIfLarge(std::vector<float>& buffer, size_t kept_floats) {
  if (buffer.capacity() <= kept_floats) return;
  std::vector<float>().swap(buffer);
#ifdef __GLIBC__
  // glibc raises its mmap threshold with each large block freed, so that the next ones stay in its
  // heap; trimming hands the pages back to the system now.
  malloc_trim(0);
#endif
}

}  // namespace im2win
