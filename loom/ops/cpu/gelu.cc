// GELU (the erf form) on contiguous f32 through oneDNN's eltwise primitives:
// vectorised JIT code, where our scalar std::erf loop was about a tenth of a
// transformer's step. Other dtypes and layouts take the generic loops in
// elementwise.cc. oneDNN's erf is a polynomial, not libm's: the values
// agree to a few ulp, and every rank and process computes them the same way.
#include <map>
#include <mutex>
#include <utility>

#include <oneapi/dnnl/dnnl.hpp>

#include "loom/ops/cpu/cpu_backend.h"

namespace loom::ops::cpu {
namespace {

using dnnl::memory;

struct GeluPrimitives {
  dnnl::eltwise_forward forward;
  dnnl::eltwise_backward backward;
};

// The primitives per element count, built once each (a step sees a few counts).
class GeluCache {
 public:
  const GeluPrimitives& get(int64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_count_.find(n);
    if (it != by_count_.end()) return it->second;
    const memory::desc md({n}, memory::data_type::f32, memory::format_tag::a);
    const auto gelu = dnnl::algorithm::eltwise_gelu_erf;
    const dnnl::eltwise_forward::primitive_desc fwd(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, gelu, md, 0.f, 0.f), engine_);
    const dnnl::eltwise_backward::primitive_desc bwd(dnnl::eltwise_backward::desc(gelu, md, md, 0.f, 0.f), engine_,
                                                     fwd);
    return by_count_.emplace(n, GeluPrimitives{dnnl::eltwise_forward(fwd), dnnl::eltwise_backward(bwd)}).first->second;
  }
  const dnnl::engine& engine() const { return engine_; }

 private:
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  std::mutex mu_;
  std::map<int64_t, GeluPrimitives> by_count_;
};

GeluCache& cache() {
  static GeluCache c;
  return c;
}

bool plain_f32(const Tensor& t, int64_t n) {
  return t.dtype() == core::DType::F32 && t.is_contiguous() && t.numel() == n;
}

memory as_memory(const Tensor& t) {
  const memory::desc md({t.numel()}, memory::data_type::f32, memory::format_tag::a);
  return memory(md, cache().engine(), const_cast<void*>(t.data_ptr()));
}

}  // namespace

bool gelu_f32(const Tensor& x, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0 || !plain_f32(x, n) || !plain_f32(out, n)) return false;
  const GeluPrimitives& p = cache().get(n);
  dnnl::stream s(cache().engine());
  p.forward.execute(s, {{DNNL_ARG_SRC, as_memory(x)}, {DNNL_ARG_DST, as_memory(out)}});
  s.wait();
  return true;
}

bool gelu_backward_f32(const Tensor& grad, const Tensor& x, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0 || !plain_f32(grad, n) || !plain_f32(x, n) || !plain_f32(out, n)) return false;
  const GeluPrimitives& p = cache().get(n);
  dnnl::stream s(cache().engine());
  p.backward.execute(s, {{DNNL_ARG_SRC, as_memory(x)}, {DNNL_ARG_DIFF_DST, as_memory(grad)},
                         {DNNL_ARG_DIFF_SRC, as_memory(out)}});
  s.wait();
  return true;
}

}  // namespace loom::ops::cpu
