// Elementwise math, reductions and matmul, with their backward rules.
#include "loom/ops/math.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "loom/ops/backend.h"
#include "loom/ops/creation.h"
#include "loom/ops/record.h"
#include "loom/ops/view.h"

namespace loom::ops {
namespace {

using core::to_string;

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Pow: return "pow";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
    case BinaryOp::Eq: return "eq";
    case BinaryOp::Gt: return "gt";
    case BinaryOp::Ge: return "ge";
    case BinaryOp::Lt: return "lt";
    case BinaryOp::Le: return "le";
    default: return "binary backward";
  }
}

// Forward of a binary op, no autograd: checks, broadcasts, runs the kernel.
// 16-bit floats compute in f32 and round on the way out.
Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  LOOM_CHECK(a.defined() && b.defined(), "{}: undefined tensor argument", name);
  LOOM_CHECK_T(TypeError, a.dtype() == b.dtype(), "{}: dtypes differ ({} with shape {} and {} with shape {})", name,
               a.dtype(), to_string(a.shape()), b.dtype(), to_string(b.shape()));
  LOOM_CHECK(a.device() == b.device(), "{}: devices differ ({} and {})", name, to_string(a.device()),
             to_string(b.device()));
  if (core::is_half(a.dtype())) {
    return to_dtype(binary_forward(op, to_dtype(a, DType::F32), to_dtype(b, DType::F32)), a.dtype());
  }
  const core::Shape shape = a.shape() == b.shape() ? a.shape() : core::broadcast_shapes(a.shape(), b.shape(), name);
  if (op == BinaryOp::Div && core::is_integral(a.dtype())) {
    for (int64_t v : contiguous(b).to_vector<int64_t>()) LOOM_CHECK(v != 0, "div: integer division by zero");
  }
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  core::NoGradGuard no_grad;  // the expanded views are internal
  backend(a.device()).binary(op, a.shape() == shape ? a : expand(a, shape), b.shape() == shape ? b : expand(b, shape),
                             out);
  return out;
}

Tensor unary_forward(UnaryOp op, const Tensor& a) {
  LOOM_CHECK(a.defined(), "unary op: undefined tensor argument");
  if (core::is_half(a.dtype())) return to_dtype(unary_forward(op, to_dtype(a, DType::F32)), a.dtype());
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  backend(a.device()).unary(op, a, out);
  return out;
}

