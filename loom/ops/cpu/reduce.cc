// Reductions over the middle dim of a contiguous [outer, n, inner] view.
// Sums accumulate in double for f32 inputs' rows (n contiguous) so the result
// does not depend on the thread count; the order within a row is fixed.
#include <limits>

#include "loom/ops/cpu/cpu_backend.h"
#include "loom/ops/cpu/loops.h"

namespace loom::ops::cpu {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

template <class T>
void sum_kernel(const T* a, int64_t outer, int64_t n, int64_t inner, T* out) {
  if (inner == 1) {
    core::parallel_for(0, outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* row = a + o * n;
        // Eight independent partial sums: vectorises and keeps rounding low.
        Acc<T> part[8] = {};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
          for (int j = 0; j < 8; ++j) part[j] += static_cast<Acc<T>>(row[i + j]);
        }
        Acc<T> s = 0;
        for (; i < n; ++i) s += static_cast<Acc<T>>(row[i]);
        for (int j = 0; j < 8; ++j) s += part[j];
        out[o] = static_cast<T>(s);
      }
    });
    return;
  }
  // Columns: accumulate rows of `inner` contiguous values into the output.
  core::parallel_for(0, outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)),
                     [&](int64_t lo, int64_t hi) {
                       int64_t o = lo / inner;
                       int64_t i0 = lo % inner;
                       while (lo < hi) {
                         int64_t i1 = std::min(inner, i0 + (hi - lo));
                         T* dst = out + o * inner;
                         const T* src = a + o * n * inner;
                         for (int64_t i = i0; i < i1; ++i) dst[i] = T(0);
                         for (int64_t r = 0; r < n; ++r) {
                           const T* row = src + r * inner;
                           for (int64_t i = i0; i < i1; ++i) dst[i] += row[i];
                         }
                         lo += i1 - i0;
                         ++o;
                         i0 = 0;
                       }
                     });
}

template <class T, bool IsMax>
void extreme_kernel(const T* a, int64_t outer, int64_t n, int64_t inner, T* out, int64_t* idx) {
  core::parallel_for(0, outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)),
                     [&](int64_t lo, int64_t hi) {
                       for (int64_t j = lo; j < hi; ++j) {
                         int64_t o = j / inner, i = j % inner;
                         const T* src = a + o * n * inner + i;
                         T best = src[0];
                         int64_t at = 0;
                         for (int64_t r = 1; r < n; ++r) {
                           T v = src[r * inner];
                           if constexpr (std::is_floating_point_v<T>) {
                             if (best != best) break;  // NaN wins, as in PyTorch
                             if (v != v) { best = v; at = r; break; }
                           }
                           if (IsMax ? v > best : v < best) { best = v; at = r; }
                         }
                         out[j] = best;
                         if (idx) idx[j] = at;
                       }
                     });
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& a, int64_t outer, int64_t n, int64_t inner, Tensor& out,
                        Tensor* indices) const {
  LOOM_ASSERT(a.is_contiguous() && out.is_contiguous());
  core::visit_compute_dtype(a.dtype(), "reduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      throw TypeError("reduce: bool tensors cannot be reduced; convert to an integer dtype first");
    } else {
      const T* pa = static_cast<const T*>(a.data_ptr());
      T* po = static_cast<T*>(out.data_ptr());
      int64_t* pi = indices && indices->defined() ? indices->data<int64_t>() : nullptr;
      switch (op) {
        case ReduceOp::Sum: return sum_kernel<T>(pa, outer, n, inner, po);
        case ReduceOp::Max: return extreme_kernel<T, true>(pa, outer, n, inner, po, pi);
        case ReduceOp::Min: return extreme_kernel<T, false>(pa, outer, n, inner, po, pi);
      }
    }
  });
}

}  // namespace loom::ops::cpu
