// Elementwise kernels: copy/convert, fills, unary and binary math.
#include <cmath>
#include <numbers>
#include <type_traits>

#include "loom/ops/cpu/cpu_backend.h"
#include "loom/ops/cpu/loops.h"

namespace loom::ops::cpu {
namespace {

using core::cast_value;

template <class T>
constexpr bool kFloat = std::is_floating_point_v<T>;

template <class T>
inline T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2);
  return cdf + x * pdf;
}

template <class T, BinaryOp Op>
inline T binary_scalar(T a, T b) {
  if constexpr (Op == BinaryOp::Add) return a + b;
  else if constexpr (Op == BinaryOp::Sub) return a - b;
  else if constexpr (Op == BinaryOp::Mul && std::is_same_v<T, bool>) return a && b;
  else if constexpr (Op == BinaryOp::Mul) return a * b;
  else if constexpr (Op == BinaryOp::Div) return a / b;
  else if constexpr (Op == BinaryOp::Maximum) return a > b || a != a ? a : b;  // NaN propagates
  else if constexpr (Op == BinaryOp::Minimum) return a < b || a != a ? a : b;
  else if constexpr (Op == BinaryOp::Eq) return T(a == b);
  else if constexpr (Op == BinaryOp::Gt) return T(a > b);
  else if constexpr (Op == BinaryOp::Ge) return T(a >= b);
  else if constexpr (Op == BinaryOp::Lt) return T(a < b);
  else if constexpr (Op == BinaryOp::Le) return T(a <= b);
  else if constexpr (Op == BinaryOp::Pow) return static_cast<T>(std::pow(a, b));
  else if constexpr (Op == BinaryOp::ReluBackward) return b > T(0) ? a : T(0);
  else if constexpr (Op == BinaryOp::GeluBackward) return a * gelu_grad(b);
  else if constexpr (Op == BinaryOp::SigmoidBackward) return a * b * (T(1) - b);
  else if constexpr (Op == BinaryOp::TanhBackward) return a * (T(1) - b * b);
}

template <class T, BinaryOp Op>
void binary_typed(const Tensor& a, const Tensor& b, Tensor& out) {
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  strided_loop<3>(out.shape(), {out.strides(), a.strides(), b.strides()},
                  [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> st) {
                    T* o = po + off[0];
                    const T* x = pa + off[1];
                    const T* y = pb + off[2];
                    // The common layouts get their own loop so the compiler vectorises them.
                    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
                      for (int64_t i = 0; i < n; ++i) o[i] = binary_scalar<T, Op>(x[i], y[i]);
                    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
                      const T yv = *y;
                      for (int64_t i = 0; i < n; ++i) o[i] = binary_scalar<T, Op>(x[i], yv);
                    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
                      const T xv = *x;
                      for (int64_t i = 0; i < n; ++i) o[i] = binary_scalar<T, Op>(xv, y[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i)
                        o[i * st[0]] = binary_scalar<T, Op>(x[i * st[1]], y[i * st[2]]);
                    }
                  });
}

template <class T>
void binary_dispatch(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  switch (op) {
#define LOOM_BINARY_CASE(name) \
  case BinaryOp::name: return binary_typed<T, BinaryOp::name>(a, b, out);
    LOOM_BINARY_CASE(Add) LOOM_BINARY_CASE(Sub) LOOM_BINARY_CASE(Mul) LOOM_BINARY_CASE(Div)
    LOOM_BINARY_CASE(Maximum) LOOM_BINARY_CASE(Minimum) LOOM_BINARY_CASE(Eq) LOOM_BINARY_CASE(Gt)
    LOOM_BINARY_CASE(Ge) LOOM_BINARY_CASE(Lt) LOOM_BINARY_CASE(Le)
#undef LOOM_BINARY_CASE
    default: break;
  }
  if constexpr (kFloat<T>) {
    switch (op) {
      case BinaryOp::Pow: return binary_typed<T, BinaryOp::Pow>(a, b, out);
      case BinaryOp::ReluBackward: return binary_typed<T, BinaryOp::ReluBackward>(a, b, out);
      case BinaryOp::GeluBackward: return binary_typed<T, BinaryOp::GeluBackward>(a, b, out);
      case BinaryOp::SigmoidBackward: return binary_typed<T, BinaryOp::SigmoidBackward>(a, b, out);
      case BinaryOp::TanhBackward: return binary_typed<T, BinaryOp::TanhBackward>(a, b, out);
      default: break;
    }
  }
  throw TypeError(format("binary op {} is not defined for dtype {}", static_cast<int>(op), core::dtype_v<T>));
}

template <class T, UnaryOp Op>
inline T unary_scalar(T x) {
  if constexpr (Op == UnaryOp::Neg) return -x;
  else if constexpr (Op == UnaryOp::Abs) return x < T(0) ? -x : x;
  else if constexpr (Op == UnaryOp::Sign) return T((T(0) < x) - (x < T(0)));
  else if constexpr (Op == UnaryOp::Square) return x * x;
  else if constexpr (Op == UnaryOp::Relu) return x > T(0) ? x : T(0);
  else if constexpr (Op == UnaryOp::Exp) return std::exp(x);
  else if constexpr (Op == UnaryOp::Log) return std::log(x);
  else if constexpr (Op == UnaryOp::Sqrt) return std::sqrt(x);
  else if constexpr (Op == UnaryOp::Reciprocal) return T(1) / x;
  else if constexpr (Op == UnaryOp::Sigmoid) return T(1) / (T(1) + std::exp(-x));
  else if constexpr (Op == UnaryOp::Tanh) return std::tanh(x);
  else if constexpr (Op == UnaryOp::Gelu) return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
}

