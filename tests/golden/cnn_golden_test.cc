// The reference CNN (Conv 5x5 -> ReLU -> MaxPool -> Conv 5x5 -> ReLU -> MaxPool
// -> Flatten -> Linear 3136x1024 -> ReLU -> Linear 1024x10) in f32 against
// PyTorch: logits, cross-entropy loss and every parameter's gradient, for the
// closed-form weights and inputs of make_golden.py (fixture cnn.txt).
//
// Tolerance: |ours - torch| <= 1e-5 * max(|torch|, scale), where scale is the
// largest magnitude in the same tensor (its max |value|). Near-zero entries of
// a tensor are thus held to 1e-5 of the tensor's size, not of themselves: two
// correct f32 implementations that sum in different orders differ by about
// 1e-6 of that (PyTorch's own f32 result is within 4e-6 of its f64 one).
// Sums use scale = sqrt(n * sum of squares), the largest |sum| the elements allow.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "tests/golden/fixture.h"

namespace loom {
namespace {

using core::Tensor;
using golden::Fixture;
using golden::WorstError;

constexpr double kTol = 1e-5;

nn::Sequential reference_cnn() {
  return nn::Sequential(nn::Conv2d({.in = 1, .out = 32, .kernel = 5, .padding = 2}), nn::ReLU(),
                        nn::MaxPool2d({.kernel = 2}), nn::Conv2d({.in = 32, .out = 64, .kernel = 5, .padding = 2}),
                        nn::ReLU(), nn::MaxPool2d({.kernel = 2}), nn::Flatten(),
                        nn::Linear({.in = 64 * 7 * 7, .out = 1024}), nn::ReLU(), nn::Linear({.in = 1024, .out = 10}));
}

// x[i] = amp * sin(step * i + phase), in f64, rounded to f32 (step * i is exact).
void fill_sin(Tensor& t, double step, double phase, double amp) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(amp * std::sin(step * static_cast<double>(i) + phase));
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Compares `got` with `expected` elementwise under the tolerance above.
void compare(const std::string& name, const std::vector<double>& got, const std::vector<double>& expected,
             WorstError& overall) {
  ASSERT_EQ(got.size(), expected.size()) << name;
  const double scale = max_abs(expected);
  WorstError worst;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = kTol * std::max(std::abs(expected[i]), scale);
    if (!(std::abs(got[i] - expected[i]) <= bound) && reported++ < 5) {
      ADD_FAILURE() << name << "[" << i << "]: " << got[i] << " vs torch " << expected[i] << " (bound " << bound << ")";
    }
    worst.update(got[i], expected[i], scale, name + "[" + std::to_string(i) + "]");
  }
  std::cout << "[golden] " << name << ": worst |diff| / max(|torch|, max|tensor|) " << worst.rel << "\n";
  if (worst.rel > overall.rel) overall = worst;
}

TEST(GoldenCnn, ForwardLossAndGradientsMatchPyTorch) {
  Fixture fx(LOOM_TEST_DATA_DIR "/golden/cnn.txt");
  nn::Sequential model = reference_cnn();

  // Weights by the closed form; amp and phase come from the fixture and are
  // checked against the formula (2 / sqrt(fan_in) for weights, 1 / sqrt(fan_in)
  // for biases, phase = index + 1), which also checks PyTorch's parameter names.
  auto params = model.named_parameters();
  ASSERT_EQ(params.size(), 8u);
  double fan_in = 0.0;
  for (size_t k = 0; k < params.size(); ++k) {
    auto& [name, p] = params[k];
    const bool is_weight = name.ends_with("weight");
    if (is_weight) fan_in = static_cast<double>(p.numel() / p.size(0));
    const double amp = fx.scalar("param." + name + ".amp");
    const double phase = fx.scalar("param." + name + ".phase");
    EXPECT_DOUBLE_EQ(amp, (is_weight ? 2.0 : 1.0) / std::sqrt(fan_in)) << name;
    EXPECT_EQ(phase, static_cast<double>(k + 1)) << name;
    fill_sin(p, 0.375, phase, amp);
    double sum = 0.0;
    for (double v : p.to_vector<double>()) sum += v;
    EXPECT_NEAR(sum, fx.scalar("param." + name + ".sum"), 1e-12 * p.numel()) << name;
  }

  const auto& in_shape = fx.at("input.shape").values;
  const int64_t batch = static_cast<int64_t>(in_shape[0]);
  Tensor x = Tensor::empty({batch, 1, 28, 28});
  fill_sin(x, 0.109375, 0.0, 1.0);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) labels[b] = b % 10;
  Tensor y = Tensor::from_vector<int64_t>(labels, {batch});

  Tensor logits = model(x);
  Tensor loss = ops::cross_entropy(logits, y);
  autograd::backward(loss);

  WorstError overall;
  ASSERT_EQ(logits.shape(), (core::Shape{batch, 10}));
  compare("logits", logits.to_vector<double>(), fx.at("logits").values, overall);
  const double torch_loss = fx.scalar("loss");
  EXPECT_NEAR(loss.item<double>(), torch_loss, kTol * std::abs(torch_loss));
  std::cout << "[golden] loss: " << loss.item<double>() << " vs torch " << torch_loss << ", relative error "
            << std::abs(loss.item<double>() - torch_loss) / std::abs(torch_loss) << "\n";

  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    ASSERT_TRUE(g.defined()) << name << " has no gradient";
    std::vector<double> got = g.to_vector<double>();
    const std::string key = "grad." + name;
    if (fx.contains(key)) {
      EXPECT_EQ(g.shape(), core::Shape(fx.at(key).shape.begin(), fx.at(key).shape.end())) << name;
      compare(key, got, fx.at(key).values, overall);
      continue;
    }
    // Large tensors: every stride-th element, the sum and the sum of squares.
    const auto& shape = fx.at(key + ".shape").values;
    EXPECT_EQ(g.shape(), core::Shape(shape.begin(), shape.end())) << name;
    const auto stride = static_cast<size_t>(fx.scalar(key + ".stride"));
    std::vector<double> sampled;
    double sum = 0.0, sumsq = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (i % stride == 0) sampled.push_back(got[i]);
      sum += got[i];
      sumsq += got[i] * got[i];
    }
    compare(key + ".sampled", sampled, fx.at(key + ".sampled").values, overall);
    const double torch_sum = fx.scalar(key + ".sum"), torch_sumsq = fx.scalar(key + ".sumsq");
    const double sum_scale = std::sqrt(static_cast<double>(got.size()) * torch_sumsq);
    EXPECT_LE(std::abs(sum - torch_sum), kTol * std::max(std::abs(torch_sum), sum_scale)) << key << ".sum";
    EXPECT_LE(std::abs(sumsq - torch_sumsq), kTol * torch_sumsq) << key << ".sumsq";
    std::cout << "[golden] " << key << ".sum: error / scale " << std::abs(sum - torch_sum) / sum_scale
              << "; .sumsq relative error " << std::abs(sumsq - torch_sumsq) / torch_sumsq << "\n";
  }
  std::cout << "[golden] CNN worst: " << overall.rel << " at " << overall.where << "\n";
}

}  // namespace
}  // namespace loom
