#include "loom/optim/schedule.h"

#include <cmath>
#include <numbers>

#include "loom/core/error.h"
#include "loom/optim/optimizer.h"

namespace loom::optim {
namespace {

void check_step(int64_t step, const char* who) {
  LOOM_CHECK(step >= 0, "{}: step must be >= 0, got {}", who, step);
}

}  // namespace

StepLR::StepLR(const StepLROptions& o) : o_(o) {
  LOOM_CHECK(o.base_lr >= 0.0, "StepLR: base_lr must be >= 0, got {}", o.base_lr);
  LOOM_CHECK(o.step_size >= 1, "StepLR: step_size must be >= 1, got {}", o.step_size);
  LOOM_CHECK(o.gamma >= 0.0, "StepLR: gamma must be >= 0, got {}", o.gamma);
}

double StepLR::lr_at(int64_t step) const {
  check_step(step, "StepLR");
  return o_.base_lr * std::pow(o_.gamma, static_cast<double>(step / o_.step_size));
}

CosineAnnealingLR::CosineAnnealingLR(const CosineAnnealingOptions& o) : o_(o) {
  LOOM_CHECK(o.base_lr >= 0.0, "CosineAnnealingLR: base_lr must be >= 0, got {}", o.base_lr);
  LOOM_CHECK(o.t_max >= 1, "CosineAnnealingLR: t_max must be >= 1, got {}", o.t_max);
  LOOM_CHECK(o.eta_min >= 0.0, "CosineAnnealingLR: eta_min must be >= 0, got {}", o.eta_min);
}

double CosineAnnealingLR::lr_at(int64_t step) const {
  check_step(step, "CosineAnnealingLR");
  const double phase = std::numbers::pi * static_cast<double>(step) / static_cast<double>(o_.t_max);
  return o_.eta_min + (o_.base_lr - o_.eta_min) * (1.0 + std::cos(phase)) / 2.0;
}

LinearWarmup::LinearWarmup(std::shared_ptr<const Schedule> after, const LinearWarmupOptions& o)
    : after_(std::move(after)), o_(o) {
  LOOM_CHECK(after_ != nullptr, "LinearWarmup: no schedule to warm up into");
  LOOM_CHECK(o.warmup_steps >= 0, "LinearWarmup: warmup_steps must be >= 0, got {}", o.warmup_steps);
  LOOM_CHECK(o.start_factor >= 0.0 && o.start_factor <= 1.0, "LinearWarmup: start_factor must be in [0, 1], got {}",
             o.start_factor);
}

double LinearWarmup::lr_at(int64_t step) const {
  check_step(step, "LinearWarmup");
  if (step >= o_.warmup_steps) return after_->lr_at(step - o_.warmup_steps);
  const double frac = static_cast<double>(step) / static_cast<double>(o_.warmup_steps);
  return after_->lr_at(0) * (o_.start_factor + (1.0 - o_.start_factor) * frac);
}

std::shared_ptr<const Schedule> step_lr(const StepLROptions& o) { return std::make_shared<StepLR>(o); }
std::shared_ptr<const Schedule> cosine_annealing(const CosineAnnealingOptions& o) {
  return std::make_shared<CosineAnnealingLR>(o);
}
std::shared_ptr<const Schedule> linear_warmup(std::shared_ptr<const Schedule> after, const LinearWarmupOptions& o) {
  return std::make_shared<LinearWarmup>(std::move(after), o);
}

LRScheduler::LRScheduler(Optimizer& opt, std::shared_ptr<const Schedule> schedule, int64_t last_step)
    : opt_(&opt), schedule_(std::move(schedule)), last_step_(last_step) {
  LOOM_CHECK(schedule_ != nullptr, "LRScheduler: no schedule");
  LOOM_CHECK(last_step >= 0, "LRScheduler: last_step must be >= 0, got {}", last_step);
  opt_->set_lr(schedule_->lr_at(last_step_));
}

void LRScheduler::step() {
  ++last_step_;
  opt_->set_lr(schedule_->lr_at(last_step_));
}

}  // namespace loom::optim
