// Test helper: inputs whose all-reduce is exact in every dtype, and the
// expected result of each reduction, shared by the all-reduce tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "loom/comm/collectives/reduce_kernels.h"
#include "loom/core/half.h"

namespace loom::comm::testing {

// Small integers in [-8, 8]: sums of up to 16 of them are exact in every dtype (bf16 included).
inline int exact_value(int rank, int64_t i) { return static_cast<int>(((rank + 1) * (i % 251 + 3)) % 17) - 8; }

template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, core::BFloat16> || std::is_same_v<T, core::Half>, float, T>;

// What element i of the all-reduce of exact_value over n ranks must be.
template <class T>
T expected_of(ReduceOp op, int n, int64_t i) {
  int64_t sum = 0;
  int hi = -100, lo = 100;
  for (int r = 0; r < n; ++r) {
    const int v = exact_value(r, i);
    sum += v;
    hi = std::max(hi, v);
    lo = std::min(lo, v);
  }
  using C = compute_t<T>;
  switch (op) {
    case ReduceOp::Sum: return static_cast<T>(static_cast<C>(sum));
    case ReduceOp::Avg: return static_cast<T>(static_cast<C>(sum) / static_cast<C>(n));
    case ReduceOp::Max: return static_cast<T>(static_cast<C>(hi));
    case ReduceOp::Min: return static_cast<T>(static_cast<C>(lo));
  }
  return T{};
}

}  // namespace loom::comm::testing
