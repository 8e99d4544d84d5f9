// Views and layout: these share storage where they can, and are recorded by
// autograd. Dims may be negative (counted from the end).
//
//   // given: Tensor x, Tensor b
//   auto v = ops::reshape(x, {4, -1});     auto t = ops::transpose(x, 0, 1);
//   auto s = ops::slice(x, 1, 0, 2);       // x[:, 0:2]
//   auto e = ops::expand(b, {8, 3});       // broadcast without copying
#pragma once

#include <vector>

#include "loom/core/tensor.h"

namespace loom::ops {

using core::Shape;
using core::Tensor;

// reshape copies when the layout does not allow a view; view() throws then.
Tensor reshape(const Tensor& x, Shape shape);
Tensor view(const Tensor& x, Shape shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor unsqueeze(const Tensor& x, int64_t dim);
// Elements [start, end) with `step` along `dim` (end is clamped; negatives wrap).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor contiguous(const Tensor& x);
// Converts dtype (differentiable between floating types).
Tensor to_dtype(const Tensor& x, core::DType dtype);
// Sums `g` over broadcast dims so that it has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);

}  // namespace loom::ops
