// Language-model metrics: the mean per-token cross entropy and, for
// byte-level models, bits per byte (= loss / ln 2: one token is one byte).
//
//   // given: std::vector<std::pair<Tensor, Tensor>> loader, nn::Module& model
//   train::LanguageModelMetrics m;
//   for (auto& [x, y] : loader) m.update(model(x), y);   // logits [B, T, V], targets i64 [B, T]
//   train::LanguageModelResult r = m.result();
//   r.loss; r.bits_per_byte;
//   r.as_map("val_");   // {"val_loss": .., "val_bpb": .., "val_num_tokens": ..}
//
// Every token counts once: the loss is the sum over all tokens divided by
// their number, not a mean of batch means. Accuracy is left out on purpose:
// next-byte accuracy says little about a language model.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "loom/core/tensor.h"

namespace loom::train {

// A cross entropy in nats per byte, as bits per byte.
double bits_per_byte(double loss_nats);

struct LanguageModelResult {
  int64_t num_tokens = 0;
  double loss = std::numeric_limits<double>::quiet_NaN();           // nats per token
  double bits_per_byte = std::numeric_limits<double>::quiet_NaN();  // loss / ln 2

  // "loss", "bpb", "num_tokens", each prefixed.
  std::map<std::string, double> as_map(std::string_view prefix = "") const;
  std::string to_json() const;  // the scalars of as_map(); NaN is null
};

class LanguageModelMetrics {
 public:
  // logits [..., V], targets i64 [...] (the same leading dims), CPU.
  void update(const core::Tensor& logits, const core::Tensor& targets);
  // The same from a loss already summed over `num_tokens` tokens.
  void update(double loss_sum, int64_t num_tokens);
  void merge(const LanguageModelMetrics& other) { update(other.loss_sum_, other.num_tokens_); }
  void reset() { *this = LanguageModelMetrics(); }
  LanguageModelResult result() const;

 private:
  double loss_sum_ = 0.0;
  int64_t num_tokens_ = 0;
};

}  // namespace loom::train