template <class T, UnaryOp Op>
void unary_typed(const Tensor& a, Tensor& out) {
  const T* pa = static_cast<const T*>(a.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  strided_loop<2>(out.shape(), {out.strides(), a.strides()},
                  [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> st) {
                    T* o = po + off[0];
                    const T* x = pa + off[1];
                    if (st[0] == 1 && st[1] == 1) {
                      for (int64_t i = 0; i < n; ++i) o[i] = unary_scalar<T, Op>(x[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = unary_scalar<T, Op>(x[i * st[1]]);
                    }
                  });
}

template <class T>
void unary_dispatch(UnaryOp op, const Tensor& a, Tensor& out) {
  if constexpr (!std::is_same_v<T, bool>) {
    switch (op) {
      case UnaryOp::Neg: return unary_typed<T, UnaryOp::Neg>(a, out);
      case UnaryOp::Abs: return unary_typed<T, UnaryOp::Abs>(a, out);
      case UnaryOp::Sign: return unary_typed<T, UnaryOp::Sign>(a, out);
      case UnaryOp::Square: return unary_typed<T, UnaryOp::Square>(a, out);
      case UnaryOp::Relu: return unary_typed<T, UnaryOp::Relu>(a, out);
      default: break;
    }
  }
  if constexpr (kFloat<T>) {
    switch (op) {
#define LOOM_UNARY_CASE(name) \
  case UnaryOp::name: return unary_typed<T, UnaryOp::name>(a, out);
      LOOM_UNARY_CASE(Exp) LOOM_UNARY_CASE(Log) LOOM_UNARY_CASE(Sqrt) LOOM_UNARY_CASE(Reciprocal)
      LOOM_UNARY_CASE(Sigmoid) LOOM_UNARY_CASE(Tanh) LOOM_UNARY_CASE(Gelu)
#undef LOOM_UNARY_CASE
      default: break;
    }
  }
  throw TypeError(format("unary op {} is not defined for dtype {}", static_cast<int>(op), core::dtype_v<T>));
}

}  // namespace

void CpuBackend::copy(const Tensor& src, Tensor& dst) const {
  core::visit_dtype(src.dtype(), [&]<class S>() {
    core::visit_dtype(dst.dtype(), [&]<class D>() {
      const S* ps = static_cast<const S*>(src.data_ptr());
      D* pd = static_cast<D*>(dst.data_ptr());
      strided_loop<2>(dst.shape(), {dst.strides(), src.strides()},
                      [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> st) {
                        D* o = pd + off[0];
                        const S* x = ps + off[1];
                        if constexpr (std::is_same_v<S, D>) {
                          if (st[0] == 1 && st[1] == 1) {
                            std::memcpy(o, x, static_cast<size_t>(n) * sizeof(D));
                            return;
                          }
                        }
                        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = cast_value<D>(x[i * st[1]]);
                      });
    });
  });
}

void CpuBackend::fill(Tensor& dst, double value) const {
  core::visit_dtype(dst.dtype(), [&]<class T>() {
    const T v = cast_value<T>(value);
    T* p = static_cast<T*>(dst.data_ptr());
    strided_loop<1>(dst.shape(), {dst.strides()}, [&](std::array<int64_t, 1> off, int64_t n, std::array<int64_t, 1> st) {
      for (int64_t i = 0; i < n; ++i) p[off[0] + i * st[0]] = v;
    });
  });
}

void CpuBackend::arange(Tensor& dst, double start, double step) const {
  core::visit_dtype(dst.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(dst.data_ptr());
    for (int64_t i = 0; i < dst.numel(); ++i) p[i] = cast_value<T>(start + step * static_cast<double>(i));
  });
}

void CpuBackend::fill_uniform(Tensor& dst, double lo, double hi, core::Generator& gen) const {
  LOOM_ASSERT(dst.is_contiguous());
  core::visit_float_dtype(dst.dtype(), "uniform", [&]<class T>() {
    T* p = static_cast<T*>(dst.data_ptr());
    gen.fill_uniform(p, dst.numel());
    const T scale = static_cast<T>(hi - lo), shift = static_cast<T>(lo);
    for (int64_t i = 0; i < dst.numel(); ++i) p[i] = p[i] * scale + shift;
  });
}

void CpuBackend::fill_normal(Tensor& dst, double mean, double std, core::Generator& gen) const {
  LOOM_ASSERT(dst.is_contiguous());
  core::visit_float_dtype(dst.dtype(), "normal", [&]<class T>() {
    T* p = static_cast<T*>(dst.data_ptr());
    gen.fill_normal(p, dst.numel());
    const T s = static_cast<T>(std), m = static_cast<T>(mean);
    for (int64_t i = 0; i < dst.numel(); ++i) p[i] = p[i] * s + m;
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const {
  if (op == BinaryOp::GeluBackward && gelu_backward_f32(a, b, out)) return;
  core::visit_compute_dtype(out.dtype(), "binary", [&]<class T>() { binary_dispatch<T>(op, a, b, out); });
}

void CpuBackend::unary(UnaryOp op, const Tensor& a, Tensor& out) const {
  if (op == UnaryOp::Gelu && gelu_f32(a, out)) return;
  core::visit_compute_dtype(out.dtype(), "unary", [&]<class T>() { unary_dispatch<T>(op, a, out); });
}

}  // namespace loom::ops::cpu
