// 2-D max and average pooling over contiguous NCHW tensors.
//
// Every (n, c) plane is independent, so the loops run in parallel over
// planes and each task writes only its own output plane (the backward
// scatters included: no atomics needed). Padding counts as -inf for max and
// as 0 for average.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "loom/core/parallel.h"
#include "loom/ops/cpu/cpu_backend.h"

namespace loom::ops::cpu {
namespace {

// Planes per task: small planes are grouped so a task is worth a thread.
int64_t plane_grain(int64_t plane_numel) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, plane_numel)); }

// The window of output (oy, ox), clipped to the input plane [0, h) x [0, w).
struct Window {
  int64_t y0, y1, x0, x1;
};

Window window(const Pool2dParams& p, int64_t h, int64_t w, int64_t oy, int64_t ox) {
  const int64_t y0 = oy * p.stride_h - p.pad_h, x0 = ox * p.stride_w - p.pad_w;
  return {std::max<int64_t>(y0, 0), std::min(y0 + p.kernel_h, h), std::max<int64_t>(x0, 0),
          std::min(x0 + p.kernel_w, w)};
}

// The largest input in the window and its flat index h * W + w. A NaN wins
// at once, as in PyTorch, so that a NaN input shows in the output.
template <class T>
std::pair<T, int64_t> window_max(const T* xp, int64_t w, const Window& win) {
  T best = -std::numeric_limits<T>::infinity();
  int64_t best_at = win.y0 * w + win.x0;  // never empty: the op checks pad <= kernel / 2
  for (int64_t iy = win.y0; iy < win.y1; ++iy) {
    for (int64_t ix = win.x0; ix < win.x1; ++ix) {
      const T v = xp[iy * w + ix];
      if (std::isnan(v)) return {v, iy * w + ix};
      if (v > best) {
        best = v;
        best_at = iy * w + ix;
      }
    }
  }
  return {best, best_at};
}

// The common 2x2, stride 2, unpadded window (every CNN's pooling), one
// output row: the same results and indices as window_max (first of equal
// maxima in row-major window order). Random activations make each compare a
// coin toss for a branch predictor, and the compiler does not vectorise the
// stride-2 loads, so f32 takes 8 outputs at a time with AVX2 compares and
// blends (9 ms -> 1 ms for the reference CNN's first pool). A row with a NaN
// anywhere is redone by window_max, whose first NaN wins.
template <class T>
bool max_pool_2x2_simd(const T*, const T*, int64_t, int64_t, int64_t, T*, int64_t*, int64_t&) {
  return false;
}

