#include "examples/ctr/synthetic_clicks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "loom/core/error.h"
#include "loom/core/rng.h"

namespace ctr {
namespace {

using loom::core::Generator;

constexpr size_t kLatent = 4;            // width of the hidden interaction vectors
constexpr int64_t kMaxPairs = 4;      // interacting field pairs: (0, 1), (2, 3), ...
constexpr uint64_t kWeightKey = 100;  // Philox keys of the hidden model's parts
constexpr uint64_t kLatentKey = 200;
constexpr uint64_t kCalibrationStream = 7;

// splitmix64's finaliser: independent-looking Philox keys from (seed, purpose).
uint64_t mix(uint64_t seed, uint64_t purpose) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + purpose + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double unit(uint32_t w) { return (static_cast<double>(w) + 0.5) * 0x1p-32; }  // (0, 1)

// Two standard normals from two words (Box-Muller).
std::pair<double, double> normals(uint32_t a, uint32_t b) {
  const double r = std::sqrt(-2.0 * std::log(unit(a)));
  const double t = 2.0 * M_PI * unit(b);
  return {r * std::cos(t), r * std::sin(t)};
}

// The hidden interaction vector of a table row: kLatent standard normals.
std::array<double, kLatent> latent(uint64_t key, int64_t row) {
  const auto w = Generator::philox(key, static_cast<uint64_t>(row));
  const auto [a, b] = normals(w[0], w[1]);
  const auto [c, d] = normals(w[2], w[3]);
  return {a, b, c, d};
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Ids and the click's uniform of sample `index` under Philox key `key`.
struct Draw {
  const ClickDataOptions& o;
  int64_t vocab;
  uint64_t scatter;
  const std::vector<double>& cdf;

  double operator()(uint64_t key, uint64_t index, int64_t* rows) const {
    const uint64_t words = static_cast<uint64_t>(o.fields) + 1;
    const uint64_t blocks = (words + 3) / 4;
    double click_u = 0;
    for (uint64_t b = 0; b < blocks; ++b) {
      const auto w = Generator::philox(key, index * blocks + b);
      for (uint64_t j = 0; j < 4; ++j) {
        const uint64_t k = b * 4 + j;
        if (k + 1 == words) {
          click_u = unit(w[j]);
        } else if (k < static_cast<uint64_t>(o.fields)) {
          const auto rank = std::min<int64_t>(std::upper_bound(cdf.begin(), cdf.end(), unit(w[j])) - cdf.begin(), vocab - 1);
          const auto id = static_cast<int64_t>((static_cast<uint64_t>(rank) * scatter) % static_cast<uint64_t>(vocab));
          rows[k] = static_cast<int64_t>(k) * vocab + id;
        }
      }
    }
    return click_u;
  }
};

}  // namespace

ClickData::ClickData(const ClickDataOptions& o) : o_(o) {
  LOOM_CHECK(o.fields >= 1, "click data: {} fields", o.fields);
  LOOM_CHECK(o.rows >= o.fields * 16, "click data: {} rows is too few for {} fields (at least 16 ids per field)", o.rows,
             o.fields);
  LOOM_CHECK(o.zipf > 0 && o.ctr > 0 && o.ctr < 1, "click data: zipf {} must be > 0 and ctr {} in (0, 1)", o.zipf, o.ctr);
  vocab_ = o.rows / o.fields;
  // Zipf CDF over ranks.
  cdf_.resize(static_cast<size_t>(vocab_));
  double total = 0;
  for (int64_t r = 0; r < vocab_; ++r) cdf_[static_cast<size_t>(r)] = total += std::pow(static_cast<double>(r + 1), -o.zipf);
  for (double& c : cdf_) c /= total;
  // A multiplier coprime with V scatters the hot ranks over the field's rows.
  scatter_ = 2654435761ull % static_cast<uint64_t>(vocab_);
  while (scatter_ < 2 || std::gcd(scatter_, static_cast<uint64_t>(vocab_)) != 1) ++scatter_;
  for (int64_t p = 0; p < kMaxPairs && 2 * p + 1 < o.fields; ++p) pairs_.emplace_back(2 * p, 2 * p + 1);

  // Choose the bias so that the mean click probability is o.ctr (bisection on a calibration sample).
  const Draw draw{o_, vocab_, scatter_, cdf_};
  std::vector<double> logits(20000);
  std::vector<int64_t> rows(static_cast<size_t>(o.fields));
  for (size_t i = 0; i < logits.size(); ++i) {
    draw(mix(o.seed, kCalibrationStream), i, rows.data());
    logits[i] = hidden_logit(rows.data());
  }
  double lo = -20, hi = 20;
  for (int it = 0; it < 60; ++it) {
    const double mid = 0.5 * (lo + hi);
    double mean = 0;
    for (double l : logits) mean += sigmoid(mid + l);
    (mean / static_cast<double>(logits.size()) < o.ctr ? lo : hi) = mid;
  }
  bias_ = 0.5 * (lo + hi);
}

double ClickData::hidden_logit(const int64_t* rows) const {
  double z = 0;
  for (int64_t f = 0; f < o_.fields; ++f) {
    const auto w = Generator::philox(mix(o_.seed, kWeightKey), static_cast<uint64_t>(rows[f]));
    z += o_.weight_std * normals(w[0], w[1]).first;
  }
  for (const auto& [a, b] : pairs_) {
    const auto u = latent(mix(o_.seed, kLatentKey), rows[a]);
    const auto v = latent(mix(o_.seed, kLatentKey), rows[b]);
    double dot = 0;
    for (size_t k = 0; k < kLatent; ++k) dot += u[k] * v[k];
    z += o_.interaction * dot / std::sqrt(static_cast<double>(kLatent));
  }
  return z;
}

float ClickData::sample(Stream stream, uint64_t index, int64_t* rows, double* prob) const {
  const Draw draw{o_, vocab_, scatter_, cdf_};
  const double u = draw(mix(o_.seed, static_cast<uint64_t>(stream) + 1), index, rows);
  const double p = sigmoid(bias_ + hidden_logit(rows));
  if (prob) *prob = p;
  return u < p ? 1.0f : 0.0f;
}

}  // namespace ctr
