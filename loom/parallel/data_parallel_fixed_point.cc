#include "loom/parallel/data_parallel_fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "loom/core/error.h"
#include "loom/optim/fixed_point.h"

namespace loom::parallel::fixed_point {

using core::Tensor;

namespace {

constexpr double kScale = 0x1p40;  // 2^kFractionBits
constexpr double kLimit = 0x1p51 - 1;  // kMaxMagnitude * kScale, the largest |x| added
// For |x| <= 2^51 - 1, x + 1.5 * 2^52 lies in [2^52, 2^53), where doubles are
// the integers: the add rounds x to the nearest integer (ties to even), and
// the difference of the two bit patterns is that integer.
constexpr double kRound = 0x1.8p52;
static_assert(static_cast<double>(kMaxAtoms) * kLimit < 0x1p63, "kMaxAtoms values of one element fit an int64");
static_assert(kMaxMagnitude * kScale == kLimit);

// acc (+)= round(g 2^40), g = 0, for n values; returns how many were out of
// range. Unsigned arithmetic: the same bits as int64 two's complement, and a
// garbage value (out of range) cannot be undefined behaviour.
template <Mode mode, class T>
int64_t accumulate_block(T* g, uint64_t* acc, int64_t n) {
  const uint64_t round_bits = std::bit_cast<uint64_t>(kRound);
  int64_t out_of_range = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(g[i]) * kScale;  // exact: a power of two
    out_of_range += !(std::fabs(x) <= kLimit);
    const uint64_t q = std::bit_cast<uint64_t>(x + kRound) - round_bits;
    if constexpr (mode == Mode::Add) acc[i] += q;
    else acc[i] = q;
  }
  return out_of_range;
}

template <Mode mode, class T>
std::optional<OutOfRange> accumulate_typed(T* g, uint64_t* acc, int64_t begin, int64_t end, bool zero_grad) {
  // Blocks that stay in L1: the values are zeroed after the block's pass,
  // so an offender can still be found and named.
  constexpr int64_t kBlock = 1024;
  std::optional<OutOfRange> first;
  for (int64_t lo = begin; lo < end; lo += kBlock) {
    const int64_t len = std::min(kBlock, end - lo);
    if (accumulate_block<mode>(g + lo, acc + lo, len) != 0 && !first) {
      for (int64_t i = lo; !first; ++i) {
        if (!(std::fabs(static_cast<double>(g[i])) <= kMaxMagnitude)) first = OutOfRange{i, static_cast<double>(g[i])};
      }
    }
    if (zero_grad) std::fill(g + lo, g + lo + len, T(0));
  }
  return first;
}

void check(const Tensor& grad, const Tensor& acc) {
  LOOM_ASSERT(grad.defined() && acc.defined() && grad.is_contiguous() && acc.is_contiguous());
  LOOM_ASSERT(acc.dtype() == core::DType::I64 && acc.numel() >= grad.numel());
}

}  // namespace

std::optional<OutOfRange> accumulate(const Tensor& grad, Tensor& acc, const AccumulateOptions& o) {
  check(grad, acc);
  const int64_t end = o.end < 0 ? grad.numel() : o.end;
  LOOM_ASSERT(0 <= o.begin && o.begin <= end && end <= grad.numel());
  auto* a = static_cast<uint64_t*>(acc.data_ptr());
  return core::visit_float_dtype(grad.dtype(), "fixed_point::accumulate", [&]<class T>() {
    T* g = static_cast<T*>(grad.data_ptr());
    return o.mode == Mode::Add ? accumulate_typed<Mode::Add>(g, a, o.begin, end, o.zero_grad)
                               : accumulate_typed<Mode::Assign>(g, a, o.begin, end, o.zero_grad);
  });
}

void to_float(const Tensor& acc, Tensor& grad) {
  check(grad, acc);
  // The one conversion back, shared with the parameter servers' merge (optim/fixed_point.h).
  optim::fixed_point::to_float({static_cast<const int64_t*>(acc.data_ptr()), static_cast<size_t>(grad.numel())},
                               grad.dtype(), grad.data_ptr());
}

}  // namespace loom::parallel::fixed_point
