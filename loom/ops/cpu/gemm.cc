// Matrix multiply: f32 through oneDNN's sgemm (JIT, AVX2/AVX-512, OpenMP),
// other types through a cache-blocked reference loop.
#include <oneapi/dnnl/dnnl.h>

#include "loom/ops/cpu/cpu_backend.h"
#include "loom/ops/cpu/loops.h"

namespace loom::ops::cpu {
namespace {

// C = op(A) @ op(B) + beta * C for one matrix, row-major.
template <class T>
void gemm_reference(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                    int64_t ldb, T beta, T* c, int64_t ldc) {
  core::parallel_for(0, m, std::max<int64_t>(1, 4096 / std::max<int64_t>(n * k, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T* crow = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) crow[j] = beta == T(0) ? T(0) : beta * crow[j];
      for (int64_t p = 0; p < k; ++p) {
        const T av = ta ? a[p * lda + i] : a[i * lda + p];
        if (!tb) {
          const T* brow = b + p * ldb;
          for (int64_t j = 0; j < n; ++j) crow[j] += av * brow[j];
        } else {
          for (int64_t j = 0; j < n; ++j) crow[j] += av * b[j * ldb + p];
        }
      }
    }
  });
}

}  // namespace

void CpuBackend::gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, Tensor& c) const {
  core::visit_compute_dtype(c.dtype(), "matmul", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      throw TypeError("matmul: bool tensors are not supported");
    } else {
      const T* pa = static_cast<const T*>(a.data_ptr());
      const T* pb = static_cast<const T*>(b.data_ptr());
      T* pc = static_cast<T*>(c.data_ptr());
      for (int64_t i = 0; i < g.batch; ++i) {
        const T* ai = pa + i * g.stride_a;
        const T* bi = pb + i * g.stride_b;
        T* ci = pc + i * g.stride_c;
        if (g.m == 0 || g.n == 0) continue;
        if constexpr (std::is_same_v<T, float>) {
          if (g.k == 0) {
            for (int64_t r = 0; r < g.m; ++r)
              for (int64_t j = 0; j < g.n; ++j) ci[r * g.ldc + j] = g.beta == 0 ? 0.f : ci[r * g.ldc + j] * float(g.beta);
            continue;
          }
          dnnl_status_t st = dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, 1.0f, ai,
                                        g.lda, bi, g.ldb, static_cast<float>(g.beta), ci, g.ldc);
          LOOM_CHECK(st == dnnl_success, "matmul: oneDNN sgemm failed with status {}", static_cast<int>(st));
        } else {
          gemm_reference<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, ai, g.lda, bi, g.ldb, static_cast<T>(g.beta), ci,
                            g.ldc);
        }
      }
    }
  });
}

}  // namespace loom::ops::cpu
