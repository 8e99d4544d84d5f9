// Optimizer: stepping parameters through autograd, lazy state, zero_grad,
// state_dict round trips and errors.
#include "loom/optim/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/ops/ops.h"

namespace loom::optim {
namespace {

using core::DType;

Tensor param(std::vector<double> v) {
  Tensor t = Tensor::from_vector<double>(v, {static_cast<int64_t>(v.size())});
  t.set_requires_grad(true);
  return t;
}

// loss = sum(c * w^2) + sum(w) so dloss/dw = 2 c w + 1.
void backward_quadratic(const std::vector<Tensor>& ws, double c) {
  Tensor loss;
  for (const auto& w : ws) {
    Tensor term = ops::sum(ops::add(ops::mul(ops::square(w), c), w));
    loss = loss.defined() ? ops::add(loss, term) : term;
  }
  autograd::backward(loss);
}

TEST(Optimizer, SgdStepsThroughAutograd) {
  Tensor w = param({1.0, -2.0});
  auto opt = sgd({w}, {.lr = 0.1, .momentum = 0.9});
  backward_quadratic({w}, 0.5);  // grad = w + 1 = {2, -1}
  opt.step();
  EXPECT_DOUBLE_EQ(w.at<double>({0}), 1.0 - 0.2);
  EXPECT_DOUBLE_EQ(w.at<double>({1}), -2.0 + 0.1);
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(opt.param_step(0), 1);
  EXPECT_DOUBLE_EQ(opt.state(0, "momentum_buffer").at<double>({0}), 2.0);
  EXPECT_TRUE(w.is_leaf());
  EXPECT_FALSE(w.grad_fn());
}

TEST(Optimizer, SkipsParametersWithoutGradient) {
  Tensor a = param({1.0}), b = param({1.0});
  auto opt = adam({a, b}, {.lr = 0.1});
  backward_quadratic({a}, 1.0);
  opt.step();
  EXPECT_NE(a.at<double>({0}), 1.0);
  EXPECT_EQ(b.at<double>({0}), 1.0);
  EXPECT_TRUE(opt.state(0, "exp_avg").defined());
  EXPECT_FALSE(opt.state(1, "exp_avg").defined());  // allocated lazily
  EXPECT_EQ(opt.param_step(1), 0);
  // b's first update later is its own step 1 (full-size Adam step = lr).
  backward_quadratic({b}, 1.0);
  opt.step();
  EXPECT_EQ(opt.param_step(0), 2);
  EXPECT_EQ(opt.param_step(1), 1);
  EXPECT_NEAR(b.at<double>({0}), 0.9, 1e-8);
}

TEST(Optimizer, ZeroGradKeepsBuffersAndStepDoesNotReallocate) {
  Tensor w = param({1.0, 2.0, 3.0});
  auto opt = adamw({w}, {.lr = 0.01});
  backward_quadratic({w}, 1.0);
  opt.step();
  const void* grad_ptr = w.grad().data_ptr();
  const void* m_ptr = opt.state(0, "exp_avg").data_ptr();
  const void* w_ptr = w.data_ptr();
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    ASSERT_TRUE(w.grad().defined());
    EXPECT_EQ(w.grad().data_ptr(), grad_ptr);
    EXPECT_EQ(w.grad().to_vector<double>(), std::vector<double>(3, 0.0));
    backward_quadratic({w}, 1.0);
    opt.step();
    EXPECT_EQ(w.grad().data_ptr(), grad_ptr);
    EXPECT_EQ(opt.state(0, "exp_avg").data_ptr(), m_ptr);
    EXPECT_EQ(w.data_ptr(), w_ptr);
  }
  opt.zero_grad(/*set_to_none=*/true);
  EXPECT_FALSE(w.grad().defined());
  opt.step();  // nothing has a gradient: no change, no error
  EXPECT_EQ(opt.param_step(0), 4);
}

TEST(Optimizer, FloatParameters) {
  Tensor w = Tensor::from_vector<float>({1.0f, 2.0f}, {2});
  w.set_requires_grad(true);
  auto opt = sgd({w}, {.lr = 0.5});
  w.set_grad(Tensor::from_vector<float>({1.0f, -1.0f}, {2}));
  opt.step();
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{0.5f, 2.5f}));
}

