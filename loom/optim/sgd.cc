// SGD as torch.optim.SGD computes it (momentum buffer starts as the first
// gradient; Nesterov looks one momentum step ahead).
#include "loom/optim/update_rule.h"

namespace loom::optim {
namespace {

// One fused pass over [0, n). kFirst: the momentum buffer is set, not blended.
template <class T, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_loop(T* __restrict w, const T* __restrict g, T* __restrict buf, int64_t n, T lr, T weight_decay, T momentum,
              T one_minus_dampening) {
  for (int64_t i = 0; i < n; ++i) {
    T d = g[i] + weight_decay * w[i];
    if constexpr (kMomentum) {
      T b = kFirst ? d : momentum * buf[i] + one_minus_dampening * d;
      buf[i] = b;
      d = kNesterov ? d + momentum * b : b;
    }
    w[i] = w[i] - lr * d;
  }
}

template <class T>
void sgd_update(const SgdOptions& o, T* w, const T* g, T* const* state, int64_t lo, int64_t hi, const StepInfo& info) {
  const int64_t n = hi - lo;
  const T lr = static_cast<T>(info.lr), wd = static_cast<T>(o.weight_decay);
  const T mom = static_cast<T>(o.momentum), omd = static_cast<T>(1.0 - o.dampening);
  w += lo;
  g += lo;
  if (o.momentum == 0.0) {
    sgd_loop<T, false, false, false>(w, g, nullptr, n, lr, wd, mom, omd);
    return;
  }
  T* buf = state[0] + lo;
  const bool first = info.step == 1;
  if (o.nesterov) {
    first ? sgd_loop<T, true, true, true>(w, g, buf, n, lr, wd, mom, omd)
          : sgd_loop<T, true, false, true>(w, g, buf, n, lr, wd, mom, omd);
  } else {
    first ? sgd_loop<T, true, true, false>(w, g, buf, n, lr, wd, mom, omd)
          : sgd_loop<T, true, false, false>(w, g, buf, n, lr, wd, mom, omd);
  }
}

}  // namespace

Sgd::Sgd(const SgdOptions& o) : o_(o) {
  LOOM_CHECK(o.lr >= 0.0, "sgd: lr must be >= 0, got {}", o.lr);
  LOOM_CHECK(o.momentum >= 0.0, "sgd: momentum must be >= 0, got {}", o.momentum);
  LOOM_CHECK(o.weight_decay >= 0.0, "sgd: weight_decay must be >= 0, got {}", o.weight_decay);
  LOOM_CHECK(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0),
             "sgd: nesterov needs momentum > 0 and dampening == 0, got momentum {} and dampening {}", o.momentum,
             o.dampening);
  if (o.momentum != 0.0) names_ = {"momentum_buffer"};
}

void Sgd::update(float* w, const float* g, float* const* state, int64_t lo, int64_t hi, const StepInfo& info) const {
  sgd_update(o_, w, g, state, lo, hi, info);
}

void Sgd::update(double* w, const double* g, double* const* state, int64_t lo, int64_t hi,
                 const StepInfo& info) const {
  sgd_update(o_, w, g, state, lo, hi, info);
}

}  // namespace loom::optim
