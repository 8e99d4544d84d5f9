// A GPT-style decoder: token + position embeddings, N pre-norm blocks
// (causal multi-head attention and a GELU MLP, each inside a residual),
// a final LayerNorm and a language-model head.
//
//   // given: Tensor tokens
//   nn::Gpt gpt({.vocab = 256, .context = 64, .blocks = 2, .heads = 4, .embed = 64});
//   Tensor logits = gpt(tokens);                       // i64 [B, T] (T <= 64) -> [B, T, 256]
//   int64_t n = nn::gpt_parameter_count(gpt.options()); // == numel of gpt.parameters()
//   for (const auto& part : gpt.parts()) { ... }        // embedding, block 0 .. N-1, head: run in order
//
// The model is a sequence of parts so a pipeline can place ranges of them
// on different ranks: `parts()` gives the embedding part (GptEmbedding), each
// TransformerBlock, and the head part (GptHead, final norm + LM head); each
// part's forward takes the previous part's output. Parameter names follow
// the tree: "embedding.wte.weight", "blocks.3.attn.in_proj_weight",
// "head.ln_f.weight", "head.lm_head.weight" (untied only).
//
// Tied embeddings (`tied`, the default as in GPT-2): the head multiplies by
// the token table wte [vocab, embed] itself and owns no weight, so the
// tensor appears once, under "embedding.wte.weight", and its gradient sums
// both uses. A pipeline that puts the embedding and the head on different
// ranks keeps a copy of wte on both and adds their gradients every step
// (parallel::PipelineStrategy: Megatron's embedding group); `tied = false`
// gives the head its own [vocab, embed] weight.
//
// Init as GPT-2: every Linear/attention projection weight and both
// embeddings N(0, 0.02^2), the projections that end a residual branch
// (attention out_proj, MLP proj) N(0, (0.02 / sqrt(2 N))^2), biases 0,
// LayerNorm weight 1 and bias 0. Draws come from core::Generator(seed), in
// registration order; `dropout` applies after the embeddings, to the
// attention weights and at the end of each residual branch.
#pragma once

#include <memory>
#include <vector>

#include "loom/core/dtype.h"
#include "loom/nn/attention.h"
#include "loom/nn/dropout.h"
#include "loom/nn/linear.h"
#include "loom/nn/module.h"
#include "loom/nn/normalization.h"
#include "loom/nn/sequential.h"

namespace loom::nn {

struct GptOptions {
  int64_t vocab = 256;    // tokens (256: bytes)
  int64_t context = 0;    // most positions a sequence may have
  int64_t blocks = 0;     // transformer blocks, N
  int64_t heads = 1;      // must divide embed
  int64_t embed = 0;      // model width, E
  int64_t mlp_ratio = 4;  // MLP hidden width = mlp_ratio * E
  double dropout = 0.0;
  bool tied = true;       // the LM head shares the token embedding
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;
};

// Throws ValueError naming the option that is out of range.
void check_gpt_options(const GptOptions& o);
// V E + T E + N ((4 + 2 r) E^2 + (9 + r) E) + 2 E, plus V E when untied.
int64_t gpt_parameter_count(const GptOptions& o);

struct TransformerBlockOptions {
  int64_t embed = 0;
  int64_t heads = 1;
  int64_t mlp_ratio = 4;
  double dropout = 0.0;
  double residual_std = 0.02;  // init std of the projections that end a residual branch
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;
};

// x + drop(attn(ln_1(x))), then x + drop(proj(gelu(fc(ln_2(x))))); [B, T, E] -> [B, T, E].
class TransformerBlock : public Module {
 public:
  explicit TransformerBlock(const TransformerBlockOptions& o);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const TransformerBlockOptions& options() const { return o_; }
  MultiheadAttention& attn() { return *attn_; }

 private:
  TransformerBlockOptions o_;
  std::shared_ptr<LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<MultiheadAttention> attn_;
  std::shared_ptr<Linear> fc_, proj_;
  std::shared_ptr<Dropout> drop_;
};

// Tokens i64 [B, T] -> drop(wte[tokens] + wpe[0..T)) [B, T, E].
class GptEmbedding : public Module {
 public:
  explicit GptEmbedding(const GptOptions& o);
  Tensor forward(const Tensor& tokens) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;
  const Tensor& token_weight() const { return wte_->weight(); }  // [vocab, E]

 private:
  GptOptions o_;
  std::shared_ptr<Embedding> wte_, wpe_;
  std::shared_ptr<Dropout> drop_;
};

// [B, T, E] -> ln_f -> logits [B, T, vocab]: by lm_head, or (tied) by the token table.
class GptHead : public Module {
 public:
  // `tied_weight`: the embedding's token table when o.tied, else ignored.
  GptHead(const GptOptions& o, Tensor tied_weight);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

 private:
  GptOptions o_;
  std::shared_ptr<LayerNorm> ln_f_;
  std::shared_ptr<Linear> lm_head_;  // untied only
  Tensor tied_weight_;               // tied only; owned by the embedding
};

class Gpt : public Module {
 public:
  explicit Gpt(const GptOptions& o);
  // tokens i64 [B, T], 1 <= T <= context, each in [0, vocab) -> logits [B, T, vocab].
  Tensor forward(const Tensor& tokens) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const GptOptions& options() const { return o_; }
  // Embedding, blocks 0..N-1, head: the pipeline's units, in forward order.
  std::vector<std::shared_ptr<Module>> parts() const;
  GptEmbedding& embedding() { return *embedding_; }
  TransformerBlock& block(size_t i) { return blocks_->at<TransformerBlock>(i); }
  GptHead& head() { return *head_; }

 private:
  GptOptions o_;
  std::shared_ptr<GptEmbedding> embedding_;
  std::shared_ptr<Sequential> blocks_;
  std::shared_ptr<GptHead> head_;
};

}  // namespace loom::nn
