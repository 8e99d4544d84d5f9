#include "loom/optim/update_rule.h"

#include <array>
#include <cmath>

#include "loom/core/parallel.h"

namespace loom::optim {
namespace {

// Elements per task: the rules are memory-bound, so a chunk should be big
// enough to amortise waking a thread (about 128-256 KiB of weights).
constexpr int64_t kGrain = 1 << 15;

}  // namespace

template <class T>
void UpdateRule::run(std::span<T> weights, std::span<const T> grads, std::span<T* const> state,
                     const StepInfo& info) const {
  LOOM_CHECK_T(ShapeError, grads.size() == weights.size(), "{}.step: {} gradients for {} weights", name(),
               grads.size(), weights.size());
  LOOM_CHECK(state.size() == num_state_slots(), "{}.step: {} state slots given, the rule has {}", name(),
             state.size(), num_state_slots());
  LOOM_CHECK(info.step >= 1, "{}.step: step must be >= 1 (1 for the first update), got {}", name(), info.step);
  LOOM_CHECK(info.lr >= 0.0 && std::isfinite(info.lr), "{}.step: learning rate must be finite and >= 0, got {}",
             name(), info.lr);
  for (size_t k = 0; k < state.size(); ++k) {
    LOOM_CHECK(state[k] != nullptr || weights.empty(), "{}.step: state slot '{}' is null", name(),
               state_names()[k]);
  }
  T* w = weights.data();
  const T* g = grads.data();
  T* const* s = state.data();
  core::parallel_for(0, static_cast<int64_t>(weights.size()), kGrain,
                     [&](int64_t lo, int64_t hi) { update(w, g, s, lo, hi, info); });
}

void UpdateRule::step(std::span<float> weights, std::span<const float> grads, std::span<float* const> state,
                      const StepInfo& info) const {
  run(weights, grads, state, info);
}

void UpdateRule::step(std::span<double> weights, std::span<const double> grads, std::span<double* const> state,
                      const StepInfo& info) const {
  run(weights, grads, state, info);
}

void UpdateRule::step(const Tensor& weights, const Tensor& grads, std::span<const Tensor> state,
                      const StepInfo& info) const {
  LOOM_CHECK(weights.defined() && grads.defined(), "{}.step: undefined weights or gradients", name());
  LOOM_CHECK(state.size() == num_state_slots(), "{}.step: {} state tensors given, the rule has {}", name(),
             state.size(), num_state_slots());
  LOOM_CHECK(num_state_slots() <= kMaxStateSlots, "{}.step: {} state slots exceed the limit of {}", name(),
             num_state_slots(), kMaxStateSlots);
  auto check = [&](const Tensor& t, std::string_view what) {
    LOOM_CHECK(t.device().is_cpu(), "{}.step: {} is on {}, only CPU tensors are supported here", name(), what,
               core::to_string(t.device()));
    LOOM_CHECK(t.is_contiguous(), "{}.step: {} must be contiguous", name(), what);
    LOOM_CHECK_T(TypeError, t.dtype() == weights.dtype(), "{}.step: {} has dtype {}, weights have {}", name(), what,
                 t.dtype(), weights.dtype());
    LOOM_CHECK_T(ShapeError, t.numel() == weights.numel(), "{}.step: {} has {} elements, weights have {}", name(),
                 what, t.numel(), weights.numel());
  };
  check(weights, "weights");
  check(grads, "gradients");
  for (size_t k = 0; k < state.size(); ++k) {
    LOOM_CHECK(state[k].defined(), "{}.step: state '{}' is undefined", name(), state_names()[k]);
    check(state[k], state_names()[k]);
  }
  const auto n = static_cast<size_t>(weights.numel());
  core::visit_float_dtype(weights.dtype(), "optim step", [&]<class T>() {
    std::array<T*, kMaxStateSlots> ptrs{};
    for (size_t k = 0; k < state.size(); ++k) ptrs[k] = static_cast<T*>(state[k].data_ptr());
    run(std::span<T>(static_cast<T*>(weights.data_ptr()), n),
        std::span<const T>(static_cast<const T*>(grads.data_ptr()), n), std::span<T* const>(ptrs.data(), state.size()),
        info);
  });
}

}  // namespace loom::optim
