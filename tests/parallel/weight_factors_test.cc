// parallel::WeightFactors: which weights deterministic mode takes as factors
// (nn::Linear weights that no other module holds: not a GPT's tied token
// table), what a backward under ops::TakeWeightFactors leaves (no weight
// gradient, one term per use), that the flushed sums are each term's
// product rounded (the dense gradient within rounding), and that after
// drop_gradients .grad holds only the uses that were not taken.
#include <gtest/gtest.h>

#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/nn/transformer.h"
#include "loom/ops/ops.h"
#include "loom/parallel/weight_factors.h"

namespace loom::parallel {
namespace {

using core::Tensor;

bool holds(const WeightFactors& f, const Tensor& w) {
  for (const Tensor& t : f.weights()) {
    if (t.impl() == w.impl()) return true;
  }
  return false;
}

TEST(WeightFactors, TakesLinearWeightsButNotATiedTable) {
  auto fc1 = std::make_shared<nn::Linear>(nn::LinearOptions{.in = 6, .out = 5, .seed = 1});
  auto fc2 = std::make_shared<nn::Linear>(nn::LinearOptions{.in = 5, .out = 3, .seed = 2});
  nn::Sequential mlp(fc1, nn::ReLU(), fc2);
  const WeightFactors f({&mlp});
  EXPECT_EQ(f.weights().size(), 2u);
  EXPECT_TRUE(holds(f, fc1->weight()) && holds(f, fc2->weight()));
  EXPECT_FALSE(holds(f, fc1->bias()));

  nn::Gpt tied({.vocab = 16, .context = 4, .blocks = 1, .heads = 2, .embed = 8, .seed = 5});
  const WeightFactors g({&tied});
  EXPECT_FALSE(holds(g, tied.embedding().token_weight()));  // the embedding's: its two uses stay summed in float first
  EXPECT_FALSE(g.weights().empty());             // the blocks' linear layers are taken
}

TEST(WeightFactors, ABackwardLeavesTermsWhoseRoundedSumIsTheGradient) {
  auto fc = std::make_shared<nn::Linear>(nn::LinearOptions{.in = 37, .out = 9, .seed = 3});
  nn::Sequential model(fc);
  WeightFactors f({&model});
  core::Generator gen(4);
  std::vector<Tensor> atoms;
  for (int atom = 0; atom < 3; ++atom) {
    atoms.push_back(ops::randn({16, 37}, gen));
    const ops::TakeWeightFactors taking(f.taker());
    autograd::backward(ops::sum(ops::square(model(atoms.back()))));
    EXPECT_FALSE(fc->weight().grad().defined()) << "taken: the layer formed no weight gradient";
    EXPECT_TRUE(fc->bias().grad().defined());
    EXPECT_EQ(f.pending(fc->weight()), atom + 1);
  }
  // The same backwards without the taker: the dense gradient, summed over the atoms.
  for (const Tensor& x : atoms) autograd::backward(ops::sum(ops::square(model(x))));
  const Tensor dense = fc->weight().grad();
  Tensor acc = ops::full({fc->weight().numel()}, 7.0, core::DType::I64);  // Assign ignores it
  ASSERT_FALSE(f.flush(fc->weight(), acc, fixed_point::Mode::Assign).has_value());
  EXPECT_EQ(f.pending(fc->weight()), 0);
  Tensor back = ops::zeros({fc->weight().numel()});
  fixed_point::to_float(acc, back);
  const auto got = back.to_vector<float>(), want = dense.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1.0 + std::fabs(want[i]))) << i;
  }
  // drop_gradients: afterwards .grad holds only the uses that were not taken
  // (here a penalty on the weight itself), which the caller adds densely.
  f.drop_gradients();
  EXPECT_FALSE(fc->weight().grad().defined());
  {
    const ops::TakeWeightFactors taking(f.taker());
    autograd::backward(ops::add(ops::sum(ops::square(model(atoms[0]))), ops::sum(ops::square(fc->weight()))));
  }
  EXPECT_EQ(f.pending(fc->weight()), 1);
  ASSERT_TRUE(fc->weight().grad().defined());
  EXPECT_EQ(fc->weight().grad().to_vector<float>(), ops::mul(fc->weight(), 2.0).to_vector<float>());
  // Outside a TakeWeightFactors, or for another tensor, nothing is taken.
  EXPECT_FALSE(f.take(fc->bias(), ops::zeros({16, 9}), ops::zeros({16, 37})));
  EXPECT_FALSE(f.take(fc->weight(), ops::zeros({16, 9}), ops::zeros({15, 37})));  // rows differ
}

}  // namespace
}  // namespace loom::parallel
