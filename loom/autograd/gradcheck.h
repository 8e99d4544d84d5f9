// Finite-difference gradient check, in f64, for any differentiable function.
//
//   core::Generator gen(1);
//   auto r = autograd::gradcheck([](const std::vector<Tensor>& in) { return ops::tanh(in[0]); },
//                                {ops::randn({3, 4}, gen, DType::F64)});
//   LOOM_CHECK(r.ok, "{}", r.message);
//
// The output is reduced with fixed random weights (so every output element
// matters) and compared with central differences for every input element.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  // Inputs at these positions are not checked (e.g. integer indices).
  std::vector<size_t> skip;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  std::string message;  // the worst mismatch, when !ok
};

GradcheckResult gradcheck(const std::function<core::Tensor(const std::vector<core::Tensor>&)>& fn,
                          std::vector<core::Tensor> inputs, const GradcheckOptions& options = {});

}  // namespace loom::autograd
