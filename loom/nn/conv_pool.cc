#include "loom/nn/conv_pool.h"

#include <cmath>

#include "loom/nn/init.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::to_string;

std::string size_str(const Size2d& s) { return s.h == s.w ? std::to_string(s.h) : format("{}x{}", s.h, s.w); }

// Positions of a sliding window: floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1, or 0.
int64_t window_count(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t room = in + 2 * pad - (dilation * (kernel - 1) + 1);
  return room < 0 ? 0 : room / stride + 1;
}

// Error messages are built only on failure (describe() allocates).
void check_nchw(const Module& layer, const Tensor& x) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", layer.describe());
  LOOM_CHECK_T(ShapeError, x.dim() == 4, "{}: input {} must be 4-D [N, C, H, W]", layer.describe(),
               to_string(x.shape()));
}

ops::Pool2dParams pool_params(const Pool2dOptions& o) {
  const Size2d stride = o.stride == Size2d(0) ? o.kernel : o.stride;
  return {.kernel_h = o.kernel.h, .kernel_w = o.kernel.w, .stride_h = stride.h, .stride_w = stride.w,
          .pad_h = o.padding.h, .pad_w = o.padding.w, .count_include_pad = o.count_include_pad};
}

void check_pool_options(const char* layer, const Pool2dOptions& o) {
  LOOM_CHECK(o.kernel.h >= 1 && o.kernel.w >= 1, "{}: kernel {} must be at least 1", layer, size_str(o.kernel));
  LOOM_CHECK(o.stride.h >= 0 && o.stride.w >= 0, "{}: stride {} must not be negative", layer, size_str(o.stride));
  LOOM_CHECK(o.padding.h >= 0 && o.padding.w >= 0 && 2 * o.padding.h <= o.kernel.h && 2 * o.padding.w <= o.kernel.w,
             "{}: padding {} must be between 0 and half the kernel {}", layer, size_str(o.padding),
             size_str(o.kernel));
}

std::string describe_pool(const char* name, const Pool2dOptions& o, bool avg) {
  const ops::Pool2dParams p = pool_params(o);
  std::string s = format("{}(kernel {}, stride {}", name, size_str(o.kernel), size_str({p.stride_h, p.stride_w}));
  if (!(o.padding == Size2d(0))) s += ", padding " + size_str(o.padding);
  if (avg && !o.count_include_pad) s += ", count_include_pad false";
  return s + ")";
}

Tensor pool_forward(const Module& layer, const Tensor& x, const Pool2dOptions& o, bool avg) {
  check_nchw(layer, x);
  const ops::Pool2dParams p = pool_params(o);
  const int64_t oh = window_count(x.size(2), p.kernel_h, p.stride_h, p.pad_h, 1);
  const int64_t ow = window_count(x.size(3), p.kernel_w, p.stride_w, p.pad_w, 1);
  LOOM_CHECK_T(ShapeError, oh > 0 && ow > 0, "{}: input {} is smaller than the kernel {} (padding {})", layer.describe(),
               to_string(x.shape()), size_str(o.kernel), size_str(o.padding));
  return avg ? ops::avg_pool2d(x, p) : ops::max_pool2d(x, p);
}

}  // namespace

Conv2d::Conv2d(const Conv2dOptions& o) : o_(o) {
  LOOM_CHECK(o.in >= 1 && o.out >= 1, "Conv2d: in ({}) and out ({}) channels must be at least 1", o.in, o.out);
  LOOM_CHECK(o.groups >= 1 && o.in % o.groups == 0 && o.out % o.groups == 0,
             "Conv2d: groups {} must divide in ({}) and out ({}) channels", o.groups, o.in, o.out);
  LOOM_CHECK(o.kernel.h >= 1 && o.kernel.w >= 1, "Conv2d: kernel {} must be at least 1", size_str(o.kernel));
  LOOM_CHECK(o.stride.h >= 1 && o.stride.w >= 1, "Conv2d: stride {} must be at least 1", size_str(o.stride));
  LOOM_CHECK(o.dilation.h >= 1 && o.dilation.w >= 1, "Conv2d: dilation {} must be at least 1", size_str(o.dilation));
  LOOM_CHECK(o.padding.h >= 0 && o.padding.w >= 0, "Conv2d: padding {} must not be negative", size_str(o.padding));
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "Conv2d: dtype must be floating, got {}", o.dtype);
  weight_ = register_parameter("weight", ops::empty({o.out, o.in / o.groups, o.kernel.h, o.kernel.w}, o.dtype));
  if (o.bias) bias_ = register_parameter("bias", ops::empty({o.out}, o.dtype));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void Conv2d::reset_parameters(core::Generator& gen) {
  init::kaiming_uniform_(weight_, gen, {.a = std::sqrt(5.0)});
  if (bias_.defined()) {
    const int64_t fan_in = init::compute_fans(weight_).fan_in;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias_, gen, -bound, bound);
  }
}

std::string Conv2d::describe() const {
  std::string s = format("Conv2d({} -> {}, kernel {}", o_.in, o_.out, size_str(o_.kernel));
  if (!(o_.stride == Size2d(1))) s += ", stride " + size_str(o_.stride);
  if (!(o_.padding == Size2d(0))) s += ", padding " + size_str(o_.padding);
  if (!(o_.dilation == Size2d(1))) s += ", dilation " + size_str(o_.dilation);
  if (o_.groups != 1) s += format(", groups {}", o_.groups);
  if (!o_.bias) s += ", no bias";
  return s + ")";
}

Tensor Conv2d::forward(const Tensor& x) {
  check_nchw(*this, x);
  LOOM_CHECK_T(ShapeError, x.size(1) == o_.in, "{}: input {} has {} channels, expected {}", describe(),
               to_string(x.shape()), x.size(1), o_.in);
  LOOM_CHECK_T(TypeError, x.dtype() == weight_.dtype(), "{}: input dtype {} differs from weight dtype {}",
               describe(), x.dtype(), weight_.dtype());
  const int64_t oh = window_count(x.size(2), o_.kernel.h, o_.stride.h, o_.padding.h, o_.dilation.h);
  const int64_t ow = window_count(x.size(3), o_.kernel.w, o_.stride.w, o_.padding.w, o_.dilation.w);
  LOOM_CHECK_T(ShapeError, oh > 0 && ow > 0, "{}: input {} is smaller than the (dilated) kernel", describe(),
               to_string(x.shape()));
  return ops::conv2d(x, weight_, bias_,
                     {.stride_h = o_.stride.h, .stride_w = o_.stride.w, .pad_h = o_.padding.h,
                      .pad_w = o_.padding.w, .dilation_h = o_.dilation.h, .dilation_w = o_.dilation.w,
                      .groups = o_.groups});
}

MaxPool2d::MaxPool2d(const Pool2dOptions& o) : o_(o) { check_pool_options("MaxPool2d", o); }
std::string MaxPool2d::describe() const { return describe_pool("MaxPool2d", o_, false); }
Tensor MaxPool2d::forward(const Tensor& x) { return pool_forward(*this, x, o_, false); }

AvgPool2d::AvgPool2d(const Pool2dOptions& o) : o_(o) { check_pool_options("AvgPool2d", o); }
std::string AvgPool2d::describe() const { return describe_pool("AvgPool2d", o_, true); }
Tensor AvgPool2d::forward(const Tensor& x) { return pool_forward(*this, x, o_, true); }

}  // namespace loom::nn
