// Synthetic click logs for the CTR example: each sample has F categorical
// fields, and each field draws one id from its own vocabulary with Zipf-like
// popularity (a few hot ids, a long tail of rare ones). Ids are offset into one
// table: field f owns rows [f * V, (f + 1) * V), V = rows / F, and a fixed
// bijection scatters popularity ranks over those rows. A hidden model (a weight
// per id plus latent-vector interactions between a few pairs of fields) gives
// the click probability through a sigmoid; the click is drawn from it.
//
//   ctr::ClickData data({.fields = 8, .rows = 1000000, .seed = 1});
//   std::vector<int64_t> rows(data.fields());
//   double p = 0;
//   float click = data.sample(ctr::Stream::Train, 42, rows.data(), &p);   // rows: one table row per field
//
// Every sample is a pure function of (seed, stream, index): counter-based
// Philox draws (loom/core/rng.h), so workers can shard a stream by index
// without sharing state, and runs repeat exactly.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace ctr {

struct ClickDataOptions {
  int64_t fields = 8;
  int64_t rows = 1000000;    // table rows; each field gets rows / fields ids
  double zipf = 1.1;         // popularity of the id of rank r is proportional to 1 / (r + 1)^zipf
  double weight_std = 0.6;   // hidden per-id weights ~ N(0, weight_std^2)
  double interaction = 0.7;  // scale of each pairwise interaction term
  double ctr = 0.25;         // the hidden bias is set so that the mean click probability is about this
  uint64_t seed = 1;
};

enum class Stream : uint64_t { Train = 0, Test = 1 };

class ClickData {
 public:
  explicit ClickData(const ClickDataOptions& o);

  int64_t fields() const { return o_.fields; }
  int64_t vocab_per_field() const { return vocab_; }
  // Pairs of fields whose ids interact in the hidden model.
  const std::vector<std::pair<int64_t, int64_t>>& interacting_fields() const { return pairs_; }

  // Sample `index` of `stream`: writes fields() table rows to `rows`, the
  // hidden click probability to `*prob` (if not null), and returns the click (0 or 1).
  float sample(Stream stream, uint64_t index, int64_t* rows, double* prob = nullptr) const;

 private:
  double hidden_logit(const int64_t* rows) const;  // without the bias

  ClickDataOptions o_;
  int64_t vocab_ = 0;
  uint64_t scatter_ = 1;       // rank -> (rank * scatter_) mod V, a bijection (gcd(scatter_, V) = 1)
  std::vector<double> cdf_;    // Zipf CDF over popularity ranks [0, V)
  std::vector<std::pair<int64_t, int64_t>> pairs_;
  double bias_ = 0;
};

}  // namespace ctr
