// Chooses the micro-kernel table from CPUID once per request, or as forced by IM2WIN_ISA.
#pragma once

#include <string>
#include <vector>

#include "kernels/microkernel.h"

namespace im2win {

// ISAs this CPU can run, best first (always ends with "generic").
std::vector<std::string> AvailableIsas();

// name: "avx512", "avx2", "generic", or empty for the best available. An empty name also honours
// the IM2WIN_ISA environment variable. Throws std::invalid_argument for an unknown name or one this CPU lacks.
const IsaKernels& SelectIsa(const std::string& name = "");

}  // namespace im2win
