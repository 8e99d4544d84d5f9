// Layers: forward values and shapes, error messages, train/eval behaviour.
#include <gtest/gtest.h>

#include <cmath>

#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;

template <class E>
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception of the expected type";
  return "";
}

TEST(Linear, ComputesAffineMap) {
  Linear fc({.in = 3, .out = 2});
  StateDict sd{{"weight", Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3})},
               {"bias", Tensor::from_vector<float>({0.5f, -1}, {2})}};
  fc.load_state_dict(sd);
  Tensor y = fc(Tensor::from_vector<float>({1, 0, -1, 2, 1, 0}, {2, 3}));
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{-1.5f, -3, 4.5f, 12}));
  // Leading dims pass through.
  core::Generator gen(0);
  EXPECT_EQ(fc(ops::randn({4, 5, 3}, gen)).shape(), (Shape{4, 5, 2}));
  EXPECT_FALSE(Linear({.in = 3, .out = 2, .bias = false}).bias().defined());
}

TEST(Linear, ShapeErrorNamesLayerAndShapes) {
  Linear fc({.in = 784, .out = 256});
  const std::string msg = message_of<ShapeError>([&] { fc(ops::zeros({32, 100})); });
  EXPECT_EQ(msg, "Linear(784 -> 256): input [32, 100] has 100 features, expected 784");
  EXPECT_THROW(fc(ops::zeros({32, 784}, DType::F64)), TypeError);
}

TEST(Conv2d, OutputShapesAndErrors) {
  core::Generator gen(1);
  Tensor x = ops::randn({2, 3, 16, 16}, gen);
  EXPECT_EQ(Conv2d({.in = 3, .out = 8, .kernel = 5, .padding = 2})(x).shape(), (Shape{2, 8, 16, 16}));
  EXPECT_EQ(Conv2d({.in = 3, .out = 8, .kernel = 3, .stride = 2})(x).shape(), (Shape{2, 8, 7, 7}));
  EXPECT_EQ(Conv2d({.in = 3, .out = 6, .kernel = {3, 1}, .dilation = 2, .groups = 3})(x).shape(),
            (Shape{2, 6, 12, 16}));
  Conv2d grouped({.in = 4, .out = 8, .kernel = 3, .groups = 2, .bias = false});
  EXPECT_EQ(grouped.weight().shape(), (Shape{8, 2, 3, 3}));
  EXPECT_FALSE(grouped.bias().defined());
  EXPECT_EQ(grouped.parameters().size(), 1u);

  Conv2d conv({.in = 1, .out = 32, .kernel = 5, .padding = 2});
  const std::string msg = message_of<ShapeError>([&] { conv(x); });
  EXPECT_NE(msg.find("Conv2d(1 -> 32, kernel 5, padding 2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 3, 16, 16]"), std::string::npos) << msg;
  EXPECT_THROW(conv(ops::zeros({1, 28, 28})), ShapeError);
  EXPECT_THROW(Conv2d({.in = 3, .out = 4, .groups = 2}), ValueError);
  EXPECT_THROW(Conv2d({.in = 1, .out = 1, .kernel = 7})(ops::zeros({1, 1, 4, 4})), ShapeError);
}

TEST(Conv2d, MatchesDirectSum) {
  // 1x1 input channel, 2x2 kernel, no padding: y[i, j] = sum w * x-window + b.
  Conv2d conv({.in = 1, .out = 1, .kernel = 2});
  conv.load_state_dict(StateDict{{"weight", Tensor::from_vector<float>({1, 2, 3, 4}, {1, 1, 2, 2})},
                                 {"bias", Tensor::from_vector<float>({10}, {1})}});
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  EXPECT_EQ(conv(x).to_vector<float>(), (std::vector<float>{10 + 37, 10 + 47, 10 + 67, 10 + 77}));
}

