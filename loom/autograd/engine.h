// The backward engine: runs the recorded tape from a root in reverse
// topological order (latest op first) and accumulates into leaves' `.grad`.
// A leaf's hooks fire as soon as its gradient for this pass is final, while
// the rest of backward is still running — DataParallel starts all-reducing
// gradient buckets from there.
//
//   // given: Tensor x, Tensor y, Tensor w
//   Tensor loss = ops::mean(ops::square(ops::matmul(x, w) - y));   // w.requires_grad()
//   autograd::backward(loss);                          // dloss/dleaf into leaf.grad()
//   autograd::register_hook(w, [](const Tensor& g) { ... });
//   { autograd::NoGradGuard no_grad; ... }             // ops record nothing here
//   autograd::backward(loss, {.sink = [&](const Tensor& leaf, const Tensor& g) { ...; return true; }});
#pragma once

#include <functional>

#include "loom/core/tensor.h"

namespace loom::autograd {

using core::GradHook;
using core::NoGradGuard;
using core::Tensor;

// Backpropagates from `root`. `grad` defaults to ones for a one-element root.
// Gradients add to existing `.grad` (accumulation across calls); the graph is
// freed afterwards unless retain_graph.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

// Offered each leaf's whole gradient of the pass (read-only: it may be shared)
// when it is final, before it is added into `.grad`. Returning true takes it:
// `.grad` is left as it is and the leaf's hooks do not fire. For a consumer
// that folds every pass's gradient into its own accumulator (deterministic
// DataParallel): it reads the gradient once, where adding it into `.grad`
// and zeroing `.grad` again would cost two more passes.
using GradSink = std::function<bool(const Tensor& leaf, const Tensor& grad)>;

struct BackwardOptions {
  Tensor grad;  // defaults to ones for a one-element root
  bool retain_graph = false;
  GradSink sink;  // optional
};
void backward(const Tensor& root, const BackwardOptions& options);

// Calls `hook(grad)` each time backward finishes `leaf`'s gradient.
void register_hook(Tensor& leaf, GradHook hook);

// Sets a leaf's gradient to zero in place (keeps the buffer), or drops it.
void zero_grad(Tensor& leaf, bool set_to_none = false);

}  // namespace loom::autograd
