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
  threads = std::max(threads, 1);
  // Calibrate one thread's chunk of FMAs to about a hundredth of the budget, shrunk by threads per
  // core: a round then takes about a tenth of the budget however many threads share the cores.
  int64_t chunk = 1 << 12;
  for (;;) {
    const auto t0 = Clock::now();
    isa.fma_loop(chunk);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (elapsed > seconds / 100 || chunk > (int64_t{1} << 36)) break;
    chunk *= 2;
  }
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  if (threads > cores) chunk = std::max<int64_t>(64, chunk * cores / threads);
  constexpr int kChunksPerRound = 10;
  const double flops_per_chunk = 2.0 * isa.fma_chains * isa.vector_len * static_cast<double>(chunk);
  // Every thread stops at the deadline, between chunks, whatever the thread count: the probe takes
  // the budget, a chunk and the threads' start at most.
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  double best = 0.0;
  std::atomic<float> sink{0.0f};
  for (int round = 0; round < 3 && Clock::now() < deadline; ++round) {
    std::atomic<int64_t> chunks_done{0};
    const auto t0 = Clock::now();
    auto work = [&] {
      for (int i = 0; i < kChunksPerRound && Clock::now() < deadline; ++i) {
        sink = sink + isa.fma_loop(chunk);
        ++chunks_done;
      }
    };
    std::vector<std::thread> pool;
    try {
      for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    } catch (const std::exception& e) {
      for (auto& t : pool) t.join();  // a joinable std::thread left to unwind would terminate
      throw std::runtime_error(std::string("could not start the probe's threads: ") + e.what());
    }
    for (auto& t : pool) t.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (chunks_done > 0) best = std::max(best, flops_per_chunk * static_cast<double>(chunks_done) / elapsed / 1e9);
  }
  return best;
}

}  // namespace im2win