// Trains `steps` steps of `opt` on the quadratic.
void train(Optimizer& opt, const std::vector<Tensor>& ws, int steps) {
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    backward_quadratic(ws, 0.7);
    opt.step();
  }
}

std::vector<double> values(const std::vector<Tensor>& ws) {
  std::vector<double> out;
  for (const auto& w : ws) {
    for (double v : w.to_vector<double>()) out.push_back(v);
  }
  return out;
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  for (int kind = 0; kind < 3; ++kind) {
    auto make = [&](std::vector<Tensor> ws) {
      if (kind == 0) return sgd(std::move(ws), {.lr = 0.05, .momentum = 0.9, .nesterov = true});
      if (kind == 1) return adam(std::move(ws), {.lr = 0.05, .amsgrad = true});
      return adamw(std::move(ws), {.lr = 0.05});
    };
    std::vector<Tensor> a{param({1.0, -1.0, 0.5}), param({2.0})};
    auto opt_a = make(a);
    train(opt_a, a, 3);
    NamedTensors saved = opt_a.state_dict();
    std::vector<std::vector<double>> saved_values;
    for (const auto& [k, t] : saved) saved_values.push_back(t.to_vector<double>());

    // A second optimizer over copies of the weights, resumed from the dict.
    std::vector<Tensor> b{param({0, 0, 0}), param({0})};
    for (size_t i = 0; i < a.size(); ++i) ops::copy_(b[i], a[i]);
    auto opt_b = make(b);
    opt_b.set_lr(1.0);  // overwritten by the dict
    opt_b.load_state_dict(saved);
    EXPECT_EQ(opt_b.lr(), 0.05);
    EXPECT_EQ(opt_b.step_count(), 3);

    train(opt_a, a, 4);
    train(opt_b, b, 4);
    EXPECT_EQ(values(a), values(b)) << "rule " << opt_a.rule().name();
    // The dict is a copy: training on did not change it.
    for (size_t i = 0; i < saved.size(); ++i) EXPECT_EQ(saved[i].second.to_vector<double>(), saved_values[i]);
    NamedTensors again = opt_b.state_dict();
    ASSERT_EQ(again.size(), saved.size());
    for (size_t i = 0; i < saved.size(); ++i) EXPECT_EQ(again[i].first, saved[i].first);
  }
}

TEST(Optimizer, StateDictKeys) {
  Tensor w = param({1.0}), b = param({1.0});
  auto opt = adam(NamedTensors{{"fc.weight", w}, {"fc.bias", b}}, {.lr = 0.1});
  backward_quadratic({w}, 1.0);
  opt.step();
  NamedTensors sd = opt.state_dict();
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"fc.weight.exp_avg", "fc.weight.exp_avg_sq", "fc.weight.step", "step",
                                            "lr"}));
  EXPECT_EQ(sd[2].second.item<int64_t>(), 1);
  EXPECT_EQ(sd[2].second.dtype(), DType::I64);
  EXPECT_EQ(sd[4].second.item<double>(), 0.1);
  // The copy in the dict is not the live state.
  EXPECT_NE(sd[0].second.data_ptr(), opt.state(0, "exp_avg").data_ptr());
}

