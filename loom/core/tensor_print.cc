// Readable printing, in the manner of PyTorch and NumPy: nested brackets,
// a shared number format per tensor, and "..." past 6 entries per dim when
// the tensor has more than 1000 elements.
#include <cmath>
#include <iomanip>
#include <sstream>

#include "loom/core/tensor.h"

namespace loom::core {
namespace {

struct Printer {
  const Tensor& t;
  bool summarize;
  bool floating;
  bool sci;
  int precision = 4;
  std::ostringstream out;

  double value(const std::vector<int64_t>& idx) { return t.at<double>(idx); }

  void element(double v) {
    if (t.dtype() == DType::Bool) {
      out << (v != 0 ? "true" : "false");
    } else if (!floating) {
      out << static_cast<int64_t>(v);
    } else if (std::isnan(v) || std::isinf(v)) {
      out << v;
    } else if (sci) {
      out << std::scientific << std::setprecision(precision) << v << std::defaultfloat;
    } else {
      out << std::fixed << std::setprecision(precision) << v << std::defaultfloat;
    }
  }

  void rec(std::vector<int64_t>& idx, int64_t d, int indent) {
    if (d == t.dim()) {
      element(value(idx));
      return;
    }
    int64_t n = t.shape()[d];
    out << "[";
    for (int64_t i = 0; i < n; ++i) {
      if (summarize && n > 6 && i == 3) {
        out << "...";
        i = n - 3;
        out << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
      }
      idx.push_back(i);
      rec(idx, d + 1, indent + 1);
      idx.pop_back();
      if (i + 1 < n) out << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    out << "]";
  }
};

}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "tensor(undefined)";
  Printer p{*this, numel() > 1000, is_floating(dtype()), false};
  if (p.floating && numel() > 0) {
    double maxabs = 0, minabs = INFINITY;
    for (double v : to_vector<double>()) {
      if (!std::isfinite(v)) continue;
      maxabs = std::max(maxabs, std::abs(v));
      if (v != 0) minabs = std::min(minabs, std::abs(v));
    }
    p.sci = maxabs >= 1e8 || (minabs < 1e-4 && minabs != INFINITY);
  }
  p.out << "tensor(";
  std::vector<int64_t> idx;
  if (device().is_cpu()) {
    p.rec(idx, 0, 7);
  } else {
    p.out << "<on " << core::to_string(device()) << ">";
  }
  p.out << ", dtype=" << name(dtype()) << ", shape=" << core::to_string(shape());
  if (requires_grad()) p.out << ", requires_grad";
  p.out << ")";
  return p.out.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace loom::core
