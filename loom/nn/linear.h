// Fully connected and embedding layers.
//
//   // given: Tensor x, Tensor tokens
//   nn::Linear fc({.in = 784, .out = 256});                  // y = x W^T + b, W [256, 784]
//   Tensor y = fc(x);                                         // x [..., 784] -> y [..., 256]
//   nn::Embedding emb({.num = 10000, .dim = 64, .seed = 1});
//   Tensor e = emb(tokens);                                   // i64 [B, S] -> [B, S, 64]
//
// Default init as PyTorch: Linear weight kaiming_uniform(a = sqrt(5)) (i.e.
// U(-1/sqrt(in), 1/sqrt(in))), bias U(-1/sqrt(in), 1/sqrt(in));
// Embedding weight N(0, 1). Draws come from core::Generator(seed).
#pragma once

#include "loom/core/dtype.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct LinearOptions {
  int64_t in = 0;
  int64_t out = 0;
  bool bias = true;
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;
};

class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& o);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const LinearOptions& options() const { return o_; }
  const Tensor& weight() const { return weight_; }  // [out, in]
  const Tensor& bias() const { return bias_; }      // [out], undefined without bias

 private:
  LinearOptions o_;
  Tensor weight_, bias_;
};

struct EmbeddingOptions {
  int64_t num = 0;  // rows in the table (vocabulary size)
  int64_t dim = 0;  // width of each embedding
  core::DType dtype = core::DType::F32;
  uint64_t seed = 0;
};

class Embedding : public Module {
 public:
  explicit Embedding(const EmbeddingOptions& o);
  // indices: i64 of any shape, each in [0, num) -> [..., dim].
  Tensor forward(const Tensor& indices) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const EmbeddingOptions& options() const { return o_; }
  const Tensor& weight() const { return weight_; }  // [num, dim]

 private:
  EmbeddingOptions o_;
  Tensor weight_;
};

}  // namespace loom::nn
