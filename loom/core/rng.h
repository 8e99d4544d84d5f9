// Seeded, counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
// The whole state is {seed, offset}, so it is cheap to save in a checkpoint and
// to split: element i of a draw depends only on (seed, offset + i), never on
// the thread count.
//
//   // given: float* p, int64_t n
//   core::Generator gen(42);
//   float u = gen.uniform();           // [0, 1)
//   gen.fill_uniform(p, n);            // n floats in [0, 1), deterministic
#pragma once

#include <array>
#include <cstdint>

namespace loom::core {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // in 128-bit blocks drawn so far
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }

  // Four 32-bit words for counter `block` under key `seed` (no state change).
  static std::array<uint32_t, 4> philox(uint64_t seed, uint64_t block);

  // Reserves `nblocks` counters and returns the first; callers fill from
  // [first, first + nblocks) in parallel.
  uint64_t reserve(uint64_t nblocks) {
    uint64_t first = offset_;
    offset_ += nblocks;
    return first;
  }

  float uniform();
  double normal();
  // n draws, uniform in [0, 1) / standard normal; parallel and deterministic.
  void fill_uniform(float* out, int64_t n);
  void fill_uniform(double* out, int64_t n);
  void fill_normal(float* out, int64_t n);
  void fill_normal(double* out, int64_t n);

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace loom::core
