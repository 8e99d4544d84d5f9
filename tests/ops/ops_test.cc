// Forward values, dtypes and error messages of the ops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "loom/core/parallel.h"
#include "loom/autograd/engine.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

using core::DType;
using core::Tensor;

Tensor vec(std::vector<float> v) {
  int64_t n = static_cast<int64_t>(v.size());
  return Tensor::from_vector<float>(v, {n});
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Ops, ElementwiseBroadcast) {
  Tensor a = ops::reshape(ops::arange(6.0), {2, 3});
  Tensor b = vec({10, 20, 30});
  EXPECT_EQ((a + b).to_vector<float>(), (std::vector<float>{10, 21, 32, 13, 24, 35}));
  EXPECT_EQ((a * 2.0).to_vector<float>(), (std::vector<float>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(ops::sub(b, a).shape(), (core::Shape{2, 3}));
  Tensor col = ops::reshape(vec({1, 2}), {2, 1});
  EXPECT_EQ(ops::div(a, col).to_vector<float>(), (std::vector<float>{0, 1, 2, 1.5f, 2, 2.5f}));
  EXPECT_EQ(ops::maximum(a, vec({2, 2, 2})).to_vector<float>(), (std::vector<float>{2, 2, 2, 3, 4, 5}));
}

TEST(Ops, UnaryValues) {
  Tensor x = vec({-1.0f, 0.0f, 2.0f});
  EXPECT_EQ(ops::relu(x).to_vector<float>(), (std::vector<float>{0, 0, 2}));
  EXPECT_EQ(ops::abs(x).to_vector<float>(), (std::vector<float>{1, 0, 2}));
  auto s = ops::sigmoid(x).to_vector<float>();
  EXPECT_NEAR(s[0], 1 / (1 + std::exp(1.0)), 1e-6);
  auto g = ops::gelu(x).to_vector<float>();
  EXPECT_NEAR(g[0], -0.15865525f, 1e-6);  // PyTorch: gelu(-1)
  EXPECT_NEAR(g[2], 1.9544997f, 1e-6);
  EXPECT_NEAR(ops::tanh(x).to_vector<float>()[2], std::tanh(2.0f), 1e-6);
}

// f32 GELU and its backward go through oneDNN (a polynomial erf); they stay
// within a few ulp of the f64 reference loop, on contiguous and strided inputs.
TEST(Ops, GeluF32MatchesTheF64ReferenceClosely) {
  std::vector<float> xs;
  for (int i = -4000; i <= 4000; ++i) xs.push_back(static_cast<float>(i) * 0.0025f);  // [-10, 10]
  const Tensor x = vec(xs);
  const Tensor x64 = ops::to_dtype(x, DType::F64);
  const auto close = [](const Tensor& got, const Tensor& want, const char* what) {
    const auto g = got.to_vector<float>();
    const auto w = want.to_vector<double>();
    double worst = 0;  // in units of the float spacing at max(1, |want|)
    for (size_t i = 0; i < g.size(); ++i) {
      worst = std::max(worst, std::abs(g[i] - w[i]) / (std::max(1.0, std::abs(w[i])) * 0x1p-23));
    }
    EXPECT_LT(worst, 8.0) << what;
  };
  close(ops::gelu(x), ops::gelu(x64), "gelu");
  Tensor xr = x.detach().set_requires_grad(true), xr64 = x64.detach().set_requires_grad(true);
  autograd::backward(ops::sum(ops::mul(ops::gelu(xr), xr)));  // a non-constant upstream gradient
  autograd::backward(ops::sum(ops::mul(ops::gelu(xr64), xr64)));
  close(xr.grad(), xr64.grad(), "gelu backward");
  const Tensor strided = ops::slice(ops::reshape(x, {3, -1}), 1, 0, 100);  // the generic loop
  close(ops::gelu(strided), ops::gelu(ops::to_dtype(strided, DType::F64)), "gelu strided");
}

TEST(Ops, HalfTypesComputeInFloat) {
  for (DType t : {DType::F16, DType::BF16}) {
    Tensor a = ops::to_dtype(vec({1.5f, 2.0f, -3.0f}), t);
    Tensor b = ops::to_dtype(vec({0.5f, 4.0f, 1.0f}), t);
    Tensor c = a * b + a;
    EXPECT_EQ(c.dtype(), t);
    EXPECT_EQ(ops::to_dtype(c, DType::F32).to_vector<float>(), (std::vector<float>{2.25f, 10.0f, -6.0f}));
    EXPECT_EQ(ops::sum(a).item<float>(), 0.5f);
    EXPECT_EQ(ops::matmul(ops::reshape(a, {1, 3}), ops::reshape(b, {3, 1})).item<float>(), 5.75f);
  }
}

TEST(Ops, IntegerOps) {
  Tensor a = Tensor::from_vector<int64_t>({7, -8, 9}, {3});
  Tensor b = Tensor::from_vector<int64_t>({2, 2, 3}, {3});
  EXPECT_EQ((a + b).to_vector<int64_t>(), (std::vector<int64_t>{9, -6, 12}));
  EXPECT_EQ(ops::div(a, b).to_vector<int64_t>(), (std::vector<int64_t>{3, -4, 3}));
  EXPECT_THROW(ops::div(a, Tensor::from_vector<int64_t>({1, 0, 1}, {3})), ValueError);
  EXPECT_EQ(ops::sum(a).item<int64_t>(), 8);
  EXPECT_THROW(ops::exp(a), TypeError);
}

TEST(Ops, Reductions) {
  Tensor x = ops::reshape(ops::arange(24.0), {2, 3, 4});
  EXPECT_EQ(ops::sum(x).item<float>(), 276.0f);
  EXPECT_EQ(ops::sum(x, {1}).shape(), (core::Shape{2, 4}));
  EXPECT_EQ(ops::sum(x, {1}, true).shape(), (core::Shape{2, 1, 4}));
  EXPECT_EQ(ops::sum(x, {0, 2}).to_vector<float>(), (std::vector<float>{60, 92, 124}));
  EXPECT_EQ(ops::mean(x, {-1}).to_vector<float>()[0], 1.5f);
  EXPECT_EQ(ops::max(x, {2}).to_vector<float>(), (std::vector<float>{3, 7, 11, 15, 19, 23}));
  EXPECT_EQ(ops::min(x).item<float>(), 0.0f);
  auto [v, i] = ops::max_dim(ops::transpose(x, 1, 2), 2);
  EXPECT_EQ(i.to_vector<int64_t>(), std::vector<int64_t>(8, 2));
  EXPECT_EQ(ops::argmax(vec({1, 5, 3}), 0).item<int64_t>(), 1);
  EXPECT_THROW(ops::sum(x, {3}), IndexError);
  EXPECT_THROW(ops::max(ops::zeros({0, 3}), {0}), ShapeError);
  EXPECT_EQ(ops::sum(ops::zeros({0, 3})).item<float>(), 0.0f);
}

TEST(Ops, LargeSumIsAccurateAndThreadIndependent) {
  core::Generator g(3);
  Tensor x = ops::rand({1 << 20}, g);
  core::set_num_threads(1);
  float s1 = ops::sum(x).item<float>();
  auto c1 = ops::sum(ops::reshape(x, {1024, 1024}), {0}).to_vector<float>();
  core::set_num_threads(2);
  float s2 = ops::sum(x).item<float>();
  auto c2 = ops::sum(ops::reshape(x, {1024, 1024}), {0}).to_vector<float>();
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(c1, c2);
  EXPECT_NEAR(s1, ops::sum(ops::to_dtype(x, DType::F64)).item<double>(), 0.05);  // f32 spacing at 5e5 is 0.03
}

TEST(Ops, MatmulShapes) {
  core::Generator g(1);
  Tensor a = ops::randn({2, 3, 4}, g), b = ops::randn({4, 5}, g);
  EXPECT_EQ(ops::matmul(a, b).shape(), (core::Shape{2, 3, 5}));
  EXPECT_EQ(ops::matmul(vec({1, 2, 3, 4}), b).shape(), (core::Shape{5}));
  EXPECT_EQ(ops::matmul(vec({1, 2}), vec({3, 4})).item<float>(), 11.0f);
  // f32 (oneDNN) agrees with f64 (reference loops), also for transposed views.
  Tensor m = ops::randn({64, 33}, g), n = ops::randn({33, 17}, g);
  Tensor ref = ops::matmul(ops::to_dtype(m, DType::F64), ops::to_dtype(n, DType::F64));
  auto got = ops::matmul(ops::contiguous(ops::transpose(ops::transpose(m, 0, 1), 0, 1)), n).to_vector<double>();
  auto tr = ops::matmul(ops::transpose(ops::contiguous(ops::transpose(m, 0, 1)), 0, 1), n).to_vector<double>();
  auto want = ref.to_vector<double>();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-4);
    EXPECT_NEAR(tr[i], want[i], 1e-4);
  }
  std::string msg = error_of([&] { ops::matmul(a, ops::zeros({3, 5})); });
  EXPECT_NE(msg.find("matmul"), std::string::npos);
  EXPECT_NE(msg.find("[2, 3, 4]"), std::string::npos);
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos);
}