TEST(Optimizer, LoadStateDictErrorsLeaveStateUnchanged) {
  Tensor w = param({1.0, 2.0});
  auto opt = sgd(NamedTensors{{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  backward_quadratic({w}, 1.0);
  opt.step();
  const NamedTensors good = opt.state_dict();
  auto without = [&](const std::string& key) {
    NamedTensors sd;
    for (const auto& e : good) {
      if (e.first != key) sd.push_back(e);
    }
    return sd;
  };
  auto with = [&](const std::string& key, Tensor t) {
    NamedTensors sd = without(key);
    sd.emplace_back(key, t);
    return sd;
  };
  const double buf0 = opt.state(0, "momentum_buffer").at<double>({0});
  EXPECT_THROW(opt.load_state_dict(without("step")), ValueError);
  EXPECT_THROW(opt.load_state_dict(without("lr")), ValueError);
  EXPECT_THROW(opt.load_state_dict(without("w.momentum_buffer")), ValueError);
  EXPECT_THROW(opt.load_state_dict(without("w.step")), ValueError);
  EXPECT_THROW(opt.load_state_dict(with("w.exp_avg", ops::zeros({2}, DType::F64))), ValueError);   // wrong rule
  EXPECT_THROW(opt.load_state_dict(with("v.momentum_buffer", ops::zeros({2}))), ValueError);       // unknown param
  EXPECT_THROW(opt.load_state_dict(with("w.momentum_buffer", ops::zeros({3}, DType::F64))), ShapeError);
  EXPECT_THROW(opt.load_state_dict(with("lr", Tensor::scalar<double>(-1.0))), ValueError);
  EXPECT_THROW(opt.load_state_dict(with("w.step", Tensor::scalar<int64_t>(0))), ValueError);
  EXPECT_THROW(opt.load_state_dict(with("step", ops::zeros({2}))), ShapeError);
  NamedTensors dup = good;
  dup.push_back(good[0]);
  EXPECT_THROW(opt.load_state_dict(dup), ValueError);
  try {
    opt.load_state_dict(with("v.momentum_buffer", ops::zeros({2})));
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'v.momentum_buffer'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(opt.state(0, "momentum_buffer").at<double>({0}), buf0);
  EXPECT_EQ(opt.param_step(0), 1);
  EXPECT_EQ(opt.lr(), 0.1);

  // f32 state converts to the parameter's f64.
  EXPECT_NO_THROW(opt.load_state_dict(with("w.momentum_buffer", ops::full({2}, 3.0, DType::F32))));
  EXPECT_EQ(opt.state(0, "momentum_buffer").at<double>({1}), 3.0);
  // A dict with no per-parameter state resets it.
  opt.load_state_dict(NamedTensors{{"step", Tensor::scalar<int64_t>(0)}, {"lr", Tensor::scalar<double>(0.2)}});
  EXPECT_FALSE(opt.state(0, "momentum_buffer").defined());
  EXPECT_EQ(opt.param_step(0), 0);
}

// optim's one layout (state_dict.h): the typed state and its names are one
// thing; what parameter servers and checkpoints hold goes through it.
TEST(OptimizerState, TypedStateAndNamesAreOneLayout) {
  Tensor w = param({1.0, 2.0}), b = param({3.0});
  auto opt = adam(NamedTensors{{"fc.weight", w}, {"fc.bias", b}}, {.lr = 0.1, .amsgrad = true});
  backward_quadratic({w}, 1.0);
  opt.step();
  const StateLayout layout = opt.state_layout();
  EXPECT_EQ(layout.rule, "adam");
  EXPECT_EQ(layout.slots, (std::vector<std::string>{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}));
  EXPECT_EQ(layout.params, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  const OptimizerState s = opt.state_snapshot();
  ASSERT_EQ(s.params.size(), 2u);
  EXPECT_EQ(s.params[0].step, 1);
  EXPECT_EQ(s.params[0].slots.size(), 3u);
  EXPECT_EQ(s.params[1].step, 0);  // never updated: no slots
  EXPECT_TRUE(s.params[1].slots.empty());
  const NamedTensors sd = to_state_dict(layout, s);
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"fc.weight.exp_avg", "fc.weight.exp_avg_sq", "fc.weight.max_exp_avg_sq",
                                            "fc.weight.step", "step", "lr"}));
  EXPECT_EQ(sd[0].second.data_ptr(), s.params[0].slots[0].data_ptr());  // shared, not copied
  const OptimizerState back = from_state_dict(layout, sd);
  EXPECT_EQ(back.step, 1);
  EXPECT_EQ(back.lr, 0.1);
  EXPECT_EQ(back.params[0].slots[2].to_vector<double>(), s.params[0].slots[2].to_vector<double>());

  // Without counters: the parameters' entries alone (tables only servers hold).
  StateLayout tables = layout;
  tables.counters = false;
  const NamedTensors entries = to_state_dict(tables, s);
  EXPECT_EQ(entries.size(), 4u);
  EXPECT_EQ(from_state_dict(tables, entries).params[0].step, 1);
  EXPECT_THROW(from_state_dict(tables, sd), ValueError);  // "step" is not one of its names

  // Misfits name what is wrong and change nothing.
  OptimizerState bad = s;
  bad.params[1].step = 2;  // updated, but no slots
  EXPECT_THROW(opt.load_state(bad), ValueError);
  bad = s;
  bad.params[0].slots[1] = ops::zeros({3}, DType::F64);
  EXPECT_THROW(opt.load_state(bad), ShapeError);
  bad = s;
  bad.params[0].slots[1] = ops::zeros({2}, DType::I64);
  EXPECT_THROW(opt.load_state(bad), TypeError);
  bad = s;
  bad.params.pop_back();
  EXPECT_THROW(opt.load_state(bad), ValueError);
  EXPECT_EQ(opt.param_step(0), 1);
  try {
    check_state(layout, OptimizerState{.params = {ParamState{.step = 1}, ParamState{}}});
    ADD_FAILURE() << "no slots accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'fc.weight'"), std::string::npos) << e.what();
  }
}

