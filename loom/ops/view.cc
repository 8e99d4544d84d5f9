#include "loom/ops/view.h"

#include <numeric>
#include <optional>

#include "loom/ops/backend.h"
#include "loom/ops/creation.h"
#include "loom/ops/math.h"
#include "loom/ops/record.h"

namespace loom::ops {
namespace {

using core::Strides;
using core::to_string;
using core::wrap_dim;

// Resolves one -1 and checks the element count.
Shape infer_shape(Shape shape, int64_t numel, const char* op, const Shape& from) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LOOM_CHECK_T(ShapeError, infer_at < 0, "{}: only one dim can be -1 in {}", op, to_string(shape));
      infer_at = static_cast<int64_t>(i);
    } else {
      LOOM_CHECK_T(ShapeError, shape[i] >= 0, "{}: invalid size {} in shape {}", op, shape[i], to_string(shape));
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    LOOM_CHECK_T(ShapeError, known != 0 && numel % known == 0, "{}: cannot reshape {} ({} elements) into {}", op,
                 to_string(from), numel, to_string(shape));
    shape[static_cast<size_t>(infer_at)] = numel / known;
  }
  LOOM_CHECK_T(ShapeError, core::numel(shape) == numel, "{}: cannot reshape {} ({} elements) into {}", op,
               to_string(from), numel, to_string(shape));
  return shape;
}

// Strides that let `shape` view memory laid out as (old_shape, old_strides), if any.
std::optional<Strides> view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& shape) {
  if (core::numel(old_shape) == 0 || old_shape.empty()) return core::contiguous_strides(shape);
  Strides out(shape.size());
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    // A chunk of dims ends where memory stops being contiguous across them.
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

Tensor make_view(const Tensor& x, const Shape& shape, const Strides& strides, int64_t offset) {
  return x.as_strided(shape, strides, offset);
}

void record_reshape(const Tensor& x, Tensor& out) {
  if (!any_requires_grad(x)) return;
  record("ReshapeBackward", {x}, out, [shape = x.shape()](const Tensor& g, GradMask) {
    return std::vector<Tensor>{reshape(g, shape)};
  });
}

}  // namespace

Tensor view(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "view", x.shape());
  auto strides = view_strides(x.shape(), x.strides(), shape);
  LOOM_CHECK_T(ShapeError, strides.has_value(),
               "view: a tensor of shape {} with strides {} cannot be viewed as {}; use reshape",
               to_string(x.shape()), to_string(x.strides()), to_string(shape));
  Tensor out = make_view(x, shape, *strides, x.offset());
  record_reshape(x, out);
  return out;
}

Tensor reshape(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "reshape", x.shape());
  if (auto strides = view_strides(x.shape(), x.strides(), shape)) {
    Tensor out = make_view(x, shape, *strides, x.offset());
    record_reshape(x, out);
    return out;
  }
  return view(contiguous(x), shape);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = wrap_dim(start_dim, x.dim(), "flatten");
  end_dim = wrap_dim(end_dim, x.dim(), "flatten");
  LOOM_CHECK_T(IndexError, start_dim <= end_dim, "flatten: start_dim {} is after end_dim {}", start_dim, end_dim);
  Shape s(x.shape().begin(), x.shape().begin() + start_dim);
  int64_t n = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) n *= x.shape()[d];
  s.push_back(n);
  s.insert(s.end(), x.shape().begin() + end_dim + 1, x.shape().end());
  return reshape(x, s);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  LOOM_CHECK_T(ShapeError, static_cast<int64_t>(dims.size()) == x.dim(),
               "permute: {} dims given for a tensor of shape {}", dims.size(), to_string(x.shape()));
  Shape shape(dims.size());
  Strides strides(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], x.dim(), "permute");
    LOOM_CHECK_T(IndexError, inverse[d] == -1, "permute: dim {} repeats", d);
    inverse[d] = static_cast<int64_t>(i);
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (any_requires_grad(x)) {
    record("PermuteBackward", {x}, out, [inverse](const Tensor& g, GradMask) {
      return std::vector<Tensor>{permute(g, inverse)};
    });
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(static_cast<size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(d0, x.dim(), "transpose")], dims[wrap_dim(d1, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "squeeze");
  if (x.dim() == 0 || x.shape()[dim] != 1) return x;
  Shape s = x.shape();
  s.erase(s.begin() + dim);
  return reshape(x, s);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + dim, 1);
  return reshape(x, s);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  LOOM_CHECK_T(IndexError, x.dim() > 0, "slice: cannot slice a 0-dim tensor");
  dim = wrap_dim(dim, x.dim(), "slice");
  LOOM_CHECK(step > 0, "slice: step must be positive, got {}", step);
  const int64_t n = x.shape()[dim];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = x.shape();
  Strides strides = x.strides();
  shape[dim] = (end - start + step - 1) / step;
  strides[dim] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + start * x.strides()[dim]);
  if (any_requires_grad(x)) {
    record("SliceBackward", {x}, out, [in = x.shape(), dt = x.dtype(), dim, start, end, step](const Tensor& g, GradMask) {
      Tensor gx = zeros(in, dt, g.device());
      Tensor part = slice(gx, dim, start, end, step);
      copy_(part, g);
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  LOOM_CHECK_T(IndexError, x.dim() > 0, "select: cannot index a 0-dim tensor");
  dim = wrap_dim(dim, x.dim(), "select");
  const int64_t n = x.shape()[dim];
  LOOM_CHECK_T(IndexError, index >= -n && index < n, "select: index {} out of range for dim {} of size {}", index,
               dim, n);
  if (index < 0) index += n;
  return squeeze(slice(x, dim, index, index + 1), dim);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  LOOM_CHECK_T(ShapeError, static_cast<int64_t>(shape.size()) >= x.dim(), "expand: cannot expand {} to {}",
               to_string(x.shape()), to_string(shape));
  const size_t lead = shape.size() - x.shape().size();
  Strides strides(shape.size(), 0);
  Shape out_shape = shape;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      LOOM_CHECK_T(ShapeError, shape[i] >= 0, "expand: cannot expand {} to {}", to_string(x.shape()), to_string(shape));
      continue;
    }
    const int64_t have = x.shape()[i - lead];
    if (shape[i] == -1) out_shape[i] = have;
    if (have == out_shape[i]) {
      strides[i] = x.strides()[i - lead];
    } else {
      LOOM_CHECK_T(ShapeError, have == 1, "expand: cannot expand {} to {} (dim {}: {} vs {})", to_string(x.shape()),
                   to_string(shape), i, have, shape[i]);
    }
  }
  if (out_shape == x.shape()) return x;
  Tensor out = make_view(x, out_shape, strides, x.offset());
  if (any_requires_grad(x)) {
    record("ExpandBackward", {x}, out, [in = x.shape()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{sum_to(g, in)};
    });
  }
  return out;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = empty_like(x);
  backend(x.device()).copy(x, out);
  if (any_requires_grad(x)) {
    record("ContiguousBackward", {x}, out, [](const Tensor& g, GradMask) { return std::vector<Tensor>{g}; });
  }
  return out;
}

