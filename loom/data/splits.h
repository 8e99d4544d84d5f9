// Train/validation splits as index vectors, for cross-validation and for
// time-ordered data.
//
//   // given: int64_t n, std::shared_ptr<const data::Dataset> ds, std::vector<int64_t> labels
//   for (const data::Fold& f : data::k_fold(n, 5, /*shuffle=*/true, /*seed=*/3)) {
//     auto train = std::make_shared<data::Subset>(ds, f.train);
//     auto val = std::make_shared<data::Subset>(ds, f.val);
//   }
//   auto folds = data::stratified_k_fold(labels, 5, true, 3);   // class balance per fold
//   auto ts = data::time_series_split(n, 4, /*test_size=*/std::nullopt, /*gap=*/2);
//   auto windows = data::sliding_windows(n, /*window=*/100, /*stride=*/50);  // overlapping
//
// Within a fold, train and val never share an index, and both are sorted
// ascending. Bad arguments throw ValueError saying which and why.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace loom::data {

struct Fold {
  std::vector<int64_t> train;
  std::vector<int64_t> val;  // the test part, for time_series_split
};

// k folds whose val sets partition [0, n) into k nearly equal parts (the first
// n % k folds one larger); train is the rest. With shuffle the parts are random
// (a function of seed only); without, contiguous. 2 <= k <= n.
std::vector<Fold> k_fold(int64_t n, int64_t k, bool shuffle = false, uint64_t seed = 0);

// Like k_fold over labels.size() samples, but each class is dealt round-robin
// over the folds, so per fold the count of every class differs by at most one
// between folds (and fold sizes too). With shuffle, the order within each class
// is random first. 2 <= k <= labels.size().
std::vector<Fold> stratified_k_fold(const std::vector<int64_t>& labels, int64_t k, bool shuffle = false,
                                    uint64_t seed = 0);

// Expanding-window splits of time-ordered data (as scikit-learn's
// TimeSeriesSplit): n_splits test windows of test_size samples (default
// n / (n_splits + 1)) at the end of the data, each trained on everything
// before it except the `gap` samples just before the window. Train indices
// always precede val indices.
std::vector<Fold> time_series_split(int64_t n, int64_t n_splits, std::optional<int64_t> test_size = std::nullopt,
                                    int64_t gap = 0);

// Windows [start, start + window) for start = 0, stride, 2 * stride, ... that
// fit in [0, n); overlapping when stride < window.
struct Window {
  int64_t start = 0;
  int64_t end = 0;  // exclusive
  int64_t size() const { return end - start; }
  std::vector<int64_t> indices() const;
};
std::vector<Window> sliding_windows(int64_t n, int64_t window, int64_t stride);

}  // namespace loom::data
