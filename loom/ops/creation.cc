#include "loom/ops/creation.h"

#include <cmath>

#include "loom/ops/backend.h"

namespace loom::ops {

Tensor empty(const Shape& shape, DType dtype, Device device) { return Tensor::empty(shape, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  backend(device).fill(t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.dtype(), t.device()); }

Tensor clone(const Tensor& t) {
  Tensor c = empty_like(t);
  copy_(c, t);
  return c;
}

Tensor arange(double start, double end, double step, DType dtype) {
  LOOM_CHECK(step != 0, "arange: step must be non-zero");
  LOOM_CHECK(std::isfinite(start) && std::isfinite(end), "arange: bounds must be finite, got {} and {}", start, end);
  int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  Tensor t = Tensor::empty({n}, dtype);
  backend(t.device()).arange(t, start, step);
  return t;
}

Tensor rand(const Shape& shape, core::Generator& gen, DType dtype, double lo, double hi) {
  LOOM_CHECK(lo <= hi, "rand: low {} is above high {}", lo, hi);
  Tensor t = Tensor::empty(shape, dtype);
  uniform_(t, gen, lo, hi);
  return t;
}

Tensor randn(const Shape& shape, core::Generator& gen, DType dtype, double mean, double std) {
  LOOM_CHECK(std >= 0, "randn: std must be >= 0, got {}", std);
  Tensor t = Tensor::empty(shape, dtype);
  normal_(t, gen, mean, std);
  return t;
}

namespace {
// Draws in f32/f64; half types draw in f32 and round.
template <class F>
void draw_into(Tensor& t, const F& draw) {
  if (core::is_half(t.dtype()) || !t.is_contiguous()) {
    Tensor tmp = Tensor::empty(t.shape(), core::is_half(t.dtype()) ? DType::F32 : t.dtype(), t.device());
    draw(tmp);
    backend(t.device()).copy(tmp, t);
  } else {
    draw(t);
  }
}
}  // namespace

void fill_(Tensor& t, double value) { backend(t.device()).fill(t, value); }

void uniform_(Tensor& t, core::Generator& gen, double lo, double hi) {
  LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "uniform_: needs a floating dtype, got {}", t.dtype());
  draw_into(t, [&](Tensor& d) { backend(d.device()).fill_uniform(d, lo, hi, gen); });
}

void normal_(Tensor& t, core::Generator& gen, double mean, double std) {
  LOOM_CHECK_T(TypeError, core::is_floating(t.dtype()), "normal_: needs a floating dtype, got {}", t.dtype());
  draw_into(t, [&](Tensor& d) { backend(d.device()).fill_normal(d, mean, std, gen); });
}

void copy_(Tensor& dst, const Tensor& src) {
  LOOM_CHECK_T(ShapeError, dst.shape() == src.shape(), "copy_: destination shape {} and source shape {} differ",
               core::to_string(dst.shape()), core::to_string(src.shape()));
  LOOM_CHECK(dst.device() == src.device(), "copy_: devices differ ({} and {})", core::to_string(dst.device()),
             core::to_string(src.device()));
  backend(dst.device()).copy(src, dst);
}

}  // namespace loom::ops
