#include "loom/parallel/data_parallel_fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "loom/core/error.h"

namespace loom::parallel::fixed_point {

using core::Tensor;

namespace {

constexpr double kScale = 0x1p40;       // 2^kFractionBits
constexpr double kInverseScale = 0x1p-40;
constexpr double kLimit = 0x1p51 - 1;   // kMaxMagnitude * kScale, the largest |x| added
// For |x| <= 2^51 - 1, x + 1.5 * 2^52 lies in [2^52, 2^53), where doubles are
// the integers: the add rounds x to the nearest integer (ties to even), and
// the difference of the two bit patterns is that integer.
constexpr double kRound = 0x1.8p52;
static_assert(static_cast<double>(kMaxAtoms) * kLimit < 0x1p63, "kMaxAtoms values of one element fit an int64");
static_assert(kMaxMagnitude * kScale == kLimit);

// Returns whether every value of g[0, n) satisfies |g 2^40| <= 2^51 - 1 (false for NaN).
template <class T>
bool in_range(const T* g, int64_t n) {
  int64_t out_of_range = 0;
  for (int64_t i = 0; i < n; ++i) out_of_range += !(std::fabs(static_cast<double>(g[i]) * kScale) <= kLimit);
  return out_of_range == 0;
}

// Unsigned arithmetic: the same bits as int64 two's complement, and a garbage
// value (out of range, reported by the caller) cannot be undefined behaviour.
template <class T>
void accumulate_typed(T* g, uint64_t* acc, int64_t n) {
  const uint64_t round_bits = std::bit_cast<uint64_t>(kRound);
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(g[i]) * kScale;  // exact: a power of two
    acc[i] += std::bit_cast<uint64_t>(x + kRound) - round_bits;
    g[i] = T(0);
  }
}

// acc = hi * 2^32 + lo with hi the signed high word and lo the unsigned low
// word; both halves are exact doubles, so the one rounding is the sum's:
// the result is acc correctly rounded, as static_cast<double>(acc) is, in
// arithmetic AVX2 has for whole vectors.
template <class T>
void to_float_typed(uint64_t* acc, T* g, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double hi = static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(acc[i] >> 32)));
    const double lo = static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(acc[i]) ^ 0x80000000u)) + 0x1p31;
    g[i] = static_cast<T>((hi * 0x1p32 + lo) * kInverseScale);
    acc[i] = 0;
  }
}

void check(const Tensor& grad, const Tensor& acc) {
  LOOM_ASSERT(grad.defined() && acc.defined() && grad.is_contiguous() && acc.is_contiguous());
  LOOM_ASSERT(acc.dtype() == core::DType::I64 && acc.numel() >= grad.numel());
}

}  // namespace

std::optional<OutOfRange> accumulate(Tensor& grad, Tensor& acc) {
  check(grad, acc);
  auto* a = static_cast<uint64_t*>(acc.data_ptr());
  const int64_t n = grad.numel();
  return core::visit_float_dtype(grad.dtype(), "fixed_point::accumulate", [&]<class T>() -> std::optional<OutOfRange> {
    T* g = static_cast<T*>(grad.data_ptr());
    // Blocks that stay in L1: the range check reads them, the add reads them
    // again at no memory cost; an offender is found before it is zeroed.
    constexpr int64_t kBlock = 2048;
    std::optional<OutOfRange> first;
    for (int64_t lo = 0; lo < n; lo += kBlock) {
      const int64_t len = std::min(kBlock, n - lo);
      if (!first && !in_range(g + lo, len)) {
        for (int64_t i = lo; !first; ++i) {
          if (!in_range(g + i, 1)) first = OutOfRange{.index = i, .value = static_cast<double>(g[i])};
        }
      }
      accumulate_typed<T>(g + lo, a + lo, len);
    }
    return first;
  });
}

void to_float(Tensor& acc, Tensor& grad) {
  check(grad, acc);
  auto* a = static_cast<uint64_t*>(acc.data_ptr());
  core::visit_float_dtype(grad.dtype(), "fixed_point::to_float", [&]<class T>() {
    to_float_typed<T>(a, static_cast<T*>(grad.data_ptr()), grad.numel());
  });
}

}  // namespace loom::parallel::fixed_point