Tensor to_dtype(const Tensor& x, core::DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  backend(x.device()).copy(x, out);
  if (core::is_floating(dtype) && any_requires_grad(x)) {
    record("ToDtypeBackward", {x}, out, [from = x.dtype()](const Tensor& g, GradMask) {
      return std::vector<Tensor>{to_dtype(g, from)};
    });
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  LOOM_CHECK_T(ShapeError, g.dim() >= static_cast<int64_t>(shape.size()), "sum_to: cannot reduce {} to {}",
               to_string(g.shape()), to_string(shape));
  const size_t lead = g.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < g.shape().size(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(static_cast<int64_t>(i));
  }
  Tensor s = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  return reshape(s, shape);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  LOOM_CHECK(!xs.empty(), "concat: needs at least one tensor");
  const Tensor& first = xs[0];
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape shape = first.shape();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    LOOM_CHECK(t.dtype() == first.dtype(), "concat: tensor {} has dtype {} but tensor 0 has {}", i, t.dtype(),
               first.dtype());
    bool ok = t.dim() == first.dim();
    for (int64_t d = 0; ok && d < t.dim(); ++d) ok = d == dim || t.shape()[d] == first.shape()[d];
    LOOM_CHECK_T(ShapeError, ok, "concat: tensor {} has shape {}, incompatible with {} along dim {}", i,
                 to_string(t.shape()), to_string(first.shape()), dim);
    total += t.shape()[dim];
  }
  shape[dim] = total;
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  std::vector<int64_t> starts;
  int64_t at = 0;
  {
    core::NoGradGuard no_grad;
    for (const Tensor& t : xs) {
      starts.push_back(at);
      Tensor part = slice(out, dim, at, at + t.shape()[dim]);
      backend(out.device()).copy(t, part);
      at += t.shape()[dim];
    }
  }
  if (any_requires_grad(xs)) {
    std::vector<int64_t> sizes;
    for (const Tensor& t : xs) sizes.push_back(t.shape()[dim]);
    record("ConcatBackward", xs, out, [starts, sizes, dim](const Tensor& g, GradMask need) {
      std::vector<Tensor> gs(starts.size());
      for (size_t i = 0; i < starts.size(); ++i) {
        if (need[i]) gs[i] = slice(g, dim, starts[i], starts[i] + sizes[i]);
      }
      return gs;
    });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  LOOM_CHECK(!xs.empty(), "stack: needs at least one tensor");
  dim = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < xs.size(); ++i) {
    LOOM_CHECK_T(ShapeError, xs[i].shape() == xs[0].shape(), "stack: tensor {} has shape {} but tensor 0 has {}", i,
                 to_string(xs[i].shape()), to_string(xs[0].shape()));
    parts.push_back(unsqueeze(xs[i], dim));
  }
  return concat(parts, dim);
}

}  // namespace loom::ops