Tensor scalar_like(const Tensor& t, double v) { return full({}, v, t.dtype(), t.device()); }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Add, a, b);
  if (any_requires_grad(a, b)) {
    record("AddBackward", {a, b}, out, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradMask need) {
      return std::vector<Tensor>{need[0] ? sum_to(g, sa) : Tensor(), need[1] ? sum_to(g, sb) : Tensor()};
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Sub, a, b);
  if (any_requires_grad(a, b)) {
    record("SubBackward", {a, b}, out, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradMask need) {
      return std::vector<Tensor>{need[0] ? sum_to(g, sa) : Tensor(), need[1] ? sum_to(neg(g), sb) : Tensor()};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Mul, a, b);
  if (any_requires_grad(a, b)) {
    record("MulBackward", {a, b}, out, [a = a.detach(), b = b.detach()](const Tensor& g, GradMask need) {
      return std::vector<Tensor>{need[0] ? sum_to(mul(g, b), a.shape()) : Tensor(),
                                 need[1] ? sum_to(mul(g, a), b.shape()) : Tensor()};
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Div, a, b);
  if (any_requires_grad(a, b)) {
    record("DivBackward", {a, b}, out, [a = a.detach(), b = b.detach()](const Tensor& g, GradMask need) {
      Tensor ga, gb;
      if (need[0]) ga = sum_to(div(g, b), a.shape());
      if (need[1]) gb = sum_to(neg(div(mul(g, a), mul(b, b))), b.shape());
      return std::vector<Tensor>{ga, gb};
    });
  }
  return out;
}

Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Pow, a, b);
  if (any_requires_grad(a, b)) {
    record("PowBackward", {a, b}, out,
           [a = a.detach(), b = b.detach(), y = out.detach()](const Tensor& g, GradMask need) {
             Tensor ga, gb;
             // d/da a^b = b * a^(b-1);  d/db a^b = a^b * log(a)
             if (need[0]) ga = sum_to(mul(g, mul(b, pow(a, sub(b, scalar_like(b, 1.0))))), a.shape());
             if (need[1]) gb = sum_to(mul(g, mul(y, log(a))), b.shape());
             return std::vector<Tensor>{ga, gb};
           });
  }
  return out;
}

namespace {
Tensor extremum(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  Tensor out = binary_forward(op, a, b);
  if (any_requires_grad(a, b)) {
    record(name, {a, b}, out, [a = a.detach(), b = b.detach(), op](const Tensor& g, GradMask need) {
      // The gradient goes to the larger (smaller) input; ties go to `a`.
      Tensor mask_a = binary_forward(op == BinaryOp::Maximum ? BinaryOp::Ge : BinaryOp::Le, a, b);
      Tensor ga, gb;
      if (need[0]) ga = sum_to(mul(g, mask_a), a.shape());
      if (need[1]) gb = sum_to(mul(g, sub(scalar_like(mask_a, 1.0), mask_a)), b.shape());
      return std::vector<Tensor>{ga, gb};
    });
  }
  return out;
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::Maximum, a, b, "MaximumBackward"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::Minimum, a, b, "MinimumBackward"); }
Tensor add(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor mul(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor pow(const Tensor& a, double exponent) { return pow(a, scalar_like(a, exponent)); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Eq, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Gt, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_forward(BinaryOp::Lt, a, b); }

// Unary ops whose backward is g * f'(x) written with other ops.
Tensor neg(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Neg, a);
  if (any_requires_grad(a)) {
    record("NegBackward", {a}, out, [](const Tensor& g, GradMask) { return std::vector<Tensor>{neg(g)}; });
  }
  return out;
}

Tensor exp(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Exp, a);
  if (any_requires_grad(a)) {
    record("ExpBackward", {a}, out, [y = out.detach()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{mul(g, y)};
    });
  }
  return out;
}

Tensor log(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Log, a);
  if (any_requires_grad(a)) {
    record("LogBackward", {a}, out, [a = a.detach()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{div(g, a)};
    });
  }
  return out;
}

Tensor sqrt(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Sqrt, a);
  if (any_requires_grad(a)) {
    record("SqrtBackward", {a}, out, [y = out.detach()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{div(g, mul(y, 2.0))};
    });
  }
  return out;
}

Tensor abs(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Abs, a);
  if (any_requires_grad(a)) {
    record("AbsBackward", {a}, out, [a = a.detach()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{mul(g, unary_forward(UnaryOp::Sign, a))};
    });
  }
  return out;
}

Tensor square(const Tensor& a) {
  Tensor out = unary_forward(UnaryOp::Square, a);
  if (any_requires_grad(a)) {
    record("SquareBackward", {a}, out, [a = a.detach()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{mul(g, mul(a, 2.0))};
    });
  }
  return out;
}

namespace {
// Activations whose backward is one fused kernel: grad_op(g, saved).
Tensor activation(UnaryOp op, BinaryOp grad_op, bool save_output, const char* name, const Tensor& a) {
  Tensor out = unary_forward(op, a);
  if (any_requires_grad(a)) {
    Tensor saved = save_output ? out.detach() : a.detach();
    record(name, {a}, out, [saved, grad_op](const Tensor& g, GradMask) {
      return std::vector<Tensor>{binary_forward(grad_op, contiguous(g), saved)};
    });
  }
  return out;
}
}  // namespace

Tensor relu(const Tensor& a) { return activation(UnaryOp::Relu, BinaryOp::ReluBackward, true, "ReluBackward", a); }
Tensor gelu(const Tensor& a) { return activation(UnaryOp::Gelu, BinaryOp::GeluBackward, false, "GeluBackward", a); }
Tensor sigmoid(const Tensor& a) {
  return activation(UnaryOp::Sigmoid, BinaryOp::SigmoidBackward, true, "SigmoidBackward", a);
}
Tensor tanh(const Tensor& a) { return activation(UnaryOp::Tanh, BinaryOp::TanhBackward, true, "TanhBackward", a); }

