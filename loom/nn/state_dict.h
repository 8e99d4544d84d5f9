// StateDict: an ordered name -> Tensor map, the saved state of a Module
// (parameters and buffers under dotted names, in registration order).
//
//   // given: nn::Module& model, std::function<void(const std::string&, const Tensor&)> save
//   nn::StateDict sd = model.state_dict();          // "0.weight", "0.bias", "1.running_mean", ...
//   const Tensor& w = sd.at("0.weight");            // throws ValueError naming a missing key
//   for (const auto& [name, t] : sd) save(name, t);
//   model.load_state_dict(sd);                      // copies values into the existing tensors
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::nn {

using core::Tensor;

class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  StateDict() = default;
  StateDict(std::initializer_list<Entry> entries);

  // Appends; throws ValueError when `name` is already present.
  void insert(std::string name, Tensor t);
  // Replaces the tensor of an existing key or appends a new one.
  void set(const std::string& name, Tensor t);
  // Removes `name`; returns whether it was there.
  bool erase(const std::string& name);

  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // nullptr when absent.
  const Tensor* find(std::string_view name) const;
  // Throws ValueError naming the key when absent.
  const Tensor& at(std::string_view name) const;

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> keys() const;
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
};

}  // namespace loom::nn
