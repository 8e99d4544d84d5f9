#include "loom/data/splits.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "loom/core/error.h"
#include "loom/data/seeding.h"

namespace loom::data {
namespace {

void check_k(int64_t n, int64_t k, const char* who) {
  LOOM_CHECK(k >= 2, "{}: need at least 2 folds, got k = {}", who, k);
  LOOM_CHECK(k <= n, "{}: cannot make {} folds of {} samples (k must be <= the number of samples)", who, k, n);
}

// Folds from a fold id per sample: val = the ids equal to f, train = the rest.
std::vector<Fold> folds_from_assignment(const std::vector<int64_t>& fold_of, int64_t k) {
  std::vector<Fold> folds(static_cast<size_t>(k));
  for (int64_t i = 0; i < static_cast<int64_t>(fold_of.size()); ++i) {
    for (int64_t f = 0; f < k; ++f) {
      (fold_of[static_cast<size_t>(i)] == f ? folds[static_cast<size_t>(f)].val : folds[static_cast<size_t>(f)].train)
          .push_back(i);
    }
  }
  return folds;
}

}  // namespace

std::vector<Fold> k_fold(int64_t n, int64_t k, bool shuffle, uint64_t seed) {
  check_k(n, k, "k_fold");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle) shuffle_in_place(order, derive_seed(seed, kSeedSplit, 1));
  std::vector<int64_t> fold_of(static_cast<size_t>(n));
  const int64_t base = n / k, extra = n % k;
  int64_t pos = 0;
  for (int64_t f = 0; f < k; ++f) {
    const int64_t len = base + (f < extra ? 1 : 0);
    for (int64_t j = 0; j < len; ++j) fold_of[static_cast<size_t>(order[static_cast<size_t>(pos++)])] = f;
  }
  return folds_from_assignment(fold_of, k);
}

std::vector<Fold> stratified_k_fold(const std::vector<int64_t>& labels, int64_t k, bool shuffle, uint64_t seed) {
  const auto n = static_cast<int64_t>(labels.size());
  check_k(n, k, "stratified_k_fold");
  std::map<int64_t, std::vector<int64_t>> by_class;  // ordered: the result does not depend on hashing
  for (int64_t i = 0; i < n; ++i) by_class[labels[static_cast<size_t>(i)]].push_back(i);
  // Deal the classes one after another round-robin, carrying the fold counter
  // across classes: within a class the fold counts differ by at most one, and
  // so do the fold sizes overall.
  std::vector<int64_t> fold_of(static_cast<size_t>(n));
  int64_t next = 0;
  for (auto& [label, members] : by_class) {
    if (shuffle) shuffle_in_place(members, derive_seed(seed, kSeedSplit, static_cast<uint64_t>(label)));
    for (int64_t i : members) fold_of[static_cast<size_t>(i)] = next++ % k;
  }
  return folds_from_assignment(fold_of, k);
}

std::vector<Fold> time_series_split(int64_t n, int64_t n_splits, std::optional<int64_t> test_size, int64_t gap) {
  LOOM_CHECK(n_splits >= 2, "time_series_split: need at least 2 splits, got n_splits = {}", n_splits);
  LOOM_CHECK(gap >= 0, "time_series_split: gap must be >= 0, got {}", gap);
  LOOM_CHECK(n_splits + 1 <= n, "time_series_split: cannot make {} splits of {} samples (needs n_splits + 1 <= n)",
             n_splits, n);
  const int64_t test = test_size.value_or(n / (n_splits + 1));
  LOOM_CHECK(test >= 1, "time_series_split: test_size must be >= 1, got {}", test);
  const int64_t first_test = n - n_splits * test;
  LOOM_CHECK(first_test - gap >= 1,
             "time_series_split: {} splits of test_size {} with gap {} leave no training data in {} samples "
             "(need n_splits * test_size + gap < n)",
             n_splits, test, gap, n);
  std::vector<Fold> folds;
  for (int64_t s = 0; s < n_splits; ++s) {
    const int64_t start = first_test + s * test;
    Fold f;
    f.train.resize(static_cast<size_t>(start - gap));
    std::iota(f.train.begin(), f.train.end(), int64_t{0});
    f.val.resize(static_cast<size_t>(test));
    std::iota(f.val.begin(), f.val.end(), start);
    folds.push_back(std::move(f));
  }
  return folds;
}

std::vector<int64_t> Window::indices() const {
  std::vector<int64_t> v(static_cast<size_t>(std::max<int64_t>(0, end - start)));
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<Window> sliding_windows(int64_t n, int64_t window, int64_t stride) {
  LOOM_CHECK(window >= 1, "sliding_windows: window must be >= 1, got {}", window);
  LOOM_CHECK(stride >= 1, "sliding_windows: stride must be >= 1, got {}", stride);
  LOOM_CHECK(window <= n, "sliding_windows: window {} is longer than the {} samples", window, n);
  std::vector<Window> out;
  for (int64_t s = 0; s + window <= n; s += stride) out.push_back({s, s + window});
  return out;
}

}  // namespace loom::data