TEST(Pooling, MaxAndAvg) {
  Tensor x = ops::reshape(ops::arange(16), {1, 1, 4, 4});
  EXPECT_EQ(MaxPool2d({.kernel = 2})(x).to_vector<float>(), (std::vector<float>{5, 7, 13, 15}));
  EXPECT_EQ(AvgPool2d({.kernel = 2})(x).to_vector<float>(), (std::vector<float>{2.5f, 4.5f, 10.5f, 12.5f}));
  EXPECT_EQ(MaxPool2d({.kernel = 3, .stride = 1, .padding = 1})(x).shape(), (Shape{1, 1, 4, 4}));
  EXPECT_EQ(AvgPool2d({.kernel = {2, 4}, .stride = {2, 1}})(x).shape(), (Shape{1, 1, 2, 1}));
  EXPECT_THROW(MaxPool2d({.kernel = 2, .padding = 2}), ValueError);
  const std::string msg = message_of<ShapeError>([&] { MaxPool2d({.kernel = 2})(ops::zeros({4, 4})); });
  EXPECT_NE(msg.find("MaxPool2d(kernel 2, stride 2)"), std::string::npos) << msg;
}

TEST(Dropout, TrainingMasksAndScalesEvalIsIdentity) {
  Dropout drop({.p = 0.25, .seed = 3});
  Tensor x = ops::ones({1000});
  const std::vector<float> y = drop(x).to_vector<float>();
  int zeros = 0;
  for (float v : y) {
    if (v == 0.0f) {
      ++zeros;
    } else {
      EXPECT_FLOAT_EQ(v, 1.0f / 0.75f);
    }
  }
  EXPECT_GT(zeros, 180);
  EXPECT_LT(zeros, 320);
  // A new mask each call; the same sequence for the same seed.
  EXPECT_NE(drop(x).to_vector<float>(), y);
  EXPECT_EQ(Dropout({.p = 0.25, .seed = 3})(x).to_vector<float>(), y);

  drop.eval();
  EXPECT_EQ(drop(x).to_vector<float>(), x.to_vector<float>());
  EXPECT_THROW(Dropout({.p = 1.5}), ValueError);
}

TEST(BatchNorm2d, TrainUsesBatchStatsAndUpdatesRunning) {
  BatchNorm2d bn({.num_features = 2});
  // Channel 0 holds 0..7, channel 1 holds 10 everywhere but one 14.
  std::vector<float> v;
  for (int n = 0; n < 2; ++n) {
    for (int i = 0; i < 4; ++i) v.push_back(static_cast<float>(n * 4 + i));
    for (int i = 0; i < 4; ++i) v.push_back(n == 1 && i == 3 ? 14.0f : 10.0f);
  }
  Tensor x = Tensor::from_vector<float>(v, {2, 2, 2, 2});
  Tensor y = bn(x);
  // Normalised output per channel: mean 0, biased variance 1 (up to eps).
  std::vector<float> out = y.to_vector<float>();
  double mean0 = 0, sq0 = 0;
  for (int n = 0; n < 2; ++n) {
    for (int i = 0; i < 4; ++i) mean0 += out[n * 8 + i] / 8.0, sq0 += out[n * 8 + i] * out[n * 8 + i] / 8.0;
  }
  EXPECT_NEAR(mean0, 0.0, 1e-5);
  EXPECT_NEAR(sq0, 1.0, 1e-3);
  // running = 0.9 * init + 0.1 * batch (unbiased variance).
  const std::vector<float> rm = bn.running_mean().to_vector<float>(), rv = bn.running_var().to_vector<float>();
  EXPECT_NEAR(rm[0], 0.1 * 3.5, 1e-6);
  EXPECT_NEAR(rm[1], 0.1 * 10.5, 1e-6);
  EXPECT_NEAR(rv[0], 0.9 + 0.1 * (42.0 / 7.0), 1e-5);
  EXPECT_NEAR(rv[1], 0.9 + 0.1 * (14.0 / 7.0), 1e-5);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 1);
  EXPECT_EQ(bn.num_batches_tracked().dim(), 0);

  // Eval: uses the running statistics, changes nothing.
  bn.eval();
  Tensor ye = bn(x);
  EXPECT_NEAR(ye.to_vector<float>()[0], (0 - rm[0]) / std::sqrt(rv[0] + 1e-5), 1e-5);
  EXPECT_EQ(bn.running_mean().to_vector<float>(), rm);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 1);
  // Eval is per-sample: one sample alone gives the same rows as in the batch.
  Tensor first = ops::slice(x, 0, 0, 1);
  std::vector<float> ye_all = ye.to_vector<float>(), ye_one = bn(first).to_vector<float>();
  for (size_t i = 0; i < ye_one.size(); ++i) EXPECT_FLOAT_EQ(ye_one[i], ye_all[i]);
}

