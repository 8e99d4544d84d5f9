#include "loom/parallel/weight_factors.h"

#include "loom/nn/linear.h"
#include "loom/ops/ops.h"

namespace loom::parallel {

using core::Tensor;

WeightFactors::WeightFactors(const std::vector<nn::Module*>& modules) {
  // How many modules hold each parameter directly: a linear weight held by
  // another module too (tied) stays on the dense path.
  std::unordered_map<const core::TensorImpl*, int> holders;
  std::vector<Tensor> linear_weights;
  for (nn::Module* root : modules) {
    for (auto& [name, m] : root->named_modules()) {
      for (const auto& [pname, p] : m->named_parameters(/*recurse=*/false)) ++holders[p.impl()];
      if (const auto* linear = dynamic_cast<const nn::Linear*>(m)) linear_weights.push_back(linear->weight());
    }
  }
  for (const Tensor& w : linear_weights) {
    if (holders[w.impl()] != 1 || terms_.contains(w.impl()) || w.dtype() != core::DType::F32 || w.dim() != 2) continue;
    terms_[w.impl()];
    weights_.push_back(w);
  }
}

bool WeightFactors::take(const Tensor& weight, const Tensor& g, const Tensor& x) {
  const auto it = terms_.find(weight.impl());
  if (it == terms_.end()) return false;
  const auto plain = [](const Tensor& t, int64_t cols) {
    return t.dtype() == core::DType::F32 && t.dim() == 2 && t.shape()[1] == cols && t.is_contiguous();
  };
  if (!plain(g, weight.shape()[0]) || !plain(x, weight.shape()[1]) || g.shape()[0] != x.shape()[0]) return false;
  it->second.push_back({g, x});
  return true;
}

int64_t WeightFactors::pending(const Tensor& weight) const {
  const auto it = terms_.find(weight.impl());
  return it == terms_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

std::optional<fixed_point::OutOfRange> WeightFactors::flush(const Tensor& weight, Tensor& acc, fixed_point::Mode mode) {
  auto& terms = terms_.at(weight.impl());
  LOOM_ASSERT(acc.numel() == weight.numel() && acc.is_contiguous());
  Tensor matrix = acc.as_strided(weight.shape(), core::contiguous_strides(weight.shape()), acc.offset());
  auto bad = fixed_point::accumulate_products(terms, matrix, mode);
  terms.clear();
  return bad;
}

void WeightFactors::clear() {
  for (auto& [w, terms] : terms_) terms.clear();
}

void WeightFactors::drop_gradients() {
  for (Tensor& w : weights_) w.set_grad(Tensor());
}

}  // namespace loom::parallel
