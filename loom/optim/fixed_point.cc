#include "loom/optim/fixed_point.h"

#include <algorithm>
#include <bit>

namespace loom::optim::fixed_point {
namespace {

constexpr double kInverseScale = 0x1p-40;
static_assert(kFractionBits == 40, "kInverseScale is 2^-kFractionBits");
// For |x| < 2^51, x + 1.5 * 2^52 lies in [2^52, 2^53), where doubles are the
// integers: there the bit pattern minus that of 1.5 * 2^52 is x.
constexpr double kRound = 0x1.8p52;

// int64 -> double, correctly rounded (as static_cast<double> is), in
// arithmetic AVX2 has for whole vectors. Small sums (|acc| < 2^51, i.e.
// |sum| < 2048): the rounding trick backwards, exact. Any sum: acc =
// hi * 2^32 + lo with hi the signed high word and lo the unsigned low word;
// both halves are exact doubles, so the one rounding is the sum's.
template <class T>
void to_float_block(const uint64_t* acc, T* g, int64_t n) {
  const uint64_t round_bits = std::bit_cast<uint64_t>(kRound);
  int64_t large = 0;
  for (int64_t i = 0; i < n; ++i) large += (acc[i] + (uint64_t{1} << 51)) >> 52 != 0;  // |acc| >= 2^51
  if (large == 0) {
    for (int64_t i = 0; i < n; ++i) g[i] = static_cast<T>((std::bit_cast<double>(acc[i] + round_bits) - kRound) * kInverseScale);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double hi = static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(acc[i] >> 32)));
    const double lo = static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(acc[i]) ^ 0x80000000u)) + 0x1p31;
    g[i] = static_cast<T>((hi * 0x1p32 + lo) * kInverseScale);
  }
}

}  // namespace

void to_float(std::span<const int64_t> acc, core::DType dtype, void* out) {
  // Unsigned: the same bits as int64 two's complement, without undefined behaviour in the tricks.
  const auto* a = reinterpret_cast<const uint64_t*>(acc.data());
  const auto n = static_cast<int64_t>(acc.size());
  core::visit_float_dtype(dtype, "fixed_point::to_float", [&]<class T>() {
    T* g = static_cast<T*>(out);
    constexpr int64_t kBlock = 1024;
    for (int64_t lo = 0; lo < n; lo += kBlock) to_float_block(a + lo, g + lo, std::min(kBlock, n - lo));
  });
}

}  // namespace loom::optim::fixed_point
