// Indexing kernels. Indices are validated by the op layer before they get here.
#include "loom/ops/cpu/cpu_backend.h"
#include "loom/ops/cpu/loops.h"

namespace loom::ops::cpu {
namespace {

// a viewed as [outer, size(dim), inner].
struct Split {
  int64_t outer = 1, n = 1, inner = 1;
};
Split split_at(const core::Shape& s, int64_t dim) {
  Split r;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    if (d < dim) r.outer *= s[d];
    else if (d == dim) r.n = s[d];
    else r.inner *= s[d];
  }
  return r;
}

template <class F>
void visit_data(core::DType t, const F& f) {
  core::visit_dtype(t, f);
}

}  // namespace

void CpuBackend::index_select(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const {
  const Split s = split_at(a.shape(), dim);
  const int64_t* idx = index.data<int64_t>();
  const int64_t m = index.numel();
  const size_t row_bytes = static_cast<size_t>(s.inner) * core::itemsize(a.dtype());
  const char* pa = static_cast<const char*>(a.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  core::parallel_for(0, s.outer * m, std::max<int64_t>(1, kGrain / std::max<int64_t>(s.inner, 1)),
                     [&](int64_t lo, int64_t hi) {
                       for (int64_t j = lo; j < hi; ++j) {
                         const int64_t o = j / m, i = j % m;
                         std::memcpy(po + static_cast<size_t>(j) * row_bytes,
                                     pa + static_cast<size_t>(o * s.n + idx[i]) * row_bytes, row_bytes);
                       }
                     });
}

void CpuBackend::index_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const {
  const Split s = split_at(out.shape(), dim);
  const int64_t* idx = index.data<int64_t>();
  const int64_t m = index.numel();
  core::visit_compute_dtype(out.dtype(), "index_add", [&]<class T>() {
    const T* ps = static_cast<const T*>(src.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    // Parallel over outer x inner columns: no two threads touch one element,
    // and each element sums its rows in index order (deterministic).
    core::parallel_for(0, s.outer * s.inner, 1024, [&](int64_t lo, int64_t hi) {
      int64_t j = lo;
      while (j < hi) {
        const int64_t o = j / s.inner, c0 = j % s.inner;
        const int64_t c1 = std::min(s.inner, c0 + (hi - j));
        for (int64_t i = 0; i < m; ++i) {
          T* dst = po + (o * s.n + idx[i]) * s.inner;
          const T* row = ps + (o * m + i) * s.inner;
          for (int64_t c = c0; c < c1; ++c) dst[c] = static_cast<T>(dst[c] + row[c]);
        }
        j += c1 - c0;
      }
    });
  });
}

void CpuBackend::gather(const Tensor& a, int64_t dim, const Tensor& index, Tensor& out) const {
  const Split so = split_at(index.shape(), dim);
  const int64_t na = a.shape()[static_cast<size_t>(dim)];
  const int64_t* idx = index.data<int64_t>();
  visit_data(a.dtype(), [&]<class T>() {
    const T* pa = static_cast<const T*>(a.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    // Index and out are [outer, m, inner]; a is [outer, na, inner_a] with inner_a == inner
    // (gather requires equal sizes outside `dim`).
    core::parallel_for(0, index.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) {
        const int64_t c = j % so.inner, o = j / (so.inner * so.n);
        po[j] = pa[(o * na + idx[j]) * so.inner + c];
      }
    });
  });
}

void CpuBackend::scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) const {
  const Split si = split_at(index.shape(), dim);
  const int64_t no = out.shape()[static_cast<size_t>(dim)];
  const int64_t* idx = index.data<int64_t>();
  core::visit_compute_dtype(out.dtype(), "scatter_add", [&]<class T>() {
    const T* ps = static_cast<const T*>(src.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    // Sequential over the scattered dim keeps the sum order fixed; parallel over outer.
    core::parallel_for(0, si.outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(si.n * si.inner, 1)),
                       [&](int64_t lo, int64_t hi) {
                         for (int64_t o = lo; o < hi; ++o) {
                           for (int64_t r = 0; r < si.n; ++r) {
                             for (int64_t c = 0; c < si.inner; ++c) {
                               const int64_t j = (o * si.n + r) * si.inner + c;
                               T& d = po[(o * no + idx[j]) * si.inner + c];
                               d = static_cast<T>(d + ps[j]);
                             }
                           }
                         }
                       });
  });
}

}  // namespace loom::ops::cpu
