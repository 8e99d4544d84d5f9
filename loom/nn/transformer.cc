#include "loom/nn/transformer.h"

#include <cmath>

#include "loom/nn/init.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::to_string;

constexpr double kInitStd = 0.02;  // GPT-2's

void normal_linear(Linear& fc, core::Generator& gen, double std) {
  Tensor w = fc.weight();
  init::normal_(w, gen, 0.0, std);
  if (fc.bias().defined()) {
    Tensor b = fc.bias();
    init::zeros_(b);
  }
}

}  // namespace

void check_gpt_options(const GptOptions& o) {
  LOOM_CHECK(o.vocab >= 1, "Gpt: vocab must be at least 1, got {}", o.vocab);
  LOOM_CHECK(o.context >= 1, "Gpt: context must be at least 1, got {}", o.context);
  LOOM_CHECK(o.blocks >= 1, "Gpt: blocks must be at least 1, got {}", o.blocks);
  LOOM_CHECK(o.embed >= 1, "Gpt: embed must be at least 1, got {}", o.embed);
  LOOM_CHECK(o.heads >= 1 && o.embed % o.heads == 0, "Gpt: heads {} must be at least 1 and divide embed {}", o.heads,
             o.embed);
  LOOM_CHECK(o.mlp_ratio >= 1, "Gpt: mlp_ratio must be at least 1, got {}", o.mlp_ratio);
  LOOM_CHECK(o.dropout >= 0.0 && o.dropout < 1.0, "Gpt: dropout must be in [0, 1), got {}", o.dropout);
}

int64_t gpt_parameter_count(const GptOptions& o) {
  const int64_t e = o.embed, r = o.mlp_ratio;
  const int64_t block = (4 + 2 * r) * e * e + (9 + r) * e;
  return o.vocab * e + o.context * e + o.blocks * block + 2 * e + (o.tied ? 0 : o.vocab * e);
}

// ---- TransformerBlock ----

