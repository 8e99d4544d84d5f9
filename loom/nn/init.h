// Parameter initialisation, in place, from an explicit generator (there is
// no global one). Fans are computed as PyTorch does: for a weight of shape
// [out, in, k...], fan_in = in * prod(k), fan_out = out * prod(k).
//
//   // given: Tensor w, Tensor b
//   core::Generator gen(42);
//   nn::init::kaiming_uniform_(w, gen, {.a = std::sqrt(5.0)});         // Linear/Conv2d default
//   nn::init::kaiming_normal_(w, gen, {.mode = nn::init::FanMode::FanOut,
//                                      .nonlinearity = nn::init::Nonlinearity::Relu});
//   nn::init::xavier_uniform_(w, gen);                                 // gain 1
//   nn::init::uniform_(b, gen, -0.1, 0.1);
//
// These write through the tensor's storage and are not recorded by autograd,
// so they apply to parameters directly.
#pragma once

#include "loom/core/rng.h"
#include "loom/core/tensor.h"

namespace loom::nn::init {

using core::Tensor;

enum class FanMode : uint8_t { FanIn, FanOut };
enum class Nonlinearity : uint8_t { Linear, Conv, Sigmoid, Tanh, Relu, LeakyRelu, Selu };

struct Fans {
  int64_t fan_in = 0, fan_out = 0;
};
// Throws ShapeError for tensors with fewer than 2 dims.
Fans compute_fans(const Tensor& t);

// The recommended gain for a nonlinearity (PyTorch's calculate_gain):
// 1 for Linear/Conv/Sigmoid, 5/3 for Tanh, sqrt(2) for Relu,
// sqrt(2 / (1 + slope^2)) for LeakyRelu, 3/4 for Selu.
double gain(Nonlinearity nonlinearity, double negative_slope = 0.01);

struct KaimingOptions {
  double a = 0.0;  // negative slope of the leaky ReLU that follows
  FanMode mode = FanMode::FanIn;
  Nonlinearity nonlinearity = Nonlinearity::LeakyRelu;
};

// U(-bound, bound) with bound = gain * sqrt(3 / fan).
void kaiming_uniform_(Tensor& t, core::Generator& gen, const KaimingOptions& o = {});
// N(0, std^2) with std = gain / sqrt(fan).
void kaiming_normal_(Tensor& t, core::Generator& gen, const KaimingOptions& o = {});
// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, core::Generator& gen, double gain = 1.0);
// N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
void xavier_normal_(Tensor& t, core::Generator& gen, double gain = 1.0);

void uniform_(Tensor& t, core::Generator& gen, double lo = 0.0, double hi = 1.0);
void normal_(Tensor& t, core::Generator& gen, double mean = 0.0, double std = 1.0);
void constant_(Tensor& t, double value);
inline void zeros_(Tensor& t) { constant_(t, 0.0); }
inline void ones_(Tensor& t) { constant_(t, 1.0); }

}  // namespace loom::nn::init
