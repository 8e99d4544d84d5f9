// A whole training step through every layer of the engine: forward, loss,
// backward, optimizer. Checks that it learns and that, once warm, a step asks
// the system allocator for no new memory (all buffers come from the cache).
#include <gtest/gtest.h>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/optim/optim.h"

namespace loom {
namespace {

using core::Tensor;

struct Fixture {
  core::Generator gen{11};
  Tensor x = ops::randn({64, 1, 28, 28}, gen);
  Tensor y = ops::to_dtype(ops::mul(ops::rand({64}, gen), 10.0), core::DType::I64);
};

template <class Model>
void expect_alloc_free_and_learning(Model& model, optim::Optimizer& opt) {
  Fixture f;
  auto step = [&] {
    opt.zero_grad();
    Tensor loss = ops::cross_entropy(model(f.x), f.y);
    autograd::backward(loss);
    opt.step();
    return loss.item<float>();
  };
  float first = step();
  for (int i = 0; i < 2; ++i) step();
  const auto before = core::cpu_allocator().stats();
  float last = 0;
  for (int i = 0; i < 10; ++i) last = step();
  const auto after = core::cpu_allocator().stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs) << "steady-state steps allocated new memory";
  EXPECT_GT(after.cache_hits, before.cache_hits);
  EXPECT_LT(last, first * 0.5f) << "a fixed batch should be fitted quickly";
}

TEST(TrainStep, MlpIsAllocationFreeInSteadyState) {
  nn::Sequential model(nn::Flatten(), nn::Linear({.in = 784, .out = 128}), nn::ReLU(),
                       nn::Linear({.in = 128, .out = 10, .seed = 1}));
  auto opt = optim::sgd(model.parameters(), {.lr = 0.05, .momentum = 0.9});
  expect_alloc_free_and_learning(model, opt);
}

TEST(TrainStep, CnnWithBatchNormAndAdamIsAllocationFreeInSteadyState) {
  nn::Sequential model(nn::Conv2d({.in = 1, .out = 8, .kernel = 5, .padding = 2}), nn::BatchNorm2d({.num_features = 8}),
                       nn::ReLU(), nn::MaxPool2d({.kernel = 2}), nn::Flatten(),
                       nn::Linear({.in = 8 * 14 * 14, .out = 10}));
  auto opt = optim::adam(model.parameters(), {.lr = 1e-3});
  expect_alloc_free_and_learning(model, opt);
}

}  // namespace
}  // namespace loom
