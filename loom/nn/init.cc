#include "loom/nn/init.h"

#include <cmath>

#include "loom/core/error.h"
#include "loom/ops/creation.h"

namespace loom::nn::init {
namespace {

double fan(const Tensor& t, FanMode mode, const char* fn) {
  const Fans f = compute_fans(t);
  const int64_t n = mode == FanMode::FanIn ? f.fan_in : f.fan_out;
  LOOM_CHECK(n > 0, "{}: tensor {} has a zero fan_{}; nothing to scale by", fn, core::to_string(t.shape()),
             mode == FanMode::FanIn ? "in" : "out");
  return static_cast<double>(n);
}

void check_floating(const Tensor& t, const char* fn) {
  LOOM_CHECK(t.defined(), "{}: tensor is undefined", fn);
  LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "{}: expected a floating tensor, got {}", fn, t.dtype());
}

}  // namespace

Fans compute_fans(const Tensor& t) {
  LOOM_CHECK(t.defined(), "compute_fans: tensor is undefined");
  LOOM_CHECK_T(ShapeError, t.dim() >= 2, "compute_fans: needs a tensor with at least 2 dims, got {}",
               core::to_string(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.shape()[d];
  return {.fan_in = t.shape()[1] * receptive, .fan_out = t.shape()[0] * receptive};
}

double gain(Nonlinearity nonlinearity, double negative_slope) {
  switch (nonlinearity) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::Relu: return std::sqrt(2.0);
    case Nonlinearity::LeakyRelu: return std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
    case Nonlinearity::Selu: return 0.75;
  }
  return 1.0;
}

void kaiming_uniform_(Tensor& t, core::Generator& gen, const KaimingOptions& o) {
  check_floating(t, "kaiming_uniform_");
  if (t.numel() == 0) return;  // as PyTorch: nothing to initialise
  const double bound = gain(o.nonlinearity, o.a) * std::sqrt(3.0 / fan(t, o.mode, "kaiming_uniform_"));
  ops::uniform_(t, gen, -bound, bound);
}

void kaiming_normal_(Tensor& t, core::Generator& gen, const KaimingOptions& o) {
  check_floating(t, "kaiming_normal_");
  if (t.numel() == 0) return;  // as PyTorch: nothing to initialise
  const double std = gain(o.nonlinearity, o.a) / std::sqrt(fan(t, o.mode, "kaiming_normal_"));
  ops::normal_(t, gen, 0.0, std);
}

void xavier_uniform_(Tensor& t, core::Generator& gen, double gain) {
  check_floating(t, "xavier_uniform_");
  if (t.numel() == 0) return;  // as PyTorch: nothing to initialise
  const Fans f = compute_fans(t);
  LOOM_CHECK(f.fan_in + f.fan_out > 0, "xavier_uniform_: tensor {} is empty", core::to_string(t.shape()));
  const double a = gain * std::sqrt(6.0 / static_cast<double>(f.fan_in + f.fan_out));
  ops::uniform_(t, gen, -a, a);
}

void xavier_normal_(Tensor& t, core::Generator& gen, double gain) {
  check_floating(t, "xavier_normal_");
  if (t.numel() == 0) return;  // as PyTorch: nothing to initialise
  const Fans f = compute_fans(t);
  LOOM_CHECK(f.fan_in + f.fan_out > 0, "xavier_normal_: tensor {} is empty", core::to_string(t.shape()));
  const double std = gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out));
  ops::normal_(t, gen, 0.0, std);
}

void uniform_(Tensor& t, core::Generator& gen, double lo, double hi) {
  check_floating(t, "uniform_");
  LOOM_CHECK(lo <= hi, "uniform_: low {} is above high {}", lo, hi);
  ops::uniform_(t, gen, lo, hi);
}

void normal_(Tensor& t, core::Generator& gen, double mean, double std) {
  check_floating(t, "normal_");
  LOOM_CHECK(std >= 0, "normal_: std must be >= 0, got {}", std);
  ops::normal_(t, gen, mean, std);
}

void constant_(Tensor& t, double value) {
  LOOM_CHECK(t.defined(), "constant_: tensor is undefined");
  ops::fill_(t, value);
}

}  // namespace loom::nn::init
