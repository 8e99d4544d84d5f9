// Softmax, layer norm, dropout, indexing and losses. Convolution, pooling and
// batch norm are in conv_pool_norm.cc.
#include <cmath>

#include "loom/ops/creation.h"
#include "loom/ops/math.h"
#include "loom/ops/nn_ops.h"
#include "loom/ops/record.h"
#include "loom/ops/view.h"

namespace loom::ops {
namespace {

using core::to_string;

void check_float(const Tensor& x, const char* op) {
  LOOM_CHECK(x.defined(), "{}: undefined tensor argument", op);
  LOOM_CHECK_T(TypeError, x.dtype() == DType::F32 || x.dtype() == DType::F64,
               "{}: expected an f32 or f64 tensor, got {} (convert with ops::to_dtype)", op, x.dtype());
}

// Checks that every index lies in [0, n).
void check_indices(const Tensor& index, int64_t n, const char* op) {
  LOOM_CHECK_T(TypeError, index.dtype() == DType::I64, "{}: indices must be i64, got {}", op, index.dtype());
  const Tensor c = contiguous(index);
  const int64_t* p = c.data<int64_t>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    LOOM_CHECK_T(IndexError, p[i] >= 0 && p[i] < n, "{}: index {} out of range [0, {})", op, p[i], n);
  }
}

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_float(x, name);
  if (x.dim() == 0) return softmax_impl(reshape(x, {1}), 0, log).as_strided({}, {}, 0);
  dim = core::wrap_dim(dim, x.dim(), name);
  if (dim != x.dim() - 1) return transpose(softmax_impl(transpose(x, dim, -1), -1, log), dim, -1);
  Tensor xc = contiguous(x.detach());
  Tensor y = empty_like(xc);
  backend(x.device()).softmax(xc, y, log);
  if (any_requires_grad(x)) {
    record(log ? "LogSoftmaxBackward" : "SoftmaxBackward", {x}, y, [y = y.detach(), log](const Tensor& g, GradMask) {
      Tensor gx = empty_like(y);
      backend(y.device()).softmax_backward(contiguous(g), y, gx, log);
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor reduce_loss(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::Mean: return mean(per_element);
    case Reduction::Sum: return sum(per_element);
    case Reduction::None: return per_element;
  }
  return per_element;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

Tensor layer_norm(const Tensor& x, const core::Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  check_float(x, "layer_norm");
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  bool ok = k >= 1 && k <= x.dim();
  for (int64_t i = 0; ok && i < k; ++i) ok = x.shape()[x.dim() - k + i] == normalized_shape[i];
  LOOM_CHECK_T(ShapeError, ok, "layer_norm: input {} does not end with normalized shape {}", to_string(x.shape()),
               to_string(normalized_shape));
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    LOOM_CHECK_T(ShapeError, p->shape() == normalized_shape, "layer_norm: weight/bias shape {} differs from {}",
                 to_string(p->shape()), to_string(normalized_shape));
    LOOM_CHECK_T(TypeError, p->dtype() == x.dtype(), "layer_norm: weight/bias dtype {} differs from input {}",
                 p->dtype(), x.dtype());
  }
  const int64_t n = core::numel(normalized_shape);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  Tensor xc = contiguous(x.detach());
  Tensor w = weight.defined() ? contiguous(weight.detach()) : Tensor();
  Tensor b = bias.defined() ? contiguous(bias.detach()) : Tensor();
  Tensor y = empty_like(xc);
  Tensor mu = Tensor::empty({rows}, x.dtype(), x.device()), rstd = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor x2 = xc.as_strided({rows, n}, {n, 1}, xc.offset());
  Tensor y2 = y.as_strided({rows, n}, {n, 1}, 0);
  backend(x.device()).layer_norm(x2, w.defined() ? &w : nullptr, b.defined() ? &b : nullptr, eps, y2, mu, rstd);
  if (any_requires_grad({&x, &weight, &bias})) {
    record("LayerNormBackward", {x, weight, bias}, y, [x2, w, mu, rstd, xs = x.shape()](const Tensor& g, GradMask need) {
      Tensor gc = contiguous(g);
      Tensor g2 = gc.as_strided(x2.shape(), x2.strides(), gc.offset());
      Tensor gx, gw, gb;
      if (need[0]) gx = empty_like(x2);
      if (need[1]) gw = empty_like(w);
      if (need[2]) gb = Tensor::empty({x2.shape()[1]}, x2.dtype(), x2.device());
      backend(x2.device()).layer_norm_backward(g2, x2, mu, rstd, w.defined() ? &w : nullptr, need[0] ? &gx : nullptr,
                                               need[1] ? &gw : nullptr, need[2] ? &gb : nullptr);
      if (gx.defined()) gx = reshape(gx, xs);
      if (gb.defined() && w.defined()) gb = reshape(gb, w.shape());
      return std::vector<Tensor>{gx, gw, gb};
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, core::Generator& gen) {
  LOOM_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;
  check_float(x, "dropout");
  if (p == 1.0) return mul(x, 0.0);
  Tensor u = rand(x.shape(), gen, x.dtype());
  Tensor keep = lt(u, full({}, 1.0 - p, x.dtype()));
  return mul(x, mul(keep, 1.0 / (1.0 - p)));
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  LOOM_CHECK_T(IndexError, x.dim() > 0, "index_select: cannot index a 0-dim tensor");
  dim = core::wrap_dim(dim, x.dim(), "index_select");
  LOOM_CHECK_T(ShapeError, index.dim() == 1, "index_select: index must be 1-D, got {}", to_string(index.shape()));
  check_indices(index, x.shape()[dim], "index_select");
  Tensor idx = contiguous(index);
  Tensor xc = contiguous(x.detach());
  core::Shape shape = x.shape();
  shape[dim] = index.numel();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend(x.device()).index_select(xc, dim, idx, out);
  if (any_requires_grad(x)) {
    record("IndexSelectBackward", {x}, out, [in = x.shape(), dt = x.dtype(), dim, idx](const Tensor& g, GradMask) {
      Tensor gx = zeros(in, dt, g.device());
      backend(g.device()).index_add(gx, dim, idx, contiguous(g));
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  LOOM_CHECK_T(ShapeError, weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got {}",
               to_string(weight.shape()));
  core::Shape shape = indices.shape();
  shape.push_back(weight.shape()[1]);
  return reshape(index_select(weight, 0, reshape(indices, {-1})), shape);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  LOOM_CHECK_T(ShapeError, index.dim() == x.dim() && x.dim() > 0, "gather: index {} and input {} need the same number of dims",
               to_string(index.shape()), to_string(x.shape()));
  dim = core::wrap_dim(dim, x.dim(), "gather");
  for (int64_t d = 0; d < x.dim(); ++d) {
    LOOM_CHECK_T(ShapeError, d == dim || index.shape()[d] == x.shape()[d],
                 "gather: index {} and input {} differ at dim {} (only dim {} may differ)", to_string(index.shape()),
                 to_string(x.shape()), d, dim);
  }
  check_indices(index, x.shape()[dim], "gather");
  Tensor idx = contiguous(index);
  Tensor xc = contiguous(x.detach());
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  backend(x.device()).gather(xc, dim, idx, out);
  if (any_requires_grad(x)) {
    record("GatherBackward", {x}, out, [in = x.shape(), dt = x.dtype(), dim, idx](const Tensor& g, GradMask) {
      Tensor gx = zeros(in, dt, g.device());
      backend(g.device()).scatter_add(gx, dim, idx, contiguous(g));
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o) {
  check_float(logits, "cross_entropy");
  LOOM_CHECK_T(ShapeError, logits.dim() == 2, "cross_entropy: logits must be [N, C], got {}", to_string(logits.shape()));
  LOOM_CHECK_T(ShapeError, target.dim() == 1 && target.shape()[0] == logits.shape()[0],
               "cross_entropy: target {} does not match logits {} (expected [{}])", to_string(target.shape()),
               to_string(logits.shape()), logits.shape()[0]);
  LOOM_CHECK(o.label_smoothing >= 0.0 && o.label_smoothing <= 1.0,
             "cross_entropy: label_smoothing must be in [0, 1], got {}", o.label_smoothing);
  check_indices(target, logits.shape()[1], "cross_entropy target");
  Tensor lp = log_softmax(logits, 1);
  Tensor nll = neg(reshape(gather(lp, 1, reshape(target, {-1, 1})), {-1}));
  if (o.label_smoothing > 0.0) {
    Tensor smooth = neg(mean(lp, {1}));
    nll = add(mul(nll, 1.0 - o.label_smoothing), mul(smooth, o.label_smoothing));
  }
  return reduce_loss(nll, o.reduction);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  LOOM_CHECK_T(ShapeError, input.shape() == target.shape(), "mse_loss: input {} and target {} differ",
               to_string(input.shape()), to_string(target.shape()));
  return reduce_loss(square(sub(input, target)), reduction);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  check_float(logits, "binary_cross_entropy_with_logits");
  LOOM_CHECK_T(ShapeError, logits.shape() == target.shape(),
               "binary_cross_entropy_with_logits: logits {} and target {} differ", to_string(logits.shape()),
               to_string(target.shape()));
  Tensor loss = add(sub(relu(logits), mul(logits, target)), log(add(exp(neg(abs(logits))), 1.0)));
  return reduce_loss(loss, reduction);
}

}  // namespace loom::ops
