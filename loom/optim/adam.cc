// Adam and AdamW as torch.optim computes them: bias-corrected moments, eps
// added after the bias-corrected square root, optional AMSGrad maximum.
#include <cmath>

#include "loom/optim/update_rule.h"

namespace loom::optim {
namespace {

template <class T>
struct AdamCoeffs {
  T l2;              // added to the gradient: weight_decay (Adam) or 0
  T decay;           // multiplies the weights first: 1 - lr * weight_decay (AdamW) or 1
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T step_size;       // lr / (1 - beta1^t)
  T bc2_sqrt;        // sqrt(1 - beta2^t)
  T eps;
};

// One fused pass over [0, n). With kAmsgrad, vmax keeps the running maximum
// of v and replaces it in the denominator.
template <class T, bool kAmsgrad>
void adam_loop(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v, T* __restrict vmax, int64_t n,
               const AdamCoeffs<T> c) {
  for (int64_t i = 0; i < n; ++i) {
    const T wi = w[i];
    const T gi = g[i] + c.l2 * wi;
    const T mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
    T vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) {
      vi = vi > vmax[i] ? vi : vmax[i];
      vmax[i] = vi;
    }
    const T denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    w[i] = wi * c.decay - c.step_size * (mi / denom);
  }
}

}  // namespace

Adam::Adam(const AdamOptions& o) : Adam(o.betas, o.eps, o.weight_decay, o.amsgrad, false) {
  LOOM_CHECK(o.lr >= 0.0, "adam: lr must be >= 0, got {}", o.lr);
}

AdamW::AdamW(const AdamWOptions& o) : Adam(o.betas, o.eps, o.weight_decay, o.amsgrad, true) {
  LOOM_CHECK(o.lr >= 0.0, "adamw: lr must be >= 0, got {}", o.lr);
}

Adam::Adam(const Betas& betas, double eps, double weight_decay, bool amsgrad, bool decoupled)
    : betas_(betas), eps_(eps), weight_decay_(weight_decay), amsgrad_(amsgrad), decoupled_(decoupled) {
  const char* who = decoupled ? "adamw" : "adam";
  LOOM_CHECK(betas.beta1 >= 0.0 && betas.beta1 < 1.0, "{}: beta1 must be in [0, 1), got {}", who, betas.beta1);
  LOOM_CHECK(betas.beta2 >= 0.0 && betas.beta2 < 1.0, "{}: beta2 must be in [0, 1), got {}", who, betas.beta2);
  LOOM_CHECK(eps >= 0.0, "{}: eps must be >= 0, got {}", who, eps);
  LOOM_CHECK(weight_decay >= 0.0, "{}: weight_decay must be >= 0, got {}", who, weight_decay);
  names_ = {"exp_avg", "exp_avg_sq"};
  if (amsgrad) names_.push_back("max_exp_avg_sq");
}

template <class T>
void Adam::update_impl(T* w, const T* g, T* const* state, int64_t lo, int64_t hi, const StepInfo& info) const {
  const double t = static_cast<double>(info.step);
  const double bc1 = 1.0 - std::pow(betas_.beta1, t);
  const double bc2 = 1.0 - std::pow(betas_.beta2, t);
  AdamCoeffs<T> c;
  c.l2 = static_cast<T>(decoupled_ ? 0.0 : weight_decay_);
  c.decay = static_cast<T>(decoupled_ ? 1.0 - info.lr * weight_decay_ : 1.0);
  c.beta1 = static_cast<T>(betas_.beta1);
  c.one_minus_beta1 = static_cast<T>(1.0 - betas_.beta1);
  c.beta2 = static_cast<T>(betas_.beta2);
  c.one_minus_beta2 = static_cast<T>(1.0 - betas_.beta2);
  c.step_size = static_cast<T>(info.lr / bc1);
  c.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
  c.eps = static_cast<T>(eps_);
  const int64_t n = hi - lo;
  if (amsgrad_) {
    adam_loop<T, true>(w + lo, g + lo, state[0] + lo, state[1] + lo, state[2] + lo, n, c);
  } else {
    adam_loop<T, false>(w + lo, g + lo, state[0] + lo, state[1] + lo, nullptr, n, c);
  }
}

void Adam::update(float* w, const float* g, float* const* state, int64_t lo, int64_t hi, const StepInfo& info) const {
  update_impl(w, g, state, lo, hi, info);
}

void Adam::update(double* w, const double* g, double* const* state, int64_t lo, int64_t hi,
                  const StepInfo& info) const {
  update_impl(w, g, state, lo, hi, info);
}

}  // namespace loom::optim
