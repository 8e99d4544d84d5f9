// LR schedules: values by the torch.optim.lr_scheduler formulas, and the scheduler.
#include "loom/optim/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "loom/optim/optimizer.h"

namespace loom::optim {
namespace {

TEST(Schedule, StepLR) {
  StepLR s({.base_lr = 0.1, .step_size = 3, .gamma = 0.5});
  const double expected[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025};
  for (int i = 0; i < 7; ++i) EXPECT_DOUBLE_EQ(s.lr_at(i), expected[i]) << i;
}

TEST(Schedule, CosineAnnealing) {
  CosineAnnealingLR s({.base_lr = 1.0, .t_max = 4, .eta_min = 0.1});
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(2), 0.55);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2);
  EXPECT_NEAR(s.lr_at(4), 0.1, 1e-15);
  EXPECT_NEAR(s.lr_at(6), 0.55, 1e-15);  // past t_max it rises again, as in torch
  EXPECT_NEAR(s.lr_at(8), 1.0, 1e-15);
}

TEST(Schedule, LinearWarmupThenInner) {
  auto s = linear_warmup(cosine_annealing({.base_lr = 0.2, .t_max = 10}), {.warmup_steps = 4, .start_factor = 0.5});
  EXPECT_DOUBLE_EQ(s->lr_at(0), 0.1);
  EXPECT_DOUBLE_EQ(s->lr_at(1), 0.125);
  EXPECT_DOUBLE_EQ(s->lr_at(2), 0.15);
  EXPECT_DOUBLE_EQ(s->lr_at(3), 0.175);
  EXPECT_DOUBLE_EQ(s->lr_at(4), 0.2);  // the inner schedule's step 0
  EXPECT_DOUBLE_EQ(s->lr_at(9), 0.1);  // inner step 5 of 10: halfway
  auto from_zero = linear_warmup(step_lr({.base_lr = 1.0, .step_size = 2, .gamma = 0.1}), {.warmup_steps = 2});
  EXPECT_DOUBLE_EQ(from_zero->lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(from_zero->lr_at(1), 0.5);
  EXPECT_DOUBLE_EQ(from_zero->lr_at(4), 0.1);
  auto none = linear_warmup(step_lr({.base_lr = 1.0}), {.warmup_steps = 0});
  EXPECT_DOUBLE_EQ(none->lr_at(0), 1.0);
}

TEST(Schedule, SchedulerSetsOptimizerLr) {
  Tensor w = Tensor::from_vector<double>({1.0}, {1});
  w.set_requires_grad(true);
  auto opt = sgd({w}, {.lr = 123.0});
  LRScheduler sched(opt, step_lr({.base_lr = 0.1, .step_size = 2, .gamma = 0.1}));
  EXPECT_DOUBLE_EQ(opt.lr(), 0.1);
  sched.step();
  EXPECT_DOUBLE_EQ(opt.lr(), 0.1);
  sched.step();
  EXPECT_DOUBLE_EQ(opt.lr(), 0.01);
  EXPECT_EQ(sched.last_step(), 2);
  // Resuming at a saved step gives the same lr.
  LRScheduler resumed(opt, step_lr({.base_lr = 0.1, .step_size = 2, .gamma = 0.1}), /*last_step=*/5);
  EXPECT_DOUBLE_EQ(opt.lr(), 0.001);
}

TEST(Schedule, BadInput) {
  EXPECT_THROW(StepLR({.step_size = 0}), ValueError);
  EXPECT_THROW(StepLR({.gamma = -1}), ValueError);
  EXPECT_THROW(CosineAnnealingLR({.t_max = 0}), ValueError);
  EXPECT_THROW(linear_warmup(nullptr, {.warmup_steps = 2}), ValueError);
  EXPECT_THROW(linear_warmup(step_lr({}), {.warmup_steps = 2, .start_factor = 1.5}), ValueError);
  EXPECT_THROW(linear_warmup(step_lr({}), {.warmup_steps = -1}), ValueError);
  EXPECT_THROW(step_lr({})->lr_at(-1), ValueError);
  Tensor w = Tensor::from_vector<double>({1.0}, {1});
  auto opt = sgd({w}, {});
  EXPECT_THROW(LRScheduler(opt, nullptr), ValueError);
  EXPECT_THROW(LRScheduler(opt, step_lr({}), -1), ValueError);
}

}  // namespace
}  // namespace loom::optim
