// conv2d, max_pool2d, avg_pool2d and batch_norm: argument checks, output
// shapes and backward rules. The kernels live in loom/ops/cpu/conv.cc,
// pool.cc and batch_norm.cc; they get contiguous inputs from here.
//
// 16-bit float inputs run through f32 (converted on the way in and out by
// to_dtype, which carries the gradient back), as the kernels compute in f32
// or f64 only.
#include <utility>
#include <vector>

#include "loom/ops/creation.h"
#include "loom/ops/nn_ops.h"
#include "loom/ops/record.h"
#include "loom/ops/view.h"

namespace loom::ops {
namespace {

using core::DType;
using core::to_string;

Tensor f32_or_undefined(const Tensor& t) { return t.defined() ? to_dtype(t, DType::F32) : Tensor(); }

void check_floating(const char* op, const char* what, const Tensor& t) {
  LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "{}: {} must have a floating dtype, got {}", op, what,
               t.dtype());
}

// The dtype and device of an optional operand must match the input's.
void check_matches_input(const char* op, const char* what, const Tensor& t, const Tensor& x) {
  if (!t.defined()) return;
  LOOM_CHECK_T(TypeError, t.dtype() == x.dtype(), "{}: {} has dtype {} but input has {}", op, what, t.dtype(),
               x.dtype());
  LOOM_CHECK(t.device() == x.device(), "{}: {} is on {} but input is on {}", op, what, to_string(t.device()),
             to_string(x.device()));
}

// Positions of a sliding window along one dim: floor((in + 2 pad - span) / stride) + 1
// where span = dilation * (kernel - 1) + 1; 0 when the window does not fit.
int64_t window_count(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t room = in + 2 * pad - (dilation * (kernel - 1) + 1);
  return room < 0 ? 0 : room / stride + 1;
}

// ---- pooling ----

// Checks a pooling call and returns the output shape [N, C, OH, OW].
Shape pool_output_shape(const char* op, const Tensor& x, const Pool2dParams& p) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", op);
  LOOM_CHECK_T(ShapeError, x.dim() == 4, "{}: input must be 4-D [N, C, H, W], got {}", op, to_string(x.shape()));
  check_floating(op, "input", x);
  LOOM_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1, "{}: kernel ({}, {}) must be at least 1", op, p.kernel_h,
             p.kernel_w);
  LOOM_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "{}: stride ({}, {}) must be at least 1", op, p.stride_h,
             p.stride_w);
  // More padding would allow windows that see only padding.
  LOOM_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && p.pad_h <= p.kernel_h / 2 && p.pad_w <= p.kernel_w / 2,
             "{}: padding ({}, {}) must be between 0 and half the kernel ({}, {})", op, p.pad_h, p.pad_w, p.kernel_h,
             p.kernel_w);
  const int64_t oh = window_count(x.size(2), p.kernel_h, p.stride_h, p.pad_h, 1);
  const int64_t ow = window_count(x.size(3), p.kernel_w, p.stride_w, p.pad_w, 1);
  LOOM_CHECK_T(ShapeError, oh > 0 && ow > 0, "{}: input {} padded by ({}, {}) is smaller than the kernel ({}, {})",
               op, to_string(x.shape()), p.pad_h, p.pad_w, p.kernel_h, p.kernel_w);
  return {x.size(0), x.size(1), oh, ow};
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  LOOM_CHECK(x.defined() && weight.defined(), "conv2d: input and weight must be defined");
  LOOM_CHECK_T(ShapeError, x.dim() == 4, "conv2d: input must be 4-D [N, C, H, W], got {}", to_string(x.shape()));
  LOOM_CHECK_T(ShapeError, weight.dim() == 4, "conv2d: weight must be 4-D [out, in / groups, kh, kw], got {}",
               to_string(weight.shape()));
  check_floating("conv2d", "input", x);
  check_matches_input("conv2d", "weight", weight, x);
  check_matches_input("conv2d", "bias", bias, x);
  LOOM_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "conv2d: stride ({}, {}) must be at least 1", p.stride_h,
             p.stride_w);
  LOOM_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "conv2d: dilation ({}, {}) must be at least 1", p.dilation_h,
             p.dilation_w);
  LOOM_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "conv2d: padding ({}, {}) must not be negative", p.pad_h, p.pad_w);
  LOOM_CHECK(p.groups >= 1, "conv2d: groups {} must be at least 1", p.groups);

  const int64_t channels = x.size(1), out = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  LOOM_CHECK_T(ShapeError, channels == weight.size(1) * p.groups,
               "conv2d: input {} has {} channels but weight {} expects {} (groups {})", to_string(x.shape()),
               channels, to_string(weight.shape()), weight.size(1) * p.groups, p.groups);
  LOOM_CHECK_T(ShapeError, out % p.groups == 0, "conv2d: weight {} has {} output channels, not divisible by groups {}",
               to_string(weight.shape()), out, p.groups);
  LOOM_CHECK_T(ShapeError, kh >= 1 && kw >= 1, "conv2d: weight {} has an empty kernel", to_string(weight.shape()));
  LOOM_CHECK_T(ShapeError, !bias.defined() || (bias.dim() == 1 && bias.size(0) == out),
               "conv2d: bias {} must be [{}] to match weight {}", bias.defined() ? to_string(bias.shape()) : "",
               out, to_string(weight.shape()));
  const int64_t oh = window_count(x.size(2), kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t ow = window_count(x.size(3), kw, p.stride_w, p.pad_w, p.dilation_w);
  LOOM_CHECK_T(ShapeError, oh > 0 && ow > 0,
               "conv2d: input {} padded by ({}, {}) is smaller than the kernel ({}, {}) dilated by ({}, {})",
               to_string(x.shape()), p.pad_h, p.pad_w, kh, kw, p.dilation_h, p.dilation_w);

  if (core::is_half(x.dtype())) {
    return to_dtype(conv2d(to_dtype(x, DType::F32), to_dtype(weight, DType::F32), f32_or_undefined(bias), p),
                    x.dtype());
  }

  const Tensor xc = contiguous(x), wc = contiguous(weight);
  const Tensor bc = bias.defined() ? contiguous(bias) : Tensor();
  Tensor y = empty({x.size(0), out, oh, ow}, x.dtype(), x.device());
  backend(x.device()).conv2d(xc, wc, bias.defined() ? &bc : nullptr, p, y);

  if (any_requires_grad({&x, &weight, &bias})) {
    record("Conv2dBackward", {x, weight, bias}, y,
           [xc = xc.detach(), wc = wc.detach(), p](const Tensor& g, GradMask need) {
             const Tensor gc = contiguous(g);
             Tensor gx = need[0] ? empty_like(xc) : Tensor();
             Tensor gw = need[1] ? empty_like(wc) : Tensor();
             Tensor gb = need[2] ? empty({wc.size(0)}, wc.dtype(), wc.device()) : Tensor();
             backend(xc.device()).conv2d_backward(xc, wc, gc, p, need[0] ? &gx : nullptr, need[1] ? &gw : nullptr,
                                                  need[2] ? &gb : nullptr);
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) {
  const Shape out_shape = pool_output_shape("max_pool2d", x, p);
  if (core::is_half(x.dtype())) return to_dtype(max_pool2d(to_dtype(x, DType::F32), p), x.dtype());

  const Tensor xc = contiguous(x);
  Tensor y = empty(out_shape, x.dtype(), x.device());
  Tensor indices = empty(out_shape, DType::I64, x.device());
  backend(x.device()).max_pool2d(xc, p, y, indices);

  if (any_requires_grad(x)) {
    record("MaxPool2dBackward", {x}, y,
           [indices, in_shape = x.shape(), dtype = x.dtype(), device = x.device()](const Tensor& g, GradMask) {
             Tensor gx = empty(in_shape, dtype, device);
             backend(device).max_pool2d_backward(contiguous(g), indices, gx);
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p) {
  const Shape out_shape = pool_output_shape("avg_pool2d", x, p);
  if (core::is_half(x.dtype())) return to_dtype(avg_pool2d(to_dtype(x, DType::F32), p), x.dtype());

  const Tensor xc = contiguous(x);
  Tensor y = empty(out_shape, x.dtype(), x.device());
  backend(x.device()).avg_pool2d(xc, p, y);

  if (any_requires_grad(x)) {
    record("AvgPool2dBackward", {x}, y,
           [p, in_shape = x.shape(), dtype = x.dtype(), device = x.device()](const Tensor& g, GradMask) {
             Tensor gx = empty(in_shape, dtype, device);
             backend(device).avg_pool2d_backward(contiguous(g), p, gx);
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, double momentum, double eps) {
  LOOM_CHECK(x.defined(), "batch_norm: input is undefined");
  LOOM_CHECK_T(ShapeError, x.dim() >= 2, "batch_norm: input must be [N, C] or [N, C, H, W], got {}",
               to_string(x.shape()));
  check_floating("batch_norm", "input", x);
  const int64_t channels = x.size(1);
  const std::pair<const char*, const Tensor*> per_channel[] = {
      {"weight", &weight}, {"bias", &bias}, {"running_mean", &running_mean}, {"running_var", &running_var}};
  for (const auto& [what, t] : per_channel) {
    if (!t->defined()) continue;
    LOOM_CHECK_T(ShapeError, t->dim() == 1 && t->size(0) == channels,
                 "batch_norm: {} {} must be [{}] to match the channels of input {}", what, to_string(t->shape()),
                 channels, to_string(x.shape()));
    check_matches_input("batch_norm", what, *t, x);
  }
  LOOM_CHECK(running_mean.defined() == running_var.defined(),
             "batch_norm: give both running_mean and running_var, or neither");
  LOOM_CHECK(training || running_mean.defined(), "batch_norm: eval mode needs running_mean and running_var");
  // The kernel updates the running statistics in place through raw pointers.
  LOOM_CHECK(!running_mean.defined() || (running_mean.is_contiguous() && running_var.is_contiguous()),
             "batch_norm: running_mean and running_var must be contiguous");
  const int64_t per_channel_count = channels > 0 ? x.numel() / channels : 0;
  LOOM_CHECK(!training || per_channel_count > 1,
             "batch_norm: training needs more than 1 value per channel, got input {}", to_string(x.shape()));
  LOOM_CHECK(eps >= 0, "batch_norm: eps {} must not be negative", eps);

  if (core::is_half(x.dtype())) {
    // Compute in f32; the 16-bit running statistics get their update copied back.
    Tensor rm = f32_or_undefined(running_mean), rv = f32_or_undefined(running_var);
    Tensor y = batch_norm(to_dtype(x, DType::F32), f32_or_undefined(weight), f32_or_undefined(bias), rm, rv,
                          training, momentum, eps);
    if (training && rm.defined()) {
      copy_(running_mean, rm);
      copy_(running_var, rv);
    }
    return to_dtype(y, x.dtype());
  }

  const Tensor xc = contiguous(x);
  const Tensor wc = weight.defined() ? contiguous(weight) : Tensor();
  const Tensor bc = bias.defined() ? contiguous(bias) : Tensor();
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  Tensor save_mean = empty({channels}, x.dtype(), x.device());
  Tensor save_invstd = empty({channels}, x.dtype(), x.device());
  const bool track = running_mean.defined();
  backend(x.device()).batch_norm(xc, weight.defined() ? &wc : nullptr, bias.defined() ? &bc : nullptr,
                                 track ? &running_mean : nullptr, track ? &running_var : nullptr, training, momentum,
                                 eps, y, save_mean, save_invstd);

  if (any_requires_grad({&x, &weight, &bias})) {
    record("BatchNormBackward", {x, weight, bias}, y,
           [xc = xc.detach(), wc = wc.defined() ? wc.detach() : Tensor(), save_mean, save_invstd, training](
               const Tensor& g, GradMask need) {
             const Tensor gc = contiguous(g);
             const int64_t c = xc.size(1);
             Tensor gx = need[0] ? empty_like(xc) : Tensor();
             Tensor gw = need[1] ? empty({c}, xc.dtype(), xc.device()) : Tensor();
             Tensor gb = need[2] ? empty({c}, xc.dtype(), xc.device()) : Tensor();
             backend(xc.device()).batch_norm_backward(gc, xc, wc.defined() ? &wc : nullptr, save_mean, save_invstd,
                                                      training, need[0] ? &gx : nullptr, need[1] ? &gw : nullptr,
                                                      need[2] ? &gb : nullptr);
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

}  // namespace loom::ops
