// Buffers a thread keeps between calls for its window panels: aligned, reused, and given back
// when a call needed far more than any CNN layer does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace im2win {

// `floats` floats of `buffer`, starting on a cache line; the buffer grows to the largest request and
// is then reused: no allocation per call. (Measured: a misaligned panel made the depthwise paths
// ~25% slower, as the kernels' vector loads straddled two lines.)
float* AlignedFloats(std::vector<float>& buffer, int64_t floats);

// A thread's workspace kept for reuse holds at most this much once the item that needed it ends:
// every plan's per-thread workspace of a CNN layer fits it (the window panel's budget is at most
// 512 KiB, its sums far less), while a pathological shape (one row wider than the budget:
// 1x64x3x200000 took 148 MB a thread) gives its buffer back instead of holding it for the life of
// the thread, past its session.
constexpr size_t kKeptWorkspaceFloats = (size_t{4} << 20) / sizeof(float);
// The shared panels (one per image, about the padded input's size, at most kSharedPanelCapFloats)
// kept by the thread that calls the conv once the call ends: VGG-16's 64x224x224 layers' 13 MB
// panels are kept (freeing and faulting them in on every call would cost each call that much), a
// larger one is given back.
constexpr size_t kKeptSharedFloats = (size_t{16} << 20) / sizeof(float);

// Frees `buffer` (and hands the pages back to the system) when it holds more than kept_floats.
void ReleaseIfLarge(std::vector<float>& buffer, size_t kept_floats);

}  // namespace im2win
