// Learning-rate schedules: pure functions of the step, plus a scheduler that
// writes the value into an Optimizer. Formulas are torch.optim.lr_scheduler's.
//
//   // given: optim::Optimizer& opt
//   auto cosine = optim::cosine_annealing({.base_lr = 0.1, .t_max = 1000});
//   auto sched = optim::linear_warmup(cosine, {.warmup_steps = 100});   // ramps up, then cosine
//   double lr = sched->lr_at(250);                                       // no state involved
//
//   optim::LRScheduler scheduler(opt, sched);   // sets opt's lr to lr_at(0)
//   for (int64_t step = 0; step < 1000; ++step) { ...; opt.step(); scheduler.step(); }   // lr_at(1), lr_at(2), ...
#pragma once

#include <cstdint>
#include <memory>

namespace loom::optim {

class Optimizer;

class Schedule {
 public:
  virtual ~Schedule() = default;
  // The learning rate for `step` >= 0 (0 is the start of training).
  virtual double lr_at(int64_t step) const = 0;
};

// base_lr * gamma^floor(step / step_size)          (torch StepLR)
struct StepLROptions {
  double base_lr = 1e-3;
  int64_t step_size = 1;
  double gamma = 0.1;
};

// eta_min + (base_lr - eta_min) * (1 + cos(pi * step / t_max)) / 2
// (torch CosineAnnealingLR; past t_max it rises again, as torch's does)
struct CosineAnnealingOptions {
  double base_lr = 1e-3;
  int64_t t_max = 1;
  double eta_min = 0.0;
};

// For step < warmup_steps: after(0) * (start_factor + (1 - start_factor) * step / warmup_steps);
// then after(step - warmup_steps). Equals torch SequentialLR([LinearLR(start_factor, 1,
// warmup_steps), after], milestones=[warmup_steps]).
struct LinearWarmupOptions {
  int64_t warmup_steps = 0;
  double start_factor = 0.0;
};

class StepLR final : public Schedule {
 public:
  explicit StepLR(const StepLROptions& o);
  double lr_at(int64_t step) const override;

 private:
  StepLROptions o_;
};

class CosineAnnealingLR final : public Schedule {
 public:
  explicit CosineAnnealingLR(const CosineAnnealingOptions& o);
  double lr_at(int64_t step) const override;

 private:
  CosineAnnealingOptions o_;
};

class LinearWarmup final : public Schedule {
 public:
  LinearWarmup(std::shared_ptr<const Schedule> after, const LinearWarmupOptions& o);
  double lr_at(int64_t step) const override;

 private:
  std::shared_ptr<const Schedule> after_;
  LinearWarmupOptions o_;
};

std::shared_ptr<const Schedule> step_lr(const StepLROptions& o);
std::shared_ptr<const Schedule> cosine_annealing(const CosineAnnealingOptions& o);
std::shared_ptr<const Schedule> linear_warmup(std::shared_ptr<const Schedule> after, const LinearWarmupOptions& o);

// Counts steps and sets the optimizer's lr from a schedule. Keeps a pointer to
// `opt`, which must outlive it and stay where it is (not be moved from).
// To resume, pass the saved last_step().
class LRScheduler {
 public:
  LRScheduler(Optimizer& opt, std::shared_ptr<const Schedule> schedule, int64_t last_step = 0);
  // Advances one step and sets the optimizer's lr to lr_at(last_step()).
  void step();
  int64_t last_step() const { return last_step_; }
  double lr() const { return schedule_->lr_at(last_step_); }
  const Schedule& schedule() const { return *schedule_; }

 private:
  Optimizer* opt_;
  std::shared_ptr<const Schedule> schedule_;
  int64_t last_step_;
};

}  // namespace loom::optim
