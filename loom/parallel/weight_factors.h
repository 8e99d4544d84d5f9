// Deterministic mode's linear-layer weight gradients, kept as their factors
// until they are rounded into the exact sums. For each atom, a linear's weight
// gradient is g^T x (g [rows, out], x [rows, in]); formed per atom it is
// rows-deep, so writing it out and reading it back to round it costs more
// than computing it. Instead the layer's backward hands over g and x
// (ops::TakeWeightFactors) and flush() rounds every kept term into the int64
// sums in one pass (fixed_point::accumulate_products): each term's product
// has the same bits wherever it is computed, so the sums stay the same for
// any world size. DataParallel, the pipeline's stages and the parameter
// servers' workers all use it, so they keep computing the same terms.
//
//   // given: nn::Module& model, Tensor acc_i64, Tensor loss
//   parallel::WeightFactors factors({&model});
//   { ops::TakeWeightFactors taking(factors.taker()); autograd::backward(loss); }   // per atom
//   for (const Tensor& w : factors.weights()) {   // acc_i64: as many elements as w
//     if (factors.pending(w) > 0) auto bad = factors.flush(w, acc_i64, parallel::fixed_point::Mode::Add);
//   }
//
// Only the weights of nn::Linear modules that no other module also holds
// are taken (a GPT's tied token table is held by its embedding: it keeps the
// dense gradient, where its two uses are added in float first, as the
// pipeline's tied stages do); only f32, contiguous factors.
#pragma once

#include <optional>
#include <unordered_map>
#include <vector>

#include "loom/nn/module.h"
#include "loom/ops/math.h"
#include "loom/parallel/data_parallel_fixed_point.h"

namespace loom::parallel {

class WeightFactors {
 public:
  // The linear weights found in `modules` (and their submodules).
  explicit WeightFactors(const std::vector<nn::Module*>& modules);

  // For ops::TakeWeightFactors: keeps (g, x) as one more term of `weight`'s
  // gradient when it is one of the weights and both are plain f32 matrices
  // of its shape; false leaves the gradient to the layer.
  bool take(const core::Tensor& weight, const core::Tensor& g, const core::Tensor& x);
  ops::WeightFactorTaker taker() {
    return [this](const core::Tensor& w, const core::Tensor& g, const core::Tensor& x) { return take(w, g, x); };
  }

  const std::vector<core::Tensor>& weights() const { return weights_; }
  bool is_factored(const core::Tensor& weight) const { return terms_.contains(weight.impl()); }
  // Terms kept for `weight` since its last flush.
  int64_t pending(const core::Tensor& weight) const;
  // Rounds `weight`'s kept terms into `acc` (i64, the weight's element
  // count; Mode::Assign: the first term assigns) and forgets them. The first
  // product out of the exact range, if any (acc is then not exact).
  std::optional<fixed_point::OutOfRange> flush(const core::Tensor& weight, core::Tensor& acc, fixed_point::Mode mode);
  void clear();  // forgets every kept term (a failed step)
  // Drops every taken weight's .grad buffer, so that a .grad after the next
  // backward means a use that was not taken (to add densely), and a weight
  // whose uses were all taken costs no pass over a buffer of zeros. For
  // callers that read .grad after each atom (without a backward sink).
  void drop_gradients();

 private:
  std::vector<core::Tensor> weights_;
  std::unordered_map<const core::TensorImpl*, std::vector<fixed_point::Product>> terms_;
};

}  // namespace loom::parallel
