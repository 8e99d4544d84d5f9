// Internal to loom/ops (ops::backend(Device::cpu()) returns it): the CPU
// kernels: oneDNN for convolution, f32 matmul and f32 GELU, our own OpenMP
// loops for elementwise ops, reductions, softmax, norms, pooling and indexing.
// f64 (used by gradient checks) runs reference loops everywhere.
#pragma once

#include "loom/ops/backend.h"

namespace loom::ops::cpu {

// GELU and its backward (grad * gelu'(x)) on contiguous f32 tensors of one
// shape through oneDNN (gelu.cc); false, doing nothing, for anything else.
bool gelu_f32(const Tensor& x, Tensor& out);
bool gelu_backward_f32(const Tensor& grad, const Tensor& x, Tensor& out);

class CpuBackend final : public Backend {
 public:
  void copy(const Tensor& src, Tensor& dst) const override;
  void fill(Tensor& dst, double value) const override;
  void arange(Tensor& dst, double start, double step) const override;
  void fill_uniform(Tensor& dst, double lo, double hi, core::Generator& gen) const override;
  void fill_normal(Tensor& dst, double mean, double std, core::Generator& gen) const override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const override;
  void unary(UnaryOp op, const Tensor& a, Tensor& out) const override;
  void reduce(ReduceOp op, const Tensor& a, int64_t outer, int64_t n, int64_t inner, Tensor& out,
              Tensor* indices) const override;
  void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c) const override;
  void softmax(const Tensor& x, Tensor& y, bool log) const override;
  void softmax_backward(const Tensor& gy, const Tensor& y, Tensor& gx, bool log) const override;
  void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps, Tensor& y,
                  Tensor& mean, Tensor& rstd) const override;
  void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                           const Tensor* weight, Tensor* gx, Tensor* gweight, Tensor* gbias) const override;
  void index_select(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const override;
  void index_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const override;
  void gather(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const override;
  void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const override;
  void conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
              Tensor& y) const override;
  void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Conv2dParams& p, Tensor* gx,
                       Tensor* gw, Tensor* gbias) const override;
  void max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& indices) const override;
  void max_pool2d_backward(const Tensor& gy, const Tensor& indices, Tensor& gx) const override;
  void avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) const override;
  void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) const override;
  void batch_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, Tensor* running_mean,
                  Tensor* running_var, bool training, double momentum, double eps, Tensor& y, Tensor& save_mean,
                  Tensor& save_invstd) const override;
  void batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* weight, const Tensor& save_mean,
                           const Tensor& save_invstd, bool training, Tensor* gx, Tensor* gweight,
                           Tensor* gbias) const override;
};

}  // namespace loom::ops::cpu
