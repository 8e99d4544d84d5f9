#include "loom/ops/backend.h"

#include "loom/ops/cpu/cpu_backend.h"

namespace loom::ops {
namespace {

[[noreturn]] void missing(const char* kernel) {
  throw TypeError(format("kernel '{}' is not implemented for this device", kernel));
}

}  // namespace

void Backend::copy(const Tensor&, Tensor&) const { missing("copy"); }
void Backend::fill(Tensor&, double) const { missing("fill"); }
void Backend::arange(Tensor&, double, double) const { missing("arange"); }
void Backend::fill_uniform(Tensor&, double, double, core::Generator&) const { missing("fill_uniform"); }
void Backend::fill_normal(Tensor&, double, double, core::Generator&) const { missing("fill_normal"); }
void Backend::binary(BinaryOp, const Tensor&, const Tensor&, Tensor&) const { missing("binary"); }
void Backend::unary(UnaryOp, const Tensor&, Tensor&) const { missing("unary"); }
void Backend::reduce(ReduceOp, const Tensor&, int64_t, int64_t, int64_t, Tensor&, Tensor*) const {
  missing("reduce");
}
void Backend::gemm(const GemmArgs&, const Tensor&, const Tensor&, Tensor&) const { missing("gemm"); }
void Backend::softmax(const Tensor&, Tensor&, bool) const { missing("softmax"); }
void Backend::softmax_backward(const Tensor&, const Tensor&, Tensor&, bool) const { missing("softmax_backward"); }
void Backend::layer_norm(const Tensor&, const Tensor*, const Tensor*, double, Tensor&, Tensor&, Tensor&) const {
  missing("layer_norm");
}
void Backend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*,
                                  Tensor*, Tensor*, Tensor*) const {
  missing("layer_norm_backward");
}
void Backend::index_select(const Tensor&, int64_t, const Tensor&, Tensor&) const { missing("index_select"); }
void Backend::index_add(Tensor&, int64_t, const Tensor&, const Tensor&) const { missing("index_add"); }
void Backend::gather(const Tensor&, int64_t, const Tensor&, Tensor&) const { missing("gather"); }
void Backend::scatter_add(Tensor&, int64_t, const Tensor&, const Tensor&) const { missing("scatter_add"); }
void Backend::conv2d(const Tensor&, const Tensor&, const Tensor*, const Conv2dParams&, Tensor&) const {
  missing("conv2d");
}
void Backend::conv2d_backward(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor*, Tensor*,
                              Tensor*) const {
  missing("conv2d_backward");
}
void Backend::max_pool2d(const Tensor&, const Pool2dParams&, Tensor&, Tensor&) const { missing("max_pool2d"); }
void Backend::max_pool2d_backward(const Tensor&, const Tensor&, Tensor&) const { missing("max_pool2d_backward"); }
void Backend::avg_pool2d(const Tensor&, const Pool2dParams&, Tensor&) const { missing("avg_pool2d"); }
void Backend::avg_pool2d_backward(const Tensor&, const Pool2dParams&, Tensor&) const {
  missing("avg_pool2d_backward");
}
void Backend::batch_norm(const Tensor&, const Tensor*, const Tensor*, Tensor*, Tensor*, bool, double, double,
                         Tensor&, Tensor&, Tensor&) const {
  missing("batch_norm");
}
void Backend::batch_norm_backward(const Tensor&, const Tensor&, const Tensor*, const Tensor&, const Tensor&, bool,
                                  Tensor*, Tensor*, Tensor*) const {
  missing("batch_norm_backward");
}

const Backend& backend(core::Device device) {
  static const cpu::CpuBackend kCpu;
  if (device.is_cpu()) return kCpu;
  throw TypeError(format("no kernels for device {} in this build (built without CUDA)", core::to_string(device)));
}

}  // namespace loom::ops
