// Update rules on flat buffers: the one place an optimizer's arithmetic lives.
// A rule updates a contiguous span of weights from its gradients and its
// per-element state slots. It is element-wise, so the same rule runs in a
// local Optimizer, on a parameter-server shard and on a sharded (ZeRO-style)
// optimizer state: updating [0, n) in one call or in pieces gives the same bits.
//
//   // given: float* w, const float* g, size_t n
//   optim::Adam rule({.betas = {0.9, 0.999}});                // rule.state_names(): exp_avg, exp_avg_sq
//   std::vector<float> m(n), v(n);                             // zeroed before the first step
//   std::array<float*, 2> state{m.data(), v.data()};
//   rule.step(std::span(w, n), std::span(g, n), state, {.step = 1, .lr = 1e-3});
//
// `step` counts the updates of these weights, including this one (1 first):
// SGD's momentum buffer starts as the first gradient, Adam's bias corrections
// use it. The caller keeps it (Optimizer does, per parameter).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::optim {

using core::Tensor;

// Most per-element state slots a rule may have (callers keep them on the stack).
inline constexpr size_t kMaxStateSlots = 4;

struct StepInfo {
  int64_t step = 1;  // 1-based count of updates of these weights, this one included
  double lr = 0.0;
};

class UpdateRule {
 public:
  virtual ~UpdateRule() = default;

  virtual std::string_view name() const = 0;
  // Names of the per-element state slots, in the order `state` is passed
  // (e.g. {"exp_avg", "exp_avg_sq"}); each slot has one value per weight and
  // is zero before the first step.
  virtual const std::vector<std::string>& state_names() const = 0;
  size_t num_state_slots() const { return state_names().size(); }
  virtual std::unique_ptr<UpdateRule> clone() const = 0;

  // Updates `weights` in place. `grads` and every `state[k]` cover the same
  // numel as `weights`; state.size() == num_state_slots(). Fused single pass,
  // split over threads when large; allocates nothing.
  void step(std::span<float> weights, std::span<const float> grads, std::span<float* const> state,
            const StepInfo& info) const;
  void step(std::span<double> weights, std::span<const double> grads, std::span<double* const> state,
            const StepInfo& info) const;
  // The same on tensors (CPU, contiguous, one float dtype shared by all):
  // weights' data is updated in place, no autograd record.
  void step(const Tensor& weights, const Tensor& grads, std::span<const Tensor> state, const StepInfo& info) const;

 protected:
  // [lo, hi) of one step; called from several threads on disjoint ranges.
  virtual void update(float* w, const float* g, float* const* state, int64_t lo, int64_t hi,
                      const StepInfo& info) const = 0;
  virtual void update(double* w, const double* g, double* const* state, int64_t lo, int64_t hi,
                      const StepInfo& info) const = 0;

 private:
  template <class T>
  void run(std::span<T> weights, std::span<const T> grads, std::span<T* const> state, const StepInfo& info) const;
};

// ---- the rules (formulas as torch.optim documents them) ----

// SGD with momentum, dampening, Nesterov and L2 weight decay:
//   d = g + weight_decay * w
//   buf = d (first step) | momentum * buf + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf
//   w -= lr * d
// State: {"momentum_buffer"} when momentum != 0, else none.
struct SgdOptions {
  double lr = 1e-3;  // initial lr for an Optimizer; rules take lr per step
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd final : public UpdateRule {
 public:
  explicit Sgd(const SgdOptions& o = {});
  std::string_view name() const override { return "sgd"; }
  const std::vector<std::string>& state_names() const override { return names_; }
  std::unique_ptr<UpdateRule> clone() const override { return std::make_unique<Sgd>(*this); }
  const SgdOptions& options() const { return o_; }

 protected:
  void update(float* w, const float* g, float* const* state, int64_t lo, int64_t hi,
              const StepInfo& info) const override;
  void update(double* w, const double* g, double* const* state, int64_t lo, int64_t hi,
              const StepInfo& info) const override;

 private:
  SgdOptions o_;
  std::vector<std::string> names_;
};

// Adam (L2 weight decay added to the gradient) and AdamW (decoupled decay,
// w *= 1 - lr * weight_decay), optionally AMSGrad:
//   g += weight_decay * w                          (Adam only)
//   w *= 1 - lr * weight_decay                     (AdamW only)
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
//   vmax = max(vmax, v), used instead of v          (amsgrad)
//   w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State: {"exp_avg", "exp_avg_sq"} (+ "max_exp_avg_sq" with amsgrad).
struct Betas {
  double beta1 = 0.9;
  double beta2 = 0.999;
};

struct AdamOptions {
  double lr = 1e-3;
  Betas betas = {};
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
};

struct AdamWOptions {
  double lr = 1e-3;
  Betas betas = {};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

class Adam : public UpdateRule {
 public:
  explicit Adam(const AdamOptions& o = {});
  std::string_view name() const override { return decoupled_ ? "adamw" : "adam"; }
  const std::vector<std::string>& state_names() const override { return names_; }
  std::unique_ptr<UpdateRule> clone() const override { return std::make_unique<Adam>(*this); }
  bool decoupled_weight_decay() const { return decoupled_; }

 protected:
  Adam(const Betas& betas, double eps, double weight_decay, bool amsgrad, bool decoupled);
  void update(float* w, const float* g, float* const* state, int64_t lo, int64_t hi,
              const StepInfo& info) const override;
  void update(double* w, const double* g, double* const* state, int64_t lo, int64_t hi,
              const StepInfo& info) const override;

 private:
  template <class T>
  void update_impl(T* w, const T* g, T* const* state, int64_t lo, int64_t hi, const StepInfo& info) const;

  Betas betas_;
  double eps_;
  double weight_decay_;
  bool amsgrad_;
  bool decoupled_;  // AdamW
  std::vector<std::string> names_;
};

// The same arithmetic as Adam with the weight decay decoupled from the gradient.
class AdamW final : public Adam {
 public:
  explicit AdamW(const AdamWOptions& o = {});
  std::unique_ptr<UpdateRule> clone() const override { return std::make_unique<AdamW>(*this); }
};

}  // namespace loom::optim
