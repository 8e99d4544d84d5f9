#include "loom/nn/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "loom/nn/dropout.h"
#include "loom/nn/init.h"
#include "loom/ops/ops.h"

namespace loom::nn {

using core::to_string;

MultiheadAttention::MultiheadAttention(const MultiheadAttentionOptions& o) : o_(o) {
  LOOM_CHECK(o.embed_dim >= 1, "MultiheadAttention: embed_dim {} must be at least 1", o.embed_dim);
  LOOM_CHECK(o.num_heads >= 1 && o.embed_dim % o.num_heads == 0,
             "MultiheadAttention: num_heads {} must be at least 1 and divide embed_dim {}", o.num_heads, o.embed_dim);
  LOOM_CHECK(o.dropout >= 0.0 && o.dropout <= 1.0, "MultiheadAttention: dropout must be in [0, 1], got {}",
             o.dropout);
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "MultiheadAttention: dtype must be floating, got {}", o.dtype);
  const int64_t e = o.embed_dim;
  in_proj_weight_ = register_parameter("in_proj_weight", ops::empty({3 * e, e}, o.dtype));
  if (o.bias) in_proj_bias_ = register_parameter("in_proj_bias", ops::empty({3 * e}, o.dtype));
  out_proj_ = register_module("out_proj", Linear({.in = e, .out = e, .bias = o.bias, .dtype = o.dtype}));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void MultiheadAttention::reset_parameters(core::Generator& gen) {
  init::xavier_uniform_(in_proj_weight_, gen);
  out_proj_->reset_parameters(gen);
  if (o_.bias) {
    init::zeros_(in_proj_bias_);
    Tensor b = out_proj_->bias();
    init::zeros_(b);
  }
  dropout_gen_ = core::Generator(draw_seed(gen));
}

std::string MultiheadAttention::describe() const {
  std::string s = format("MultiheadAttention(embed {}, heads {}", o_.embed_dim, o_.num_heads);
  if (o_.causal) s += ", causal";
  if (o_.dropout > 0) s += format(", dropout {}", o_.dropout);
  if (!o_.bias) s += ", no bias";
  return s + ")";
}

const Tensor& MultiheadAttention::causal_mask(int64_t seq, core::DType dtype) {
  if (mask_.defined() && mask_.size(0) == seq && mask_.dtype() == dtype) return mask_;
  std::vector<double> m(static_cast<size_t>(seq * seq), 0.0);
  for (int64_t i = 0; i < seq; ++i) {
    for (int64_t j = i + 1; j < seq; ++j) m[static_cast<size_t>(i * seq + j)] = -std::numeric_limits<double>::infinity();
  }
  mask_ = ops::to_dtype(Tensor::from_vector<double>(m, {seq, seq}), dtype);
  return mask_;
}

MultiheadAttention::Output MultiheadAttention::attend(const Tensor& x_in, bool need_weights) {
  LOOM_CHECK(x_in.defined(), "{}: input is undefined", describe());
  const int64_t e = o_.embed_dim, heads = o_.num_heads, head_dim = e / heads;
  LOOM_CHECK_T(ShapeError, (x_in.dim() == 3 || x_in.dim() == 2) && x_in.size(-1) == e,
               "{}: input {} must be [batch, seq, {}] (or [seq, {}])", describe(), to_string(x_in.shape()), e, e);
  LOOM_CHECK_T(TypeError, x_in.dtype() == in_proj_weight_.dtype(), "{}: input dtype {} differs from weight dtype {}",
               describe(), x_in.dtype(), in_proj_weight_.dtype());
  const bool unbatched = x_in.dim() == 2;
  const Tensor x = unbatched ? ops::unsqueeze(x_in, 0) : x_in;
  const int64_t batch = x.size(0), seq = x.size(1);

  // [B, S, 3E] -> q, k, v each [B, H, S, D], packed: one copy of rows of D
  // here, and k's transpose below is then a view a GEMM reads as it is
  // (instead of an element-by-element gather into a fresh buffer).
  const Tensor qkv = ops::linear(x, in_proj_weight_, in_proj_bias_);
  auto split_heads = [&](int64_t part) {
    Tensor t = ops::slice(qkv, -1, part * e, (part + 1) * e);
    return ops::contiguous(ops::transpose(ops::reshape(t, {batch, seq, heads, head_dim}), 1, 2));
  };
  const Tensor q = split_heads(0), k = split_heads(1), v = split_heads(2);

  Tensor scores = ops::mul(ops::matmul(q, ops::transpose(k, -2, -1)), 1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (o_.causal) scores = ops::add(scores, causal_mask(seq, scores.dtype()));
  const Tensor weights = ops::softmax(scores, -1);
  const Tensor dropped = ops::dropout(weights, o_.dropout, is_training(), dropout_gen_);

  // [B, H, S, D] -> [B, S, E] -> out_proj.
  Tensor context = ops::reshape(ops::transpose(ops::matmul(dropped, v), 1, 2), {batch, seq, e});
  Tensor out = out_proj_->forward(context);
  Output result;
  result.output = unbatched ? ops::squeeze(out, 0) : out;
  if (need_weights) result.weights = unbatched ? ops::squeeze(weights, 0) : weights;
  return result;
}

Tensor MultiheadAttention::forward(const Tensor& x) { return attend(x, false).output; }

MultiheadAttention::Output MultiheadAttention::forward_with_weights(const Tensor& x) { return attend(x, true); }

}  // namespace loom::nn
