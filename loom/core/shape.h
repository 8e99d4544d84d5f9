// Shapes and strides: counts of elements, row-major strides, broadcasting.
//
//   Shape s{2, 3};  numel(s) == 6;  contiguous_strides(s) == Strides{3, 1};
//   broadcast_shapes({2, 1}, {3}, "add") == Shape{2, 3};   // throws ShapeError otherwise
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace loom::core {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// Inline: kernels call it in loops.
inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
Strides contiguous_strides(const Shape& s);
std::string to_string(const Shape& s);  // "[2, 3]"
std::ostream& operator<<(std::ostream& os, const Shape& s);

// NumPy broadcasting of two shapes; `op` names the caller in the error.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);

// Maps a possibly negative dim into [0, ndim); throws IndexError naming `op`.
int64_t wrap_dim(int64_t dim, int64_t ndim, std::string_view op);

}  // namespace loom::core
