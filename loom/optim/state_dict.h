// The one layout of an optimizer's state, whoever keeps it: the local
// Optimizer, the parameter servers (each key's slices gathered whole) or, one
// day, a sharded optimizer. Training checkpoints store it under "optim.", so a
// checkpoint does not depend on the strategy that wrote it.
//
//   // given: const optim::Optimizer& opt, optim::Optimizer& other
//   optim::OptimizerState s = opt.state_snapshot();               // typed: per parameter, its step and slots
//   optim::NamedTensors sd = optim::to_state_dict(opt.state_layout(), s);   // what opt.state_dict() returns
//   optim::OptimizerState back = optim::from_state_dict(other.state_layout(), sd);  // checked against `other`
//   other.load_state(back);
//
// The names, for parameters named p (as Module::named_parameters() names
// them) and a rule whose state_names() are s (e.g. exp_avg, exp_avg_sq):
//
//   "<p>.<s>"   the slot: a float tensor shaped like the parameter
//   "<p>.step"  i64 scalar: the updates applied to the parameter (>= 1; the rule's step count)
//   "step"      i64 scalar: the optimizer's steps
//   "lr"        f64 scalar: the learning rate now
//
// A parameter that was never updated has no entries (its slots are zero).
// The rule's arithmetic is element-wise (update_rule.h), so these whole
// tensors continue a run wherever they are put back: in a local optimizer or
// cut into slices on parameter servers.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::optim {

using core::Tensor;

// Named tensors in order: named parameters in, optimizer state out.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What a state must fit: the parameters and the rule's slots.
struct StateLayout {
  std::string rule;                 // the rule's name (for messages)
  std::vector<std::string> slots;   // the rule's state_names(), in its order
  std::vector<std::string> params;  // parameter names, in order
  std::vector<core::Shape> shapes;  // the parameters' shapes
  // With "step" and "lr" (an optimizer); false: the parameters' entries alone
  // (tables that only parameter servers hold).
  bool counters = true;
};

// One parameter's state.
struct ParamState {
  int64_t step = 0;           // updates applied; 0: never updated (and no slots)
  std::vector<Tensor> slots;  // one per layout slot, shaped like the parameter; empty while step == 0
};

struct OptimizerState {
  std::vector<ParamState> params;  // one per layout parameter, in its order
  int64_t step = 0;                // optimizer steps (counters)
  double lr = 0.0;                 // (counters)
};

// ValueError (ShapeError, TypeError) naming the parameter and slot when
// `state` does not fit `layout`.
void check_state(const StateLayout& layout, const OptimizerState& state);
// The names above; the tensors are shared, not copied.
NamedTensors to_state_dict(const StateLayout& layout, const OptimizerState& state);
// Back from such names, checked: a missing, unexpected or duplicate name, a
// shape that is not its parameter's, a count that is not one value throws
// ValueError (ShapeError, TypeError) naming it. The tensors are shared, in
// the dtype they have (any float).
OptimizerState from_state_dict(const StateLayout& layout, const NamedTensors& sd);

}  // namespace loom::optim
