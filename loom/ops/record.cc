#include "loom/ops/record.h"

namespace loom::ops {
namespace {

class FnNode final : public core::Node {
 public:
  FnNode(const char* name, BackwardFn fn, GradMask need) : name_(name), fn_(std::move(fn)), need_(need) {}
  std::vector<core::Tensor> apply(const core::Tensor& grad) override {
    LOOM_CHECK(fn_ != nullptr,
               "backward: {} was already run and its saved tensors freed; pass retain_graph=true to the first "
               "backward to run it twice",
               name_);
    return fn_(grad, need_);
  }
  std::vector<core::Tensor> apply_only(const core::Tensor& grad, uint64_t only) override {
    LOOM_CHECK(fn_ != nullptr, "backward: {} was already run and its saved tensors freed", name_);
    return fn_(grad, GradMask{need_.bits & only});
  }
  const char* name() const override { return name_; }
  void release_saved() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
  GradMask need_;
};

}  // namespace

bool any_requires_grad(std::initializer_list<const core::Tensor*> inputs) {
  if (!core::GradMode::is_enabled()) return false;
  for (const auto* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

bool any_requires_grad(const std::vector<core::Tensor>& inputs) {
  if (!core::GradMode::is_enabled()) return false;
  for (const auto& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

void record(const char* name, const std::vector<core::Tensor>& inputs, core::Tensor& out, BackwardFn fn) {
  LOOM_CHECK(inputs.size() <= 64, "{}: at most 64 differentiable inputs, got {}", name, inputs.size());
  GradMask need;
  std::vector<core::Edge> edges(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    need.bits |= uint64_t{1} << i;
    if (t.grad_fn()) {
      edges[i].fn = t.grad_fn();
    } else {
      edges[i].leaf = t.impl_ptr();
    }
  }
  auto node = std::make_shared<FnNode>(name, std::move(fn), need);
  node->next = std::move(edges);
  node->sequence_nr = core::next_sequence_nr();
  auto& meta = out.autograd_meta();
  meta.requires_grad = true;
  meta.grad_fn = std::move(node);
}

}  // namespace loom::ops
