// Tensor: a cheap, shared handle to TensorImpl {Storage, shape, strides,
// offset, dtype, device, autograd meta}. Copying a Tensor shares the data;
// views share the Storage. Arithmetic lives in loom/ops as free functions.
//
//   Tensor t = Tensor::empty({2, 3}, DType::F32);      // uninitialised
//   Tensor u = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
//   float x = u.at<float>({1, 2});                      // 6
//   Tensor p = u.as_strided({3, 2}, {1, 3}, 0);         // raw view (no autograd)
#pragma once

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/allocator.h"
#include "loom/core/device.h"
#include "loom/core/dtype.h"
#include "loom/core/shape.h"

namespace loom::core {

// A block of device memory. Views of one tensor share one Storage.
class Storage {
 public:
  Storage() = default;
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere; `deleter` runs when the last user is gone.
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);

  void* data() const { return impl_ ? impl_->data : nullptr; }
  size_t nbytes() const { return impl_ ? impl_->nbytes : 0; }
  Device device() const { return impl_ ? impl_->device : Device{}; }
  bool defined() const { return impl_ != nullptr; }
  bool is_same(const Storage& o) const { return impl_ == o.impl_; }

 private:
  struct Impl {
    void* data = nullptr;
    size_t nbytes = 0;
    Device device;
    std::function<void(void*)> deleter;  // empty: return to the device allocator
    ~Impl();
  };
  std::shared_ptr<Impl> impl_;
};

class Tensor;
struct AutogradMeta;
class Node;

struct TensorImpl {
  Storage storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  std::unique_ptr<AutogradMeta> autograd;
  ~TensorImpl();
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  template <class T>
  static Tensor scalar(T value) { return from_vector<T>({value}, {}); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Strides& strides() const { return impl_->strides; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return core::numel(impl_->shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(dtype()); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage.device(); }
  int64_t offset() const { return impl_->offset; }
  const Storage& storage() const { return impl_->storage; }
  bool is_contiguous() const;

  void* data_ptr() const {
    return static_cast<char*>(impl_->storage.data()) + impl_->offset * itemsize(dtype());
  }
  template <class T>
  T* data() const {
    LOOM_CHECK_T(TypeError, dtype_v<T> == dtype(), "data<{}>(): tensor has dtype {}", name(dtype_v<T>),
                 dtype());
    return static_cast<T*>(data_ptr());
  }
  // Element at a multi-index (CPU only; for tests and printing, not hot loops).
  template <class T>
  T at(const std::vector<int64_t>& index) const;
  // The single element of a one-element tensor, converted to T.
  template <class T>
  T item() const;
  // Copies the elements in row-major order into a vector, converting to T.
  template <class T>
  std::vector<T> to_vector() const;

  // A view with the given geometry over the same storage; no autograd record.
  Tensor as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;
  // Shares data, drops autograd history and requires_grad.
  Tensor detach() const;

  // Autograd state (the engine lives in loom/autograd).
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  bool is_leaf() const;
  AutogradMeta& autograd_meta();  // creates it if missing
  AutogradMeta* autograd_meta_if() const { return impl_->autograd.get(); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  std::string to_string() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- autograd data structures (the tape) ----

// An edge of the backward graph: where one input's gradient goes. Either to
// the node that produced the input, or to a leaf tensor that accumulates it.
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
  bool defined() const { return fn || leaf; }
};

// A recorded op: maps the gradient of its output to gradients of its inputs
// (one per edge in `next`, undefined where no gradient flows).
class Node {
 public:
  virtual ~Node() = default;
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  // As apply, but only the gradients of the edges in `only` (bit i: next[i])
  // need computing (a split backward). A node that cannot leave the others
  // out computes them anyway; the engine ignores them.
  virtual std::vector<Tensor> apply_only(const Tensor& grad_output, uint64_t only) { return apply(grad_output); }
  virtual const char* name() const = 0;
  // Drops saved tensors once backward has used them (unless the graph is retained).
  virtual void release_saved() {}
  std::vector<Edge> next;
  uint64_t sequence_nr = 0;  // creation order: later nodes run first in backward
};

using GradHook = std::function<void(const Tensor& grad)>;

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  // Called once this leaf's gradient is final for the current backward pass.
  std::vector<GradHook> hooks;
};

// Whether ops record the tape on this thread. See autograd::NoGradGuard.
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

uint64_t next_sequence_nr();

// ---- template definitions ----

// Converts between element types, going through float for the 16-bit ones.
// Floating point to an integer saturates (out-of-range values clamp to the
// type's limits, NaN becomes 0): a plain cast is undefined there, and such
// values arrive from files (a corrupt counter in a checkpoint).
template <class T, class S>
T cast_value(S v) {
  if constexpr (std::is_same_v<S, Half> || std::is_same_v<S, BFloat16>) {
    return cast_value<T>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    return T(static_cast<float>(v));
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v != v) return T(0);
    if (v <= static_cast<S>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
    if (v >= static_cast<S>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  } else {
    return static_cast<T>(v);
  }
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  LOOM_CHECK_T(ShapeError, static_cast<int64_t>(values.size()) == core::numel(shape),
               "from_vector: {} values do not fill shape {}", values.size(), core::to_string(shape));
  Tensor t = empty(shape, dtype_v<T>);
  if constexpr (std::is_same_v<T, bool>) {
    auto* p = static_cast<bool*>(t.data_ptr());
    for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  } else if (!values.empty()) {
    std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(T));
  }
  return t;
}

template <class T>
T Tensor::at(const std::vector<int64_t>& index) const {
  LOOM_CHECK_T(IndexError, static_cast<int64_t>(index.size()) == dim(), "at: {} indices for a {}-dim tensor",
               index.size(), dim());
  int64_t off = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    int64_t ix = index[i] < 0 ? index[i] + shape()[i] : index[i];
    LOOM_CHECK_T(IndexError, ix >= 0 && ix < shape()[i], "at: index {} out of range for dim {} of size {}",
                 index[i], i, shape()[i]);
    off += ix * strides()[i];
  }
  return visit_dtype(dtype(), [&]<class S>() {
    return cast_value<T>(static_cast<const S*>(data_ptr())[off]);
  });
}

template <class T>
T Tensor::item() const {
  LOOM_CHECK(numel() == 1, "item: tensor has {} elements, expected 1", numel());
  return at<T>(std::vector<int64_t>(shape().size(), 0));
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> out;
  out.reserve(static_cast<size_t>(numel()));
  const int64_t n = numel(), nd = dim();
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  visit_dtype(dtype(), [&]<class S>() {
    const S* base = static_cast<const S*>(data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      int64_t off = 0;
      for (int64_t d = 0; d < nd; ++d) off += idx[d] * strides()[d];
      out.push_back(cast_value<T>(base[off]));
      for (int64_t d = nd - 1; d >= 0; --d) {
        if (++idx[d] < shape()[d]) break;
        idx[d] = 0;
      }
    }
  });
  return out;
}

}  // namespace loom::core
