#include "loom/nn/dropout.h"

#include "loom/ops/ops.h"

namespace loom::nn {

uint64_t draw_seed(core::Generator& gen) {
  const auto words = core::Generator::philox(gen.seed(), gen.reserve(1));
  return (static_cast<uint64_t>(words[0]) << 32) | words[1];
}

Dropout::Dropout(const DropoutOptions& o) : o_(o), gen_(o.seed) {
  LOOM_CHECK(o.p >= 0.0 && o.p <= 1.0, "Dropout: p must be in [0, 1], got {}", o.p);
}

void Dropout::reset_parameters(core::Generator& gen) { gen_ = core::Generator(draw_seed(gen)); }

std::string Dropout::describe() const { return format("Dropout(p {})", o_.p); }

Tensor Dropout::forward(const Tensor& x) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", describe());
  return ops::dropout(x, o_.p, is_training(), gen_);
}

}  // namespace loom::nn
