// 2-D convolution and pooling over NCHW input.
//
//   nn::Conv2d conv({.in = 1, .out = 32, .kernel = 5, .padding = 2});   // [N, 1, H, W] -> [N, 32, H, W]
//   nn::Conv2d dw({.in = 32, .out = 32, .kernel = {3, 1}, .groups = 32, .bias = false});
//   nn::MaxPool2d pool({.kernel = 2});                                   // stride defaults to kernel
//   nn::AvgPool2d avg({.kernel = 3, .stride = 1, .padding = 1});
//
// Sizes are Size2d: one number for both dims, or {h, w}. Conv2d's default
// init is PyTorch's: weight kaiming_uniform(a = sqrt(5)), bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kh * kw,
// drawn from core::Generator(seed).
#pragma once

#include <cstdint>

#include "loom/core/dtype.h"
#include "loom/nn/module.h"

namespace loom::nn {

// A (height, width) pair; `3` means {3, 3}.
struct Size2d {
  int64_t h = 0, w = 0;
  Size2d() = default;
  Size2d(int64_t both) : h(both), w(both) {}  // NOLINT: implicit on purpose (.kernel = 5)
  Size2d(int64_t h_, int64_t w_) : h(h_), w(w_) {}
  friend bool operator==(const Size2d&, const Size2d&) = default;
};

struct Conv2dOptions {
  int64_t in = 0;   // input channels
  int64_t out = 0;  // output channels
  Size2d kernel = 1;
  Size2d stride = 1;
  Size2d padding = 0;
  Size2d dilation = 1;
  int64_t groups = 1;
  bool bias = true;
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;
};

class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dOptions& o);
  // [N, in, H, W] -> [N, out, OH, OW].
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const Conv2dOptions& options() const { return o_; }
  const Tensor& weight() const { return weight_; }  // [out, in / groups, kh, kw]
  const Tensor& bias() const { return bias_; }      // [out], undefined without bias

 private:
  Conv2dOptions o_;
  Tensor weight_, bias_;
};

struct Pool2dOptions {
  Size2d kernel = 2;
  Size2d stride = 0;  // 0: the kernel size (PyTorch's stride=None)
  Size2d padding = 0;
  bool count_include_pad = true;  // AvgPool2d only: padding counts in the divisor
};
using MaxPool2dOptions = Pool2dOptions;
using AvgPool2dOptions = Pool2dOptions;

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const Pool2dOptions& o = {});
  Tensor forward(const Tensor& x) override;  // [N, C, H, W] -> [N, C, OH, OW]
  std::string describe() const override;
  const Pool2dOptions& options() const { return o_; }

 private:
  Pool2dOptions o_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const Pool2dOptions& o = {});
  Tensor forward(const Tensor& x) override;  // [N, C, H, W] -> [N, C, OH, OW]
  std::string describe() const override;
  const Pool2dOptions& options() const { return o_; }

 private:
  Pool2dOptions o_;
};

}  // namespace loom::nn
