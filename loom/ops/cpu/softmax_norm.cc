// Row-wise kernels over the last dim of contiguous [rows, n]: softmax,
// log-softmax and layer norm, forward and backward.
#include <cmath>

#include "loom/ops/cpu/cpu_backend.h"
#include "loom/ops/cpu/loops.h"

namespace loom::ops::cpu {
namespace {

template <class F>
void for_rows(int64_t rows, int64_t n, const F& f) {
  core::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) f(r);
  });
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log) const {
  const int64_t n = x.shape().back(), rows = x.numel() / std::max<int64_t>(n, 1);
  core::visit_float_dtype(x.dtype(), log ? "log_softmax" : "softmax", [&]<class T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* py = static_cast<T*>(y.data_ptr());
    for_rows(rows, n, [&](int64_t r) {
      const T* xr = px + r * n;
      T* yr = py + r * n;
      T mx = -INFINITY;
      for (int64_t i = 0; i < n; ++i) mx = std::max(mx, xr[i]);
      T s = 0;
      for (int64_t i = 0; i < n; ++i) {
        yr[i] = std::exp(xr[i] - mx);
        s += yr[i];
      }
      if (log) {
        const T lse = mx + std::log(s);
        for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] - lse;
      } else {
        const T inv = T(1) / s;
        for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
      }
    });
  });
}

void CpuBackend::softmax_backward(const Tensor& gy, const Tensor& y, Tensor& gx, bool log) const {
  const int64_t n = y.shape().back(), rows = y.numel() / std::max<int64_t>(n, 1);
  core::visit_float_dtype(y.dtype(), "softmax_backward", [&]<class T>() {
    const T* pg = static_cast<const T*>(gy.data_ptr());
    const T* py = static_cast<const T*>(y.data_ptr());
    T* px = static_cast<T*>(gx.data_ptr());
    for_rows(rows, n, [&](int64_t r) {
      const T* g = pg + r * n;
      const T* yr = py + r * n;
      T* o = px + r * n;
      T s = 0;
      if (log) {
        for (int64_t i = 0; i < n; ++i) s += g[i];
        for (int64_t i = 0; i < n; ++i) o[i] = g[i] - std::exp(yr[i]) * s;
      } else {
        for (int64_t i = 0; i < n; ++i) s += g[i] * yr[i];
        for (int64_t i = 0; i < n; ++i) o[i] = yr[i] * (g[i] - s);
      }
    });
  });
}

void CpuBackend::layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps, Tensor& y,
                            Tensor& mean, Tensor& rstd) const {
  const int64_t n = x.shape().back(), rows = x.numel() / std::max<int64_t>(n, 1);
  core::visit_float_dtype(x.dtype(), "layer_norm", [&]<class T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* pw = weight ? static_cast<const T*>(weight->data_ptr()) : nullptr;
    const T* pb = bias ? static_cast<const T*>(bias->data_ptr()) : nullptr;
    T* py = static_cast<T*>(y.data_ptr());
    T* pm = static_cast<T*>(mean.data_ptr());
    T* pr = static_cast<T*>(rstd.data_ptr());
    for_rows(rows, n, [&](int64_t r) {
      const T* xr = px + r * n;
      T* yr = py + r * n;
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += xr[i];
      const double mu = s / static_cast<double>(n);
      double v = 0;
      for (int64_t i = 0; i < n; ++i) v += (xr[i] - mu) * (xr[i] - mu);
      const T rs = static_cast<T>(1.0 / std::sqrt(v / static_cast<double>(n) + eps));
      const T m = static_cast<T>(mu);
      pm[r] = m;
      pr[r] = rs;
      for (int64_t i = 0; i < n; ++i) {
        T h = (xr[i] - m) * rs;
        if (pw) h *= pw[i];
        if (pb) h += pb[i];
        yr[i] = h;
      }
    });
  });
}

void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                     const Tensor* weight, Tensor* gx, Tensor* gweight, Tensor* gbias) const {
  const int64_t n = x.shape().back(), rows = x.numel() / std::max<int64_t>(n, 1);
  core::visit_float_dtype(x.dtype(), "layer_norm_backward", [&]<class T>() {
    const T* pg = static_cast<const T*>(gy.data_ptr());
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* pm = static_cast<const T*>(mean.data_ptr());
    const T* pr = static_cast<const T*>(rstd.data_ptr());
    const T* pw = weight ? static_cast<const T*>(weight->data_ptr()) : nullptr;
    if (gx) {
      T* po = static_cast<T*>(gx->data_ptr());
      for_rows(rows, n, [&](int64_t r) {
        const T* g = pg + r * n;
        const T* xr = px + r * n;
        T* o = po + r * n;
        // With h = (x - mu) * rstd and d = g * w: gx = rstd * (d - mean(d) - h * mean(d * h)).
        double sd = 0, sdh = 0;
        for (int64_t i = 0; i < n; ++i) {
          const T d = pw ? g[i] * pw[i] : g[i];
          const T h = (xr[i] - pm[r]) * pr[r];
          sd += d;
          sdh += d * h;
        }
        const T md = static_cast<T>(sd / n), mdh = static_cast<T>(sdh / n);
        for (int64_t i = 0; i < n; ++i) {
          const T d = pw ? g[i] * pw[i] : g[i];
          const T h = (xr[i] - pm[r]) * pr[r];
          o[i] = pr[r] * (d - md - h * mdh);
        }
      });
    }
    if (gweight || gbias) {
      T* gw = gweight ? static_cast<T*>(gweight->data_ptr()) : nullptr;
      T* gb = gbias ? static_cast<T*>(gbias->data_ptr()) : nullptr;
      core::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          T sw = 0, sb = 0;
          for (int64_t r = 0; r < rows; ++r) {
            const T g = pg[r * n + i];
            sw += g * (px[r * n + i] - pm[r]) * pr[r];
            sb += g;
          }
          if (gw) gw[i] = sw;
          if (gb) gb[i] = sb;
        }
      });
    }
  });
}

}  // namespace loom::ops::cpu
