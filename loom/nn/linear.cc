#include "loom/nn/linear.h"

#include <cmath>

#include "loom/nn/init.h"
#include "loom/ops/ops.h"

namespace loom::nn {

using core::to_string;

Linear::Linear(const LinearOptions& o) : o_(o) {
  LOOM_CHECK(o.in >= 0 && o.out >= 0, "Linear: in ({}) and out ({}) must not be negative", o.in, o.out);
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "Linear: dtype must be floating, got {}", o.dtype);
  weight_ = register_parameter("weight", ops::empty({o.out, o.in}, o.dtype));
  if (o.bias) bias_ = register_parameter("bias", ops::empty({o.out}, o.dtype));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void Linear::reset_parameters(core::Generator& gen) {
  init::kaiming_uniform_(weight_, gen, {.a = std::sqrt(5.0)});
  if (bias_.defined()) {
    const double bound = o_.in > 0 ? 1.0 / std::sqrt(static_cast<double>(o_.in)) : 0.0;
    init::uniform_(bias_, gen, -bound, bound);
  }
}

std::string Linear::describe() const {
  return format("Linear({} -> {}{})", o_.in, o_.out, o_.bias ? "" : ", no bias");
}

Tensor Linear::forward(const Tensor& x) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", describe());
  LOOM_CHECK_T(ShapeError, x.dim() >= 1 && x.size(-1) == o_.in, "{}: input {} has {} features, expected {}",
               describe(), to_string(x.shape()), x.dim() >= 1 ? x.size(-1) : 0, o_.in);
  LOOM_CHECK_T(TypeError, x.dtype() == weight_.dtype(), "{}: input dtype {} differs from weight dtype {}", describe(),
               x.dtype(), weight_.dtype());
  return ops::linear(x, weight_, bias_);
}

Embedding::Embedding(const EmbeddingOptions& o) : o_(o) {
  LOOM_CHECK(o.num >= 0 && o.dim >= 0, "Embedding: num ({}) and dim ({}) must not be negative", o.num, o.dim);
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "Embedding: dtype must be floating, got {}", o.dtype);
  weight_ = register_parameter("weight", ops::empty({o.num, o.dim}, o.dtype));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void Embedding::reset_parameters(core::Generator& gen) { init::normal_(weight_, gen, 0.0, 1.0); }

std::string Embedding::describe() const { return format("Embedding({}, {})", o_.num, o_.dim); }

Tensor Embedding::forward(const Tensor& indices) {
  LOOM_CHECK(indices.defined(), "{}: input is undefined", describe());
  LOOM_CHECK_T(TypeError, indices.dtype() == core::DType::I64, "{}: indices {} must be i64, got {}", describe(),
               to_string(indices.shape()), indices.dtype());
  try {
    return ops::embedding(weight_, indices);
  } catch (const IndexError& e) {
    throw IndexError(describe() + ": " + e.what());  // name the layer whose table was overrun
  }
}

}  // namespace loom::nn
