// Recording ops on the autograd tape. An op that is differentiable calls
// record() after computing its output:
//
//   // given: Tensor a, Tensor b, Tensor out
//   // out: the forward's result, computed by a kernel (nothing recorded yet)
//   if (ops::any_requires_grad(a, b))
//     ops::record("MulBackward", {a, b}, out, [a, b](const Tensor& g, ops::GradMask need) {
//       return std::vector<Tensor>{need[0] ? ops::mul(g, b) : Tensor(), need[1] ? ops::mul(g, a) : Tensor()};
//     });
//
// The backward function gets the output's gradient and which inputs need a
// gradient, and returns one gradient per input (undefined where not needed),
// each of that input's shape. It runs with grad mode off.
#pragma once

#include <functional>
#include <initializer_list>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::ops {

struct GradMask {
  uint64_t bits = 0;
  bool operator[](size_t i) const { return (bits >> i) & 1u; }
};

using BackwardFn = std::function<std::vector<core::Tensor>(const core::Tensor& grad, GradMask need)>;

// True when grad mode is on and any defined input requires grad.
bool any_requires_grad(std::initializer_list<const core::Tensor*> inputs);
inline bool any_requires_grad(const core::Tensor& a) { return any_requires_grad({&a}); }
inline bool any_requires_grad(const core::Tensor& a, const core::Tensor& b) { return any_requires_grad({&a, &b}); }
bool any_requires_grad(const std::vector<core::Tensor>& inputs);

// Attaches a backward node to `out` whose edges lead to `inputs` (undefined
// inputs get no edge).
void record(const char* name, const std::vector<core::Tensor>& inputs, core::Tensor& out, BackwardFn fn);

}  // namespace loom::ops
