// Optimizer: one update rule (update_rule.h) applied to a list of parameters,
// with the per-parameter state the rule needs, the step count and the lr.
//
//   // given: std::vector<Tensor> params, std::function<Tensor(const Tensor&)> model, std::vector<std::pair<Tensor, Tensor>> batches
//   auto opt = optim::sgd(params, {.lr = 0.1, .momentum = 0.9});   // params: model.parameters()
//   for (auto& [x, y] : batches) {
//     opt.zero_grad();                                   // keeps the .grad buffers
//     autograd::backward(ops::cross_entropy(model(x), y));
//     opt.step();                                        // params with a .grad, in place
//   }
//   optim::NamedTensors saved = opt.state_dict();               // "0.momentum_buffer", "0.step", ..., "step", "lr"
//   opt.load_state_dict(saved);
//
// The state's names and types are optim's one layout (state_dict.h), which
// parameter servers and checkpoints use too.
//
// Parameters are contiguous CPU leaf tensors of dtype f32 or f64. The state
// of a parameter is allocated (zeroed) at its first update, so parameters
// that never get a gradient cost nothing; after that step() allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/tensor.h"
#include "loom/optim/spec.h"
#include "loom/optim/state_dict.h"
#include "loom/optim/update_rule.h"

namespace loom::optim {

class Optimizer {
 public:
  // Parameters are named by their index ("0", "1", ...) in the state dict.
  Optimizer(std::vector<Tensor> params, std::unique_ptr<UpdateRule> rule, double lr);
  // Parameters keep their names (e.g. a Module's named_parameters()).
  Optimizer(NamedTensors named_params, std::unique_ptr<UpdateRule> rule, double lr);

  Optimizer(Optimizer&&) noexcept = default;
  Optimizer& operator=(Optimizer&&) noexcept = default;

  // Applies the rule to every parameter whose .grad is defined, in place.
  // All gradients are checked before any parameter changes.
  void step();
  // Zeroes every parameter's .grad in place (the buffers stay), or drops them.
  void zero_grad(bool set_to_none = false);

  double lr() const { return lr_; }
  void set_lr(double lr);
  // Calls of step() so far.
  int64_t step_count() const { return step_count_; }
  const UpdateRule& rule() const { return *rule_; }
  const std::vector<Tensor>& params() const { return params_; }
  const std::vector<std::string>& param_names() const { return names_; }
  // Updates applied to parameter i so far (its rule step; 0 before the first).
  int64_t param_step(size_t i) const;
  // State slot `slot` of parameter i (a live view); undefined before its first update.
  Tensor state(size_t i, std::string_view slot) const;

  // The parameters' names and shapes and the rule's slots: what a state must fit.
  StateLayout state_layout() const;
  // A copy of all state, typed (state_dict.h).
  OptimizerState state_snapshot() const;
  // Replaces all state (values are copied and converted to the parameter's
  // dtype). Throws, leaving the optimizer unchanged, when it does not fit
  // state_layout() (check_state).
  void load_state(const OptimizerState& state);
  // The same as named tensors: "<name>.<slot>" tensors shaped like the
  // parameter and "<name>.step" (i64 scalar) for each parameter updated so
  // far, then "step" (i64 scalar, step_count) and "lr" (f64 scalar).
  NamedTensors state_dict() const;
  // Throws, leaving the optimizer unchanged, on a missing, unexpected or
  // duplicate key, or a shape that does not match its parameter.
  void load_state_dict(const NamedTensors& sd);

 private:
  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::unique_ptr<UpdateRule> rule_;
  std::vector<std::vector<Tensor>> state_;  // [param][slot]; empty until the first update
  std::vector<int64_t> param_steps_;
  int64_t step_count_ = 0;
  double lr_ = 0.0;
};

// Factories: the rule of update_rule.h with its options' lr as initial lr.
Optimizer sgd(std::vector<Tensor> params, const SgdOptions& o = {});
Optimizer sgd(NamedTensors params, const SgdOptions& o = {});
Optimizer adam(std::vector<Tensor> params, const AdamOptions& o = {});
Optimizer adam(NamedTensors params, const AdamOptions& o = {});
Optimizer adamw(std::vector<Tensor> params, const AdamWOptions& o = {});
Optimizer adamw(NamedTensors params, const AdamWOptions& o = {});
// The spec's rule (spec.h make_update_rule) with its lr; its schedule is
// make_schedule(spec), for an LRScheduler. A local optimizer does not rescale
// gradients: spec.rescale_grad must be 1.
Optimizer make_optimizer(NamedTensors params, const OptimizerSpec& spec);

}  // namespace loom::optim
