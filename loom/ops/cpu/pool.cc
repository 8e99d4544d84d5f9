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

// The common 2x2, stride 2, unpadded window, unrolled: the same result and
// index as window_max (first of equal maxima, first NaN), without its
// general loop bounds and per-element NaN test on the usual path.
template <class T>
void max_pool_2x2_row(const T* xp, int64_t w, int64_t oy, int64_t ow, T* yp, int64_t* ip) {
  for (int64_t ox = 0; ox < ow; ++ox) {
    const int64_t i0 = 2 * oy * w + 2 * ox;
    const T a = xp[i0], b = xp[i0 + 1], c = xp[i0 + w], d = xp[i0 + w + 1];
    if (std::isnan(a + b + c + d)) {
      const auto [best, best_at] = window_max(xp, w, Window{2 * oy, 2 * oy + 2, 2 * ox, 2 * ox + 2});
      yp[ox] = best;
      ip[ox] = best_at;
      continue;
    }
    T best = a;
    int64_t at = i0;
    if (b > best) best = b, at = i0 + 1;
    if (c > best) best = c, at = i0 + w;
    if (d > best) best = d, at = i0 + w + 1;
    yp[ox] = best;
    ip[ox] = at;
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
