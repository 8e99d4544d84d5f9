// Optimizer trajectories and LR schedules against torch.optim (fixtures made
// by make_golden.py; the problem is the closed form described there).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>

#include "loom/optim/optim.h"
#include "tests/golden/fixture.h"

namespace loom::optim {
namespace {

using golden::Fixture;
using golden::WorstError;

constexpr int kN = 10;
constexpr int kSteps = 20;
// Tolerance |ours - torch| <= tol * max(|torch|, scale).
// f64: tol 1e-6 and scale 1e-12, a relative error (they agree to ~1e-14).
// f32: tol 1e-5 and scale = the largest |w| of that step, since an element
// passing near zero carries the absolute rounding error of its neighbours
// (a few f32 ulps of |w| ~ 1).
constexpr double kTolF64 = 1e-6;
constexpr double kTolF32 = 1e-5;
constexpr double kFloor = 1e-12;

std::vector<double> w0() {
  std::vector<double> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = std::sin(0.7 * i + 0.3);
  return v;
}
std::vector<double> target() {
  std::vector<double> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = 0.5 * std::cos(0.45 * i);
  return v;
}
std::vector<double> coeff() {
  std::vector<double> v(kN);
  for (int i = 0; i < kN; ++i) v[i] = 0.5 + 0.15 * i;
  return v;
}

void check_problem(const Fixture& fx) {
  auto check = [&](const std::vector<double>& ours, const char* name) {
    const auto& theirs = fx.at(name).values;
    ASSERT_EQ(theirs.size(), ours.size()) << name;
    for (size_t i = 0; i < ours.size(); ++i) EXPECT_NEAR(ours[i], theirs[i], 1e-15) << name << "[" << i << "]";
  };
  check(w0(), "w0");
  check(target(), "target");
  check(coeff(), "c");
}

using MakeOptimizer = std::function<Optimizer(std::vector<Tensor>, const Fixture&, const std::string&)>;
using MakeSchedule = std::function<std::shared_ptr<const Schedule>(double base_lr)>;

// Runs one case: 20 steps of grad = c (w - target) + 0.1 sin(w), computed in
// f64 and cast to the parameter's dtype, as make_golden.py does.
double run_case(const Fixture& fx, const std::string& name, const MakeOptimizer& make,
                const MakeSchedule& schedule = nullptr) {
  const bool f32 = fx.scalar(name + ".f32") != 0.0;
  const auto dtype = f32 ? core::DType::F32 : core::DType::F64;
  std::vector<double> w_init = w0(), t = target(), c = coeff();
  Tensor w = f32 ? Tensor::from_vector<float>(std::vector<float>(w_init.begin(), w_init.end()), {kN})
                 : Tensor::from_vector<double>(w_init, {kN});
  w.set_requires_grad(true);
  w.set_grad(Tensor::empty({kN}, dtype));
  Optimizer opt = make({w}, fx, name);
  std::unique_ptr<LRScheduler> sched;
  if (schedule) sched = std::make_unique<LRScheduler>(opt, schedule(fx.scalar(name + ".lr")));
  WorstError worst;
  const double tol = f32 ? kTolF32 : kTolF64;
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<double> wv = w.to_vector<double>();
    core::visit_float_dtype(dtype, "golden", [&]<class T>() {
      T* g = w.grad().data<T>();
      for (int i = 0; i < kN; ++i) g[i] = static_cast<T>(c[i] * (wv[i] - t[i]) + 0.1 * std::sin(wv[i]));
    });
    if (sched) {
      const double torch_lr = fx.at(name + ".lrs").values[step - 1];
      EXPECT_NEAR(opt.lr(), torch_lr, 1e-12 * torch_lr) << name << " lr at step " << step;
    }
    opt.step();
    if (sched) sched->step();
    const auto& expected = fx.at(name + ".step" + std::to_string(step)).values;
    std::vector<double> got = w.to_vector<double>();
    double scale = kFloor;
    if (f32) {
      for (double v : expected) scale = std::max(scale, std::abs(v));
    }
    for (int i = 0; i < kN; ++i) {
      EXPECT_LE(std::abs(got[i] - expected[i]), tol * std::max(std::abs(expected[i]), scale))
          << name << " step " << step << " element " << i << ": " << got[i] << " vs torch " << expected[i];
      worst.update(got[i], expected[i], scale, "step " + std::to_string(step) + " element " + std::to_string(i));
    }
  }
  std::cout << "[golden] " << name << (f32 ? " (f32)" : " (f64)") << ": worst |diff| / max(|torch|, scale) " << worst.rel << " at "
            << worst.where << "\n";
  return worst.rel;
}

Optimizer make_sgd(std::vector<Tensor> params, const Fixture& fx, const std::string& name) {
  return sgd(std::move(params), {.lr = fx.scalar(name + ".lr"),
                                 .momentum = fx.scalar(name + ".momentum"),
                                 .dampening = fx.scalar(name + ".dampening"),
                                 .weight_decay = fx.scalar(name + ".weight_decay"),
                                 .nesterov = fx.scalar(name + ".nesterov") != 0.0});
}

Optimizer make_adam(std::vector<Tensor> params, const Fixture& fx, const std::string& name) {
  return adam(std::move(params), {.lr = fx.scalar(name + ".lr"),
                                  .betas = {fx.scalar(name + ".beta1"), fx.scalar(name + ".beta2")},
                                  .eps = fx.scalar(name + ".eps"),
                                  .weight_decay = fx.scalar(name + ".weight_decay"),
                                  .amsgrad = fx.scalar(name + ".amsgrad") != 0.0});
}

Optimizer make_adamw(std::vector<Tensor> params, const Fixture& fx, const std::string& name) {
  return adamw(std::move(params), {.lr = fx.scalar(name + ".lr"),
                                   .betas = {fx.scalar(name + ".beta1"), fx.scalar(name + ".beta2")},
                                   .eps = fx.scalar(name + ".eps"),
                                   .weight_decay = fx.scalar(name + ".weight_decay"),
                                   .amsgrad = fx.scalar(name + ".amsgrad") != 0.0});
}

TEST(GoldenOptim, Sgd) {
  Fixture fx(LOOM_TEST_DATA_DIR "/golden/optim_sgd.txt");
  check_problem(fx);
  for (const char* name : {"momentum", "nesterov_wd", "dampening_wd", "plain", "momentum_f32"}) {
    run_case(fx, name, make_sgd);
  }
  // SequentialLR([LinearLR(0.25, total_iters=5), StepLR(4, 0.5)], milestones=[5]).
  run_case(fx, "warmup_step", make_sgd, [](double lr) {
    return linear_warmup(step_lr({.base_lr = lr, .step_size = 4, .gamma = 0.5}),
                         {.warmup_steps = 5, .start_factor = 0.25});
  });
}

TEST(GoldenOptim, Adam) {
  Fixture fx(LOOM_TEST_DATA_DIR "/golden/optim_adam.txt");
  check_problem(fx);
  for (const char* name : {"default", "l2_amsgrad", "default_f32"}) run_case(fx, name, make_adam);
}

TEST(GoldenOptim, AdamW) {
  Fixture fx(LOOM_TEST_DATA_DIR "/golden/optim_adamw.txt");
  check_problem(fx);
  for (const char* name : {"wd", "amsgrad"}) run_case(fx, name, make_adamw);
  // CosineAnnealingLR(T_max=20, eta_min=0.001), stepped after every optimizer step.
  run_case(fx, "cosine", make_adamw,
           [](double lr) { return cosine_annealing({.base_lr = lr, .t_max = 20, .eta_min = 0.001}); });
}

TEST(GoldenOptim, Schedules) {
  Fixture fx(LOOM_TEST_DATA_DIR "/golden/optim_schedules.txt");
  auto check = [&](const char* name, const Schedule& s) {
    const auto& expected = fx.at(name).values;
    WorstError worst;
    for (size_t step = 0; step < expected.size(); ++step) {
      const double lr = s.lr_at(static_cast<int64_t>(step));
      EXPECT_LE(std::abs(lr - expected[step]), 1e-12 * std::abs(expected[step])) << name << " step " << step;
      worst.update(lr, expected[step], kFloor, "step " + std::to_string(step));
    }
    std::cout << "[golden] schedule " << name << ": worst |diff| / max(|torch|, scale) " << worst.rel << " at " << worst.where
              << "\n";
  };
  check("step_lr", StepLR({.base_lr = 0.2, .step_size = 7, .gamma = 0.3}));
  check("cosine", CosineAnnealingLR({.base_lr = 0.5, .t_max = 15, .eta_min = 0.01}));
  check("warmup_cosine", LinearWarmup(cosine_annealing({.base_lr = 0.3, .t_max = 30}),
                                      {.warmup_steps = 8, .start_factor = 0.1}));
}

}  // namespace
}  // namespace loom::optim
