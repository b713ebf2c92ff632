// The skeleton of the hand-scheduled 3x3 reductions (avx2.cc, avx512.cc): a tile's accumulators
// stay in registers from zero to the end, the nine tap offsets in general registers, and each
// channel is nine invocations of the assembler macro IM2WIN_TAP3X3 woff, base (the tap's weights at
// woff(%[w]), its inputs at base), whose lines the ISA file gives IM2WIN_3X3_REDUCE. GCC's version
// of the shared tile loop reloads the tap offsets from memory on every channel and spills
// accumulators around the last taps, costing load-port slots where a step is mostly loads already.
// The loop keeps 12 general registers, and a tile may add one through IM2WIN_3X3_REDUCE_WITH
// (AVX-512's channel tiles: the distance to their second block of weights); sanitized builds have
// few more to give. The channel stride and the prefetch step are memory operands, and the sums go
// to out through %[n], the channel count, spent once the loop ends.
// Include only inside an ISA file's namespace, after <cstdint>.
#pragma once

// The nine taps of one channel, the weights `step` bytes apart.
#define IM2WIN_3X3_TAPS(step) \
  "IM2WIN_TAP3X3 0, \"(%[x])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*1, \"(%[x],%[o1])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*2, \"(%[x],%[o2])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*3, \"(%[x],%[o3])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*4, \"(%[x],%[o4])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*5, \"(%[x],%[o5])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*6, \"(%[x],%[o6])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*7, \"(%[x],%[o7])\"\n\t" \
  "IM2WIN_TAP3X3 " #step "*8, \"(%[x],%[o8])\"\n\t"
// Tap offsets in bytes relative to the first tap's, which the caller folds into x.
struct TapBytes {
  int64_t bytes[9];
  explicit TapBytes(const int32_t* taps) {
    for (int t = 0; t < 9; ++t) bytes[t] = 4 * (int64_t{taps[t]} - taps[0]);
  }
};

// The body of a reduction function with the parameters (w, x, taps, channels, channel_stride, out)
// and the variables pf and pf_stride (a line to prefetch, which a tap's lines may advance by
// %[pfs] bytes as %[pf]): tap, the assembler lines of one tap (the body of IM2WIN_TAP3X3 woff,
// base); zero, the lines that clear the accumulators; store, those that write them to (%[n]);
// step, weight bytes per tap; extra, more input operands, each after a comma, in parentheses
// ("()" for none); then every vector register those lines use.
#define IM2WIN_3X3_REDUCE_WITH(tap, zero, store, prefetch, step, extra, ...)                                       \
  const TapBytes o(taps);                                                                              \
  x += taps[0];                                                                                        \
  int64_t n = channels;                                                                                \
  const int64_t stride_bytes = 4 * channel_stride;                                                     \
  asm volatile(".macro IM2WIN_TAP3X3 woff, base\n\t" tap ".endm\n\t" zero                              \
               "test %[n], %[n]\n\t"                                                                   \
               "jle 2f\n\t"                                                                            \
               "1:\n\t" prefetch IM2WIN_3X3_TAPS(step) "add $9*" #step ", %[w]\n\t"                    \
               "add %[stride], %[x]\n\t"                                                               \
               "dec %[n]\n\t"                                                                          \
               "jnz 1b\n\t"                                                                            \
               "2:\n\t"                                                                                \
               "mov %[out], %[n]\n\t" store ".purgem IM2WIN_TAP3X3\n\t"                                \
               : [w] "+r"(w), [x] "+r"(x), [n] "+r"(n), [pf] "+r"(pf)                                  \
               : [stride] "m"(stride_bytes), [pfs] "m"(pf_stride), [o1] "r"(o.bytes[1]),               \
                 [o2] "r"(o.bytes[2]), [o3] "r"(o.bytes[3]), [o4] "r"(o.bytes[4]), [o5] "r"(o.bytes[5]), \
                 [o6] "r"(o.bytes[6]), [o7] "r"(o.bytes[7]), [o8] "r"(o.bytes[8]),                     \
                 [out] "m"(out) IM2WIN_3X3_UNPAREN extra                                              \
               : __VA_ARGS__, "cc", "memory")
#define IM2WIN_3X3_UNPAREN(...) __VA_ARGS__
#define IM2WIN_3X3_REDUCE(tap, zero, store, prefetch, step, ...) \
  IM2WIN_3X3_REDUCE_WITH(tap, zero, store, prefetch, step, (), __VA_ARGS__)
