#include "kernels/fma_probe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace im2win {

double MeasureFmaPeak(const IsaKernels& isa, int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  // Calibrate one thread to about a tenth of the budget, then run all threads together and keep
  // the best of three rounds (the machine may be shared).
  int64_t iterations = 1 << 16;
  for (;;) {
    const auto t0 = Clock::now();
    isa.fma_loop(iterations);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (elapsed > seconds / 10 || iterations > (int64_t{1} << 40)) break;
    iterations *= 2;
  }
  const double flops_per_thread = 2.0 * isa.fma_chains * isa.vector_len * static_cast<double>(iterations);
  double best = 0.0;
  std::atomic<float> sink{0.0f};
  for (int round = 0; round < 3; ++round) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    try {
      for (int t = 0; t < std::max(threads, 1); ++t)
        pool.emplace_back([&] { sink = sink + isa.fma_loop(iterations); });
    } catch (const std::exception& e) {
      for (auto& t : pool) t.join();  // a joinable std::thread left to unwind would terminate
      throw std::runtime_error(std::string("could not start the probe's threads: ") + e.what());
    }
    for (auto& t : pool) t.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, flops_per_thread * std::max(threads, 1) / elapsed / 1e9);
  }
  return best;
}

}  // namespace im2win
