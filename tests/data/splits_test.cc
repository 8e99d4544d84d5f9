#include "loom/data/splits.h"

#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "loom/core/error.h"

namespace loom::data {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

// No index in both train and val; train + val = [0, n); the val sets of all
// folds partition [0, n); sizes differ by at most one.
void check_partition(const std::vector<Fold>& folds, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  size_t lo = SIZE_MAX, hi = 0;
  for (const Fold& f : folds) {
    EXPECT_TRUE(std::is_sorted(f.train.begin(), f.train.end()));
    EXPECT_TRUE(std::is_sorted(f.val.begin(), f.val.end()));
    std::set<int64_t> train(f.train.begin(), f.train.end()), val(f.val.begin(), f.val.end());
    for (int64_t v : val) EXPECT_EQ(train.count(v), 0u) << "index " << v << " leaks between train and val";
    EXPECT_EQ(train.size() + val.size(), static_cast<size_t>(n));
    for (int64_t v : f.val) ++seen[static_cast<size_t>(v)];
    lo = std::min(lo, f.val.size());
    hi = std::max(hi, f.val.size());
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "index " << i;
  EXPECT_LE(hi - lo, 1u);
}

TEST(KFold, PartitionsContiguousWithoutShuffle) {
  auto folds = k_fold(10, 3);
  ASSERT_EQ(folds.size(), 3u);
  check_partition(folds, 10);
  EXPECT_EQ(folds[0].val, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(folds[1].val, (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(folds[2].val, (std::vector<int64_t>{7, 8, 9}));
}

TEST(KFold, ShuffledIsSeededPartition) {
  for (int64_t n : {2, 5, 17, 100}) {
    for (int64_t k : {2, 3, 5}) {
      if (k > n) continue;
      auto folds = k_fold(n, k, true, 9);
      check_partition(folds, n);
      auto again = k_fold(n, k, true, 9);
      for (size_t f = 0; f < folds.size(); ++f) EXPECT_EQ(folds[f].val, again[f].val);
    }
  }
  EXPECT_NE(k_fold(100, 5, true, 1)[0].val, k_fold(100, 5, true, 2)[0].val);
  EXPECT_NE(k_fold(100, 5, true, 1)[0].val, k_fold(100, 5, false, 1)[0].val);
}

TEST(KFold, BadArguments) {
  EXPECT_NE(error_of([] { k_fold(10, 1); }).find("at least 2 folds"), std::string::npos);
  EXPECT_NE(error_of([] { k_fold(3, 4); }).find("cannot make 4 folds of 3 samples"), std::string::npos);
}

TEST(StratifiedKFold, ClassCountsPerFoldWithinOne) {
  std::vector<int64_t> labels;
  // Unbalanced: class 0 x 23, class 7 x 9, class -2 x 4, class 3 x 1.
  for (int i = 0; i < 23; ++i) labels.push_back(0);
  for (int i = 0; i < 9; ++i) labels.push_back(7);
  for (int i = 0; i < 4; ++i) labels.push_back(-2);
  labels.push_back(3);
  std::rotate(labels.begin(), labels.begin() + 11, labels.end());  // mix the order a little
  const auto n = static_cast<int64_t>(labels.size());
  for (bool shuffle : {false, true}) {
    for (int64_t k : {2, 3, 5}) {
      auto folds = stratified_k_fold(labels, k, shuffle, 4);
      ASSERT_EQ(folds.size(), static_cast<size_t>(k));
      check_partition(folds, n);
      std::map<int64_t, std::vector<int64_t>> per_class;  // label -> count per fold
      for (int64_t f = 0; f < k; ++f) {
        for (int64_t i : folds[static_cast<size_t>(f)].val) {
          auto& v = per_class[labels[static_cast<size_t>(i)]];
          v.resize(static_cast<size_t>(k), 0);
          ++v[static_cast<size_t>(f)];
        }
      }
      for (auto& [label, counts] : per_class) {
        counts.resize(static_cast<size_t>(k), 0);
        auto [mn, mx] = std::minmax_element(counts.begin(), counts.end());
        EXPECT_LE(*mx - *mn, 1) << "class " << label << " k=" << k << " shuffle=" << shuffle;
      }
    }
  }
  EXPECT_NE(stratified_k_fold(labels, 3, true, 1)[0].val, stratified_k_fold(labels, 3, true, 2)[0].val);
}

TEST(StratifiedKFold, BadArguments) {
  EXPECT_THROW(stratified_k_fold({0, 1, 0}, 1), ValueError);
  EXPECT_THROW(stratified_k_fold({0, 1, 0}, 4), ValueError);
  EXPECT_THROW(stratified_k_fold({}, 2), ValueError);
}

TEST(TimeSeriesSplit, ExpandingWindowKeepsTimeOrder) {
  // scikit-learn: TimeSeriesSplit(n_splits=3) on 6 samples:
  // train [0,1,2] test [3]; train [0..3] test [4]; train [0..4] test [5].
  auto folds = time_series_split(6, 3);
  ASSERT_EQ(folds.size(), 3u);
  EXPECT_EQ(folds[0].train, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(folds[0].val, (std::vector<int64_t>{3}));
  EXPECT_EQ(folds[2].train, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(folds[2].val, (std::vector<int64_t>{5}));

  for (auto [n, s, test, gap] : std::vector<std::tuple<int64_t, int64_t, std::optional<int64_t>, int64_t>>{
           {20, 4, std::nullopt, 0}, {20, 4, 3, 2}, {100, 5, std::nullopt, 7}, {11, 2, 5, 0}}) {
    auto fs = time_series_split(n, s, test, gap);
    ASSERT_EQ(fs.size(), static_cast<size_t>(s));
    const int64_t t = test.value_or(n / (s + 1));
    for (size_t i = 0; i < fs.size(); ++i) {
      const Fold& f = fs[i];
      ASSERT_FALSE(f.train.empty());
      EXPECT_EQ(static_cast<int64_t>(f.val.size()), t);
      EXPECT_LT(f.train.back() + gap, f.val.front()) << "train must end gap samples before the test window";
      EXPECT_EQ(f.train.back() + gap + 1, f.val.front());
      EXPECT_EQ(f.train.front(), 0);
      if (i > 0) {
        EXPECT_GT(f.train.size(), fs[i - 1].train.size()) << "the window expands";
        EXPECT_EQ(f.val.front(), fs[i - 1].val.back() + 1) << "test windows are consecutive";
      }
    }
    EXPECT_EQ(fs.back().val.back(), n - 1);
  }
}

TEST(TimeSeriesSplit, BadArguments) {
  EXPECT_THROW(time_series_split(10, 1), ValueError);
  EXPECT_THROW(time_series_split(3, 3), ValueError);
  EXPECT_THROW(time_series_split(10, 3, 0), ValueError);
  EXPECT_NO_THROW(time_series_split(10, 3, 3));               // 9 test samples leave 1 for training
  EXPECT_THROW(time_series_split(9, 3, 3), ValueError);        // ... 9 of 9 leave none
  EXPECT_THROW(time_series_split(10, 3, 2, 4), ValueError);    // 6 test + gap 4 leaves no training data
  EXPECT_THROW(time_series_split(10, 3, std::nullopt, -1), ValueError);
  EXPECT_NE(error_of([] { time_series_split(10, 3, 2, 4); }).find("no training data"), std::string::npos);
}

TEST(SlidingWindows, OverlappingWindows) {
  auto w = sliding_windows(10, 4, 2);
  ASSERT_EQ(w.size(), 4u);  // [0,4) [2,6) [4,8) [6,10)
  EXPECT_EQ(w[0].start, 0);
  EXPECT_EQ(w[3].end, 10);
  EXPECT_EQ(w[1].indices(), (std::vector<int64_t>{2, 3, 4, 5}));
  for (const auto& x : w) EXPECT_EQ(x.size(), 4);
  EXPECT_EQ(sliding_windows(10, 4, 4).size(), 2u);  // [0,4) [4,8); 8..9 do not fill a window
  EXPECT_EQ(sliding_windows(5, 5, 1).size(), 1u);
  EXPECT_THROW(sliding_windows(5, 6, 1), ValueError);
  EXPECT_THROW(sliding_windows(5, 0, 1), ValueError);
  EXPECT_THROW(sliding_windows(5, 2, 0), ValueError);
}

}  // namespace
}  // namespace loom::data
