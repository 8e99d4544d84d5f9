// Dropout: in training mode zeroes each element with probability p and
// scales the rest by 1 / (1 - p); in eval mode it is the identity.
//
//   // given: Tensor x
//   nn::Dropout drop({.p = 0.5, .seed = 7});
//   Tensor y = drop(x);          // training (the default)
//   drop.eval();  y = drop(x);   // y is x
//
// Each Dropout owns its core::Generator, seeded from options (no global RNG),
// so masks are reproducible. Give layers different seeds, or call
// model.reset_parameters(gen), which reseeds every Dropout from `gen`.
#pragma once

#include "loom/core/rng.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct DropoutOptions {
  double p = 0.5;  // probability of zeroing an element, in [0, 1]
  uint64_t seed = 0;
};

class Dropout : public Module {
 public:
  explicit Dropout(const DropoutOptions& o = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  // Reseeds the mask generator with a seed drawn from `gen`.
  void reset_parameters(core::Generator& gen) override;

  const DropoutOptions& options() const { return o_; }
  // The mask generator; save and restore its state for exact resumption.
  core::Generator& generator() { return gen_; }
  core::Generator* random_generator() override { return &gen_; }

 private:
  DropoutOptions o_;
  core::Generator gen_;
};

// A fresh 64-bit seed drawn from `gen` (advances it by one block).
uint64_t draw_seed(core::Generator& gen);

}  // namespace loom::nn
