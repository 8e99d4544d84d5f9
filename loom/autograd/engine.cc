#include "loom/autograd/engine.h"

#include <queue>
#include <unordered_set>
#include <unordered_map>

#include "loom/ops/backend.h"
#include "loom/ops/creation.h"

namespace loom::autograd {
namespace {

using core::Node;
using core::TensorImpl;

struct LeafState {
  int pending = 0;  // edges still to deliver
  Tensor sum;       // gradient gathered so far in this pass
};

// Offers `g` to the sink; unless it takes it, adds `g` into the leaf's .grad
// (in place when a buffer exists) and fires hooks.
void finish_leaf(const std::shared_ptr<TensorImpl>& impl, const Tensor& g, const GradSink& sink) {
  Tensor leaf(impl);
  auto& meta = leaf.autograd_meta();
  LOOM_CHECK_T(ShapeError, g.shape() == leaf.shape(), "backward: gradient shape {} does not match leaf shape {}",
               core::to_string(g.shape()), core::to_string(leaf.shape()));
  if (sink && sink(leaf, g)) return;  // taken: not added into .grad, no hooks
  const auto& be = ops::backend(leaf.device());
  if (!meta.grad.defined()) {
    // A fresh buffer: the incoming tensor may be shared with other leaves.
    meta.grad = Tensor::empty(leaf.shape(), leaf.dtype(), leaf.device());
    be.copy(g, meta.grad);
  } else {
    LOOM_CHECK_T(ShapeError, meta.grad.shape() == leaf.shape(), "backward: existing .grad has shape {} but leaf has {}",
                 core::to_string(meta.grad.shape()), core::to_string(leaf.shape()));
    Tensor gg = g.dtype() == leaf.dtype() ? g : Tensor();
    if (!gg.defined()) {
      gg = Tensor::empty(g.shape(), leaf.dtype(), g.device());
      be.copy(g, gg);
    }
    be.binary(ops::BinaryOp::Add, meta.grad, gg, meta.grad);
  }
  for (const auto& hook : meta.hooks) hook(meta.grad);
}

// A leaf whose every edge has delivered: its gradient, or (nothing arrived:
// each use took its gradient elsewhere, ops::TakeWeightFactors) an undefined
// one offered to the sink, which learns that the leaf is final.
void finish_leaf_or_tell(const std::shared_ptr<TensorImpl>& impl, LeafState& st, const GradSink& sink) {
  if (st.sum.defined()) finish_leaf(impl, st.sum, sink);
  else if (sink) sink(Tensor(impl), Tensor());
  st.sum = Tensor();
}

Tensor add_grads(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  ops::backend(a.device()).binary(ops::BinaryOp::Add, a, b, out);
  return out;
}

// Bit i set for each edge of `n` to a leaf that is not one of `now`.
uint64_t leaf_edges(const Node& n, const std::unordered_set<TensorImpl*>& now = {}) {
  uint64_t bits = 0;
  for (size_t i = 0; i < n.next.size() && i < 64; ++i) {
    if (n.next[i].leaf && !now.contains(n.next[i].leaf.get())) bits |= uint64_t{1} << i;
  }
  return bits;
}

// The gradient backward starts from: `grad`, or ones for a one-element root.
Tensor root_gradient(const Tensor& root, const Tensor& grad) {
  LOOM_CHECK(root.defined(), "backward: undefined tensor");
  LOOM_CHECK(root.requires_grad(), "backward: the tensor does not require grad (no parameter in its history "
                                   "requires grad, or it was computed under NoGradGuard)");
  if (!grad.defined()) {
    LOOM_CHECK_T(ShapeError, root.numel() == 1,
                 "backward: implicit gradient needs a one-element tensor, got shape {}; pass `grad`",
                 core::to_string(root.shape()));
    return ops::ones(root.shape(), root.dtype(), root.device());
  }
  LOOM_CHECK_T(ShapeError, grad.shape() == root.shape(), "backward: grad shape {} differs from tensor shape {}",
               core::to_string(grad.shape()), core::to_string(root.shape()));
  return grad;
}

// For every node and leaf reachable from the root, how many edges lead to it
// (and, for a split backward, each node's owner, to keep the held-back ones).
struct Tape {
  std::unordered_map<Node*, int> deps;
  std::unordered_map<TensorImpl*, LeafState> leaves;
  std::unordered_map<Node*, std::shared_ptr<Node>> owner;
};

Tape count_edges(const std::shared_ptr<Node>& root, bool owners) {
  Tape tape;
  std::vector<Node*> stack{root.get()};
  tape.deps[root.get()] = 0;
  if (owners) tape.owner[root.get()] = root;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& e : n->next) {
      if (e.fn) {
        auto [it, fresh] = tape.deps.try_emplace(e.fn.get(), 0);
        ++it->second;
        if (fresh) stack.push_back(e.fn.get());
        if (fresh && owners) tape.owner[e.fn.get()] = e.fn;
      } else if (e.leaf) {
        ++tape.leaves[e.leaf.get()].pending;
      }
    }
  }
  return tape;
}

