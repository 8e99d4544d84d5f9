// Internal to the CPU backend: strided loops for its kernels. The shape is
// coalesced (dims that are contiguous in every operand merge, size-1 dims
// drop) and walked row by row;
// `inner` gets each operand's offset of the row start, the row length and each
// operand's inner stride, so the innermost loop is a plain, vectorisable one.
#pragma once

#include <array>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "loom/core/parallel.h"
#include "loom/core/shape.h"

namespace loom::ops::cpu {

inline constexpr int64_t kGrain = 32768;  // elements per thread before splitting work

template <size_t N>
struct LoopGeometry {
  core::Shape shape;
  std::array<core::Strides, N> strides;
};

template <size_t N>
LoopGeometry<N> coalesce(const core::Shape& shape, const std::array<core::Strides, N>& strides) {
  LoopGeometry<N> g;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !g.shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = g.strides[k].back() == strides[k][d] * shape[d];
    if (merge) {
      g.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) g.strides[k].back() = strides[k][d];
    } else {
      g.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) g.strides[k].push_back(strides[k][d]);
    }
  }
  if (g.shape.empty()) {
    g.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) g.strides[k].push_back(1);
  }
  return g;
}

// inner(std::array<int64_t, N> offsets, int64_t n, std::array<int64_t, N> inner_strides)
template <size_t N, class Inner>
void strided_loop(const core::Shape& shape, const std::array<core::Strides, N>& strides, const Inner& inner) {
  const LoopGeometry<N> g = coalesce<N>(shape, strides);
  const int64_t nd = static_cast<int64_t>(g.shape.size());
  const int64_t cols = g.shape.back();
  std::array<int64_t, N> inner_st;
  for (size_t k = 0; k < N; ++k) inner_st[k] = g.strides[k].back();
  const int64_t rows = core::numel(g.shape) / std::max<int64_t>(cols, 1);
  if (cols == 0) return;

  if (rows == 1) {
    core::parallel_for(0, cols, kGrain, [&](int64_t lo, int64_t hi) {
      std::array<int64_t, N> off;
      for (size_t k = 0; k < N; ++k) off[k] = lo * inner_st[k];
      inner(off, hi - lo, inner_st);
    });
    return;
  }
  const int64_t row_grain = std::max<int64_t>(1, kGrain / cols);
  core::parallel_for(0, rows, row_grain, [&](int64_t lo, int64_t hi) {
    // Multi-index of row `lo` over the outer dims.
    std::array<int64_t, 8> small_idx{};
    std::vector<int64_t> big_idx;
    int64_t* idx = small_idx.data();
    if (nd - 1 > 8) {
      big_idx.resize(static_cast<size_t>(nd - 1));
      idx = big_idx.data();
    }
    int64_t r = lo;
    std::array<int64_t, N> off{};
    for (int64_t d = nd - 2; d >= 0; --d) {
      idx[d] = r % g.shape[d];
      r /= g.shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx[d] * g.strides[k][d];
    }
    for (int64_t row = lo; row < hi; ++row) {
      inner(off, cols, inner_st);
      for (int64_t d = nd - 2; d >= 0; --d) {
        for (size_t k = 0; k < N; ++k) off[k] += g.strides[k][d];
        if (++idx[d] < g.shape[d]) break;
        for (size_t k = 0; k < N; ++k) off[k] -= g.strides[k][d] * g.shape[d];
        idx[d] = 0;
      }
    }
  });
}

}  // namespace loom::ops::cpu
