#include "loom/data/sampler.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/data/seeding.h"

namespace loom::data {
namespace {

bool is_permutation_of_range(std::vector<int64_t> v, int64_t n) {
  if (static_cast<int64_t>(v.size()) != n) return false;
  std::sort(v.begin(), v.end());
  for (int64_t i = 0; i < n; ++i) {
    if (v[static_cast<size_t>(i)] != i) return false;
  }
  return true;
}

TEST(Seeding, PermutationIsAPureFunctionOfSeed) {
  EXPECT_EQ(random_permutation(1000, 5), random_permutation(1000, 5));
  EXPECT_NE(random_permutation(1000, 5), random_permutation(1000, 6));
  EXPECT_TRUE(is_permutation_of_range(random_permutation(1000, 5), 1000));
  EXPECT_TRUE(random_permutation(0, 5).empty());
  EXPECT_NE(derive_seed(1, 2, 3), derive_seed(1, 3, 2));
}

TEST(Seeding, BelowIsRoughlyUniform) {
  RandomStream rs(9);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[static_cast<size_t>(rs.below(7))];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(Sampler, SequentialAndRandom) {
  SequentialSampler seq(5);
  EXPECT_EQ(seq.indices(3), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  RandomSampler r(100, 42);
  EXPECT_EQ(r.size(), 100);
  EXPECT_TRUE(is_permutation_of_range(r.indices(0), 100));
  EXPECT_EQ(r.indices(3), RandomSampler(100, 42).indices(3));  // depends only on (seed, epoch)
  EXPECT_NE(r.indices(3), r.indices(4));
  EXPECT_NE(r.indices(3), RandomSampler(100, 43).indices(3));
}

struct DistCase {
  int64_t n, replicas;
  bool shuffle, drop_last;
};

class DistributedSamplerTest : public ::testing::TestWithParam<DistCase> {};

TEST_P(DistributedSamplerTest, EqualCountsDisjointAndCovering) {
  const auto c = GetParam();
  std::vector<std::vector<int64_t>> per_rank;
  for (int64_t r = 0; r < c.replicas; ++r) {
    DistributedSampler s(c.n, {.num_replicas = c.replicas, .rank = r, .shuffle = c.shuffle, .seed = 11,
                               .drop_last = c.drop_last});
    per_rank.push_back(s.indices(2));
    EXPECT_EQ(static_cast<int64_t>(per_rank.back().size()), s.size());
    EXPECT_EQ(per_rank.back(), s.indices(2));  // deterministic
  }
  const size_t count = per_rank[0].size();
  std::multiset<int64_t> all;
  for (const auto& v : per_rank) {
    EXPECT_EQ(v.size(), count) << "every rank must get the same number of samples";
    for (int64_t i : v) {
      EXPECT_GE(i, 0);
      EXPECT_LT(i, c.n);
      all.insert(i);
    }
  }
  const std::set<int64_t> distinct(all.begin(), all.end());
  if (c.drop_last) {
    EXPECT_EQ(count, static_cast<size_t>(c.n / c.replicas));
    EXPECT_EQ(distinct.size(), all.size()) << "no repeats when dropping the tail";
    EXPECT_EQ(distinct.size(), count * static_cast<size_t>(c.replicas));
  } else {
    EXPECT_EQ(count, static_cast<size_t>((c.n + c.replicas - 1) / c.replicas));
    EXPECT_EQ(static_cast<int64_t>(distinct.size()), c.n) << "the ranks together cover the data set";
    // Padding repeats at most replicas - 1 samples (when n >= replicas).
    if (c.n >= c.replicas) {
      EXPECT_LT(all.size() - distinct.size(), static_cast<size_t>(c.replicas));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DistributedSamplerTest,
                         ::testing::Values(DistCase{10, 3, true, false}, DistCase{10, 3, false, false},
                                           DistCase{10, 3, true, true}, DistCase{12, 4, true, false},
                                           DistCase{12, 4, false, true}, DistCase{1, 1, true, false},
                                           DistCase{2, 5, true, false}, DistCase{1001, 8, true, false},
                                           DistCase{1001, 8, true, true}, DistCase{7, 7, false, false}));

TEST(DistributedSampler, ShuffleChangesWithEpochAndSameSeedAgreesAcrossRanks) {
  DistributedSampler a(100, {.num_replicas = 2, .rank = 0, .seed = 3});
  EXPECT_NE(a.indices(0), a.indices(1));
  DistributedSampler unshuffled(10, {.num_replicas = 3, .rank = 1, .shuffle = false});
  EXPECT_EQ(unshuffled.indices(0), (std::vector<int64_t>{1, 4, 7, 0}));  // 10 -> padded with index 0
}

TEST(DistributedSampler, BadArguments) {
  EXPECT_THROW(DistributedSampler(10, {.num_replicas = 0}), ValueError);
  EXPECT_THROW(DistributedSampler(10, {.num_replicas = 2, .rank = 2}), ValueError);
  EXPECT_THROW(DistributedSampler(10, {.num_replicas = 2, .rank = -1}), ValueError);
}

}  // namespace
}  // namespace loom::data