// Bit i set for every edge of `n`.
uint64_t all_edges(const Node& n) { return n.next.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << n.next.size()) - 1; }

}  // namespace

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  backward(root, {.grad = grad, .retain_graph = retain_graph});
}

void backward(const Tensor& root, const BackwardOptions& options) {
  Tensor grad = root_gradient(root, options.grad);
  NoGradGuard no_grad;
  if (!root.grad_fn()) {
    finish_leaf(root.impl_ptr(), grad, options.sink);
    return;
  }
  Tape tape = count_edges(root.grad_fn(), options.defer_weights != nullptr);
  std::unordered_set<TensorImpl*> now;
  for (const Tensor& t : options.now) now.insert(t.impl_ptr().get());

  // Latest-created node first: a valid reverse topological order that also
  // finishes the last layers' parameters first (what bucketed all-reduce wants).
  auto later = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  std::unordered_map<Node*, Tensor> inbox;
  inbox[root.grad_fn().get()] = grad;
  ready.push(root.grad_fn().get());
  // Keep nodes alive while we run them even if the root's graph is released.
  std::shared_ptr<Node> keep_root = root.grad_fn();

  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor g = std::move(inbox[n]);
    inbox.erase(n);
    // A split backward holds back the gradients of this node's leaves (but the `now` ones).
    const uint64_t held = options.defer_weights ? leaf_edges(*n, now) : 0;
    std::vector<Tensor> grads;
    if (g.defined() && held != 0) {
      options.defer_weights->nodes.push_back({tape.owner.at(n), g, held});
      if (all_edges(*n) & ~held) grads = n->apply_only(g, ~held);
    } else if (g.defined()) {
      grads = n->apply(g);
    }
    LOOM_ASSERT(grads.empty() || grads.size() == n->next.size());
    for (size_t i = 0; i < n->next.size(); ++i) {
      const auto& e = n->next[i];
      Tensor gi = i < grads.size() ? grads[i] : Tensor();
      if (e.fn) {
        if (gi.defined()) inbox[e.fn.get()] = add_grads(inbox[e.fn.get()], gi);
        if (--tape.deps[e.fn.get()] == 0) ready.push(e.fn.get());
      } else if (e.leaf && !((held >> i) & 1u)) {
        auto& st = tape.leaves[e.leaf.get()];
        if (gi.defined()) st.sum = add_grads(st.sum, gi);
        if (--st.pending == 0) finish_leaf_or_tell(e.leaf, st, options.sink);
      }
    }
    if (!options.retain_graph && held == 0) n->release_saved();
  }
  if (options.defer_weights) {
    options.defer_weights->sink = options.sink;
    options.defer_weights->retain_graph = options.retain_graph;
  }
}

void backward_weights(DeferredWeights& deferred) {
  NoGradGuard no_grad;
  std::unordered_map<TensorImpl*, LeafState> leaves;
  for (const auto& [n, g, edges] : deferred.nodes) {
    for (size_t i = 0; i < n->next.size(); ++i) {
      if ((edges >> i) & 1u) ++leaves[n->next[i].leaf.get()].pending;
    }
  }
  for (const auto& [n, g, edges] : deferred.nodes) {
    const std::vector<Tensor> grads = n->apply_only(g, edges);
    for (size_t i = 0; i < n->next.size(); ++i) {
      const auto& e = n->next[i];
      if (!((edges >> i) & 1u)) continue;
      auto& st = leaves[e.leaf.get()];
      if (i < grads.size() && grads[i].defined()) st.sum = add_grads(st.sum, grads[i]);
      if (--st.pending == 0) finish_leaf_or_tell(e.leaf, st, deferred.sink);
    }
    if (!deferred.retain_graph) n->release_saved();
  }
  deferred.nodes.clear();
}

void register_hook(Tensor& leaf, GradHook hook) {
  LOOM_CHECK(leaf.requires_grad() && leaf.is_leaf(), "register_hook: hooks go on leaf tensors that require grad");
  leaf.autograd_meta().hooks.push_back(std::move(hook));
}

void zero_grad(Tensor& leaf, bool set_to_none) {
  auto* meta = leaf.autograd_meta_if();
  if (!meta || !meta->grad.defined()) return;
  if (set_to_none) {
    meta->grad = Tensor();
  } else {
    ops::fill_(meta->grad, 0.0);
  }
}

}  // namespace loom::autograd
