#include "loom/nn/module.h"

#include <algorithm>
#include <unordered_set>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/ops/creation.h"

namespace loom::nn {
namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", '" : "'") + keys[i] + "'";
  return out;
}

}  // namespace

void Module::check_new_name(const std::string& name, const char* what) const {
  LOOM_CHECK(!name.empty(), "{}: register_{}: name is empty", describe(), what);
  LOOM_CHECK(name.find('.') == std::string::npos, "{}: register_{}: name '{}' contains '.'", describe(), what, name);
  auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& e) { return e.first == name; });
  };
  LOOM_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_),
             "{}: register_{}: name '{}' is already registered", describe(), what, name);
}

Tensor Module::register_parameter(std::string name, Tensor t) {
  check_new_name(name, "parameter");
  LOOM_CHECK(t.defined(), "{}: register_parameter: '{}' is undefined", describe(), name);
  LOOM_CHECK(t.is_leaf(), "{}: register_parameter: '{}' is not a leaf (detach it first)", describe(), name);
  LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "{}: register_parameter: '{}' has dtype {}, expected floating",
               describe(), name, t.dtype());
  t.set_requires_grad(true);
  params_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  check_new_name(name, "buffer");
  LOOM_CHECK(t.defined(), "{}: register_buffer: '{}' is undefined", describe(), name);
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::add_child(std::string name, std::shared_ptr<Module> m) {
  check_new_name(name, "module");
  LOOM_CHECK(m != nullptr, "{}: register_module: '{}' is null", describe(), name);
  LOOM_CHECK(m.get() != this, "{}: register_module: '{}' is the module itself", describe(), name);
  children_.emplace_back(std::move(name), std::move(m));
}

void Module::collect(bool buffers, bool recurse, const std::string& prefix, NamedTensors& out,
                     std::vector<const core::TensorImpl*>& seen) const {
  for (const auto& [name, t] : buffers ? buffers_ : params_) {
    if (std::find(seen.begin(), seen.end(), t.impl()) != seen.end()) continue;
    seen.push_back(t.impl());
    out.emplace_back(join(prefix, name), t);
  }
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(buffers, true, join(prefix, name), out, seen);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  std::vector<const core::TensorImpl*> seen;
  collect(false, recurse, "", out, seen);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  std::vector<const core::TensorImpl*> seen;
  collect(true, recurse, "", out, seen);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [name, m] : children_) out.push_back(m);
  return out;
}

void Module::collect_modules(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out) {
  if (std::any_of(out.begin(), out.end(), [&](const auto& e) { return e.second == this; })) return;
  out.emplace_back(prefix, this);
  for (auto& [name, child] : children_) child->collect_modules(join(prefix, name), out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  collect_modules("", out);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) autograd::zero_grad(p, set_to_none);
}

void Module::collect_state(const std::string& prefix, StateDict& out) const {
  for (const auto& [name, t] : params_) out.insert(join(prefix, name), t.detach());
  for (const auto& [name, t] : buffers_) out.insert(join(prefix, name), t.detach());
  for (const auto& [name, child] : children_) child->collect_state(join(prefix, name), out);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect_state("", out);
  return out;
}

LoadResult Module::load_state_dict(const StateDict& dict, bool strict) {
  // state_dict() gives handles that share storage with our tensors; copying
  // into them writes into the module.
  const StateDict own = state_dict();
  LoadResult result;
  for (const auto& [name, t] : own) {
    const Tensor* src = dict.find(name);
    if (src == nullptr) {
      result.missing_keys.push_back(name);
      continue;
    }
    LOOM_CHECK(src->defined(), "load_state_dict: '{}' is undefined in the state dict", name);
    LOOM_CHECK_T(ShapeError, src->shape() == t.shape(),
                 "load_state_dict: '{}' has shape {} in the state dict but {} in {}", name,
                 core::to_string(src->shape()), core::to_string(t.shape()), describe());
  }
  for (const auto& [name, t] : dict) {
    if (!own.contains(name)) result.unexpected_keys.push_back(name);
  }
  if (strict) {
    LOOM_CHECK(result.missing_keys.empty(), "load_state_dict: {}: missing key{} {}", describe(),
               result.missing_keys.size() > 1 ? "s" : "", quoted_list(result.missing_keys));
    LOOM_CHECK(result.unexpected_keys.empty(), "load_state_dict: {}: unexpected key{} {}", describe(),
               result.unexpected_keys.size() > 1 ? "s" : "", quoted_list(result.unexpected_keys));
  }
  core::NoGradGuard no_grad;
  for (const auto& [name, t] : own) {
    const Tensor* src = dict.find(name);
    if (src == nullptr || src->data_ptr() == t.data_ptr()) continue;  // loading our own state
    Tensor dst = t;
    ops::copy_(dst, *src);
  }
  return result;
}

void Module::reset_parameters(core::Generator& gen) {
  for (auto& [name, child] : children_) child->reset_parameters(gen);
}

void Module::append_tree(std::string& out, int indent) const {
  out += describe();
  if (children_.empty()) return;
  out += " {\n";
  for (const auto& [name, child] : children_) {
    out += std::string(static_cast<size_t>(indent + 2), ' ') + "(" + name + "): ";
    child->append_tree(out, indent + 2);
    out += "\n";
  }
  out += std::string(static_cast<size_t>(indent), ' ') + "}";
}

std::string Module::tree_string() const {
  std::string out;
  append_tree(out, 0);
  return out;
}

}  // namespace loom::nn