TEST(BatchNorm2d, CumulativeAverageAndNoTracking) {
  BatchNorm2d cma({.num_features = 1, .momentum = std::nullopt});
  cma(ops::full({2, 1, 2, 2}, 4.0));
  cma(ops::full({2, 1, 2, 2}, 2.0));
  EXPECT_NEAR(cma.running_mean().to_vector<float>()[0], 3.0, 1e-6);  // plain average of the batch means

  BatchNorm2d plain({.num_features = 3, .affine = false, .track_running_stats = false});
  EXPECT_TRUE(plain.state_dict().empty());
  plain.eval();
  core::Generator gen(2);
  Tensor y = plain(ops::randn({4, 3, 2, 2}, gen, DType::F32, 5.0, 2.0));
  EXPECT_NEAR(ops::mean(y).item<double>(), 0.0, 1e-5);  // batch statistics even in eval

  BatchNorm2d bn({.num_features = 4});
  const std::string msg = message_of<ShapeError>([&] { bn(ops::zeros({2, 3, 4, 4})); });
  EXPECT_EQ(msg, "BatchNorm2d(4): input [2, 3, 4, 4] has 3 channels, expected 4");
}

// Deferred: the same output, running statistics untouched until applied,
// then the update a plain training forward makes (the batch statistics are
// rounded to f32 once more on the way, so equal to float precision).
TEST(BatchNorm2d, DeferredStatisticsApplyLaterAsTheForwardWould) {
  core::Generator gen(4);
  Tensor a = ops::randn({3, 2, 2, 2}, gen, DType::F32, 1.0, 2.0), b = ops::randn({3, 2, 2, 2}, gen);
  for (std::optional<double> momentum : {std::optional<double>(0.1), std::optional<double>()}) {
    BatchNorm2d plain({.num_features = 2, .momentum = momentum}), deferred({.num_features = 2, .momentum = momentum});
    deferred.defer_running_stats(true);
    EXPECT_TRUE(deferred.defers_running_stats());
    for (const Tensor& x : {a, b}) EXPECT_EQ(deferred(x).to_vector<float>(), plain(x).to_vector<float>());
    EXPECT_EQ(deferred.running_mean().to_vector<float>(), std::vector<float>(2, 0.0f));
    EXPECT_EQ(deferred.running_var().to_vector<float>(), std::vector<float>(2, 1.0f));
    EXPECT_EQ(deferred.num_batches_tracked().item<int64_t>(), 0);
    auto stats = deferred.take_batch_statistics();
    ASSERT_EQ(stats.size(), 2u);
    EXPECT_TRUE(deferred.take_batch_statistics().empty());
    for (const auto& s : stats) deferred.apply_batch_statistics(s);
    EXPECT_EQ(deferred.num_batches_tracked().item<int64_t>(), 2);
    const auto pm = plain.running_mean().to_vector<float>(), dm = deferred.running_mean().to_vector<float>();
    const auto pv = plain.running_var().to_vector<float>(), dv = deferred.running_var().to_vector<float>();
    for (size_t c = 0; c < 2; ++c) {
      EXPECT_NEAR(dm[c], pm[c], 1e-6) << c;
      EXPECT_NEAR(dv[c], pv[c], 1e-6) << c;
    }
    // Off again: in place, as before.
    deferred.defer_running_stats(false);
    deferred(a);
    EXPECT_EQ(deferred.num_batches_tracked().item<int64_t>(), 3);
    EXPECT_TRUE(deferred.take_batch_statistics().empty());
  }
  BatchNorm2d bn({.num_features = 2});
  EXPECT_THROW(bn.apply_batch_statistics({ops::zeros({3}), ops::ones({3})}), ShapeError);
}

