// Creating tensors.
//
//   auto z = ops::zeros({2, 3});                    // f32 by default
//   auto r = ops::arange(0, 10, 2, DType::I64);     // [0, 2, 4, 6, 8]
//   core::Generator gen(7);  auto n = ops::randn({4, 4}, gen);
#pragma once

#include "loom/core/rng.h"
#include "loom/core/tensor.h"

namespace loom::ops {

using core::Device;
using core::DType;
using core::Shape;
using core::Tensor;

Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor empty_like(const Tensor& t);
// [start, end) in steps of `step`.
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::F32);
inline Tensor arange(double end, DType dtype = DType::F32) { return arange(0, end, 1, dtype); }
// Uniform in [lo, hi) / normal(mean, std), from `gen` (deterministic for a seed).
Tensor rand(const Shape& shape, core::Generator& gen, DType dtype = DType::F32, double lo = 0.0, double hi = 1.0);
Tensor randn(const Shape& shape, core::Generator& gen, DType dtype = DType::F32, double mean = 0.0,
             double std = 1.0);
// In-place fills (not recorded by autograd).
void fill_(Tensor& t, double value);
void uniform_(Tensor& t, core::Generator& gen, double lo, double hi);
void normal_(Tensor& t, core::Generator& gen, double mean, double std);
// dst <- src (same shape; dtype converted). Not recorded by autograd.
void copy_(Tensor& dst, const Tensor& src);
// A copy of `t` with storage of its own (contiguous): a snapshot later
// in-place updates of `t` do not change. Not recorded by autograd.
Tensor clone(const Tensor& t);

}  // namespace loom::ops
