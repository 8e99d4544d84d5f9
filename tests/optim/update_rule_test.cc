// Update rules on raw buffers: hand-computed steps (torch.optim formulas),
// sharding invariance, float/double, bad input.
#include "loom/optim/update_rule.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "loom/core/parallel.h"
#include "loom/ops/creation.h"

namespace loom::optim {
namespace {

// Runs `rule` for the given gradients on a single weight starting at w0 and
// returns the weight after each step.
template <class T>
std::vector<T> trajectory(const UpdateRule& rule, T w0, const std::vector<T>& grads, double lr) {
  T w = w0;
  std::array<T, kMaxStateSlots> state{};
  std::array<T*, kMaxStateSlots> ptrs{};
  for (size_t k = 0; k < kMaxStateSlots; ++k) ptrs[k] = &state[k];
  std::vector<T> out;
  for (size_t t = 0; t < grads.size(); ++t) {
    rule.step(std::span<T>(&w, 1), std::span<const T>(&grads[t], 1),
              std::span<T* const>(ptrs.data(), rule.num_state_slots()),
              {.step = static_cast<int64_t>(t) + 1, .lr = lr});
    out.push_back(w);
  }
  return out;
}

TEST(SgdRule, PlainAndWeightDecay) {
  Sgd plain;
  EXPECT_EQ(plain.num_state_slots(), 0u);
  auto w = trajectory<double>(plain, 1.0, {0.5, 0.5}, 0.1);
  EXPECT_DOUBLE_EQ(w[0], 0.95);
  EXPECT_DOUBLE_EQ(w[1], 0.90);

  Sgd decay({.weight_decay = 0.1});
  w = trajectory<double>(decay, 1.0, {0.5, 0.5}, 0.1);
  EXPECT_DOUBLE_EQ(w[0], 1.0 - 0.1 * (0.5 + 0.1 * 1.0));  // 0.94
  EXPECT_DOUBLE_EQ(w[1], 0.94 - 0.1 * (0.5 + 0.1 * 0.94));
}

TEST(SgdRule, MomentumBufferStartsAsFirstGradient) {
  Sgd rule({.momentum = 0.9});
  ASSERT_EQ(rule.state_names(), std::vector<std::string>{"momentum_buffer"});
  auto w = trajectory<double>(rule, 1.0, {0.5, 0.5, 0.2}, 0.1);
  EXPECT_DOUBLE_EQ(w[0], 0.95);               // buf = 0.5
  EXPECT_DOUBLE_EQ(w[1], 0.855);              // buf = 0.9 * 0.5 + 0.5 = 0.95
  EXPECT_DOUBLE_EQ(w[2], 0.855 - 0.1 * 1.055);  // buf = 0.855 + 0.2
}

TEST(SgdRule, Dampening) {
  Sgd rule({.momentum = 0.9, .dampening = 0.5});
  auto w = trajectory<double>(rule, 1.0, {0.5, 0.5}, 0.1);
  EXPECT_DOUBLE_EQ(w[0], 0.95);  // the first buffer is not dampened
  EXPECT_DOUBLE_EQ(w[1], 0.88);  // buf = 0.45 + 0.5 * 0.5 = 0.7
}

TEST(SgdRule, Nesterov) {
  Sgd rule({.momentum = 0.9, .nesterov = true});
  auto w = trajectory<double>(rule, 1.0, {0.5, 0.5}, 0.1);
  EXPECT_DOUBLE_EQ(w[0], 0.905);   // d = 0.5 + 0.9 * 0.5
  EXPECT_DOUBLE_EQ(w[1], 0.7695);  // buf = 0.95, d = 0.5 + 0.855
}

TEST(SgdRule, MomentumWithWeightDecay) {
  Sgd rule({.momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
  auto w = trajectory<double>(rule, 2.0, {1.0, -1.0}, 0.5);
  double d1 = 1.0 + 0.01 * 2.0, b1 = d1, w1 = 2.0 - 0.5 * (d1 + 0.9 * b1);
  double d2 = -1.0 + 0.01 * w1, b2 = 0.9 * b1 + d2, w2 = w1 - 0.5 * (d2 + 0.9 * b2);
  EXPECT_DOUBLE_EQ(w[0], w1);
  EXPECT_DOUBLE_EQ(w[1], w2);
}

TEST(AdamRule, ConstantGradientMovesByLr) {
  Adam rule;
  ASSERT_EQ(rule.state_names(), (std::vector<std::string>{"exp_avg", "exp_avg_sq"}));
  auto w = trajectory<double>(rule, 1.0, {0.5, 0.5}, 0.1);
  // step 1: m = 0.05, v = 0.00025, m_hat = 0.5, sqrt(v_hat) = 0.5
  EXPECT_NEAR(w[0], 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
  // step 2: m = 0.095, v = 0.00049975; bias corrections 0.19 and 0.001999
  double denom = std::sqrt(0.00049975) / std::sqrt(0.001999) + 1e-8;
  EXPECT_NEAR(w[1], w[0] - 0.1 / 0.19 * 0.095 / denom, 1e-15);
}

TEST(AdamRule, VaryingGradientAndL2) {
  Adam rule({.betas = {0.8, 0.9}, .eps = 1e-3, .weight_decay = 0.1});
  auto w = trajectory<double>(rule, 1.0, {2.0, -1.0}, 0.01);
  double g1 = 2.0 + 0.1 * 1.0, m1 = 0.2 * g1, v1 = 0.1 * g1 * g1;
  double w1 = 1.0 - 0.01 / 0.2 * m1 / (std::sqrt(v1) / std::sqrt(0.1) + 1e-3);
  double g2 = -1.0 + 0.1 * w1, m2 = 0.8 * m1 + 0.2 * g2, v2 = 0.9 * v1 + 0.1 * g2 * g2;
  double w2 = w1 - 0.01 / (1 - 0.64) * m2 / (std::sqrt(v2) / std::sqrt(1 - 0.81) + 1e-3);
  EXPECT_NEAR(w[0], w1, 1e-15);
  EXPECT_NEAR(w[1], w2, 1e-15);
}

TEST(AdamRule, AdamWDecouplesWeightDecay) {
  AdamW rule({.betas = {0.8, 0.9}, .eps = 1e-3, .weight_decay = 0.1});
  EXPECT_EQ(rule.name(), "adamw");
  auto w = trajectory<double>(rule, 1.0, {2.0, -1.0}, 0.01);
  double m1 = 0.2 * 2.0, v1 = 0.1 * 4.0;
  double w1 = 1.0 * (1 - 0.01 * 0.1) - 0.01 / 0.2 * m1 / (std::sqrt(v1) / std::sqrt(0.1) + 1e-3);
  double m2 = 0.8 * m1 - 0.2, v2 = 0.9 * v1 + 0.1;
  double w2 = w1 * (1 - 0.01 * 0.1) - 0.01 / 0.36 * m2 / (std::sqrt(v2) / std::sqrt(0.19) + 1e-3);
  EXPECT_NEAR(w[0], w1, 1e-15);
  EXPECT_NEAR(w[1], w2, 1e-15);
}

TEST(AdamRule, AmsgradUsesMaximumOfSecondMoment) {
  Adam rule({.amsgrad = true});
  ASSERT_EQ(rule.num_state_slots(), 3u);
  EXPECT_EQ(rule.state_names()[2], "max_exp_avg_sq");
  auto w = trajectory<double>(rule, 1.0, {1.0, 0.0}, 0.1);
  // v: 0.001 then 0.000999; the maximum stays 0.001.
  double w1 = 1.0 - 0.1 / 0.1 * 0.1 / (std::sqrt(0.001) / std::sqrt(0.001) + 1e-8);
  double w2 = w1 - 0.1 / 0.19 * 0.09 / (std::sqrt(0.001) / std::sqrt(0.001999) + 1e-8);
  EXPECT_NEAR(w[0], w1, 1e-15);
  EXPECT_NEAR(w[1], w2, 1e-15);
  Adam plain;
  EXPECT_GT(std::abs(trajectory<double>(plain, 1.0, {1.0, 0.0}, 0.1)[1] - w2), 1e-6);
}

TEST(AdamRule, FloatMatchesDouble) {
  Adam rule({.weight_decay = 0.01});
  auto wd = trajectory<double>(rule, 0.3, {0.1, -0.2, 0.05, 0.3}, 0.01);
  auto wf = trajectory<float>(rule, 0.3f, {0.1f, -0.2f, 0.05f, 0.3f}, 0.01);
  for (size_t i = 0; i < wd.size(); ++i) EXPECT_NEAR(wf[i], wd[i], 1e-6);
}

// Updating a buffer whole, in two pieces, or on one thread gives the same bits:
// what parameter-server shards and sharded optimizer state rely on.
template <class Rule, class Options>
void check_sharding(const Options& o) {
  Rule rule(o);
  const int64_t n = 200003;  // several parallel chunks, odd size
  const size_t slots = rule.num_state_slots();
  auto init = [&](std::vector<float>& w, std::vector<std::vector<float>>& s) {
    w.resize(n);
    for (int64_t i = 0; i < n; ++i) w[i] = std::sin(0.01f * i);
    s.assign(slots, std::vector<float>(n, 0.0f));
  };
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = std::cos(0.003f * i) - 0.2f;
  auto run = [&](std::vector<float>& w, std::vector<std::vector<float>>& s, int64_t split) {
    for (int64_t t = 1; t <= 3; ++t) {
      for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, split}, {split, n}}) {
        std::array<float*, kMaxStateSlots> ptrs{};
        for (size_t k = 0; k < slots; ++k) ptrs[k] = s[k].data() + lo;
        rule.step(std::span<float>(w.data() + lo, hi - lo), std::span<const float>(g.data() + lo, hi - lo),
                  std::span<float* const>(ptrs.data(), slots), {.step = t, .lr = 0.01});
      }
    }
  };
  std::vector<float> w_whole, w_split, w_serial;
  std::vector<std::vector<float>> s_whole, s_split, s_serial;
  init(w_whole, s_whole);
  init(w_split, s_split);
  init(w_serial, s_serial);
  run(w_whole, s_whole, n);
  run(w_split, s_split, 12345);
  int threads = core::get_num_threads();
  core::set_num_threads(1);
  run(w_serial, s_serial, n);
  core::set_num_threads(threads);
  EXPECT_EQ(w_whole, w_split);
  EXPECT_EQ(w_whole, w_serial);
  EXPECT_EQ(s_whole, s_split);
  EXPECT_EQ(s_whole, s_serial);
}

TEST(UpdateRule, ShardingInvariance) {
  check_sharding<Sgd>(SgdOptions{.momentum = 0.9, .weight_decay = 1e-4, .nesterov = true});
  check_sharding<Adam>(AdamOptions{.weight_decay = 1e-4, .amsgrad = true});
  check_sharding<AdamW>(AdamWOptions{});
}

TEST(UpdateRule, TensorOverload) {
  Adam rule;
  Tensor w = Tensor::from_vector<double>({1.0, 2.0}, {2});
  Tensor g = Tensor::from_vector<double>({0.5, 0.5}, {2});
  std::vector<Tensor> state{ops::zeros({2}, core::DType::F64), ops::zeros({2}, core::DType::F64)};
  rule.step(w, g, state, {.step = 1, .lr = 0.1});
  EXPECT_NEAR(w.at<double>({0}), 0.9, 1e-7);
  EXPECT_NEAR(w.at<double>({1}), 1.9, 1e-7);
  EXPECT_NEAR(state[0].at<double>({0}), 0.05, 1e-15);

  Tensor gf = Tensor::from_vector<float>({0.5f, 0.5f}, {2});
  EXPECT_THROW(rule.step(w, gf, state, {.step = 2, .lr = 0.1}), TypeError);
  Tensor g3 = Tensor::from_vector<double>({0.5, 0.5, 0.5}, {3});
  EXPECT_THROW(rule.step(w, g3, state, {.step = 2, .lr = 0.1}), ShapeError);
  EXPECT_THROW(rule.step(w, g, std::span<const Tensor>(state.data(), 1), {.step = 2, .lr = 0.1}), ValueError);
  Tensor wt = Tensor::from_vector<double>({1, 2, 3, 4}, {2, 2}).as_strided({2, 2}, {1, 2}, 0);
  std::vector<Tensor> state4{ops::zeros({2, 2}, core::DType::F64), ops::zeros({2, 2}, core::DType::F64)};
  EXPECT_THROW(rule.step(wt, ops::zeros({2, 2}, core::DType::F64), state4, {.step = 1, .lr = 0.1}), ValueError);
}

TEST(UpdateRule, BadInput) {
  EXPECT_THROW(Sgd({.momentum = -0.1}), ValueError);
  EXPECT_THROW(Sgd({.weight_decay = -1}), ValueError);
  EXPECT_THROW(Sgd({.nesterov = true}), ValueError);                                    // no momentum
  EXPECT_THROW(Sgd({.momentum = 0.9, .dampening = 0.1, .nesterov = true}), ValueError);  // dampened
  EXPECT_THROW(Adam({.betas = {1.0, 0.999}}), ValueError);
  EXPECT_THROW(Adam({.betas = {0.9, -0.1}}), ValueError);
  EXPECT_THROW(Adam({.eps = -1e-8}), ValueError);
  EXPECT_THROW(AdamW({.weight_decay = -0.01}), ValueError);

  Sgd rule({.momentum = 0.9});
  std::vector<double> w(4, 1.0), g(4, 1.0), buf(4, 0.0);
  std::array<double*, 1> s{buf.data()};
  EXPECT_THROW(rule.step(std::span(w), std::span<const double>(g.data(), 3), s, {.step = 1, .lr = 0.1}),
               ShapeError);
  EXPECT_THROW(rule.step(std::span(w), std::span<const double>(g), std::span<double* const>(s.data(), 0),
                         {.step = 1, .lr = 0.1}),
               ValueError);
  EXPECT_THROW(rule.step(std::span(w), std::span<const double>(g), s, {.step = 0, .lr = 0.1}), ValueError);
  EXPECT_THROW(rule.step(std::span(w), std::span<const double>(g), s, {.step = 1, .lr = -0.1}), ValueError);
  EXPECT_THROW(rule.step(std::span(w), std::span<const double>(g), s, {.step = 1, .lr = NAN}), ValueError);
}

TEST(UpdateRule, EmptySpanIsANoOp) {
  Adam rule;
  std::array<float*, 2> s{nullptr, nullptr};
  EXPECT_NO_THROW(rule.step(std::span<float>(), std::span<const float>(), s, {.step = 1, .lr = 0.1}));
}

TEST(UpdateRule, CloneKeepsOptions) {
  Sgd rule({.momentum = 0.5, .nesterov = true});
  auto copy = rule.clone();
  EXPECT_EQ(trajectory<double>(*copy, 1.0, {0.3, 0.7}, 0.1), trajectory<double>(rule, 1.0, {0.3, 0.7}, 0.1));
  AdamW aw;
  EXPECT_EQ(aw.clone()->name(), "adamw");
}

}  // namespace
}  // namespace loom::optim
