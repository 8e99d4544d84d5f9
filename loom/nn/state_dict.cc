#include "loom/nn/state_dict.h"

#include "loom/core/error.h"

namespace loom::nn {

StateDict::StateDict(std::initializer_list<Entry> entries) {
  for (const auto& [name, t] : entries) insert(name, t);
}

void StateDict::insert(std::string name, Tensor t) {
  LOOM_CHECK(!index_.contains(name), "StateDict: duplicate key '{}'", name);
  index_.emplace(name, entries_.size());
  entries_.emplace_back(std::move(name), std::move(t));
}

void StateDict::set(const std::string& name, Tensor t) {
  auto it = index_.find(name);
  if (it == index_.end()) {
    insert(name, std::move(t));
  } else {
    entries_[it->second].second = std::move(t);
  }
}

bool StateDict::erase(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return false;
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(it->second));
  index_.clear();
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  return true;
}

const Tensor* StateDict::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

const Tensor& StateDict::at(std::string_view name) const {
  const Tensor* t = find(name);
  LOOM_CHECK(t != nullptr, "StateDict: no key '{}'", name);
  return *t;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.first);
  return out;
}

}  // namespace loom::nn
