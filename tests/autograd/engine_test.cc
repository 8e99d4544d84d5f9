#include <gtest/gtest.h>

#include "loom/autograd/engine.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

using core::Tensor;

Tensor param(std::vector<float> v) {
  Tensor t = Tensor::from_vector<float>(v, {static_cast<int64_t>(v.size())});
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, SimpleChainRule) {
  Tensor x = param({1, 2, 3});
  Tensor y = ops::sum(ops::mul(ops::mul(x, x), 3.0));  // d/dx = 6x
  autograd::backward(y);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{6, 12, 18}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = param({1, 2});
  for (int i = 0; i < 3; ++i) autograd::backward(ops::sum(ops::mul(x, 2.0)));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{6, 6}));
  Tensor buffer = x.grad();
  autograd::zero_grad(x);
  EXPECT_TRUE(x.grad().is_same(buffer));  // kept, zeroed in place
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{0, 0}));
  autograd::zero_grad(x, /*set_to_none=*/true);
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, SharedInputsSumTheirPaths) {
  Tensor x = param({2});
  Tensor y = ops::add(ops::mul(x, x), x);  // x^2 + x -> 2x + 1
  autograd::backward(ops::sum(y));
  EXPECT_EQ(x.grad().item<float>(), 5.0f);
  // The gradient of `a + b` flows to both; each leaf owns its own buffer.
  Tensor a = param({1}), b = param({1});
  autograd::backward(ops::sum(ops::add(a, b)));
  autograd::backward(ops::sum(ops::mul(a, 3.0)));
  EXPECT_EQ(a.grad().item<float>(), 4.0f);
  EXPECT_EQ(b.grad().item<float>(), 1.0f);
}

TEST(Autograd, DetachAndNoGrad) {
  Tensor x = param({1, 2});
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.storage().is_same(x.storage()));
  {
    autograd::NoGradGuard no_grad;
    Tensor y = ops::mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor z = ops::mul(x, 2.0);
  EXPECT_TRUE(z.requires_grad());
  EXPECT_THROW(autograd::backward(ops::sum(ops::mul(d, 2.0))), ValueError);
}

TEST(Autograd, HooksFireOnceWithFinalGradient) {
  // w feeds three ops; the hook must see the full sum exactly once.
  Tensor w = param({1, 1});
  int calls = 0;
  std::vector<float> seen;
  autograd::register_hook(w, [&](const Tensor& g) {
    ++calls;
    seen = g.to_vector<float>();
  });
  Tensor a = ops::mul(w, 2.0), b = ops::mul(w, 3.0), c = ops::exp(ops::mul(w, 0.0));
  autograd::backward(ops::sum(ops::add(ops::add(a, b), c)));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, (std::vector<float>{5, 5}));
}

TEST(Autograd, HooksFireWhileBackwardIsRunning) {
  // Two layers: the last layer's weight is final before the first layer's.
  Tensor w1 = param({1, 2, 3}), w2 = param({4, 5, 6});
  std::vector<std::string> order;
  autograd::register_hook(w1, [&](const Tensor&) { order.push_back("w1"); });
  autograd::register_hook(w2, [&](const Tensor&) { order.push_back("w2"); });
  Tensor h = ops::tanh(ops::mul(ops::reshape(ops::arange(3.0), {3}), w1));
  Tensor y = ops::sum(ops::mul(h, w2));
  autograd::backward(y);
  EXPECT_EQ(order, (std::vector<std::string>{"w2", "w1"}));
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = param({1, 2});
  Tensor y = ops::sum(ops::exp(x));
  autograd::backward(y, Tensor(), /*retain_graph=*/true);
  autograd::backward(y);
  EXPECT_THROW(autograd::backward(y), ValueError);
}

TEST(Autograd, NonScalarRootNeedsGrad) {
  Tensor x = param({1, 2});
  Tensor y = ops::mul(x, 3.0);
  EXPECT_THROW(autograd::backward(y), ShapeError);
  autograd::backward(y, Tensor::from_vector<float>({1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{3, 30}));
}

TEST(Autograd, ViewsOfParametersPropagate) {
  Tensor w = ops::reshape(ops::arange(6.0), {2, 3});
  w.set_requires_grad(true);
  Tensor y = ops::sum(ops::slice(ops::transpose(w, 0, 1), 0, 1, 3));
  autograd::backward(y);
  EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{0, 1, 1, 0, 1, 1}));
}

}  // namespace
}  // namespace loom