TEST(Ops, ErrorsNameOpAndShapes) {
  std::string msg = error_of([] { ops::add(ops::zeros({2, 3}), ops::zeros({4})); });
  EXPECT_NE(msg.find("add"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4]"), std::string::npos) << msg;
  EXPECT_THROW(ops::add(ops::zeros({2, 3}), ops::zeros({4})), ShapeError);
  EXPECT_THROW(ops::add(ops::zeros({2}), ops::zeros({2}, DType::F64)), TypeError);
  msg = error_of([] { ops::linear(ops::zeros({8, 100}), ops::zeros({256, 784}), ops::zeros({256})); });
  EXPECT_NE(msg.find("[8, 100]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[256, 784]"), std::string::npos) << msg;
  EXPECT_THROW(ops::index_select(ops::zeros({3, 2}), 0, Tensor::from_vector<int64_t>({3}, {1})), IndexError);
  EXPECT_THROW(ops::index_select(ops::zeros({3, 2}), 0, Tensor::from_vector<int64_t>({-1}, {1})), IndexError);
  EXPECT_THROW(ops::embedding(ops::zeros({3, 2}), Tensor::from_vector<int64_t>({5}, {1})), IndexError);
  EXPECT_THROW(ops::cross_entropy(ops::zeros({2, 3}), Tensor::from_vector<int64_t>({0, 3}, {2})), IndexError);
  EXPECT_THROW(ops::cross_entropy(ops::zeros({2, 3}), Tensor::from_vector<int64_t>({0}, {1})), ShapeError);
  EXPECT_THROW(ops::softmax(ops::zeros({2, 3}), 2), IndexError);
  EXPECT_THROW(ops::concat({ops::zeros({2, 3}), ops::zeros({3, 3})}, 1), ShapeError);
  EXPECT_THROW(ops::dropout(ops::zeros({2}), 1.5, true, *std::make_unique<core::Generator>(1)), ValueError);
}

TEST(Ops, SoftmaxAndLosses) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 1, 1, 1}, {2, 3});
  auto s = ops::softmax(x, 1).to_vector<float>();
  EXPECT_NEAR(s[2], std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-6);
  EXPECT_NEAR(s[4], 1.0 / 3, 1e-6);
  Tensor y = Tensor::from_vector<int64_t>({2, 0}, {2});
  // PyTorch: F.cross_entropy(tensor([[1,2,3],[1,1,1.]]), tensor([2,0])) = 0.7531091 (torch 1.13)
  EXPECT_NEAR(ops::cross_entropy(x, y).item<float>(), 0.7531091f, 1e-6);
  // with label_smoothing=0.1: 0.8031090
  EXPECT_NEAR(ops::cross_entropy(x, y, {.label_smoothing = 0.1}).item<float>(), 0.8031090f, 1e-6);
  // BCE with logits at large magnitudes stays finite.
  Tensor big = vec({100.0f, -100.0f});
  Tensor t = vec({0.0f, 1.0f});
  EXPECT_NEAR(ops::binary_cross_entropy_with_logits(big, t).item<float>(), 100.0f, 1e-3);
}

