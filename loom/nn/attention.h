// Multi-head self-attention over [batch, seq, embed], as PyTorch's
// nn.MultiheadAttention(embed_dim, num_heads, batch_first=True) with
// query = key = value = x.
//
//   // given: Tensor x
//   nn::MultiheadAttention attn({.embed_dim = 512, .num_heads = 8, .causal = true});
//   Tensor y = attn(x);                                 // [B, S, 512] -> [B, S, 512]
//   auto [out, weights] = attn.forward_with_weights(x); // weights [B, heads, S, S]
//
// Parameters (PyTorch's names and layout, so state dicts load either way):
//   in_proj_weight [3E, E]  rows [0, E) project queries, [E, 2E) keys, [2E, 3E) values
//   in_proj_bias   [3E]
//   out_proj.weight [E, E], out_proj.bias [E]   (a child Linear)
// Init as PyTorch: in_proj_weight xavier_uniform, biases 0, out_proj.weight
// Linear's default. Draws come from core::Generator(seed).
//
// With `causal`, position i attends to positions <= i only: -inf is added to
// the scores of later positions before the softmax. `dropout` applies to
// the attention weights in training mode.
#pragma once

#include <memory>

#include "loom/core/dtype.h"
#include "loom/core/rng.h"
#include "loom/nn/linear.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct MultiheadAttentionOptions {
  int64_t embed_dim = 0;
  int64_t num_heads = 1;  // must divide embed_dim
  double dropout = 0.0;   // on the attention weights, training mode only
  bool bias = true;       // in_proj_bias and out_proj.bias
  bool causal = false;    // mask future positions
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;      // parameter init; the dropout generator gets a seed drawn after it
};

class MultiheadAttention : public Module {
 public:
  explicit MultiheadAttention(const MultiheadAttentionOptions& o);

  // x [B, S, E] (or unbatched [S, E]) -> same shape.
  Tensor forward(const Tensor& x) override;
  struct Output {
    Tensor output;   // like x
    Tensor weights;  // [B, heads, S, S] ([heads, S, S] unbatched), after softmax and before dropout
  };
  Output forward_with_weights(const Tensor& x);

  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const MultiheadAttentionOptions& options() const { return o_; }
  const Tensor& in_proj_weight() const { return in_proj_weight_; }
  const Tensor& in_proj_bias() const { return in_proj_bias_; }
  Linear& out_proj() { return *out_proj_; }
  core::Generator& generator() { return dropout_gen_; }
  core::Generator* random_generator() override { return &dropout_gen_; }

 private:
  Output attend(const Tensor& x, bool need_weights);
  const Tensor& causal_mask(int64_t seq, core::DType dtype);

  MultiheadAttentionOptions o_;
  Tensor in_proj_weight_, in_proj_bias_;
  std::shared_ptr<Linear> out_proj_;
  core::Generator dropout_gen_;
  Tensor mask_;  // [S, S], 0 on and below the diagonal, -inf above; cached for the last S
};

}  // namespace loom::nn
