// Deterministic seeds and permutations for the data layer. Everything random
// in loom/data (shuffles, augmentations, fold assignment) is a pure function of
// a user seed and small integers such as the epoch and the batch index, so a
// run is reproducible whatever the thread count and can resume mid-epoch.
//
//   // given: uint64_t seed, int64_t epoch, int64_t n, int64_t batch
//   uint64_t s = data::derive_seed(seed, data::kSeedShuffle, epoch);
//   std::vector<int64_t> perm = data::random_permutation(n, s);   // same for the same s
//   core::Generator gen = data::batch_generator(seed, epoch, batch);
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "loom/core/rng.h"

namespace loom::data {

// Domain tags, so that the shuffle of epoch 3 and the augmentation of batch 3
// never draw from the same stream.
inline constexpr uint64_t kSeedShuffle = 0x5348'5546'464c'4501ull;
inline constexpr uint64_t kSeedTransform = 0x5452'414e'5346'4f02ull;
inline constexpr uint64_t kSeedSplit = 0x5350'4c49'5453'0003ull;

// A well-mixed 64-bit seed from (seed, a, b) (SplitMix64 finaliser chained).
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0);

// The generator for the augmentations of batch `batch` of epoch `epoch`.
core::Generator batch_generator(uint64_t seed, int64_t epoch, int64_t batch);

// 64-bit draws from Philox under one key; unbiased integers below a bound.
class RandomStream {
 public:
  explicit RandomStream(uint64_t seed) : seed_(seed) {}
  uint64_t next_u64();
  // Uniform in [0, bound); bound must be > 0 (rejection sampling, no modulo bias).
  uint64_t below(uint64_t bound);

 private:
  uint64_t seed_;
  uint64_t block_ = 0;
  std::array<uint32_t, 4> words_{};
  int used_ = 4;  // words of words_ already consumed
};

// A uniformly random permutation of [0, n) (Fisher-Yates), a pure function of (n, seed).
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed);
// Shuffles `v` in place, a pure function of (v, seed).
void shuffle_in_place(std::vector<int64_t>& v, uint64_t seed);

}  // namespace loom::data
