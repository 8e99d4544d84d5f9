#include "loom/core/rng.h"

#include <cmath>
#include <numbers>

namespace loom::core {

std::array<uint32_t, 4> Generator::philox(uint64_t seed, uint64_t block) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kW0, k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

namespace {
inline float u01f(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }
inline double u01d(uint32_t hi, uint32_t lo) {
  uint64_t v = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

template <class T>
void fill_uniform_impl(Generator& g, T* out, int64_t n) {
  constexpr int64_t per_block = std::is_same_v<T, float> ? 4 : 2;
  int64_t nblocks = (n + per_block - 1) / per_block;
  uint64_t first = g.reserve(static_cast<uint64_t>(nblocks));
  uint64_t seed = g.seed();
#pragma omp parallel for if (n > 65536) schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    auto r = Generator::philox(seed, first + static_cast<uint64_t>(b));
    for (int64_t j = 0; j < per_block; ++j) {
      int64_t i = b * per_block + j;
      if (i >= n) break;
      if constexpr (std::is_same_v<T, float>) {
        out[i] = u01f(r[j]);
      } else {
        out[i] = u01d(r[2 * j], r[2 * j + 1]);
      }
    }
  }
}

// Box-Muller: each block gives two normals (from two pairs of words).
template <class T>
void fill_normal_impl(Generator& g, T* out, int64_t n) {
  int64_t nblocks = (n + 1) / 2;
  uint64_t first = g.reserve(static_cast<uint64_t>(nblocks));
  uint64_t seed = g.seed();
#pragma omp parallel for if (n > 65536) schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    auto r = Generator::philox(seed, first + static_cast<uint64_t>(b));
    double u1 = 1.0 - u01d(r[0], r[1]);  // (0, 1]
    double u2 = u01d(r[2], r[3]);
    double rad = std::sqrt(-2.0 * std::log(u1));
    double th = 2.0 * std::numbers::pi * u2;
    out[2 * b] = static_cast<T>(rad * std::cos(th));
    if (2 * b + 1 < n) out[2 * b + 1] = static_cast<T>(rad * std::sin(th));
  }
}
}  // namespace

float Generator::uniform() { return u01f(philox(seed_, offset_++)[0]); }
double Generator::normal() {
  double v;
  fill_normal_impl(*this, &v, 1);
  return v;
}
void Generator::fill_uniform(float* out, int64_t n) { fill_uniform_impl(*this, out, n); }
void Generator::fill_uniform(double* out, int64_t n) { fill_uniform_impl(*this, out, n); }
void Generator::fill_normal(float* out, int64_t n) { fill_normal_impl(*this, out, n); }
void Generator::fill_normal(double* out, int64_t n) { fill_normal_impl(*this, out, n); }

}  // namespace loom::core
