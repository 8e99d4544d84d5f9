#include "loom/nn/activation.h"

#include <algorithm>

#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

void check_defined(const Module& m, const Tensor& x) { LOOM_CHECK(x.defined(), "{}: input is undefined", m.describe()); }

}  // namespace

Tensor ReLU::forward(const Tensor& x) {
  check_defined(*this, x);
  return ops::relu(x);
}

Tensor GELU::forward(const Tensor& x) {
  check_defined(*this, x);
  return ops::gelu(x);
}

Tensor Sigmoid::forward(const Tensor& x) {
  check_defined(*this, x);
  return ops::sigmoid(x);
}

Tensor Tanh::forward(const Tensor& x) {
  check_defined(*this, x);
  return ops::tanh(x);
}

std::string Flatten::describe() const { return format("Flatten({}, {})", o_.start_dim, o_.end_dim); }

Tensor Flatten::forward(const Tensor& x) {
  check_defined(*this, x);
  const int64_t nd = std::max<int64_t>(x.dim(), 1);
  const int64_t start = o_.start_dim < 0 ? o_.start_dim + nd : o_.start_dim;
  const int64_t end = o_.end_dim < 0 ? o_.end_dim + nd : o_.end_dim;
  LOOM_CHECK_T(ShapeError, start >= 0 && start < nd && end >= 0 && end < nd && start <= end,
               "{}: dims do not fit input {} ({} dims)", describe(), core::to_string(x.shape()), x.dim());
  return ops::flatten(x, start, end);
}

}  // namespace loom::nn
