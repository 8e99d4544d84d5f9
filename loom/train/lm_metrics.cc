#include "loom/train/lm_metrics.h"

#include <cmath>
#include <numbers>
#include <nlohmann/json.hpp>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::train {

double bits_per_byte(double loss_nats) { return loss_nats / std::numbers::ln2; }

std::map<std::string, double> LanguageModelResult::as_map(std::string_view prefix) const {
  const std::string p(prefix);
  return {{p + "loss", loss}, {p + "bpb", bits_per_byte}, {p + "num_tokens", static_cast<double>(num_tokens)}};
}

std::string LanguageModelResult::to_json() const {
  nlohmann::ordered_json j;
  j["loss"] = loss;
  j["bpb"] = bits_per_byte;
  j["num_tokens"] = num_tokens;
  return j.dump();  // NaN becomes null
}

void LanguageModelMetrics::update(const core::Tensor& logits, const core::Tensor& targets) {
  LOOM_CHECK_T(ShapeError, logits.defined() && targets.defined() && logits.dim() == targets.dim() + 1,
               "LanguageModelMetrics: logits {} must be targets {} plus a vocabulary dim",
               logits.defined() ? core::to_string(logits.shape()) : "undefined",
               targets.defined() ? core::to_string(targets.shape()) : "undefined");
  const int64_t vocab = logits.size(-1), tokens = targets.numel();
  const core::Tensor sum = ops::cross_entropy(ops::reshape(logits, {tokens, vocab}), ops::reshape(targets, {tokens}),
                                              {.reduction = ops::Reduction::Sum});
  update(sum.item<double>(), tokens);
}

void LanguageModelMetrics::update(double loss_sum, int64_t num_tokens) {
  LOOM_CHECK(num_tokens >= 0, "LanguageModelMetrics: negative token count {}", num_tokens);
  loss_sum_ += loss_sum;
  num_tokens_ += num_tokens;
}

LanguageModelResult LanguageModelMetrics::result() const {
  LanguageModelResult r;
  r.num_tokens = num_tokens_;
  if (num_tokens_ > 0) {
    r.loss = loss_sum_ / static_cast<double>(num_tokens_);
    r.bits_per_byte = train::bits_per_byte(r.loss);
  }
  return r;
}

}  // namespace loom::train
