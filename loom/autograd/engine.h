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
//   autograd::DeferredWeights later;                   // a split backward (zero-bubble pipelines):
//   autograd::backward(loss, {.defer_weights = &later, .now = {x}}); // x's gradient now, other leaves' not
//   autograd::backward_weights(later);                 //   ... the leaves' (parameters') gradients
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

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
// and zeroing `.grad` again would cost two more passes. A leaf that got no
// gradient in the pass although its edges were run (each use handed its
// gradient elsewhere: ops::TakeWeightFactors) is offered an undefined `grad`:
// the leaf is final (the return value is ignored).
using GradSink = std::function<bool(const Tensor& leaf, const Tensor& grad)>;

// The second half of a split backward: the nodes that feed leaves, with the
// gradient each received, in the order backward ran them.
struct DeferredWeights {
  struct Work {
    std::shared_ptr<core::Node> node;
    Tensor grad;     // what the node received
    uint64_t edges;  // its edges held back (bit i: next[i])
  };
  std::vector<Work> nodes;
  GradSink sink;
  bool retain_graph = false;
};

struct BackwardOptions {
  Tensor grad;  // defaults to ones for a one-element root
  bool retain_graph = false;
  GradSink sink;  // optional
  // Split backward: a node with edges to leaves computes only its other
  // gradients now and is kept (with its saved tensors) in `defer_weights`;
  // backward_weights computes the leaves' later. The results are the
  // unsplit backward's, bit for bit (each op computes each input's gradient
  // the same way whichever others it is asked for), and a pipeline stage can
  // send its input gradient before doing its weight-gradient work.
  DeferredWeights* defer_weights = nullptr;
  // Leaves whose gradients a split backward still computes now (a pipeline
  // stage's input, which the previous stage waits for).
  std::vector<Tensor> now;
};
void backward(const Tensor& root, const BackwardOptions& options);

// The leaves' gradients held back by backward(.defer_weights): each node's
// leaf gradients, summed per leaf in the order backward would have, into
// `.grad` (or the sink) with hooks; then the nodes are released. Empties it.
void backward_weights(DeferredWeights& deferred);

// Calls `hook(grad)` each time backward finishes `leaf`'s gradient.
void register_hook(Tensor& leaf, GradHook hook);

// Sets a leaf's gradient to zero in place (keeps the buffer), or drops it.
void zero_grad(Tensor& leaf, bool set_to_none = false);

}  // namespace loom::autograd