#if defined(__AVX2__)
// The whole row, 8 outputs per step, the last step masked to what is left
// (rows of 7 or 14 outputs are common); returns whether a window held a NaN.
bool max_pool_2x2_simd(const float* r0, const float* r1, int64_t w, int64_t row0, int64_t ow, float* yp,
                       int64_t* ip, int64_t& done) {
  // Lane i is on when i < n (n may be <= 0 or > 8).
  auto mask32 = [](int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(n, 0, 8))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  };
  auto mask64 = [](int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(std::clamp<int64_t>(n, 0, 4)), _mm256_setr_epi64x(0, 1, 2, 3));
  };
  // Even and odd elements of 2n consecutive floats, in order (lanes past n are 0).
  auto split = [&](const float* p, int64_t n, __m256& even, __m256& odd) {
    const __m256 lo = _mm256_maskload_ps(p, mask32(2 * n)), hi = _mm256_maskload_ps(p + 8, mask32(2 * n - 8));
    even = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    odd = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
  };
  const __m256 off_b = _mm256_castsi256_ps(_mm256_set1_epi32(1));
  const __m256 off_c = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(w)));
  const __m256 off_d = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(w + 1)));
  const __m256i lane_lo = _mm256_setr_epi64x(0, 2, 4, 6), lane_hi = _mm256_setr_epi64x(8, 10, 12, 14);
  __m256 nan = _mm256_setzero_ps();
  for (int64_t ox = 0; ox < ow; ox += 8) {
    const int64_t n = std::min<int64_t>(8, ow - ox);
    __m256 a, b, c, d;
    split(r0 + 2 * ox, n, a, b);
    split(r1 + 2 * ox, n, c, d);
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(sum, sum, _CMP_UNORD_Q));
    const __m256 gb = _mm256_cmp_ps(b, a, _CMP_GT_OQ);
    __m256 best = _mm256_blendv_ps(a, b, gb);
    __m256 at = _mm256_and_ps(gb, off_b);
    const __m256 gc = _mm256_cmp_ps(c, best, _CMP_GT_OQ);
    best = _mm256_blendv_ps(best, c, gc);
    at = _mm256_blendv_ps(at, off_c, gc);
    const __m256 gd = _mm256_cmp_ps(d, best, _CMP_GT_OQ);
    best = _mm256_blendv_ps(best, d, gd);
    at = _mm256_blendv_ps(at, off_d, gd);
    _mm256_maskstore_ps(yp + ox, mask32(n), best);
    const __m256i at32 = _mm256_castps_si256(at);
    const __m256i base = _mm256_set1_epi64x(row0 + 2 * ox);
    const __m256i at_lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(at32));
    const __m256i at_hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(at32, 1));
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(ip + ox), mask64(n),
                           _mm256_add_epi64(_mm256_add_epi64(base, lane_lo), at_lo));
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(ip + ox + 4), mask64(n - 4),
                           _mm256_add_epi64(_mm256_add_epi64(base, lane_hi), at_hi));
  }
  done = ow;
  return _mm256_movemask_ps(nan) != 0;
}
#endif

template <class T>
void max_pool_2x2_row(const T* xp, int64_t w, int64_t oy, int64_t ow, T* yp, int64_t* ip) {
  const T* r0 = xp + 2 * oy * w;
  const T* r1 = r0 + w;
  const int64_t row0 = 2 * oy * w;
  int64_t done = 0;
  bool nan = max_pool_2x2_simd(r0, r1, w, row0, ow, yp, ip, done);
  for (int64_t ox = done; ox < ow; ++ox) {
    const T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
    nan |= std::isnan(a + b + c + d);
    T best = a;
    int64_t at = 0;
    if (b > best) best = b, at = 1;
    if (c > best) best = c, at = w;
    if (d > best) best = d, at = w + 1;
    yp[ox] = best;
    ip[ox] = row0 + 2 * ox + at;
  }
  if (!nan) return;
  for (int64_t ox = 0; ox < ow; ++ox) {
    const auto [best, best_at] = window_max(xp, w, Window{2 * oy, 2 * oy + 2, 2 * ox, 2 * ox + 2});
    yp[ox] = best;
    ip[ox] = best_at;
  }
}

template <class T>
void max_pool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) {
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = y.size(2), ow = y.size(3);
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  int64_t* id = indices.data<int64_t>();
  const bool two_by_two = p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 &&
                          p.pad_h == 0 && p.pad_w == 0;
  core::parallel_for(0, planes, plane_grain(h * w), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const T* xp = xd + plane * h * w;
      T* yp = yd + plane * oh * ow;
      int64_t* ip = id + plane * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        if (two_by_two) {
          max_pool_2x2_row(xp, w, oy, ow, yp + oy * ow, ip + oy * ow);
          continue;
        }
        for (int64_t ox = 0; ox < ow; ++ox) {
          const auto [best, best_at] = window_max(xp, w, window(p, h, w, oy, ox));
          yp[oy * ow + ox] = best;
          ip[oy * ow + ox] = best_at;
        }
      }
    }
  });
}