TransformerBlock::TransformerBlock(const TransformerBlockOptions& o) : o_(o) {
  const int64_t e = o.embed;
  ln_1_ = register_module("ln_1", LayerNorm({.normalized_shape = {e}, .dtype = o.dtype}));
  attn_ = register_module("attn", MultiheadAttention({.embed_dim = e, .num_heads = o.heads, .dropout = o.dropout,
                                                      .causal = true, .dtype = o.dtype}));
  ln_2_ = register_module("ln_2", LayerNorm({.normalized_shape = {e}, .dtype = o.dtype}));
  fc_ = register_module("fc", Linear({.in = e, .out = o.mlp_ratio * e, .dtype = o.dtype}));
  proj_ = register_module("proj", Linear({.in = o.mlp_ratio * e, .out = e, .dtype = o.dtype}));
  drop_ = register_module("drop", Dropout({.p = o.dropout}));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void TransformerBlock::reset_parameters(core::Generator& gen) {
  ln_1_->reset_parameters(gen);
  Tensor in_w = attn_->in_proj_weight();
  init::normal_(in_w, gen, 0.0, kInitStd);
  if (attn_->in_proj_bias().defined()) {
    Tensor in_b = attn_->in_proj_bias();
    init::zeros_(in_b);
  }
  normal_linear(attn_->out_proj(), gen, o_.residual_std);
  attn_->generator() = core::Generator(draw_seed(gen));
  ln_2_->reset_parameters(gen);
  normal_linear(*fc_, gen, kInitStd);
  normal_linear(*proj_, gen, o_.residual_std);
  drop_->reset_parameters(gen);
}

std::string TransformerBlock::describe() const {
  return format("TransformerBlock(embed {}, heads {}, mlp {})", o_.embed, o_.heads, o_.mlp_ratio * o_.embed);
}

Tensor TransformerBlock::forward(const Tensor& x) {
  LOOM_CHECK_T(ShapeError, x.defined() && x.dim() == 3 && x.size(-1) == o_.embed, "{}: input {} must be [batch, seq, {}]",
               describe(), x.defined() ? to_string(x.shape()) : "undefined", o_.embed);
  Tensor h = ops::add(x, (*drop_)((*attn_)((*ln_1_)(x))));
  return ops::add(h, (*drop_)((*proj_)(ops::gelu((*fc_)((*ln_2_)(h))))));
}

// ---- GptEmbedding ----

GptEmbedding::GptEmbedding(const GptOptions& o) : o_(o) {
  wte_ = register_module("wte", Embedding({.num = o.vocab, .dim = o.embed, .dtype = o.dtype}));
  wpe_ = register_module("wpe", Embedding({.num = o.context, .dim = o.embed, .dtype = o.dtype}));
  drop_ = register_module("drop", Dropout({.p = o.dropout}));
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void GptEmbedding::reset_parameters(core::Generator& gen) {
  Tensor wte = wte_->weight(), wpe = wpe_->weight();
  init::normal_(wte, gen, 0.0, kInitStd);
  init::normal_(wpe, gen, 0.0, kInitStd);
  drop_->reset_parameters(gen);
}

std::string GptEmbedding::describe() const {
  return format("GptEmbedding(vocab {}, context {}, embed {})", o_.vocab, o_.context, o_.embed);
}

Tensor GptEmbedding::forward(const Tensor& tokens) {
  LOOM_CHECK_T(ShapeError, tokens.defined() && tokens.dim() == 2, "{}: tokens {} must be [batch, seq]", describe(),
               tokens.defined() ? to_string(tokens.shape()) : "undefined");
  const int64_t seq = tokens.size(1);
  LOOM_CHECK_T(ShapeError, seq >= 1 && seq <= o_.context, "{}: a sequence of {} tokens does not fit the context of {}",
               describe(), seq, o_.context);
  const Tensor positions = ops::arange(static_cast<double>(seq), core::DType::I64);
  return (*drop_)(ops::add((*wte_)(tokens), (*wpe_)(positions)));  // [B, T, E] + [T, E]
}

// ---- GptHead ----

GptHead::GptHead(const GptOptions& o, Tensor tied_weight) : o_(o) {
  ln_f_ = register_module("ln_f", LayerNorm({.normalized_shape = {o.embed}, .dtype = o.dtype}));
  if (o.tied) {
    LOOM_CHECK_T(ShapeError,
                 tied_weight.defined() && tied_weight.dim() == 2 && tied_weight.size(0) == o.vocab &&
                     tied_weight.size(1) == o.embed,
                 "GptHead: the tied weight {} must be [vocab {}, embed {}]",
                 tied_weight.defined() ? to_string(tied_weight.shape()) : "undefined", o.vocab, o.embed);
    tied_weight_ = std::move(tied_weight);
  } else {
    lm_head_ = register_module("lm_head", Linear({.in = o.embed, .out = o.vocab, .bias = false, .dtype = o.dtype}));
  }
  core::Generator gen(o.seed);
  reset_parameters(gen);
}

void GptHead::reset_parameters(core::Generator& gen) {
  ln_f_->reset_parameters(gen);
  if (lm_head_) normal_linear(*lm_head_, gen, kInitStd);  // tied: the embedding initialises the table
}

std::string GptHead::describe() const {
  return format("GptHead(embed {} -> vocab {}{})", o_.embed, o_.vocab, o_.tied ? ", tied" : "");
}

Tensor GptHead::forward(const Tensor& x) {
  Tensor h = (*ln_f_)(x);
  return lm_head_ ? (*lm_head_)(h) : ops::linear(h, tied_weight_, Tensor());
}

// ---- Gpt ----

Gpt::Gpt(const GptOptions& o) : o_(o) {
  check_gpt_options(o);
  embedding_ = register_module("embedding", GptEmbedding(o));
  blocks_ = register_module("blocks", Sequential());
  const double residual_std = kInitStd / std::sqrt(2.0 * static_cast<double>(o.blocks));
  for (int64_t i = 0; i < o.blocks; ++i) {
    blocks_->push_back(TransformerBlock({.embed = o.embed, .heads = o.heads, .mlp_ratio = o.mlp_ratio,
                                         .dropout = o.dropout, .residual_std = residual_std, .dtype = o.dtype}));
  }
  head_ = register_module("head", GptHead(o, embedding_->token_weight()));
  core::Generator gen(o.seed);
  reset_parameters(gen);  // one stream: the blocks start different
}

void Gpt::reset_parameters(core::Generator& gen) {
  embedding_->reset_parameters(gen);
  for (size_t i = 0; i < blocks_->size(); ++i) (*blocks_)[i]->reset_parameters(gen);
  head_->reset_parameters(gen);
}

std::string Gpt::describe() const {
  return format("Gpt(vocab {}, context {}, blocks {}, heads {}, embed {}{})", o_.vocab, o_.context, o_.blocks, o_.heads,
                o_.embed, o_.tied ? ", tied" : "");
}

std::vector<std::shared_ptr<Module>> Gpt::parts() const {
  std::vector<std::shared_ptr<Module>> out{embedding_};
  for (size_t i = 0; i < blocks_->size(); ++i) out.push_back((*blocks_)[i]);
  out.push_back(head_);
  return out;
}

Tensor Gpt::forward(const Tensor& tokens) { return (*head_)((*blocks_)((*embedding_)(tokens))); }

}  // namespace loom::nn
