// Gradient accumulation (StepParts::microbatches): a step in M micro-batches
// gives the one-pass step's gradients up to rounding, whatever M and however
// unevenly M cuts the rows; the hook sees the last micro-batch once; M larger
// than the rows still works; M < 1 is refused.
#include <gtest/gtest.h>

#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/train/strategy.h"

namespace loom {
namespace {

using core::Tensor;

std::shared_ptr<nn::Sequential> model() {
  return std::make_shared<nn::Sequential>(nn::Linear({.in = 6, .out = 16, .seed = 1}), nn::Tanh(),
                                          nn::Linear({.in = 16, .out = 3, .seed = 2}));
}

const train::LossFn kMse = [](const Tensor& out, const Tensor& y) { return ops::mse_loss(out, y); };

struct Result {
  double loss = 0;
  std::vector<std::vector<float>> grads;
  std::vector<bool> lasts;  // what before_backward was told
};

Result step(int64_t microbatches, int64_t rows, int64_t global_rows) {
  auto m = model();
  optim::Optimizer opt = optim::make_optimizer(m->named_parameters(), {.rule = optim::Rule::Sgd, .lr = 0.1});
  core::Generator g(5);
  const train::StepBatch batch{ops::randn({rows, 6}, g), ops::randn({rows, 3}, g), global_rows};
  train::StepParts parts{.model = *m, .loss = kMse, .optimizer = opt, .microbatches = microbatches};
  Result r;
  r.loss = train::forward_backward(batch, parts, [&](bool last) { r.lasts.push_back(last); });
  for (auto& [name, p] : m->named_parameters()) r.grads.push_back(p.grad().to_vector<float>());
  return r;
}

void expect_close(const Result& a, const Result& b, const char* what) {
  EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::abs(b.loss)) << what;
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    for (size_t j = 0; j < a.grads[i].size(); ++j) {
      EXPECT_NEAR(a.grads[i][j], b.grads[i][j], 1e-6 + 1e-5 * std::abs(b.grads[i][j])) << what << " param " << i;
    }
  }
}

TEST(Microbatches, AccumulatedStepMatchesOnePass) {
  const Result whole = step(1, 24, 24);
  EXPECT_EQ(whole.lasts, std::vector<bool>{true});
  for (int64_t m : {2, 4, 5, 7, 24}) {
    const Result acc = step(m, 24, 24);
    expect_close(acc, whole, "microbatches");
    ASSERT_EQ(acc.lasts.size(), static_cast<size_t>(m));
    for (size_t k = 0; k < acc.lasts.size(); ++k) EXPECT_EQ(acc.lasts[k], k + 1 == acc.lasts.size());
  }
}

TEST(Microbatches, ARanksShareScalesByTheGlobalBatch) {
  // This rank's 12 rows of a global batch of 48: gradients a quarter of the rows' mean gradient.
  const Result whole = step(1, 12, 48);
  expect_close(step(3, 12, 48), whole, "share");
}

TEST(Microbatches, MoreMicrobatchesThanRowsSkipsTheEmptyOnes) {
  const Result whole = step(1, 3, 3);
  const Result acc = step(8, 3, 3);
  expect_close(acc, whole, "3 rows, 8 micro-batches");
  EXPECT_EQ(acc.lasts, (std::vector<bool>{false, false, true}));
}

TEST(Microbatches, RefusesLessThanOne) {
  EXPECT_THROW(step(0, 4, 4), ConfigError);
}

}  // namespace
}  // namespace loom
