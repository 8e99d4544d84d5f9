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
#pragma once

#include "loom/core/tensor.h"

namespace loom::autograd {

using core::GradHook;
using core::NoGradGuard;
using core::Tensor;

// Backpropagates from `root`. `grad` defaults to ones for a one-element root.
// Gradients add to existing `.grad` (accumulation across calls); the graph is
// freed afterwards unless retain_graph.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

// Calls `hook(grad)` each time backward finishes `leaf`'s gradient.
void register_hook(Tensor& leaf, GradHook hook);

// Sets a leaf's gradient to zero in place (keeps the buffer), or drops it.
void zero_grad(Tensor& leaf, bool set_to_none = false);

}  // namespace loom::autograd
