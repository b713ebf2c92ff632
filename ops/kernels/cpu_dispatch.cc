#include "kernels/cpu_dispatch.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

namespace im2win {
namespace {

// __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
bool CpuHasAvx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"); }
bool CpuHasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

std::vector<std::string> AvailableIsas() {
  std::vector<std::string> isas;
  if (CpuHasAvx512()) isas.push_back("avx512");
  if (CpuHasAvx2()) isas.push_back("avx2");
  isas.push_back("generic");
  return isas;
}

const IsaKernels& SelectIsa(const std::string& requested) {
  std::string name = requested;
  if (name.empty()) {
    const char* env = std::getenv("IM2WIN_ISA");
    if (env != nullptr) name = env;
  }
  if (name.empty() || name == "auto") {
    if (CpuHasAvx512()) return Avx512Kernels();
    if (CpuHasAvx2()) return Avx2Kernels();
    return GenericKernels();
  }
  if (name == "generic") return GenericKernels();
  if (name == "avx2") {
    if (!CpuHasAvx2()) throw std::invalid_argument("ISA 'avx2' was requested but this CPU lacks AVX2/FMA");
    return Avx2Kernels();
  }
  if (name == "avx512") {
    if (!CpuHasAvx512()) throw std::invalid_argument("ISA 'avx512' was requested but this CPU lacks AVX-512F");
    return Avx512Kernels();
  }
  throw std::invalid_argument("unknown ISA '" + name + "' (IM2WIN_ISA takes avx512, avx2, generic or auto)");
}

const IsaKernels& IsaForPlanning(const std::string& name) {
  if (name == "avx512") return Avx512Kernels();
  if (name == "avx2") return Avx2Kernels();
  if (name == "generic") return GenericKernels();
  return SelectIsa(name);  // "" or "auto": this CPU's; anything else is refused there
}

int64_t L2CacheBytes() {
  static const int64_t bytes = [] {
    if (const char* forced = std::getenv("IM2WIN_L2_BYTES")) {
      char* end = nullptr;
      const long long value = std::strtoll(forced, &end, 10);
      if (end != forced && *end == '\0' && value >= kMinL2Bytes && value <= kMaxL2Bytes) return int64_t{value};
    }
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc reads it from CPUID; 0 or -1 if unknown
    return reported > 0 ? std::clamp<int64_t>(reported, kMinL2Bytes, kMaxL2Bytes) : int64_t{1} << 20;
  }();
  return bytes;
}

}  // namespace im2win
