// A Shard's deterministic dist_sync merge: fixed-point pushes (PushData::
// fixed_point, i64 in units of 2^-40) are added as integers and converted
// once with optim::fixed_point::to_float, so the update depends on the
// round's total alone: the same bits for any arrival order and any split of
// the same integers among the workers; a dist_async shard, a sparse or
// mis-sized fixed-point push and a round mixing floats and fixed point are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "loom/core/error.h"
#include "loom/optim/fixed_point.h"
#include "loom/ps/shard.h"

namespace loom::ps {
namespace {

constexpr size_t kNumel = 12;  // 4 rows of 3

ShardOptions slice_options(int num_workers, bool sync = true) {
  return {.key = 7, .dtype = core::DType::F32, .key_shape = {6, 3}, .row_begin = 2, .num_rows = 4,
          .num_workers = num_workers, .sync = sync};
}

Payload payload_of(const std::vector<int64_t>& v) {
  return Payload::copy_of({reinterpret_cast<const std::byte*>(v.data()), v.size() * 8});
}

std::vector<float> weights_of(const Shard& s) {
  std::vector<float> w(kNumel);
  std::memcpy(w.data(), s.weights().data(), s.weights().size());
  return w;
}

// A shard whose value becomes the merged push (no optimizer), after one round
// of `parts` (one per worker) pushed in the order `order`.
std::vector<float> merged(const std::vector<std::vector<int64_t>>& parts, const std::vector<int>& order) {
  Shard s(slice_options(static_cast<int>(parts.size())));
  s.init(std::vector<std::byte>(kNumel * 4));
  PushResult last = PushResult::Pending;
  for (int w : order) last = s.push(w, 1, {.data = payload_of(parts[static_cast<size_t>(w)]), .fixed_point = true});
  EXPECT_EQ(last, PushResult::Applied);
  return weights_of(s);
}

TEST(ShardFixedPoint, ARoundIsTheOneConversionOfItsIntegerTotal) {
  // 4 atoms' worth of integers, of mixed signs and magnitudes (some beyond 2^51: the large path).
  std::mt19937_64 rng(3);
  std::vector<std::vector<int64_t>> atoms(4, std::vector<int64_t>(kNumel));
  for (auto& a : atoms) {
    for (auto& x : a) x = static_cast<int64_t>(rng()) >> (10 + rng() % 40);
  }
  std::vector<int64_t> total(kNumel, 0);
  for (const auto& a : atoms) {
    for (size_t i = 0; i < kNumel; ++i) total[i] += a[i];
  }
  std::vector<float> want(kNumel);
  optim::fixed_point::to_float(total, core::DType::F32, want.data());

  // 1 worker holding all atoms; 2 holding two each; 4 holding one each, in every arrival order.
  const std::vector<float> one = merged({total}, {0});
  EXPECT_EQ(one, want);
  std::vector<std::vector<int64_t>> halves(2, std::vector<int64_t>(kNumel, 0));
  for (size_t k = 0; k < 4; ++k) {
    for (size_t i = 0; i < kNumel; ++i) halves[k / 2][i] += atoms[k][i];
  }
  EXPECT_EQ(merged(halves, {1, 0}), want);
  std::vector<int> order = {0, 1, 2, 3};
  do {
    ASSERT_EQ(merged(atoms, order), want);
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST(ShardFixedPoint, WrongPushesAreRefusedNamingWhy) {
  const std::vector<int64_t> sums(kNumel, int64_t{1} << 40);
  Shard async(slice_options(2, /*sync=*/false));
  async.init(std::vector<std::byte>(kNumel * 4));
  try {
    async.push(0, 1, {.data = payload_of(sums), .fixed_point = true});
    FAIL() << "an async shard took a fixed-point push";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("needs dist_sync"), std::string::npos) << e.what();
  }

  Shard s(slice_options(2));
  s.init(std::vector<std::byte>(kNumel * 4));
  // The float size (4 bytes an element) is not a fixed-point push's.
  EXPECT_THROW(s.push(0, 1, {.data = Payload::copy_of(std::vector<std::byte>(kNumel * 4)), .fixed_point = true}),
               ShapeError);
  EXPECT_THROW(s.push(0, 1, {.data = Payload::copy_of(std::vector<std::byte>(12)), .rows = std::vector<int64_t>{2},
                             .fixed_point = true}),
               ValueError);  // a sparse one
  ASSERT_EQ(s.push(0, 1, {.data = payload_of(sums), .fixed_point = true}), PushResult::Pending);
  try {
    s.push(1, 1, {.data = Payload::copy_of(std::vector<std::byte>(kNumel * 4))});
    FAIL() << "a round mixed floats and fixed point";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("worker 1 pushes floats while worker 0 pushed fixed point"),
              std::string::npos) << e.what();
  }
  EXPECT_EQ(s.push(1, 1, {.data = payload_of(sums), .fixed_point = true}), PushResult::Applied);
  EXPECT_EQ(weights_of(s), std::vector<float>(kNumel, 2.0f));
}

}  // namespace
}  // namespace loom::ps
