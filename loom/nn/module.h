// Module: the base of every layer and model. A module owns named parameters
// (leaf tensors with requires_grad), buffers (state that is saved but not
// trained, e.g. BatchNorm running statistics) and child modules, each
// registered under a name, in registration order.
//
//   // given: const nn::StateDict& saved
//   struct Mlp : nn::Module {
//     std::shared_ptr<nn::Linear> fc1 = register_module("fc1", nn::Linear({.in = 784, .out = 128}));
//     std::shared_ptr<nn::Linear> fc2 = register_module("fc2", nn::Linear({.in = 128, .out = 10}));
//     Tensor forward(const Tensor& x) override { return (*fc2)(ops::relu((*fc1)(x))); }
//   };
//   Mlp model;
//   for (auto& [name, p] : model.named_parameters()) ...   // "fc1.weight", "fc1.bias", "fc2.weight", ...
//   model.eval();                                           // recursive
//   model.load_state_dict(saved);                           // copies into the existing tensors
//
// Randomness: there is no global generator. Each layer that draws random
// numbers has a `seed` in its options (default 0) and initialises from
// core::Generator(seed) in its constructor. To draw a whole model from one
// stream (so equal-shaped layers differ), call model.reset_parameters(gen):
// every layer re-initialises, in registration order, from `gen`.
//
// Modules are moved, never copied (a copy would share parameters silently).
#pragma once

#include <concepts>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "loom/core/rng.h"
#include "loom/core/tensor.h"
#include "loom/nn/state_dict.h"

namespace loom::nn {

using core::Tensor;

class Module;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

// What a non-strict load_state_dict skipped.
struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, not in the dict
  std::vector<std::string> unexpected_keys;  // in the dict, not in the module
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  // One line naming the layer and its configuration, e.g. "Linear(784 -> 256)";
  // layers use it in their error messages.
  virtual std::string describe() const { return "Module"; }
  // The generator this module draws from while training (Dropout's masks,
  // MultiheadAttention's attention dropout), or nullptr: its state belongs
  // to checkpoints and to whatever re-runs a forward (recomputation, atoms).
  virtual core::Generator* random_generator() { return nullptr; }
  // The module tree, one line per module, children indented.
  std::string tree_string() const;

  // ---- registration (names are non-empty, contain no '.', and are unique
  // across this module's parameters, buffers and children) ----

  // Registers `t` as a parameter: marks it requires_grad and returns it (the
  // same tensor, so a layer can keep a handle). `t` must be a floating leaf.
  Tensor register_parameter(std::string name, Tensor t);
  Tensor register_buffer(std::string name, Tensor t);
  template <class M>
    requires std::derived_from<M, Module>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    add_child(std::move(name), m);
    return m;
  }
  // Takes a module by value: register_module("fc", nn::Linear({.in = 4, .out = 2})).
  template <class M>
    requires std::derived_from<M, Module> && (!std::is_lvalue_reference_v<M>)
  std::shared_ptr<M> register_module(std::string name, M&& m) {
    return register_module(std::move(name), std::make_shared<M>(std::move(m)));
  }

  // ---- traversal; names are dotted paths ("features.0.weight") ----

  // Parameters of this module (then, with recurse, of its children, depth
  // first). A tensor reachable under two names is listed once, under the first.
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  const NamedModules& named_children() const { return children_; }
  std::vector<std::shared_ptr<Module>> children() const;
  // This module (name "") and all descendants, depth first.
  std::vector<std::pair<std::string, Module*>> named_modules();

  // ---- modes and state ----

  // Sets training mode on this module and all descendants.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Zeroes every parameter's gradient in place (or drops it: set_to_none).
  void zero_grad(bool set_to_none = false);

  // Parameters and buffers by dotted name: per module its parameters, then
  // its buffers, then its children's entries (PyTorch's order and names).
  // The tensors share storage with the module's and do not require grad.
  StateDict state_dict() const;
  // Copies every entry into the module's existing tensor in place (converting
  // dtype), so optimizers that hold the parameters keep working. Nothing is
  // copied unless every check passes. Throws ShapeError naming the key and
  // both shapes on a mismatch; with strict, ValueError naming missing and
  // unexpected keys. Without strict, returns what it skipped.
  LoadResult load_state_dict(const StateDict& dict, bool strict = true);

  // Re-initialises the parameters from `gen` (the layer's default init).
  // The default recurses into the children in registration order; layers
  // override it to initialise their own parameters.
  virtual void reset_parameters(core::Generator& gen);

 private:
  void add_child(std::string name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name, const char* what) const;
  void collect(bool buffers, bool recurse, const std::string& prefix, NamedTensors& out,
               std::vector<const core::TensorImpl*>& seen) const;
  void collect_state(const std::string& prefix, StateDict& out) const;
  void collect_modules(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out);
  void append_tree(std::string& out, int indent) const;

  NamedTensors params_;
  NamedTensors buffers_;
  NamedModules children_;
  bool training_ = true;
};

}  // namespace loom::nn