template <class T>
void max_pool_backward(const Tensor& gy, const Tensor& indices, Tensor& gx) {
  const int64_t planes = gx.size(0) * gx.size(1), in_plane = gx.size(2) * gx.size(3);
  const int64_t out_plane = gy.size(2) * gy.size(3);
  const T* gyd = gy.data<T>();
  const int64_t* id = indices.data<int64_t>();
  T* gxd = gx.data<T>();
  core::parallel_for(0, planes, plane_grain(in_plane), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      T* gxp = gxd + plane * in_plane;
      std::fill(gxp, gxp + in_plane, T(0));
      const T* gyp = gyd + plane * out_plane;
      const int64_t* ip = id + plane * out_plane;
      // Overlapping windows (stride < kernel) may pick the same input: add.
      for (int64_t i = 0; i < out_plane; ++i) gxp[ip[i]] += gyp[i];
    }
  });
}

// The divisor of output (oy, ox): the window clipped to the padded input when
// padding counts, else the number of real inputs in it.
int64_t avg_divisor(const Pool2dParams& p, int64_t h, int64_t w, int64_t oy, int64_t ox, const Window& win) {
  if (!p.count_include_pad) return (win.y1 - win.y0) * (win.x1 - win.x0);
  const int64_t y0 = oy * p.stride_h - p.pad_h, x0 = ox * p.stride_w - p.pad_w;
  const int64_t y1 = std::min(y0 + p.kernel_h, h + p.pad_h), x1 = std::min(x0 + p.kernel_w, w + p.pad_w);
  return (y1 - y0) * (x1 - x0);
}

template <class T>
void avg_pool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = y.size(2), ow = y.size(3);
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  core::parallel_for(0, planes, plane_grain(h * w), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const T* xp = xd + plane * h * w;
      T* yp = yd + plane * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          const Window win = window(p, h, w, oy, ox);
          T sum = 0;
          for (int64_t iy = win.y0; iy < win.y1; ++iy) {
            for (int64_t ix = win.x0; ix < win.x1; ++ix) sum += xp[iy * w + ix];
          }
          yp[oy * ow + ox] = sum / static_cast<T>(avg_divisor(p, h, w, oy, ox, win));
        }
      }
    }
  });
}

template <class T>
void avg_pool_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  const int64_t planes = gx.size(0) * gx.size(1), h = gx.size(2), w = gx.size(3);
  const int64_t oh = gy.size(2), ow = gy.size(3);
  const T* gyd = gy.data<T>();
  T* gxd = gx.data<T>();
  core::parallel_for(0, planes, plane_grain(h * w), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      T* gxp = gxd + plane * h * w;
      std::fill(gxp, gxp + h * w, T(0));
      const T* gyp = gyd + plane * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          const Window win = window(p, h, w, oy, ox);
          const T g = gyp[oy * ow + ox] / static_cast<T>(avg_divisor(p, h, w, oy, ox, win));
          for (int64_t iy = win.y0; iy < win.y1; ++iy) {
            for (int64_t ix = win.x0; ix < win.x1; ++ix) gxp[iy * w + ix] += g;
          }
        }
      }
    }
  });
}

void check_layout(const Tensor& a, const Tensor& b) {
  LOOM_ASSERT(a.dim() == 4 && b.dim() == 4 && a.is_contiguous() && b.is_contiguous());
}

}  // namespace

void CpuBackend::max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) const {
  check_layout(x, y);
  core::visit_float_dtype(x.dtype(), "max_pool2d", [&]<class T>() { max_pool_forward<T>(x, p, y, indices); });
}

void CpuBackend::max_pool2d_backward(const Tensor& gy, const Tensor& indices, Tensor& gx) const {
  check_layout(gy, gx);
  core::visit_float_dtype(gx.dtype(), "max_pool2d_backward",
                          [&]<class T>() { max_pool_backward<T>(gy, indices, gx); });
}

void CpuBackend::avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) const {
  check_layout(x, y);
  core::visit_float_dtype(x.dtype(), "avg_pool2d", [&]<class T>() { avg_pool_forward<T>(x, p, y); });
}

void CpuBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) const {
  check_layout(gy, gx);
  core::visit_float_dtype(gx.dtype(), "avg_pool2d_backward", [&]<class T>() { avg_pool_backward<T>(gy, p, gx); });
}

}  // namespace loom::ops::cpu
