#include "loom/optim/optimizer.h"

#include <cmath>
#include <unordered_set>

#include "loom/autograd/engine.h"
#include "loom/ops/creation.h"

namespace loom::optim {
namespace {

NamedTensors name_by_index(std::vector<Tensor> params) {
  NamedTensors named;
  named.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) named.emplace_back(std::to_string(i), std::move(params[i]));
  return named;
}

void check_lr(double lr) {
  LOOM_CHECK(lr >= 0.0 && std::isfinite(lr), "optimizer: learning rate must be finite and >= 0, got {}", lr);
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, std::unique_ptr<UpdateRule> rule, double lr)
    : Optimizer(name_by_index(std::move(params)), std::move(rule), lr) {}

Optimizer::Optimizer(NamedTensors named_params, std::unique_ptr<UpdateRule> rule, double lr)
    : rule_(std::move(rule)), lr_(lr) {
  LOOM_CHECK(rule_ != nullptr, "optimizer: no update rule");
  LOOM_CHECK(!named_params.empty(), "optimizer: empty parameter list");
  LOOM_CHECK(rule_->num_state_slots() <= kMaxStateSlots, "optimizer: rule '{}' has {} state slots, at most {}",
             rule_->name(), rule_->num_state_slots(), kMaxStateSlots);
  check_lr(lr);
  std::unordered_set<std::string> seen_names;
  std::unordered_set<const core::TensorImpl*> seen_params;
  for (auto& [name, p] : named_params) {
    LOOM_CHECK(!name.empty(), "optimizer: a parameter has an empty name");
    LOOM_CHECK(p.defined(), "optimizer: parameter '{}' is undefined", name);
    LOOM_CHECK(seen_names.insert(name).second, "optimizer: parameter name '{}' appears twice", name);
    LOOM_CHECK(seen_params.insert(p.impl()).second, "optimizer: parameter '{}' appears twice in the list", name);
    LOOM_CHECK_T(TypeError, p.dtype() == core::DType::F32 || p.dtype() == core::DType::F64,
                 "optimizer: parameter '{}' has dtype {}, expected f32 or f64", name, p.dtype());
    LOOM_CHECK(p.device().is_cpu(), "optimizer: parameter '{}' is on {}; only CPU parameters are supported", name,
               core::to_string(p.device()));
    LOOM_CHECK(p.is_leaf(), "optimizer: parameter '{}' is not a leaf tensor (it has a grad_fn)", name);
    LOOM_CHECK(p.is_contiguous(), "optimizer: parameter '{}' is not contiguous", name);
    names_.push_back(std::move(name));
    params_.push_back(std::move(p));
  }
  state_.resize(params_.size());
  param_steps_.assign(params_.size(), 0);
}

void Optimizer::set_lr(double lr) {
  check_lr(lr);
  lr_ = lr;
}

int64_t Optimizer::param_step(size_t i) const {
  LOOM_CHECK_T(IndexError, i < params_.size(), "optimizer: parameter index {} out of range ({} parameters)", i,
               params_.size());
  return param_steps_[i];
}

Tensor Optimizer::state(size_t i, std::string_view slot) const {
  LOOM_CHECK_T(IndexError, i < params_.size(), "optimizer: parameter index {} out of range ({} parameters)", i,
               params_.size());
  const auto& names = rule_->state_names();
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k] == slot) return state_[i].empty() ? Tensor() : state_[i][k];
  }
  throw ValueError(format("optimizer: rule '{}' has no state slot '{}'", rule_->name(), slot));
}

