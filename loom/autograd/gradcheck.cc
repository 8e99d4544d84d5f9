#include "loom/autograd/gradcheck.h"

#include <algorithm>
#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/ops/ops.h"

namespace loom::autograd {

GradcheckResult gradcheck(const std::function<core::Tensor(const std::vector<core::Tensor>&)>& fn,
                          std::vector<core::Tensor> inputs, const GradcheckOptions& o) {
  auto checked = [&](size_t i) {
    return std::find(o.skip.begin(), o.skip.end(), i) == o.skip.end() && inputs[i].defined() &&
           core::is_floating(inputs[i].dtype());
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!checked(i)) continue;
    LOOM_CHECK_T(TypeError, inputs[i].dtype() == core::DType::F64, "gradcheck: input {} must be f64, got {}", i,
                 inputs[i].dtype());
    inputs[i].set_requires_grad(true);
    zero_grad(inputs[i], true);
  }
  core::Tensor out = fn(inputs);
  core::Generator gen(1234);
  core::Tensor weights = ops::randn(out.shape(), gen, core::DType::F64);
  auto scalar = [&](const core::Tensor& y) { return ops::sum(ops::mul(y, weights)); };
  backward(scalar(out));

  GradcheckResult r;
  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!checked(i)) continue;
    core::Tensor analytic = inputs[i].grad();
    // Perturb a contiguous copy's storage, seen through the input's own strides.
    core::Tensor x = inputs[i];
    const int64_t n = x.numel();
    std::vector<int64_t> offsets;
    {
      std::vector<int64_t> idx(static_cast<size_t>(x.dim()), 0);
      for (int64_t k = 0; k < n; ++k) {
        int64_t off = x.offset();
        for (int64_t d = 0; d < x.dim(); ++d) off += idx[d] * x.strides()[d];
        offsets.push_back(off);
        for (int64_t d = x.dim() - 1; d >= 0; --d) {
          if (++idx[d] < x.shape()[d]) break;
          idx[d] = 0;
        }
      }
    }
    double* base = static_cast<double*>(x.storage().data());
    std::vector<double> an = analytic.defined() ? analytic.to_vector<double>() : std::vector<double>(n, 0.0);
    for (int64_t k = 0; k < n; ++k) {
      double& v = base[offsets[k]];
      const double orig = v;
      v = orig + o.eps;
      const double fp = scalar(fn(inputs)).item<double>();
      v = orig - o.eps;
      const double fm = scalar(fn(inputs)).item<double>();
      v = orig;
      const double numeric = (fp - fm) / (2 * o.eps);
      const double err = std::abs(numeric - an[k]);
      r.max_abs_error = std::max(r.max_abs_error, err);
      if (err > o.atol + o.rtol * std::abs(numeric) && r.ok) {
        r.ok = false;
        r.message = format("input {} element {}: analytic {} vs numeric {} (error {})", i, k, an[k], numeric, err);
      }
    }
  }
  return r;
}

}  // namespace loom::autograd