// ---- reductions ----

namespace {

std::vector<int64_t> normalize_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(core::wrap_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  LOOM_CHECK_T(IndexError, std::adjacent_find(out.begin(), out.end()) == out.end(), "{}: a dim repeats", op);
  return out;
}

core::Shape reduced_shape(const core::Shape& s, const std::vector<int64_t>& dims, bool keepdim) {
  core::Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    bool reduced = std::binary_search(dims.begin(), dims.end(), d);
    if (!reduced) out.push_back(s[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// Reduces one dim of contiguous x, keeping it as size 1.
Tensor reduce_one(ReduceOp op, const Tensor& x, int64_t dim, Tensor* indices) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[d];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[d];
  core::Shape shape = x.shape();
  shape[dim] = 1;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  if (indices) *indices = Tensor::empty(shape, DType::I64, x.device());
  backend(x.device()).reduce(op, x, outer, x.shape()[dim], inner, out, indices);
  return out;
}

// Sum/max/min over dims without autograd; keepdim shape.
Tensor reduce_forward(ReduceOp op, const Tensor& a, const std::vector<int64_t>& dims, const char* name) {
  if (core::is_half(a.dtype())) return to_dtype(reduce_forward(op, to_dtype(a, DType::F32), dims, name), a.dtype());
  Tensor x = contiguous(a.detach());
  if (x.dim() == 0) return x;
  if (op != ReduceOp::Sum) {
    for (int64_t d : dims) {
      LOOM_CHECK_T(ShapeError, x.shape()[d] > 0, "{}: cannot reduce over dim {} of size 0 (shape {})", name, d,
                   to_string(x.shape()));
    }
  }
  // Adjacent reduced dims merge into one pass.
  if (dims.size() == static_cast<size_t>(x.dim())) {
    Tensor flat = x.as_strided({1, x.numel(), 1}, {x.numel(), 1, 1}, x.offset());
    Tensor out = Tensor::empty({1, 1, 1}, x.dtype(), x.device());
    if (x.numel() == 0) {
      backend(x.device()).fill(out, 0.0);
    } else {
      backend(x.device()).reduce(op, flat, 1, x.numel(), 1, out, nullptr);
    }
    return out.as_strided(core::Shape(x.shape().size(), 1), core::Strides(x.shape().size(), 1), 0);
  }
  Tensor cur = x;
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) cur = reduce_one(op, cur, *it, nullptr);
  return cur;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  auto dims = normalize_dims(dims_in, a.dim(), "sum");
  Tensor r = reduce_forward(ReduceOp::Sum, a, dims, "sum");
  Tensor out = r.as_strided(reduced_shape(a.shape(), dims, keepdim),
                            core::contiguous_strides(reduced_shape(a.shape(), dims, keepdim)), r.offset());
  if (any_requires_grad(a)) {
    record("SumBackward", {a}, out, [in = a.shape(), dims](const Tensor& g, GradMask) {
      return std::vector<Tensor>{contiguous(expand(reshape(g, reduced_shape(in, dims, true)), in))};
    });
  }
  return out;
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  LOOM_CHECK_T(TypeError, core::is_floating(a.dtype()), "mean: needs a floating dtype, got {}", a.dtype());
  auto dims = normalize_dims(dims_in, a.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= a.shape()[d];
  return mul(sum(a, dims, keepdim), 1.0 / static_cast<double>(std::max<int64_t>(count, 1)));
}

namespace {
Tensor extreme_reduce(ReduceOp op, const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim,
                      const char* name) {
  auto dims = normalize_dims(dims_in, a.dim(), name);
  Tensor r = reduce_forward(op, a, dims, name);
  core::Shape shape = reduced_shape(a.shape(), dims, keepdim);
  Tensor out = r.as_strided(shape, core::contiguous_strides(shape), r.offset());
  if (any_requires_grad(a)) {
    record(op == ReduceOp::Max ? "MaxBackward" : "MinBackward", {a}, out,
           [a = a.detach(), r, dims](const Tensor& g, GradMask) {
             // Ties share the gradient equally, as PyTorch's amax does.
             Tensor mask = eq(a, r);
             Tensor count = sum(mask, dims, true);
             Tensor gk = reshape(g, r.shape());
             return std::vector<Tensor>{mul(mask, div(gk, count))};
           });
  }
  return out;
}
}  // namespace

Tensor max(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return extreme_reduce(ReduceOp::Max, a, dims, keepdim, "max");
}
Tensor min(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return extreme_reduce(ReduceOp::Min, a, dims, keepdim, "min");
}

ValuesIndices max_dim(const Tensor& a, int64_t dim, bool keepdim) {
  LOOM_CHECK_T(IndexError, a.dim() > 0, "max_dim: needs at least one dim");
  dim = core::wrap_dim(dim, a.dim(), "max_dim");
  LOOM_CHECK_T(ShapeError, a.shape()[dim] > 0, "max_dim: dim {} of shape {} is empty", dim, to_string(a.shape()));
  Tensor x = contiguous(a.detach());
  if (core::is_half(x.dtype())) x = to_dtype(x, DType::F32);
  Tensor idx;
  Tensor v = reduce_one(ReduceOp::Max, x, dim, &idx);
  if (core::is_half(a.dtype())) v = to_dtype(v, a.dtype());
  core::Shape shape = reduced_shape(a.shape(), {dim}, keepdim);
  Tensor values = v.as_strided(shape, core::contiguous_strides(shape), 0);
  Tensor indices = idx.as_strided(shape, core::contiguous_strides(shape), 0);
  if (any_requires_grad(a)) {
    record("MaxDimBackward", {a}, values, [in = a.shape(), dt = a.dtype(), idx, dim](const Tensor& g, GradMask) {
      Tensor gx = zeros(in, dt, g.device());
      Tensor gk = contiguous(reshape(g, idx.shape()));
      backend(g.device()).scatter_add(gx, dim, idx, gk);
      return std::vector<Tensor>{gx};
    });
  }
  return {values, indices};
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  core::NoGradGuard no_grad;
  return max_dim(a, dim, keepdim).indices;
}

// ---- matmul ----

namespace {

// A matrix operand for gemm: contiguous, or a transposed contiguous view.
struct MatrixOperand {
  Tensor t;
  bool trans = false;
  int64_t ld = 0;
};

// Batch dims of `t` flattened; the last two dims must be row- or column-major.
MatrixOperand as_gemm_operand(const Tensor& t) {
  const int64_t r = t.shape()[t.dim() - 2], c = t.shape()[t.dim() - 1];
  const int64_t sr = t.strides()[t.dim() - 2], sc = t.strides()[t.dim() - 1];
  bool batch_packed = true;
  int64_t expect = r * c;
  for (int64_t d = t.dim() - 3; d >= 0; --d) {
    if (t.shape()[d] != 1 && t.strides()[d] != expect) batch_packed = false;
    expect *= t.shape()[d];
  }
  if (batch_packed && (sc == 1 || c == 1) && (sr == c || r == 1)) return {t, false, std::max<int64_t>(c, 1)};
  if (batch_packed && (sr == 1 || r == 1) && (sc == r || c == 1)) return {t, true, std::max<int64_t>(r, 1)};
  return {contiguous(t), false, std::max<int64_t>(c, 1)};
}

// out[..., m, n] = a[..., m, k] @ b[..., k, n] for matching batch shapes (no autograd).
Tensor bmm_forward(const Tensor& a, const Tensor& b) {
  const int64_t m = a.shape()[a.dim() - 2], k = a.shape()[a.dim() - 1], n = b.shape()[b.dim() - 1];
  core::Shape shape(a.shape().begin(), a.shape().end() - 2);
  const int64_t batch = core::numel(shape);
  shape.push_back(m);
  shape.push_back(n);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  MatrixOperand oa = as_gemm_operand(a), ob = as_gemm_operand(b);
  Backend::GemmArgs g{.trans_a = oa.trans, .trans_b = ob.trans, .batch = batch, .m = m, .n = n, .k = k,
                      .lda = oa.ld, .ldb = ob.ld, .ldc = std::max<int64_t>(n, 1),
                      .stride_a = m * k, .stride_b = k * n, .stride_c = m * n};
  backend(a.device()).gemm(g, oa.t, ob.t, out);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  LOOM_CHECK_T(ShapeError, a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: both operands need at least 1 dim, got {} and {}",
               to_string(a_in.shape()), to_string(b_in.shape()));
  LOOM_CHECK_T(TypeError, a_in.dtype() == b_in.dtype(), "matmul: dtypes differ ({} {} and {} {})", a_in.dtype(),
               to_string(a_in.shape()), b_in.dtype(), to_string(b_in.shape()));
  if (core::is_half(a_in.dtype())) {
    return to_dtype(matmul(to_dtype(a_in, DType::F32), to_dtype(b_in, DType::F32)), a_in.dtype());
  }
  // [..., m, k] @ [k, n] (a layer's weight): one GEMM over all of a's rows,
  // not b copied once per batch entry to make a batched one.
  if (a_in.dim() > 2 && b_in.dim() == 2) {
    const int64_t k = a_in.shape()[a_in.dim() - 1];
    LOOM_CHECK_T(ShapeError, k == b_in.shape()[0], "matmul: shapes {} and {} do not align ({} vs {})",
                 to_string(a_in.shape()), to_string(b_in.shape()), k, b_in.shape()[0]);
    core::Shape shape(a_in.shape().begin(), a_in.shape().end() - 1);
    shape.push_back(b_in.shape()[1]);
    return reshape(matmul(reshape(a_in, {-1, k}), b_in), shape);
  }
  // 1-D operands become matrices and lose that dim at the end.
  Tensor a = a_in.dim() == 1 ? unsqueeze(a_in, 0) : a_in;
  Tensor b = b_in.dim() == 1 ? unsqueeze(b_in, 1) : b_in;
  const int64_t k = a.shape()[a.dim() - 1];
  LOOM_CHECK_T(ShapeError, k == b.shape()[b.dim() - 2], "matmul: shapes {} and {} do not align ({} vs {})",
               to_string(a_in.shape()), to_string(b_in.shape()), k, b.shape()[b.dim() - 2]);
  core::Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  core::Shape batch = ba == bb ? ba : core::broadcast_shapes(ba, bb, "matmul");
  auto with_batch = [&](const Tensor& t, const core::Shape& own) {
    if (own == batch) return t;
    core::Shape s = batch;
    s.push_back(t.shape()[t.dim() - 2]);
    s.push_back(t.shape()[t.dim() - 1]);
    return contiguous(expand(t, s));
  };
  Tensor out;
  {
    core::NoGradGuard no_grad;
    out = bmm_forward(with_batch(a.detach(), ba), with_batch(b.detach(), bb));
  }
  const core::Shape full_shape = out.shape();
  // Drop the dims that 1-D operands added.
  core::Shape shape(out.shape().begin(), out.shape().end() - 2);
  if (a_in.dim() > 1) shape.push_back(out.shape()[out.dim() - 2]);
  if (b_in.dim() > 1) shape.push_back(out.shape()[out.dim() - 1]);
  if (shape != out.shape()) out = out.as_strided(shape, core::contiguous_strides(shape), 0);

  if (any_requires_grad(a_in, b_in)) {
    record("MatmulBackward", {a_in, b_in}, out,
           [a = a.detach(), b = b.detach(), sa = a_in.shape(), sb = b_in.shape(), full_shape](const Tensor& g_in, GradMask need) {
             // Restore the matrix dims of g, then dA = g @ B^T, dB = A^T @ g, summed over broadcast.
             Tensor g = reshape(g_in, full_shape);
             Tensor ga, gb;
             if (need[0]) ga = reshape(sum_to(matmul(g, transpose(b, -1, -2)), a.shape()), sa);
             if (need[1]) gb = reshape(sum_to(matmul(transpose(a, -1, -2), g), b.shape()), sb);
             return std::vector<Tensor>{ga, gb};
           });
  }
  return out;
}

namespace {
thread_local WeightFactorTaker weight_factor_taker;
}  // namespace

TakeWeightFactors::TakeWeightFactors(WeightFactorTaker take)
    : previous_(std::exchange(weight_factor_taker, std::move(take))) {}
TakeWeightFactors::~TakeWeightFactors() { weight_factor_taker = std::move(previous_); }

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  LOOM_CHECK_T(ShapeError, weight.dim() == 2, "linear: weight must be 2-D [out, in], got {}", to_string(weight.shape()));
  LOOM_CHECK_T(ShapeError, x.dim() >= 1 && x.shape().back() == weight.shape()[1],
               "linear: input {} has {} features but weight {} expects {}", to_string(x.shape()),
               x.dim() ? x.shape().back() : 0, to_string(weight.shape()), weight.shape()[1]);
  LOOM_CHECK_T(TypeError, x.dtype() == weight.dtype(), "linear: input dtype {} differs from weight dtype {}",
               x.dtype(), weight.dtype());
  if (bias.defined()) {
    LOOM_CHECK_T(ShapeError, bias.dim() == 1 && bias.shape()[0] == weight.shape()[0],
                 "linear: bias {} does not match weight {} ({} outputs)", to_string(bias.shape()),
                 to_string(weight.shape()), weight.shape()[0]);
  }
  if (!core::is_half(x.dtype()) && x.dim() > 2) {
    // [..., in] (a sequence): the 2-D path over all rows, so that the bias
    // goes into the GEMM and the backward is one node whose weight and bias
    // inputs are the leaves themselves (a split backward defers their
    // gradients: zb-h1's weight pass), not a transpose view of the weight.
    core::Shape shape(x.shape().begin(), x.shape().end() - 1);
    shape.push_back(weight.shape()[0]);
    return reshape(linear(reshape(x, {-1, x.shape().back()}), weight, bias), shape);
  }
  if (core::is_half(x.dtype()) || x.dim() != 2) {
    Tensor y = matmul(x, transpose(weight, 0, 1));
    return bias.defined() ? add(y, bias) : y;
  }
  // 2-D fast path: out = bias (broadcast rows), then out += x @ W^T in one gemm.
  const int64_t n = x.shape()[0], in = x.shape()[1], outf = weight.shape()[0];
  Tensor out = Tensor::empty({n, outf}, x.dtype(), x.device());
  {
    core::NoGradGuard no_grad;
    MatrixOperand ox = as_gemm_operand(x.detach());
    Tensor w = contiguous(weight.detach());
    if (bias.defined()) backend(x.device()).copy(expand(bias.detach(), {n, outf}), out);
    Backend::GemmArgs g{.trans_a = ox.trans, .trans_b = true, .batch = 1, .m = n, .n = outf, .k = in,
                        .lda = ox.ld, .ldb = std::max<int64_t>(in, 1), .ldc = std::max<int64_t>(outf, 1),
                        .beta = bias.defined() ? 1.0 : 0.0};
    backend(x.device()).gemm(g, ox.t, w, out);
  }
  if (any_requires_grad({&x, &weight, &bias})) {
    record("LinearBackward", {x, weight, bias}, out,
           [x = x.detach(), w = weight.detach(), leaf = weight](const Tensor& g, GradMask need) {
             Tensor gx, gw, gb;
             if (need[0]) gx = matmul(g, w);
             if (need[1] && !(weight_factor_taker && weight_factor_taker(leaf, g, x))) gw = matmul(transpose(g, 0, 1), x);
             if (need[2]) gb = sum(g, {0});
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return out;
}

}  // namespace loom::ops

namespace loom::core {
using namespace loom::ops;  // NOLINT: operators forward to ops
Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
Tensor operator-(const Tensor& a) { return ops::neg(a); }
Tensor operator+(const Tensor& a, double b) { return ops::add(a, b); }
Tensor operator-(const Tensor& a, double b) { return ops::add(a, -b); }
Tensor operator*(const Tensor& a, double b) { return ops::mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return ops::mul(a, 1.0 / b); }
Tensor operator*(double a, const Tensor& b) { return ops::mul(b, a); }
}  // namespace loom::core
