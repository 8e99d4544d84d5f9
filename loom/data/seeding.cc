#include "loom/data/seeding.h"

#include <numeric>
#include <utility>

#include "loom/core/error.h"

namespace loom::data {
namespace {

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) {
  return mix64(mix64(mix64(seed) ^ a) ^ b);
}

core::Generator batch_generator(uint64_t seed, int64_t epoch, int64_t batch) {
  return core::Generator(derive_seed(derive_seed(seed, kSeedTransform), static_cast<uint64_t>(epoch),
                                     static_cast<uint64_t>(batch)));
}

uint64_t RandomStream::next_u64() {
  if (used_ >= 4) {
    words_ = core::Generator::philox(seed_, block_++);
    used_ = 0;
  }
  uint64_t hi = words_[static_cast<size_t>(used_)], lo = words_[static_cast<size_t>(used_ + 1)];
  used_ += 2;
  return (hi << 32) | lo;
}

uint64_t RandomStream::below(uint64_t bound) {
  LOOM_ASSERT(bound > 0);
  // Accept only draws below the largest multiple of bound, so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound + 1) % bound;
  for (;;) {
    uint64_t x = next_u64();
    if (x <= limit) return x % bound;
  }
}

void shuffle_in_place(std::vector<int64_t>& v, uint64_t seed) {
  RandomStream rs(seed);
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rs.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed) {
  LOOM_CHECK(n >= 0, "random_permutation: n must be >= 0, got {}", n);
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  shuffle_in_place(v, seed);
  return v;
}

}  // namespace loom::data
