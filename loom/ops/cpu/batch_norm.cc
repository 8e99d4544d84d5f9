// Batch normalisation over contiguous [N, C] or [N, C, H, W], viewed as
// [N, C, HW]: one mean and variance per channel, over N and HW.
//
// Channels are independent, so the loops run in parallel over channels.
// Sums are accumulated in double whatever the element type: a channel of a
// large batch holds millions of values, and the variance is taken two-pass
// (mean first, then squared deviations) so it does not cancel.
#include <algorithm>
#include <cmath>

#include "loom/core/parallel.h"
#include "loom/ops/cpu/cpu_backend.h"

namespace loom::ops::cpu {
namespace {

struct BnShape {
  int64_t n, c, hw;
  int64_t count() const { return n * hw; }  // values per channel

  explicit BnShape(const Tensor& x)
      : n(x.size(0)), c(x.size(1)), hw(x.dim() > 2 ? x.numel() / std::max<int64_t>(1, n * c) : 1) {}

  // Calls f(offset) with the offset of each contiguous run of `hw` values of
  // channel `ch` (one run per sample).
  template <class F>
  void for_each_run(int64_t ch, const F& f) const {
    for (int64_t i = 0; i < n; ++i) f((i * c + ch) * hw);
  }
};

template <class T>
void bn_forward(const BnShape& s, const T* x, const T* weight, const T* bias, T* running_mean, T* running_var,
                bool training, double momentum, double eps, T* y, T* save_mean, T* save_invstd) {
  const double count = static_cast<double>(s.count());
  core::parallel_for(0, s.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      double mean, invstd;
      if (training) {
        double sum = 0;
        s.for_each_run(ch, [&](int64_t off) {
          for (int64_t i = 0; i < s.hw; ++i) sum += x[off + i];
        });
        mean = sum / count;
        double sq = 0;
        s.for_each_run(ch, [&](int64_t off) {
          for (int64_t i = 0; i < s.hw; ++i) {
            const double d = x[off + i] - mean;
            sq += d * d;
          }
        });
        // Normalise with the biased variance; track the unbiased one (PyTorch).
        const double var = sq / count;
        invstd = 1.0 / std::sqrt(var + eps);
        if (running_mean) running_mean[ch] = static_cast<T>((1 - momentum) * running_mean[ch] + momentum * mean);
        if (running_var) {
          const double unbiased = count > 1 ? sq / (count - 1) : var;
          running_var[ch] = static_cast<T>((1 - momentum) * running_var[ch] + momentum * unbiased);
        }
      } else {
        mean = running_mean[ch];
        invstd = 1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps);
      }
      save_mean[ch] = static_cast<T>(mean);
      save_invstd[ch] = static_cast<T>(invstd);
      // y = (x - mean) * invstd * w + b, folded into one multiply-add.
      const T scale = static_cast<T>(invstd * (weight ? static_cast<double>(weight[ch]) : 1.0));
      const T shift = static_cast<T>((bias ? static_cast<double>(bias[ch]) : 0.0) - mean * scale);
      s.for_each_run(ch, [&](int64_t off) {
        for (int64_t i = 0; i < s.hw; ++i) y[off + i] = x[off + i] * scale + shift;
      });
    }
  });
}

// With xhat = (x - mean) * invstd and y = w * xhat + b:
//   gbias = sum(gy),  gweight = sum(gy * xhat),
//   gx = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))   (training:
//        the batch statistics depend on x)
//   gx = w * invstd * gy                                          (eval)
template <class T>
void bn_backward(const BnShape& s, const T* gy, const T* x, const T* weight, const T* save_mean,
                 const T* save_invstd, bool training, T* gx, T* gweight, T* gbias) {
  const double count = static_cast<double>(s.count());
  const bool need_sums = training || gweight || gbias;
  core::parallel_for(0, s.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      const double mean = save_mean[ch], invstd = save_invstd[ch];
      double sum_gy = 0, sum_gy_xmu = 0;  // sum(gy), sum(gy * (x - mean))
      if (need_sums) {
        s.for_each_run(ch, [&](int64_t off) {
          for (int64_t i = 0; i < s.hw; ++i) {
            sum_gy += gy[off + i];
            sum_gy_xmu += gy[off + i] * (x[off + i] - mean);
          }
        });
      }
      if (gweight) gweight[ch] = static_cast<T>(sum_gy_xmu * invstd);
      if (gbias) gbias[ch] = static_cast<T>(sum_gy);
      if (!gx) continue;
      const double w = weight ? static_cast<double>(weight[ch]) : 1.0;
      const T scale = static_cast<T>(w * invstd);
      if (!training) {
        s.for_each_run(ch, [&](int64_t off) {
          for (int64_t i = 0; i < s.hw; ++i) gx[off + i] = gy[off + i] * scale;
        });
        continue;
      }
      // gx = scale * (gy - mean_gy - (x - mean) * k), k = mean(gy * (x - mean)) * invstd^2.
      const T mean_gy = static_cast<T>(sum_gy / count);
      const T k = static_cast<T>(sum_gy_xmu / count * invstd * invstd);
      const T mu = static_cast<T>(mean);
      s.for_each_run(ch, [&](int64_t off) {
        for (int64_t i = 0; i < s.hw; ++i) gx[off + i] = scale * (gy[off + i] - mean_gy - (x[off + i] - mu) * k);
      });
    }
  });
}

template <class T>
const T* ptr_or_null(const Tensor* t) {
  return t ? t->data<T>() : nullptr;
}
template <class T>
T* mut_ptr_or_null(Tensor* t) {
  return t ? t->data<T>() : nullptr;
}

}  // namespace

void CpuBackend::batch_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, Tensor* running_mean,
                            Tensor* running_var, bool training, double momentum, double eps, Tensor& y,
                            Tensor& save_mean, Tensor& save_invstd) const {
  LOOM_ASSERT(x.dim() >= 2 && x.is_contiguous() && y.is_contiguous());
  LOOM_ASSERT(training || (running_mean && running_var));
  const BnShape s(x);
  core::visit_float_dtype(x.dtype(), "batch_norm", [&]<class T>() {
    bn_forward<T>(s, x.data<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias), mut_ptr_or_null<T>(running_mean),
                  mut_ptr_or_null<T>(running_var), training, momentum, eps, y.data<T>(), save_mean.data<T>(),
                  save_invstd.data<T>());
  });
}

void CpuBackend::batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* weight,
                                     const Tensor& save_mean, const Tensor& save_invstd, bool training, Tensor* gx,
                                     Tensor* gweight, Tensor* gbias) const {
  LOOM_ASSERT(x.dim() >= 2 && x.is_contiguous() && gy.is_contiguous());
  const BnShape s(x);
  core::visit_float_dtype(x.dtype(), "batch_norm_backward", [&]<class T>() {
    bn_backward<T>(s, gy.data<T>(), x.data<T>(), ptr_or_null<T>(weight), save_mean.data<T>(),
                   save_invstd.data<T>(), training, mut_ptr_or_null<T>(gx), mut_ptr_or_null<T>(gweight),
                   mut_ptr_or_null<T>(gbias));
  });
}

}  // namespace loom::ops::cpu
