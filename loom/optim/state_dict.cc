#include "loom/optim/state_dict.h"

#include <cmath>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "loom/core/error.h"

namespace loom::optim {

// Step counts a file may hold: far more than any run takes, far from overflowing when counted on.
constexpr int64_t kMaxSteps = int64_t{1} << 53;

void check_state(const StateLayout& layout, const OptimizerState& state) {
  LOOM_ASSERT(layout.params.size() == layout.shapes.size());
  LOOM_CHECK(state.params.size() == layout.params.size(), "optimizer state: {} parameters, the optimizer has {}",
             state.params.size(), layout.params.size());
  if (layout.counters) {
    LOOM_CHECK(state.step >= 0, "optimizer state: 'step' is {}, expected >= 0", state.step);
    LOOM_CHECK(state.lr >= 0.0 && std::isfinite(state.lr), "optimizer state: 'lr' is {}, expected a finite value >= 0",
               state.lr);
  }
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const std::string& name = layout.params[i];
    const ParamState& p = state.params[i];
    LOOM_CHECK(p.step >= 0, "optimizer state: '{}.step' is {}, expected >= 1 (or no entry)", name, p.step);
    const size_t want = p.step > 0 ? layout.slots.size() : 0;
    LOOM_CHECK(p.slots.size() == want,
               "optimizer state: parameter '{}' after {} updates has {} slots, rule '{}' keeps {}", name, p.step,
               p.slots.size(), layout.rule, want);
    for (size_t k = 0; k < p.slots.size(); ++k) {
      const Tensor& t = p.slots[k];
      const std::string key = name + "." + layout.slots[k];
      LOOM_CHECK(t.defined(), "optimizer state: '{}' is an undefined tensor", key);
      LOOM_CHECK_T(ShapeError, t.shape() == layout.shapes[i],
                   "optimizer state: '{}' has shape {}, parameter '{}' has {}", key, core::to_string(t.shape()), name,
                   core::to_string(layout.shapes[i]));
      LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "optimizer state: '{}' has dtype {}, expected a float", key,
                   t.dtype());
    }
  }
}

NamedTensors to_state_dict(const StateLayout& layout, const OptimizerState& state) {
  check_state(layout, state);
  NamedTensors sd;
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const ParamState& p = state.params[i];
    if (p.step == 0) continue;
    for (size_t k = 0; k < p.slots.size(); ++k) sd.emplace_back(layout.params[i] + "." + layout.slots[k], p.slots[k]);
    sd.emplace_back(layout.params[i] + ".step", Tensor::scalar<int64_t>(p.step));
  }
  if (layout.counters) {
    sd.emplace_back("step", Tensor::scalar<int64_t>(state.step));
    sd.emplace_back("lr", Tensor::scalar<double>(state.lr));
  }
  return sd;
}

OptimizerState from_state_dict(const StateLayout& layout, const NamedTensors& sd) {
  std::unordered_map<std::string_view, const Tensor*> by_name;
  for (const auto& [name, t] : sd) {
    LOOM_CHECK(by_name.emplace(name, &t).second, "optimizer state: '{}' appears twice", name);
    LOOM_CHECK(t.defined(), "optimizer state: '{}' is an undefined tensor", name);
  }
  std::unordered_set<std::string_view> taken;
  auto take = [&](const std::string& key) -> const Tensor* {
    auto it = by_name.find(key);
    if (it == by_name.end()) return nullptr;
    taken.insert(it->first);
    return it->second;
  };
  auto scalar = [&](const std::string& key, bool required) -> const Tensor* {
    const Tensor* t = take(key);
    LOOM_CHECK(t || !required, "optimizer state: '{}' is missing", key);
    LOOM_CHECK_T(ShapeError, !t || t->numel() == 1, "optimizer state: '{}' must hold one value, has shape {}", key,
                 core::to_string(t ? t->shape() : core::Shape{}));
    return t;
  };

  OptimizerState state;
  if (layout.counters) {
    state.step = scalar("step", true)->item<int64_t>();
    LOOM_CHECK(state.step <= kMaxSteps, "optimizer state: 'step' is {}, more than {}", state.step, kMaxSteps);
    state.lr = scalar("lr", true)->item<double>();
  }
  state.params.resize(layout.params.size());
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const std::string& name = layout.params[i];
    ParamState& p = state.params[i];
    const Tensor* step = scalar(name + ".step", false);
    if (step) {
      p.step = step->item<int64_t>();
      LOOM_CHECK(p.step >= 1 && p.step <= kMaxSteps, "optimizer state: '{}.step' is {}, expected 1 to {}", name,
                 p.step, kMaxSteps);
    }
    for (const std::string& slot : layout.slots) {
      const std::string key = name + "." + slot;
      const Tensor* t = take(key);
      LOOM_CHECK(!t || step, "optimizer state: '{}' is present but '{}.step' is missing", key, name);
      LOOM_CHECK(t || !step, "optimizer state: '{}' is missing (rule '{}' keeps {} for every updated parameter)", key,
                 layout.rule, slot);
      if (t) p.slots.push_back(*t);
    }
  }
  if (taken.size() != sd.size()) {
    for (const auto& [name, t] : sd) {
      LOOM_CHECK(taken.contains(name), "optimizer state: unexpected '{}' (not a parameter of this optimizer, or not a "
                 "state slot of rule '{}')", name, layout.rule);
    }
  }
  check_state(layout, state);
  return state;
}

}  // namespace loom::optim
