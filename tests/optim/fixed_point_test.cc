// optim::fixed_point::to_float, the one conversion of an exact gradient sum
// back to floats (deterministic data parallelism and the parameter servers'
// deterministic merge): the correctly rounded int64 -> double times 2^-40,
// whatever the magnitude, in f32 and f64.
#include "loom/optim/fixed_point.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "loom/core/error.h"

namespace loom::optim {
namespace {

std::vector<int64_t> samples() {
  std::vector<int64_t> v = {0, 1, -1, int64_t{3} << 40, -(int64_t{1} << 39), (int64_t{1} << 51) - 1,
                            -(int64_t{1} << 51), int64_t{1} << 51, std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::min() + 1, (int64_t{1} << 53) + 1};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const int shift = static_cast<int>(rng() % 63);
    v.push_back(static_cast<int64_t>(rng()) >> shift);  // every magnitude, both signs
  }
  return v;
}

TEST(FixedPoint, ToFloatIsTheCorrectlyRoundedQuotient) {
  const std::vector<int64_t> acc = samples();  // small and large sums in one call: both paths, block by block
  std::vector<double> d(acc.size());
  std::vector<float> f(acc.size());
  fixed_point::to_float(acc, core::DType::F64, d.data());
  fixed_point::to_float(acc, core::DType::F32, f.data());
  for (size_t i = 0; i < acc.size(); ++i) {
    const double want = static_cast<double>(acc[i]) * 0x1p-40;
    ASSERT_EQ(d[i], want) << acc[i];
    ASSERT_EQ(f[i], static_cast<float>(want)) << acc[i];
  }
  EXPECT_EQ(d[3], 3.0);
  EXPECT_EQ(d[4], -0.5);
}

TEST(FixedPoint, ToFloatRefusesAnIntegerOutput) {
  const std::vector<int64_t> acc = {1};
  int64_t out = 0;
  EXPECT_THROW(fixed_point::to_float(acc, core::DType::I64, &out), TypeError);
}

}  // namespace
}  // namespace loom::optim
