// Initialisation: fans, gains, bounds and moments, and the layers' defaults.
#include <gtest/gtest.h>

#include <cmath>

#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::DType;
using core::Tensor;

struct Stats {
  double min, max, mean, std;
};

Stats stats(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  Stats s{v[0], v[0], 0, 0};
  for (double x : v) s.min = std::min(s.min, x), s.max = std::max(s.max, x), s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size()));
  return s;
}

TEST(Init, FansAsPyTorch) {
  EXPECT_EQ(init::compute_fans(ops::empty({256, 784})).fan_in, 784);
  EXPECT_EQ(init::compute_fans(ops::empty({256, 784})).fan_out, 256);
  const init::Fans conv = init::compute_fans(ops::empty({32, 4, 5, 3}));
  EXPECT_EQ(conv.fan_in, 4 * 15);
  EXPECT_EQ(conv.fan_out, 32 * 15);
  EXPECT_THROW(init::compute_fans(ops::empty({7})), ShapeError);
}

TEST(Init, Gains) {
  EXPECT_DOUBLE_EQ(init::gain(init::Nonlinearity::Relu), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(init::gain(init::Nonlinearity::Tanh), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(init::gain(init::Nonlinearity::LeakyRelu, std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
  EXPECT_DOUBLE_EQ(init::gain(init::Nonlinearity::Linear), 1.0);
}

TEST(Init, KaimingUniformBoundAndVariance) {
  core::Generator gen(1);
  Tensor w = ops::empty({512, 300}, DType::F64);
  init::kaiming_uniform_(w, gen);  // leaky_relu, a = 0: gain sqrt(2), bound sqrt(6 / 300)
  const double bound = std::sqrt(6.0 / 300.0);
  const Stats s = stats(w);
  EXPECT_GE(s.min, -bound);
  EXPECT_LE(s.max, bound);
  EXPECT_GT(s.max, 0.99 * bound);  // the range is used
  EXPECT_LT(s.min, -0.99 * bound);
  EXPECT_NEAR(s.mean, 0.0, 0.01 * bound);
  EXPECT_NEAR(s.std, bound / std::sqrt(3.0), 0.01 * bound);

  init::kaiming_uniform_(w, gen, {.mode = init::FanMode::FanOut});
  EXPECT_LE(stats(w).max, std::sqrt(6.0 / 512.0));
}

TEST(Init, KaimingNormalStd) {
  core::Generator gen(2);
  Tensor w = ops::empty({256, 64, 3, 3}, DType::F64);
  init::kaiming_normal_(w, gen, {.nonlinearity = init::Nonlinearity::Relu});
  const double want = std::sqrt(2.0) / std::sqrt(64.0 * 9.0);
  const Stats s = stats(w);
  EXPECT_NEAR(s.std, want, 0.01 * want);
  EXPECT_NEAR(s.mean, 0.0, 0.01 * want);
}

TEST(Init, Xavier) {
  core::Generator gen(3);
  Tensor w = ops::empty({400, 200}, DType::F64);
  init::xavier_uniform_(w, gen, 2.0);
  const double a = 2.0 * std::sqrt(6.0 / 600.0);
  Stats s = stats(w);
  EXPECT_LE(s.max, a);
  EXPECT_GE(s.min, -a);
  EXPECT_NEAR(s.std, a / std::sqrt(3.0), 0.01 * a);
  init::xavier_normal_(w, gen);
  s = stats(w);
  EXPECT_NEAR(s.std, std::sqrt(2.0 / 600.0), 0.01 * std::sqrt(2.0 / 600.0));
}

TEST(Init, SameSeedSameValues) {
  Tensor a = ops::empty({10, 10}), b = ops::empty({10, 10});
  core::Generator g1(5), g2(5);
  init::kaiming_uniform_(a, g1);
  init::kaiming_uniform_(b, g2);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
}

TEST(Init, LayerDefaultsMatchPyTorch) {
  // Linear: weight and bias both within 1/sqrt(in) (kaiming_uniform with a = sqrt(5)).
  Linear fc({.in = 400, .out = 300, .dtype = DType::F64});
  const double bound = 1.0 / std::sqrt(400.0);
  Stats w = stats(fc.weight()), b = stats(fc.bias());
  EXPECT_LE(w.max, bound);
  EXPECT_GE(w.min, -bound);
  EXPECT_GT(w.max, 0.99 * bound);
  EXPECT_NEAR(w.std, bound / std::sqrt(3.0), 0.02 * bound);
  EXPECT_LE(b.max, bound);
  EXPECT_GE(b.min, -bound);

  // Conv2d: fan_in = in / groups * kh * kw.
  Conv2d conv({.in = 16, .out = 64, .kernel = 3, .groups = 2, .dtype = DType::F64});
  const double cb = 1.0 / std::sqrt(8.0 * 9.0);
  w = stats(conv.weight());
  b = stats(conv.bias());
  EXPECT_LE(w.max, cb);
  EXPECT_GT(w.max, 0.95 * cb);
  EXPECT_LE(b.max, cb);
  EXPECT_GE(b.min, -cb);

  Embedding emb({.num = 1000, .dim = 32, .dtype = DType::F64});
  EXPECT_NEAR(stats(emb.weight()).std, 1.0, 0.02);

  BatchNorm2d bn({.num_features = 3});
  EXPECT_EQ(bn.weight().to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(bn.bias().to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(bn.running_var().to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

}  // namespace
}  // namespace loom::nn
