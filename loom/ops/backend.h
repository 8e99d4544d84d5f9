// The kernel table: one Backend per device type, with one virtual method per
// primitive kernel. Op functions (loom/ops/*.h) check arguments, allocate
// outputs, call backend(device).<kernel>(...) and record autograd; every
// other op is composed from them. A CUDA backend slots in by implementing
// this interface; a kernel it lacks throws a clear TypeError.
//
//   // given: Tensor a, Tensor b
//   Tensor out = Tensor::empty(a.shape(), a.dtype());                // a, b: the same shape
//   ops::backend(a.device()).binary(ops::BinaryOp::Add, a, b, out);  // ops::add also broadcasts and records
//
// Conventions: outputs are allocated by the caller, contiguous, of the final
// shape and dtype. Inputs may be strided views unless a kernel says otherwise.
#pragma once

#include <cstdint>
#include <optional>

#include "loom/core/rng.h"
#include "loom/core/tensor.h"

namespace loom::ops {

using core::DType;
using core::Tensor;

enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Abs, Relu, Gelu, Sigmoid, Tanh, Sign, Square, Reciprocal };
// Binary ops; the *Backward ones take (grad, saved) and give the input grad:
//   ReluBackward(g, x) = g * (x > 0),  GeluBackward(g, x) = g * gelu'(x),
//   SigmoidBackward(g, y) = g * y * (1 - y),  TanhBackward(g, y) = g * (1 - y^2).
enum class BinaryOp : uint8_t {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Gt, Ge, Lt, Le,
  ReluBackward, GeluBackward, SigmoidBackward, TanhBackward,
};
enum class ReduceOp : uint8_t { Sum, Max, Min };

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};
struct Pool2dParams {
  int64_t kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool count_include_pad = true;  // avg pool only
};

class Backend {
 public:
  virtual ~Backend() = default;

  // dst (any strides) <- src (any strides, same shape), converting dtype.
  virtual void copy(const Tensor& src, Tensor& dst) const;
  virtual void fill(Tensor& dst, double value) const;
  virtual void arange(Tensor& dst, double start, double step) const;
  virtual void fill_uniform(Tensor& dst, double lo, double hi, core::Generator& gen) const;
  virtual void fill_normal(Tensor& dst, double mean, double std, core::Generator& gen) const;

  // out = op(a, b); a and b are already expanded (stride 0) to out's shape.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const;
  // out = op(a) (alpha is the exponent for Pow-like unary uses; unused otherwise).
  virtual void unary(UnaryOp op, const Tensor& a, Tensor& out) const;
  // Reduces contiguous `a` viewed as [outer, n, inner] over n into out[outer, inner];
  // `indices` (i64, may be undefined) receives the arg-max/min position.
  virtual void reduce(ReduceOp op, const Tensor& a, int64_t outer, int64_t n, int64_t inner, Tensor& out,
                      Tensor* indices) const;

  // C[b] = op(A[b]) @ op(B[b]) (+ beta * C[b]); contiguous row-major matrices,
  // batch strides in elements (0 broadcasts one matrix over the batch).
  struct GemmArgs {
    bool trans_a = false, trans_b = false;
    int64_t batch = 1, m = 0, n = 0, k = 0;
    int64_t lda = 0, ldb = 0, ldc = 0;
    int64_t stride_a = 0, stride_b = 0, stride_c = 0;
    double beta = 0.0;
  };
  virtual void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c) const;

  // Softmax family over the last dim of contiguous [rows, n].
  virtual void softmax(const Tensor& x, Tensor& y, bool log) const;
  // gx = y * (gy - sum(gy * y)) for softmax; gy - exp(y) * sum(gy) for log-softmax.
  virtual void softmax_backward(const Tensor& gy, const Tensor& y, Tensor& gx, bool log) const;

  // Layer norm over the last dim of contiguous [rows, n]; mean/rstd are [rows].
  virtual void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) const;
  virtual void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                   const Tensor* weight, Tensor* gx, Tensor* gweight, Tensor* gbias) const;

  // out[.., i, ..] = a[.., index[i], ..] along `dim` (contiguous a, i64 index).
  virtual void index_select(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const;
  // out[.., index[i], ..] += src[.., i, ..] along `dim` (out zero-filled by caller).
  virtual void index_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const;
  // gather / scatter-add along `dim`, index has the output's shape (contiguous operands).
  virtual void gather(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const;
  virtual void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const;

  // NCHW convolution; weight is [out, in / groups, kh, kw].
  virtual void conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
                      Tensor& y) const;
  virtual void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Conv2dParams& p,
                               Tensor* gx, Tensor* gw, Tensor* gbias) const;
  virtual void max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) const;
  virtual void max_pool2d_backward(const Tensor& gy, const Tensor& indices, Tensor& gx) const;
  virtual void avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) const;
  virtual void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) const;
  // Batch norm over N, H, W of contiguous NCHW (or [N, C]). In training, the
  // batch statistics are used and saved (mean, invstd per channel) and the
  // running ones updated; in eval, the running ones are used.
  virtual void batch_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, Tensor* running_mean,
                          Tensor* running_var, bool training, double momentum, double eps, Tensor& y,
                          Tensor& save_mean, Tensor& save_invstd) const;
  virtual void batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* weight,
                                   const Tensor& save_mean, const Tensor& save_invstd, bool training,
                                   Tensor* gx, Tensor* gweight, Tensor* gbias) const;
};

// The backend for a device; throws TypeError when the device has none.
const Backend& backend(core::Device device);

}  // namespace loom::ops
