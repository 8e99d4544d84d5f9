// Parameter-free layers: activations and Flatten.
//
//   auto net = nn::Sequential(nn::Conv2d({.in = 1, .out = 8, .kernel = 3}), nn::ReLU(),
//                             nn::Flatten(), nn::Linear({.in = 8 * 26 * 26, .out = 10}));
//   nn::Flatten f({.start_dim = 1, .end_dim = -1});   // [N, C, H, W] -> [N, C*H*W] (the default)
#pragma once

#include "loom/nn/module.h"

namespace loom::nn {

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "ReLU()"; }
};

// The exact (erf) form, as PyTorch's default.
class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "GELU()"; }
};

class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Sigmoid()"; }
};

class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Tanh()"; }
};

struct FlattenOptions {
  int64_t start_dim = 1;  // negative dims count from the end
  int64_t end_dim = -1;
};

// Merges dims [start_dim, end_dim] into one (a view where the layout allows).
class Flatten : public Module {
 public:
  explicit Flatten(const FlattenOptions& o = {}) : o_(o) {}
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  const FlattenOptions& options() const { return o_; }

 private:
  FlattenOptions o_;
};

}  // namespace loom::nn
