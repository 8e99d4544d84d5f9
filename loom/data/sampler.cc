#include "loom/data/sampler.h"

#include <numeric>

#include "loom/core/error.h"
#include "loom/data/seeding.h"

namespace loom::data {

SequentialSampler::SequentialSampler(int64_t n) : n_(n) {
  LOOM_CHECK(n >= 0, "SequentialSampler: size must be >= 0, got {}", n);
}

std::vector<int64_t> SequentialSampler::indices(int64_t) const {
  std::vector<int64_t> v(static_cast<size_t>(n_));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

RandomSampler::RandomSampler(int64_t n, uint64_t seed) : n_(n), seed_(seed) {
  LOOM_CHECK(n >= 0, "RandomSampler: size must be >= 0, got {}", n);
}

std::vector<int64_t> RandomSampler::indices(int64_t epoch) const {
  return random_permutation(n_, derive_seed(seed_, kSeedShuffle, static_cast<uint64_t>(epoch)));
}

DistributedSampler::DistributedSampler(int64_t n, DistributedSamplerOptions options) : n_(n), o_(options) {
  LOOM_CHECK(n >= 0, "DistributedSampler: dataset size must be >= 0, got {}", n);
  LOOM_CHECK(o_.num_replicas >= 1, "DistributedSampler: num_replicas must be >= 1, got {}", o_.num_replicas);
  LOOM_CHECK(o_.rank >= 0 && o_.rank < o_.num_replicas, "DistributedSampler: rank {} out of range [0, {})", o_.rank,
             o_.num_replicas);
  num_samples_ = o_.drop_last ? n_ / o_.num_replicas : (n_ + o_.num_replicas - 1) / o_.num_replicas;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch) const {
  std::vector<int64_t> order = o_.shuffle ? RandomSampler(n_, o_.seed).indices(epoch) : SequentialSampler(n_).indices(0);
  const size_t total = static_cast<size_t>(num_samples_ * o_.num_replicas);
  if (total > order.size() && !order.empty()) {
    // Wrap around (repeatedly when there are fewer samples than ranks).
    const size_t n = order.size();
    for (size_t i = n; i < total; ++i) order.push_back(order[i % n]);
  }
  order.resize(total);
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(num_samples_));
  for (size_t i = static_cast<size_t>(o_.rank); i < total; i += static_cast<size_t>(o_.num_replicas)) {
    mine.push_back(order[i]);
  }
  return mine;
}

}  // namespace loom::data
