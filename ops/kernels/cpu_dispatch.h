// Chooses the micro-kernel table from CPUID once per request, or as forced by IM2WIN_ISA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/microkernel.h"

namespace im2win {

// ISAs this CPU can run, best first (always ends with "generic").
std::vector<std::string> AvailableIsas();

// name: "avx512", "avx2", "generic", or empty for the best available. An empty name also honours
// the IM2WIN_ISA environment variable. Throws std::invalid_argument for an unknown name or one this CPU lacks.
const IsaKernels& SelectIsa(const std::string& name = "");

// The kernel table of a known ISA whether or not this CPU can run it, for planning only (the
// tables are constants: reading one runs none of its code). Throws std::invalid_argument for an
// unknown name.
const IsaKernels& IsaForPlanning(const std::string& name);

// The L2 sizes a plan may be made for (kMinL2Bytes..kMaxL2Bytes): what any x86 core has.
constexpr int64_t kMinL2Bytes = int64_t{128} << 10, kMaxL2Bytes = int64_t{16} << 20;

// This core's L2 cache in bytes as the OS reports it (1 MiB when it reports none), for sizing
// the blocks a core works on: Zen 3 has 512 KiB, Zen 4 1 MiB, recent Xeons 2 MiB. IM2WIN_L2_BYTES
// (a whole number of bytes in kMinL2Bytes..kMaxL2Bytes, read once) overrides it: for a VM that
// reports a wrong size, and for testing the plans of another CPU class.
int64_t L2CacheBytes();

}  // namespace im2win