TEST(Optimizer, BadInput) {
  EXPECT_THROW(sgd(std::vector<Tensor>{}), ValueError);
  EXPECT_THROW(sgd({Tensor()}), ValueError);
  Tensor w = param({1.0});
  EXPECT_THROW(sgd({w, w}), ValueError);
  EXPECT_THROW(sgd(NamedTensors{{"a", w}, {"a", param({1.0})}}), ValueError);
  EXPECT_THROW(sgd({w}, {.lr = -1.0}), ValueError);
  EXPECT_THROW(sgd({Tensor::from_vector<int64_t>({1}, {1})}), TypeError);
  Tensor nonleaf = ops::mul(w, 2.0);
  EXPECT_THROW(sgd({nonleaf}), ValueError);
  Tensor base = param({1, 2, 3, 4});
  EXPECT_THROW(sgd({base.as_strided({2}, {2}, 0)}), ValueError);  // not contiguous

  auto opt = sgd({w, param({1.0, 2.0})}, {.lr = 0.1});
  EXPECT_THROW(opt.set_lr(-0.5), ValueError);
  EXPECT_THROW(opt.set_lr(INFINITY), ValueError);
  EXPECT_THROW(opt.state(5, "momentum_buffer"), IndexError);
  EXPECT_THROW(opt.state(0, "exp_avg"), ValueError);
  // A bad gradient on the second parameter leaves the first unchanged.
  w.set_grad(Tensor::from_vector<double>({1.0}, {1}));
  Tensor second = opt.params()[1];
  second.set_grad(Tensor::from_vector<double>({1.0, 2.0, 3.0}, {3}));
  EXPECT_THROW(opt.step(), ShapeError);
  EXPECT_EQ(w.at<double>({0}), 1.0);
  second.set_grad(Tensor::from_vector<float>({1.0f, 2.0f}, {2}));
  EXPECT_THROW(opt.step(), TypeError);
  EXPECT_EQ(opt.step_count(), 0);
}

}  // namespace
}  // namespace loom::optim
