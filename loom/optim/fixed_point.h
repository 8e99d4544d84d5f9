// The number format of Loom's exact gradient sums: 64-bit integers in units
// of 2^-40 (fixed point). Integer addition does not depend on the order, so
// any grouping of the same values gives the same sum; converting the sum back
// once is then a function of that integer. Deterministic data parallelism
// (parallel/data_parallel_fixed_point.h, which rounds gradients into this
// format) and the parameter servers' deterministic dist_sync merge
// (ps/shard.h, which adds the workers' sums) convert back with this one
// function, so both give the same bits for the same integers.
//
//   std::vector<int64_t> sum = {int64_t{3} << 40, -(int64_t{1} << 39)};   // 3 and -0.5, in units of 2^-40
//   std::vector<float> grad(2);
//   optim::fixed_point::to_float(sum, core::DType::F32, grad.data());      // grad = {3, -0.5}
//
// The conversion is int64 -> double, correctly rounded (as static_cast is),
// times 2^-40 (exact), then rounded to the output's dtype, in arithmetic that
// vectorizes (the 1.5 * 2^52 trick for small sums, a hi/lo split otherwise).
#pragma once

#include <cstdint>
#include <span>

#include "loom/core/dtype.h"

namespace loom::optim::fixed_point {

inline constexpr int kFractionBits = 40;  // resolution 2^-40 (about 9.1e-13)

// out[i] = acc[i] * 2^-40, rounded to the nearest double, then to `dtype`
// (f32 or f64: TypeError otherwise); `out` holds acc.size() values of it.
void to_float(std::span<const int64_t> acc, core::DType dtype, void* out);

}  // namespace loom::optim::fixed_point
