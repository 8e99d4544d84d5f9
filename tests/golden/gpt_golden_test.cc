// The GPT of loom/nn/transformer.h (tied and untied) in f32 against a
// torch.nn re-implementation (make_golden.py, fixture gpt.txt) with the same
// closed-form weights and tokens: logits, the mean per-token cross entropy,
// every parameter's gradient, and the logits and loss after one SGD step.
//
// Tolerance as the CNN's: |ours - torch| <= 1e-5 * max(|torch|, scale), with
// scale the largest magnitude in the same tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/optim/optimizer.h"
#include "tests/golden/fixture.h"

namespace loom {
namespace {

using core::Tensor;
using golden::Fixture;
using golden::WorstError;

constexpr double kTol = 1e-5;
constexpr int64_t kBatch = 2;
constexpr double kLr = 0.5;

nn::GptOptions reference_options(bool tied) {
  return {.vocab = 64, .context = 8, .blocks = 2, .heads = 2, .embed = 16, .mlp_ratio = 4, .tied = tied};
}

// p[i] = base + amp * sin(0.375 i + phase), in f64, rounded to f32.
void fill_param(Tensor& p, const std::string& name, int64_t index) {
  const double amp = p.dim() == 2 ? 0.3 : 0.1;
  const double base = name.find(".ln_") != std::string::npos && name.ends_with("weight") ? 1.0 : 0.0;
  float* d = p.data<float>();
  for (int64_t i = 0; i < p.numel(); ++i) {
    d[i] = static_cast<float>(base + amp * std::sin(0.375 * static_cast<double>(i) + static_cast<double>(index + 1)));
  }
}

Tensor tokens(int64_t seq, int64_t vocab, int64_t shift) {
  std::vector<int64_t> v;
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t t = 0; t < seq; ++t) v.push_back((31 * b + 17 * (t + shift) * (t + shift) + 3) % vocab);
  }
  return Tensor::from_vector<int64_t>(v, {kBatch, seq});
}

void compare(const std::string& name, const std::vector<double>& got, const std::vector<double>& expected,
             WorstError& overall) {
  ASSERT_EQ(got.size(), expected.size()) << name;
  double scale = 0.0;
  for (double x : expected) scale = std::max(scale, std::abs(x));
  WorstError worst;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = kTol * std::max(std::abs(expected[i]), scale);
    if (!(std::abs(got[i] - expected[i]) <= bound) && reported++ < 5) {
      ADD_FAILURE() << name << "[" << i << "]: " << got[i] << " vs torch " << expected[i] << " (bound " << bound << ")";
    }
    worst.update(got[i], expected[i], scale, name + "[" + std::to_string(i) + "]");
  }
  if (worst.rel > overall.rel) overall = worst;
}

Tensor mean_token_loss(const Tensor& logits, const Tensor& targets) {
  const int64_t n = targets.numel();
  return ops::cross_entropy(ops::reshape(logits, {n, logits.size(-1)}), ops::reshape(targets, {n}));
}

void check_case(const Fixture& fx, const std::string& c) {
  const nn::GptOptions o = reference_options(c == "tied");
  nn::Gpt model(o);
  auto params = model.named_parameters();
  for (size_t k = 0; k < params.size(); ++k) {
    auto& [name, p] = params[k];
    // The same names in the same order as PyTorch's module: the weights line up.
    EXPECT_EQ(fx.scalar(c + ".param." + name + ".index"), static_cast<double>(k)) << name;
    fill_param(p, name, static_cast<int64_t>(k));
  }
  const Tensor x = tokens(o.context, o.vocab, 0), y = tokens(o.context, o.vocab, 1);
  optim::Optimizer opt = optim::make_optimizer(params, {.rule = optim::Rule::Sgd, .lr = kLr});

  WorstError overall;
  Tensor logits = model(x);
  Tensor loss = mean_token_loss(logits, y);
  autograd::backward(loss);
  compare(c + ".logits", logits.to_vector<double>(), fx.at(c + ".logits").values, overall);
  EXPECT_NEAR(loss.item<double>(), fx.scalar(c + ".loss"), kTol * fx.scalar(c + ".loss")) << c;
  for (const auto& [name, p] : params) {
    ASSERT_TRUE(p.grad().defined()) << name;
    compare(c + ".grad." + name, p.grad().to_vector<double>(), fx.at(c + ".grad." + name).values, overall);
  }

  opt.step();
  autograd::NoGradGuard no_grad;
  Tensor after = model(x);
  compare(c + ".after.logits", after.to_vector<double>(), fx.at(c + ".after.logits").values, overall);
  const double after_loss = mean_token_loss(after, y).item<double>();
  EXPECT_NEAR(after_loss, fx.scalar(c + ".after.loss"), kTol * fx.scalar(c + ".after.loss")) << c;
  std::cout << "[golden] GPT " << c << ": loss " << loss.item<double>() << " -> " << after_loss << " (torch "
            << fx.scalar(c + ".loss") << " -> " << fx.scalar(c + ".after.loss") << "), worst |diff| / scale "
            << overall.rel << " at " << overall.where << "\n";
}

TEST(GoldenGpt, TiedForwardGradientsAndSgdStepMatchPyTorch) {
  check_case(Fixture(LOOM_TEST_DATA_DIR "/golden/gpt.txt"), "tied");
}

TEST(GoldenGpt, UntiedForwardGradientsAndSgdStepMatchPyTorch) {
  check_case(Fixture(LOOM_TEST_DATA_DIR "/golden/gpt.txt"), "untied");
}

}  // namespace
}  // namespace loom
