// Finite-difference gradient checks (f64) through layers, with respect to the
// input and every parameter. gradcheck perturbs the tensors it is given in
// place, so passing a layer's own parameters checks their gradients.
#include <gtest/gtest.h>

#include "loom/autograd/gradcheck.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::DType;
using core::Tensor;

void expect_gradcheck(Module& layer, const Tensor& x) {
  std::vector<Tensor> inputs{x};
  for (const Tensor& p : layer.parameters()) inputs.push_back(p);
  auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return layer(in[0]); }, inputs);
  EXPECT_TRUE(r.ok) << layer.describe() << ": " << r.message;
}

TEST(Gradcheck, Linear) {
  Linear fc({.in = 5, .out = 3, .dtype = DType::F64, .seed = 1});
  core::Generator gen(2);
  expect_gradcheck(fc, ops::randn({4, 5}, gen, DType::F64));
  expect_gradcheck(fc, ops::randn({2, 3, 5}, gen, DType::F64));
}

TEST(Gradcheck, LayerNorm) {
  LayerNorm ln({.normalized_shape = {6}, .dtype = DType::F64});
  core::Generator gen(3);
  // Non-trivial affine parameters so their gradients matter.
  for (Tensor& p : ln.parameters()) ops::uniform_(p, gen, 0.5, 1.5);
  expect_gradcheck(ln, ops::randn({3, 6}, gen, DType::F64));
  LayerNorm ln2({.normalized_shape = {2, 3}, .dtype = DType::F64});
  expect_gradcheck(ln2, ops::randn({4, 2, 3}, gen, DType::F64));
}

TEST(Gradcheck, MultiheadAttention) {
  for (bool causal : {false, true}) {
    MultiheadAttention m({.embed_dim = 6, .num_heads = 2, .causal = causal, .dtype = DType::F64, .seed = 5});
    core::Generator gen(6);
    for (auto& [name, p] : m.named_parameters()) {
      if (name.find("bias") != std::string::npos) ops::uniform_(p, gen, -0.3, 0.3);
    }
    SCOPED_TRACE(causal ? "causal" : "full");
    expect_gradcheck(m, ops::randn({2, 4, 6}, gen, DType::F64));
  }
}

TEST(Gradcheck, Conv2dAndSequential) {
  Sequential net(Conv2d({.in = 2, .out = 3, .kernel = 3, .padding = 1, .dtype = DType::F64}), Tanh(),
                 AvgPool2d({.kernel = 2}), Flatten(), Linear({.in = 3 * 2 * 2, .out = 2, .dtype = DType::F64}));
  core::Generator gen(8);
  expect_gradcheck(net, ops::randn({2, 2, 4, 4}, gen, DType::F64));
}

TEST(Gradcheck, BatchNorm2dTraining) {
  BatchNorm2d bn({.num_features = 2, .dtype = DType::F64});
  core::Generator gen(9);
  for (Tensor& p : bn.parameters()) ops::uniform_(p, gen, 0.5, 1.5);
  expect_gradcheck(bn, ops::randn({3, 2, 2, 2}, gen, DType::F64));
}

}  // namespace
}  // namespace loom::nn