TEST(LayerNorm, NormalisesTrailingDims) {
  LayerNorm ln({.normalized_shape = {4}});
  Tensor y = ln(Tensor::from_vector<float>({1, 2, 3, 4, 10, 10, 10, 10}, {2, 4}));
  const std::vector<float> v = y.to_vector<float>();
  const float s = 1.0f / std::sqrt(1.25f + 1e-5f);
  EXPECT_NEAR(v[0], -1.5f * s, 1e-5);
  EXPECT_NEAR(v[3], 1.5f * s, 1e-5);
  EXPECT_NEAR(v[5], 0.0f, 1e-5);
  EXPECT_EQ(ln.named_parameters().size(), 2u);
  EXPECT_EQ(LayerNorm({.normalized_shape = {4}, .affine = false}).parameters().size(), 0u);
  LayerNorm ln2({.normalized_shape = {3, 4}});
  core::Generator gen(1);
  EXPECT_EQ(ln2(ops::randn({2, 3, 4}, gen)).shape(), (Shape{2, 3, 4}));
  const std::string msg = message_of<ShapeError>([&] { ln2(ops::zeros({2, 4, 3})); });
  EXPECT_EQ(msg, "LayerNorm([3, 4]): input [2, 4, 3] does not end with the normalized shape [3, 4]");
}

TEST(Embedding, LooksUpRows) {
  Embedding emb({.num = 5, .dim = 3, .seed = 2});
  Tensor idx = Tensor::from_vector<int64_t>({4, 0, 4, 1}, {2, 2});
  Tensor y = emb(idx);
  EXPECT_EQ(y.shape(), (Shape{2, 2, 3}));
  const std::vector<float> w = emb.weight().to_vector<float>(), v = y.to_vector<float>();
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(v[j], w[12 + j]);
    EXPECT_EQ(v[3 + j], w[j]);
  }
  EXPECT_THROW(emb(ops::zeros({2})), TypeError);
  const std::string msg = message_of<IndexError>([&] { emb(Tensor::from_vector<int64_t>({5}, {1})); });
  EXPECT_NE(msg.find("Embedding(5, 3)"), std::string::npos) << msg;
}

TEST(Activations, MatchOps) {
  Tensor x = Tensor::from_vector<float>({-2, -0.5f, 0, 0.5f, 2}, {5});
  EXPECT_EQ(ReLU()(x).to_vector<float>(), (std::vector<float>{0, 0, 0, 0.5f, 2}));
  EXPECT_NEAR(GELU()(x).to_vector<float>()[4], 2.0 * 0.5 * (1 + std::erf(2 / std::sqrt(2.0))), 1e-5);
  EXPECT_NEAR(Sigmoid()(x).to_vector<float>()[0], 1 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(Tanh()(x).to_vector<float>()[3], std::tanh(0.5), 1e-6);
}

TEST(Flatten, MergesDims) {
  Tensor x = ops::zeros({2, 3, 4, 5});
  EXPECT_EQ(Flatten()(x).shape(), (Shape{2, 60}));
  EXPECT_EQ(Flatten({.start_dim = 0})(x).shape(), (Shape{120}));
  EXPECT_EQ(Flatten({.start_dim = 1, .end_dim = 2})(x).shape(), (Shape{2, 12, 5}));
  EXPECT_THROW(Flatten({.start_dim = 4})(x), ShapeError);
}

}  // namespace
}  // namespace loom::nn
