#include "loom/nn/sequential.h"

#include <string>

namespace loom::nn {

void Sequential::push_back(std::shared_ptr<Module> m) {
  LOOM_CHECK(m != nullptr, "Sequential: push_back of a null module");
  register_module(std::to_string(size()), std::move(m));
}

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
  LOOM_CHECK_T(IndexError, i < size(), "Sequential: index {} out of range for {} layers", i, size());
  return named_children()[i].second;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& [name, layer] : named_children()) y = layer->forward(y);
  return y;
}

}  // namespace loom::nn
