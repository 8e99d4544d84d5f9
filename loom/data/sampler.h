// Samplers: which dataset indices an epoch visits, in which order.
//
//   // given: std::shared_ptr<const data::Dataset> ds
//   data::RandomSampler shuffled(60000, /*seed=*/7);
//   std::vector<int64_t> order = shuffled.indices(/*epoch=*/3);   // depends only on (7, 3)
//
//   // Rank 1 of 4: a quarter of the data, the same count on every rank.
//   auto mine = std::make_shared<data::DistributedSampler>(
//       60000, data::DistributedSamplerOptions{.num_replicas = 4, .rank = 1, .seed = 7});
//   data::DataLoader loader(ds, {.batch_size = 32, .sampler = mine});
//
// A sampler is a pure function of the epoch: no hidden state, so a run can
// resume at any (epoch, batch) and get exactly the same order.
#pragma once

#include <cstdint>
#include <vector>

namespace loom::data {

class Sampler {
 public:
  virtual ~Sampler() = default;
  // How many indices one epoch yields.
  virtual int64_t size() const = 0;
  // The indices of epoch `epoch`, in order; size() of them.
  virtual std::vector<int64_t> indices(int64_t epoch) const = 0;
};

// 0, 1, ..., n - 1 every epoch.
class SequentialSampler : public Sampler {
 public:
  explicit SequentialSampler(int64_t n);
  int64_t size() const override { return n_; }
  std::vector<int64_t> indices(int64_t epoch) const override;

 private:
  int64_t n_;
};

// A permutation of [0, n) that depends only on (seed, epoch).
class RandomSampler : public Sampler {
 public:
  RandomSampler(int64_t n, uint64_t seed);
  int64_t size() const override { return n_; }
  std::vector<int64_t> indices(int64_t epoch) const override;

 private:
  int64_t n_;
  uint64_t seed_;
};

struct DistributedSamplerOptions {
  int64_t num_replicas = 1;
  int64_t rank = 0;
  bool shuffle = true;
  uint64_t seed = 0;  // must be the same on every rank
  // true: drop the tail so the data divides evenly; false: pad by wrapping
  // around to the start of the (shuffled) order.
  bool drop_last = false;
};

// Splits one epoch's order among num_replicas ranks: rank r takes positions
// r, r + R, r + 2R, ... of the (padded or trimmed) order. Every rank gets the
// same number of samples, so every rank runs the same number of batches (an
// unequal count would hang synchronous training). The ranks' samples are
// disjoint apart from the padding and together cover the data set (all of it
// unless drop_last).
class DistributedSampler : public Sampler {
 public:
  DistributedSampler(int64_t n, DistributedSamplerOptions options);
  int64_t size() const override { return num_samples_; }
  std::vector<int64_t> indices(int64_t epoch) const override;
  const DistributedSamplerOptions& options() const { return o_; }

 private:
  int64_t n_;
  DistributedSamplerOptions o_;
  int64_t num_samples_;  // per rank
};

}  // namespace loom::data
