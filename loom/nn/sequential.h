// Sequential: runs its children in order, each on the previous one's output.
// Children are named "0", "1", ... so parameters are "0.weight", "3.bias", ...
//
//   // given: Tensor images
//   auto net = nn::Sequential(nn::Conv2d({.in = 1, .out = 32, .kernel = 5, .padding = 2}), nn::ReLU(),
//                             nn::MaxPool2d({.kernel = 2}), nn::Flatten(),
//                             nn::Linear({.in = 32 * 14 * 14, .out = 10}));
//   net.push_back(nn::Dropout({.p = 0.1}));            // by value, or a shared_ptr to share a layer
//   Tensor logits = net(images);                       // [N, 1, 28, 28] -> [N, 10]
//   auto& conv = net.at<nn::Conv2d>(0);                // typed access
#pragma once

#include <concepts>
#include <memory>
#include <type_traits>

#include "loom/nn/module.h"

namespace loom::nn {

// A module passed by value (moved in) or as a shared_ptr (shared).
template <class T>
concept ModuleArg = (std::derived_from<std::remove_cvref_t<T>, Module> && !std::is_lvalue_reference_v<T>) ||
                    requires(T t) { { std::shared_ptr<Module>(t) }; };

class Sequential : public Module {
 public:
  Sequential() = default;
  template <ModuleArg... Ms>
    requires(sizeof...(Ms) > 0)
  explicit Sequential(Ms&&... modules) {
    (push_back(std::forward<Ms>(modules)), ...);
  }

  void push_back(std::shared_ptr<Module> m);
  template <class M>
    requires std::derived_from<M, Module> && (!std::is_lvalue_reference_v<M>)
  void push_back(M&& m) {
    push_back(std::shared_ptr<Module>(std::make_shared<M>(std::move(m))));
  }

  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Sequential"; }

  size_t size() const { return named_children().size(); }
  bool empty() const { return size() == 0; }
  // The i-th child; throws IndexError when out of range.
  const std::shared_ptr<Module>& operator[](size_t i) const;
  // The i-th child as M; throws TypeError naming the layer when it is not an M.
  template <class M>
  M& at(size_t i) const {
    auto* m = dynamic_cast<M*>((*this)[i].get());
    if (m == nullptr) throw TypeError(format("Sequential: child {} is {}, not the requested type", i, (*this)[i]->describe()));
    return *m;
  }
};

}  // namespace loom::nn
