#include "conv/window_layout.h"

#include <algorithm>
#include <numeric>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace im2win {
namespace {

// dst[t] = src[t * stride] for t < n. Stride 2 (the common downsampling) deinterleaves four
// floats at a time with SSE2, part of the x86-64 baseline.
void GatherStrided(const float* src, int64_t stride, float* dst, int64_t n) {
  int64_t t = 0;
#ifdef __SSE2__
  if (stride == 2) {
    // Reads src[2t .. 2t+7]; the last even element needed is src[2(n-1)], so stop early enough.
    for (; t + 4 <= n - 1; t += 4) {
      const __m128 lo = _mm_loadu_ps(src + 2 * t), hi = _mm_loadu_ps(src + 2 * t + 4);
      _mm_storeu_ps(dst + t, _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
    }
  }
#endif
  for (; t < n; ++t) dst[t] = src[t * stride];
}

// For taps k = 0..kernel-1: the slot of phase (k*dilation) mod stride and the shift
// (k*dilation) / stride; `phases` lists each slot's phase. The phases repeat with period
// stride / gcd(dilation, stride) and the first period's are distinct, so tap k's slot is
// k mod period: linear in the kernel size, whatever the stride.
void SplitByPhase(int64_t kernel, int64_t dilation, int64_t stride, std::vector<int64_t>* phases,
                  std::vector<int64_t>* slot, std::vector<int64_t>* shift) {
  const int64_t period = stride / std::gcd(dilation % stride, stride);
  for (int64_t k = 0; k < kernel; ++k) {
    if (k < period) phases->push_back((k * dilation) % stride);
    slot->push_back(k % period);
    shift->push_back((k * dilation) / stride);
  }
}

}  // namespace

WindowLayout MakeWindowLayout(const ConvShape& s, int64_t rows_per_block, int64_t read_rows, int64_t read_floats) {
  WindowLayout L;
  L.rows = rows_per_block;
  L.row_len = s.out_w + ((s.kernel_w - 1) * s.dilation_w) / s.stride_w;
  L.channels = s.channels_per_group();
  std::vector<int64_t> kh_slot, kh_shift, kw_slot, kw_shift;
  SplitByPhase(s.kernel_h, s.dilation_h, s.stride_h, &L.row_phase, &kh_slot, &kh_shift);
  SplitByPhase(s.kernel_w, s.dilation_w, s.stride_w, &L.col_phase, &kw_slot, &kw_shift);
  L.plane_rows = L.rows + *std::max_element(kh_shift.begin(), kh_shift.end());
  const int64_t col_slots = static_cast<int64_t>(L.col_phase.size());
  // The kernels address one channel's panel with 32-bit offsets (tap_offset).
  const char* what = "one channel's window panel";
  L.plane = CheckedMul(L.plane_rows, L.row_len, what);
  L.channel_stride = CheckedMul(CheckedMul(static_cast<int64_t>(L.row_phase.size()), col_slots, what), L.plane, what);
  if (L.channel_stride > kMaxOffset)
    throw ConvError(std::string(what) + " would hold " + std::to_string(L.channel_stride) + " floats, more than the " +
                    std::to_string(kMaxOffset) + " its 32-bit offsets address: the input is too large for "
                    "com.im2win::Conv");
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < s.kernel_w; ++kw)
      L.tap_offset.push_back(static_cast<int32_t>((kh_slot[kh] * col_slots + kw_slot[kw]) * L.plane +
                                                  kh_shift[kh] * L.row_len + kw_shift[kw]));
  // Past the last position of the last plane a tile still reads its own extent plus, through
  // the taps, up to one window row.
  L.slack = (read_rows + 1) * L.row_len + read_floats;
  // The whole panel in bytes stays a valid int64 (workspace_bytes multiplies it out).
  CheckedMul(CheckedAdd(CheckedMul(L.channels, L.channel_stride, "the window panel"), L.slack, "the window panel"),
             static_cast<int64_t>(sizeof(float)), "the window panel in bytes");
  return L;
}

void BuildWindowPanel(const ConvShape& s, const WindowLayout& L, const float* x_group, int64_t first_row,
                      int64_t rows, float* panel, int64_t channels) {
  const int64_t in_plane = s.in_h * s.in_w;
  const int64_t rows_needed = rows + (L.plane_rows - L.rows);  // the block's rows and its windows' overhang
  for (int64_t c = 0; c < (channels < 0 ? L.channels : channels); ++c) {
    const float* xc = x_group + c * in_plane;
    float* dst = panel + c * L.channel_stride;
    for (int64_t row_phase : L.row_phase) {
      for (int64_t col_phase : L.col_phase) {
        // Window columns t whose input column t*stride_w + col_phase - pad_left lies inside X.
        const int64_t first_col = col_phase - s.pad_left;
        const int64_t t_lo = std::min(L.row_len, first_col >= 0 ? 0 : (-first_col + s.stride_w - 1) / s.stride_w);
        const int64_t last = s.in_w - 1 - first_col;  // may be negative: floor-divide
        const int64_t t_hi = std::max(t_lo, std::min(L.row_len, last < 0 ? 0 : last / s.stride_w + 1));
        float* row = dst;
        for (int64_t u = 0; u < rows_needed; ++u, row += L.row_len) {
          const int64_t y = (first_row + u) * s.stride_h + row_phase - s.pad_top;
          if (y < 0 || y >= s.in_h) {
            for (int64_t t = 0; t < L.row_len; ++t) row[t] = 0.0f;
            continue;
          }
          const float* src = xc + y * s.in_w + first_col;
          for (int64_t t = 0; t < t_lo; ++t) row[t] = 0.0f;
          if (s.stride_w == 1) {
            for (int64_t t = t_lo; t < t_hi; ++t) row[t] = src[t];
          } else {
            GatherStrided(src + t_lo * s.stride_w, s.stride_w, row + t_lo, t_hi - t_lo);
          }
          for (int64_t t = t_hi; t < L.row_len; ++t) row[t] = 0.0f;
        }
        dst += L.plane;
      }
    }
  }
}

}  // namespace im2win
