// Measures this machine's FP32 FMA peak with an ISA's widest FMAs, for the benchmark's % of peak.
#pragma once

#include "kernels/microkernel.h"

namespace im2win {

// GFLOP/s of `threads` threads each running independent FMA chains for about `seconds`.
double MeasureFmaPeak(const IsaKernels& isa, int threads, double seconds);

}  // namespace im2win
