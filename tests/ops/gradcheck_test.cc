// Finite-difference gradient checks in f64 for every differentiable op,
// including broadcast and non-contiguous inputs.
#include <gtest/gtest.h>

#include "loom/autograd/gradcheck.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

using autograd::gradcheck;
using core::DType;
using core::Tensor;
using Inputs = std::vector<Tensor>;

Tensor rnd(core::Shape s, uint64_t seed, double lo = -1, double hi = 1) {
  core::Generator g(seed);
  return ops::rand(s, g, DType::F64, lo, hi);
}
// A non-contiguous [r, c] tensor: the transpose of a contiguous [c, r].
Tensor rnd_t(int64_t r, int64_t c, uint64_t seed) { return ops::transpose(rnd({c, r}, seed), 0, 1); }

#define EXPECT_GRAD(fn, ...)                          \
  do {                                                \
    auto res = gradcheck(fn, __VA_ARGS__);            \
    EXPECT_TRUE(res.ok) << res.message;               \
  } while (0)

TEST(Gradcheck, BinaryWithBroadcast) {
  for (auto op : {&ops::add, &ops::sub, &ops::mul}) {
    auto f = [op](const Inputs& in) { return (*op)(in[0], in[1]); };
    EXPECT_GRAD(f, {rnd({3, 4}, 1), rnd({4}, 2)});
    EXPECT_GRAD(f, {rnd({2, 1, 4}, 3), rnd({3, 1}, 4)});
    EXPECT_GRAD(f, {rnd_t(3, 4, 5), rnd({3, 4}, 6)});
  }
  EXPECT_GRAD([](const Inputs& in) { return ops::div(in[0], in[1]); }, {rnd({3, 4}, 1), rnd({3, 1}, 2, 0.5, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::pow(in[0], in[1]); }, {rnd({3, 4}, 1, 0.5, 2), rnd({4}, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::pow(in[0], 3.0); }, {rnd_t(3, 4, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::maximum(in[0], in[1]); }, {rnd({3, 4}, 1), rnd({4}, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::minimum(in[0], in[1]); }, {rnd({3, 4}, 3), rnd({3, 4}, 4)});
}

TEST(Gradcheck, Unary) {
  using UF = Tensor (*)(const Tensor&);
  for (UF op : {static_cast<UF>(&ops::neg), static_cast<UF>(&ops::exp), static_cast<UF>(&ops::abs),
                static_cast<UF>(&ops::square), static_cast<UF>(&ops::relu), static_cast<UF>(&ops::gelu),
                static_cast<UF>(&ops::sigmoid), static_cast<UF>(&ops::tanh)}) {
    EXPECT_GRAD([op](const Inputs& in) { return op(in[0]); }, {rnd_t(3, 5, 11)});
  }
  EXPECT_GRAD([](const Inputs& in) { return ops::log(in[0]); }, {rnd({3, 5}, 1, 0.5, 3)});
}

TEST(Gradcheck, SqrtOnPositive) {
  EXPECT_GRAD([](const Inputs& in) { return ops::sqrt(ops::add(ops::square(in[0]), 0.5)); }, {rnd_t(3, 5, 1)});
}

TEST(Gradcheck, Reductions) {
  EXPECT_GRAD([](const Inputs& in) { return ops::sum(in[0]); }, {rnd_t(3, 4, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::sum(in[0], {1}, true); }, {rnd({2, 3, 4}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::sum(in[0], {0, 2}); }, {rnd({2, 3, 4}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::mean(in[0], {-1}); }, {rnd_t(3, 4, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::max(in[0], {1}); }, {rnd({3, 5}, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::min(in[0], {0}, true); }, {rnd_t(3, 5, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::max(in[0]); }, {rnd({4, 5}, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::max_dim(in[0], 1).values; }, {rnd({4, 5}, 4)});
}

TEST(Gradcheck, Matmul) {
  auto f = [](const Inputs& in) { return ops::matmul(in[0], in[1]); };
  EXPECT_GRAD(f, {rnd({3, 4}, 1), rnd({4, 5}, 2)});
  EXPECT_GRAD(f, {rnd_t(3, 4, 1), rnd_t(4, 5, 2)});
  EXPECT_GRAD(f, {rnd({2, 3, 4}, 1), rnd({4, 2}, 2)});           // broadcast batch
  EXPECT_GRAD(f, {rnd({2, 1, 3, 4}, 1), rnd({3, 4, 2}, 2)});     // both broadcast
  EXPECT_GRAD(f, {rnd({4}, 1), rnd({4, 3}, 2)});                 // vector @ matrix
  EXPECT_GRAD(f, {rnd({2, 3, 4}, 1), rnd({4}, 2)});              // batched matrix @ vector
  EXPECT_GRAD(f, {rnd({4}, 1), rnd({4}, 2)});                    // dot
  auto lin = [](const Inputs& in) { return ops::linear(in[0], in[1], in[2]); };
  EXPECT_GRAD(lin, {rnd({5, 4}, 1), rnd({3, 4}, 2), rnd({3}, 3)});
  EXPECT_GRAD(lin, {rnd_t(5, 4, 1), rnd_t(3, 4, 2), rnd({3}, 3)});
  EXPECT_GRAD(lin, {rnd({2, 5, 4}, 1), rnd({3, 4}, 2), rnd({3}, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::linear(in[0], in[1], Tensor()); }, {rnd({5, 4}, 1), rnd({3, 4}, 2)});
}

TEST(Gradcheck, ViewsAndJoins) {
  EXPECT_GRAD([](const Inputs& in) { return ops::reshape(in[0], {6, 2}); }, {rnd_t(3, 4, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::permute(in[0], {2, 0, 1}); }, {rnd({2, 3, 4}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::slice(in[0], 1, 1, 4, 2); }, {rnd({3, 5}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::select(in[0], 0, 1); }, {rnd({3, 5}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::expand(in[0], {4, 3, 5}); }, {rnd({3, 1}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::concat({in[0], in[1]}, 1); }, {rnd({3, 2}, 1), rnd_t(3, 4, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::stack({in[0], in[1]}, 0); }, {rnd({3, 2}, 1), rnd({3, 2}, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::to_dtype(ops::to_dtype(in[0], DType::F32), DType::F64); },
              {rnd({3}, 1)}, {.atol = 1e-3, .rtol = 1e-3});
}

TEST(Gradcheck, SoftmaxFamily) {
  EXPECT_GRAD([](const Inputs& in) { return ops::softmax(in[0], 1); }, {rnd({3, 5}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::softmax(in[0], 0); }, {rnd_t(3, 5, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::log_softmax(in[0], -1); }, {rnd({2, 3, 5}, 1)});
  EXPECT_GRAD([](const Inputs& in) { return ops::log_softmax(in[0], 1); }, {rnd({2, 3, 5}, 2)});
}

TEST(Gradcheck, LayerNorm) {
  EXPECT_GRAD([](const Inputs& in) { return ops::layer_norm(in[0], {5}, in[1], in[2]); },
              {rnd({3, 5}, 1), rnd({5}, 2), rnd({5}, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::layer_norm(in[0], {2, 3}, Tensor(), Tensor()); },
              {rnd({4, 2, 3}, 4)});
}

TEST(Gradcheck, Indexing) {
  Tensor idx = Tensor::from_vector<int64_t>({2, 0, 2, 1}, {4});
  EXPECT_GRAD([&](const Inputs& in) { return ops::index_select(in[0], 0, idx); }, {rnd({3, 4}, 1)});
  EXPECT_GRAD([&](const Inputs& in) { return ops::index_select(in[0], 1, idx); }, {rnd_t(2, 3, 1)});
  Tensor ids = Tensor::from_vector<int64_t>({1, 4, 4, 0, 2, 1}, {2, 3});
  EXPECT_GRAD([&](const Inputs& in) { return ops::embedding(in[0], ids); }, {rnd({5, 3}, 2)});
  Tensor gi = Tensor::from_vector<int64_t>({0, 2, 1, 1, 0, 0}, {3, 2});
  EXPECT_GRAD([&](const Inputs& in) { return ops::gather(in[0], 1, gi); }, {rnd({3, 3}, 3)});
}

TEST(Gradcheck, Losses) {
  Tensor y = Tensor::from_vector<int64_t>({0, 3, 1, 3}, {4});
  EXPECT_GRAD([&](const Inputs& in) { return ops::cross_entropy(in[0], y); }, {rnd({4, 5}, 1, -3, 3)});
  EXPECT_GRAD([&](const Inputs& in) { return ops::cross_entropy(in[0], y, {.label_smoothing = 0.2}); },
              {rnd({4, 5}, 2, -3, 3)});
  EXPECT_GRAD([&](const Inputs& in) { return ops::cross_entropy(in[0], y, {.reduction = ops::Reduction::None}); },
              {rnd_t(4, 5, 3)});
  EXPECT_GRAD([](const Inputs& in) { return ops::mse_loss(in[0], in[1]); }, {rnd({3, 4}, 1), rnd({3, 4}, 2)});
  EXPECT_GRAD([](const Inputs& in) { return ops::binary_cross_entropy_with_logits(in[0], in[1]); },
              {rnd({3, 4}, 1, -4, 4), rnd({3, 4}, 2, 0, 1)});
}

TEST(Gradcheck, Dropout) {
  // The mask is drawn from a fresh generator with the same seed each call.
  EXPECT_GRAD([](const Inputs& in) {
    core::Generator g(5);
    return ops::dropout(in[0], 0.3, true, g);
  }, {rnd({4, 6}, 1)});
}

}  // namespace
}  // namespace loom