void Optimizer::step() {
  autograd::NoGradGuard no_grad;
  // Check everything first so that a bad gradient leaves all parameters as they were.
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    const auto& p = params_[i];
    LOOM_CHECK_T(ShapeError, g.shape() == p.shape(), "optimizer: gradient of '{}' has shape {}, parameter has {}",
                 names_[i], core::to_string(g.shape()), core::to_string(p.shape()));
    LOOM_CHECK_T(TypeError, g.dtype() == p.dtype(), "optimizer: gradient of '{}' has dtype {}, parameter has {}",
                 names_[i], g.dtype(), p.dtype());
    LOOM_CHECK(g.device() == p.device(), "optimizer: gradient of '{}' is on {}, parameter on {}", names_[i],
               core::to_string(g.device()), core::to_string(p.device()));
    LOOM_CHECK(g.is_contiguous(), "optimizer: gradient of '{}' is not contiguous", names_[i]);
  }
  const size_t slots = rule_->num_state_slots();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    auto& st = state_[i];
    if (st.size() != slots) {
      st.clear();
      for (size_t k = 0; k < slots; ++k) st.push_back(ops::zeros(params_[i].shape(), params_[i].dtype()));
    }
    rule_->step(params_[i], g, st, {.step = param_steps_[i] + 1, .lr = lr_});
    ++param_steps_[i];
  }
  ++step_count_;
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& p : params_) autograd::zero_grad(p, set_to_none);
}

StateLayout Optimizer::state_layout() const {
  StateLayout layout{.rule = std::string(rule_->name()), .slots = rule_->state_names(), .params = names_};
  for (const auto& p : params_) layout.shapes.push_back(p.shape());
  return layout;
}

OptimizerState Optimizer::state_snapshot() const {
  OptimizerState s{.step = step_count_, .lr = lr_};
  for (size_t i = 0; i < params_.size(); ++i) {
    ParamState& p = s.params.emplace_back();
    p.step = param_steps_[i];
    if (p.step == 0) continue;
    for (const Tensor& slot : state_[i]) p.slots.push_back(ops::clone(slot));
  }
  return s;
}

void Optimizer::load_state(const OptimizerState& s) {
  check_state(state_layout(), s);  // everything before changing anything
  const size_t slots = rule_->num_state_slots();
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamState& p = s.params[i];
    auto& st = state_[i];
    if (p.step == 0) {
      st.clear();
    } else {
      // Copy into the existing buffers where there are some.
      if (st.size() != slots) {
        st.clear();
        for (size_t k = 0; k < slots; ++k) st.push_back(Tensor::empty(params_[i].shape(), params_[i].dtype()));
      }
      for (size_t k = 0; k < slots; ++k) ops::copy_(st[k], p.slots[k]);
    }
    param_steps_[i] = p.step;
  }
  step_count_ = s.step;
  lr_ = s.lr;
}

NamedTensors Optimizer::state_dict() const { return to_state_dict(state_layout(), state_snapshot()); }

void Optimizer::load_state_dict(const NamedTensors& sd) { load_state(from_state_dict(state_layout(), sd)); }

Optimizer sgd(std::vector<Tensor> params, const SgdOptions& o) {
  return Optimizer(std::move(params), std::make_unique<Sgd>(o), o.lr);
}
Optimizer sgd(NamedTensors params, const SgdOptions& o) {
  return Optimizer(std::move(params), std::make_unique<Sgd>(o), o.lr);
}
Optimizer adam(std::vector<Tensor> params, const AdamOptions& o) {
  return Optimizer(std::move(params), std::make_unique<Adam>(o), o.lr);
}
Optimizer adam(NamedTensors params, const AdamOptions& o) {
  return Optimizer(std::move(params), std::make_unique<Adam>(o), o.lr);
}
Optimizer adamw(std::vector<Tensor> params, const AdamWOptions& o) {
  return Optimizer(std::move(params), std::make_unique<AdamW>(o), o.lr);
}
Optimizer adamw(NamedTensors params, const AdamWOptions& o) {
  return Optimizer(std::move(params), std::make_unique<AdamW>(o), o.lr);
}
Optimizer make_optimizer(NamedTensors params, const OptimizerSpec& spec) {
  LOOM_CHECK(spec.rescale_grad == 1.0, "optimizer: rescale_grad {} is for parameter servers; a local optimizer takes 1",
             spec.rescale_grad);
  return Optimizer(std::move(params), make_update_rule(spec), spec.lr);
}

}  // namespace loom::optim
