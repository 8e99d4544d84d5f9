// Elementwise math with NumPy broadcasting, reductions and matmul. All are
// differentiable where that makes sense; both operands must share a dtype.
//
//   // given: Tensor a, Tensor b, Tensor x
//   auto y = ops::add(a, b);  auto z = a * b + 1.0;     // operators in loom::core
//   auto s = ops::sum(x, {1}, /*keepdim=*/true);
//   auto m = ops::matmul(a, b);                         // batched, broadcast
#pragma once

#include <functional>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::ops {

using core::Tensor;

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor pow(const Tensor& a, double exponent);
// Comparisons give 0/1 in the inputs' dtype (not differentiable).
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);

Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor square(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor gelu(const Tensor& a);  // exact (erf) form, as PyTorch's default
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);

// Reductions over `dims` (empty: all dims).
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor min(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Max over one dim with the positions (i64).
struct ValuesIndices { Tensor values, indices; };
ValuesIndices max_dim(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);

// NumPy matmul: 1-D operands are vectors, leading dims broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
// x @ weight^T + bias, weight [out, in], bias [out] (may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// While a TakeWeightFactors lives on this thread, the backward of a 2-D
// linear offers its weight gradient as its factors instead of forming
// g^T x: `take(weight, g, x)` with the output gradient g [rows, out] and the
// input x [rows, in]. Returning true takes them: the node gives the weight no
// gradient (the taker adds g^T x itself; deterministic data parallelism
// rounds it into its sums without writing it out, see
// parallel::fixed_point::accumulate_products). False: g^T x as usual.
//   ops::TakeWeightFactors taking([&](const Tensor& w, const Tensor& g, const Tensor& x) { return keep(w, g, x); });
//   autograd::backward(loss);
using WeightFactorTaker = std::function<bool(const Tensor& weight, const Tensor& g, const Tensor& x)>;
class TakeWeightFactors {
 public:
  explicit TakeWeightFactors(WeightFactorTaker take);
  ~TakeWeightFactors();  // the previous taker (if any) again
  TakeWeightFactors(const TakeWeightFactors&) = delete;
  TakeWeightFactors& operator=(const TakeWeightFactors&) = delete;

 private:
  WeightFactorTaker previous_;
};

}  // namespace loom::ops

namespace loom::core {
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator*(double a, const Tensor& b);
}  // namespace loom::core
