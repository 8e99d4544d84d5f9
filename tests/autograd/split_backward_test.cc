// A split backward (BackwardOptions::defer_weights): the first half gives
// every gradient but the held-back leaves' (the `now` leaves included), the
// second (backward_weights) gives theirs, and together they are the unsplit
// backward's bits, also for a weight used twice and with gradients that
// accumulate across passes.
#include <gtest/gtest.h>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

using core::Tensor;

struct Net {
  Tensor w1, b1, w2;  // w2 used twice
  Tensor forward(const Tensor& x) const {
    Tensor h = ops::tanh(ops::add(ops::matmul(x, w1), b1));
    return ops::matmul(ops::tanh(ops::matmul(h, w2)), w2);
  }
};

Net make_net() {
  core::Generator g(4);
  Net n{ops::randn({5, 7}, g), ops::randn({7}, g), ops::randn({7, 7}, g)};
  for (Tensor* t : {&n.w1, &n.b1, &n.w2}) t->set_requires_grad(true);
  return n;
}

TEST(SplitBackward, TheTwoHalvesAreTheWholeBackwardBitForBit) {
  core::Generator g(9);
  const Tensor data = ops::randn({3, 5}, g);
  // Unsplit, two passes accumulating.
  Net a = make_net();
  Tensor xa = data.detach().set_requires_grad(true);
  for (int pass = 0; pass < 2; ++pass) autograd::backward(ops::sum(a.forward(xa)));
  // Split, the same two passes.
  Net b = make_net();
  Tensor xb = data.detach().set_requires_grad(true);
  int hooked = 0;
  autograd::register_hook(b.w2, [&](const Tensor&) { ++hooked; });
  for (int pass = 0; pass < 2; ++pass) {
    autograd::DeferredWeights later;
    autograd::backward(ops::sum(b.forward(xb)), {.defer_weights = &later, .now = {xb}});
    EXPECT_FALSE(later.nodes.empty());
    if (pass == 0) {
      EXPECT_TRUE(xb.grad().defined()) << "the input's gradient comes with the first half";
      EXPECT_FALSE(b.w1.grad().defined()) << "a weight's gradient waits for backward_weights";
      EXPECT_EQ(hooked, 0);
    }
    autograd::backward_weights(later);
    EXPECT_TRUE(later.nodes.empty());
  }
  EXPECT_EQ(hooked, 2);  // once a pass, with both uses of w2 summed
  EXPECT_EQ(xb.grad().to_vector<float>(), xa.grad().to_vector<float>());
  EXPECT_EQ(b.w1.grad().to_vector<float>(), a.w1.grad().to_vector<float>());
  EXPECT_EQ(b.b1.grad().to_vector<float>(), a.b1.grad().to_vector<float>());
  EXPECT_EQ(b.w2.grad().to_vector<float>(), a.w2.grad().to_vector<float>());
}

TEST(SplitBackward, WithoutNowLeavesEveryLeafWaits) {
  Net n = make_net();
  core::Generator g(2);
  Tensor x = ops::randn({2, 5}, g).set_requires_grad(true);
  autograd::DeferredWeights later;
  autograd::backward(ops::sum(n.forward(x)), {.defer_weights = &later});
  EXPECT_FALSE(x.grad().defined());
  autograd::backward_weights(later);
  EXPECT_TRUE(x.grad().defined());
  EXPECT_TRUE(n.w1.grad().defined());
}

// A layer on a sequence ([batch, time, in], as in a transformer) holds back
// its weight-gradient GEMM itself, not only a view of its weight: the weight
// pass of a split backward (zb-h1's W) is where that work goes.
TEST(SplitBackward, ALinearOnASequenceDefersItsWeightGemm) {
  core::Generator g(5);
  const Tensor w = ops::randn({4, 6}, g).set_requires_grad(true), b = ops::randn({4}, g).set_requires_grad(true);
  const Tensor x = ops::randn({2, 3, 6}, g).set_requires_grad(true);
  autograd::DeferredWeights later;
  autograd::backward(ops::sum(ops::linear(x, w, b)), {.defer_weights = &later, .now = {x}});
  ASSERT_EQ(later.nodes.size(), 1u);
  EXPECT_STREQ(later.nodes[0].node->name(), "LinearBackward");
  EXPECT_EQ(later.nodes[0].edges, 0b110u);  // weight and bias
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  autograd::backward_weights(later);
  EXPECT_TRUE(w.grad().defined());
  EXPECT_TRUE(b.grad().defined());
}

}  // namespace
}  // namespace loom