TEST(Ops, DropoutScalesKeptValues) {
  core::Generator g(9);
  Tensor x = ops::ones({100000});
  Tensor y = ops::dropout(x, 0.25, true, g);
  auto v = y.to_vector<float>();
  int64_t kept = 0;
  for (float f : v) {
    if (f != 0) {
      EXPECT_NEAR(f, 1.0f / 0.75f, 1e-6);
      ++kept;
    }
  }
  EXPECT_NEAR(static_cast<double>(kept) / 100000, 0.75, 0.01);
  EXPECT_TRUE(ops::dropout(x, 0.5, false, g).is_same(x));
}

TEST(Ops, ConcatStackGather) {
  Tensor a = ops::reshape(ops::arange(4.0), {2, 2});
  Tensor c = ops::concat({a, a}, 0);
  EXPECT_EQ(c.shape(), (core::Shape{4, 2}));
  EXPECT_EQ(ops::stack({a, a, a}, 1).shape(), (core::Shape{2, 3, 2}));
  Tensor idx = Tensor::from_vector<int64_t>({1, 0, 0, 0}, {2, 2});
  EXPECT_EQ(ops::gather(a, 1, idx).to_vector<float>(), (std::vector<float>{1, 0, 2, 2}));
}

}  // namespace
}  // namespace loom
