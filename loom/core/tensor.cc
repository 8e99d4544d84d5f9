#include "loom/core/tensor.h"

#include <atomic>

namespace loom::core {

Storage::Storage(size_t nbytes, Device device) : impl_(std::make_shared<Impl>()) {
  LOOM_CHECK(device.is_cpu(), "Storage: device {} has no allocator in this build", to_string(device));
  impl_->data = cpu_allocator().allocate(nbytes);
  impl_->nbytes = nbytes;
  impl_->device = device;
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : impl_(std::make_shared<Impl>()) {
  impl_->data = data;
  impl_->nbytes = nbytes;
  impl_->device = device;
  impl_->deleter = std::move(deleter);
  if (!impl_->deleter) impl_->deleter = [](void*) {};
}

Storage::Impl::~Impl() {
  if (deleter) {
    deleter(data);
  } else if (data) {
    cpu_allocator().deallocate(data, nbytes);
  }
}

TensorImpl::~TensorImpl() = default;

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LOOM_CHECK_T(ShapeError, d >= 0, "empty: negative size in shape {}", core::to_string(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage(static_cast<size_t>(core::numel(shape)) * itemsize(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const { return shape()[static_cast<size_t>(wrap_dim(d, dim(), "size"))]; }
int64_t Tensor::stride(int64_t d) const {
  return strides()[static_cast<size_t>(wrap_dim(d, dim(), "stride"))];
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to lay out (PyTorch agrees)
  int64_t expected = 1;
  for (size_t i = impl_->shape.size(); i-- > 0;) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

Tensor Tensor::as_strided(const Shape& shape, const Strides& strides, int64_t offset) const {
  LOOM_ASSERT(shape.size() == strides.size());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

bool Tensor::requires_grad() const { return impl_->autograd && impl_->autograd->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  LOOM_CHECK(!on || is_floating(dtype()), "set_requires_grad: only floating tensors can require grad, got {}",
             dtype());
  autograd_meta().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl_->autograd ? impl_->autograd->grad : Tensor(); }
void Tensor::set_grad(const Tensor& g) { autograd_meta().grad = g; }

const std::shared_ptr<Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<Node> kNone;
  return impl_->autograd ? impl_->autograd->grad_fn : kNone;
}

bool Tensor::is_leaf() const { return grad_fn() == nullptr; }

AutogradMeta& Tensor::autograd_meta() {
  if (!impl_->autograd) impl_->autograd = std::make_unique<AutogradMeta>();
  return *impl_->autograd;
}

namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};
}  // namespace

bool GradMode::is_enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool on) { g_grad_enabled = on; }
uint64_t next_sequence_nr() { return g_sequence.fetch_add(1, std::memory_order_relaxed); }

}  // namespace loom::core
