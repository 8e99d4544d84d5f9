// Batch and layer normalisation.
//
//   // given: Tensor x
//   nn::BatchNorm2d bn({.num_features = 32});           // [N, 32, H, W], per-channel stats
//   nn::BatchNorm2d bn2({.num_features = 32, .momentum = std::nullopt});  // cumulative average
//   nn::LayerNorm ln({.normalized_shape = {512}});      // over the last dim of [..., 512]
//
//   bn.defer_running_stats(true);              // deterministic data parallelism, below
//   Tensor y = bn(x);                          // normalises with x's statistics; running stats untouched
//   auto stats = bn.take_batch_statistics();   // [{mean, var}] of each training forward since the last take
//   bn.apply_batch_statistics(stats[0]);       // the update that forward would have made
//
// BatchNorm2d normalises with the batch statistics in training mode and
// updates running_mean / running_var (unbiased variance) by
// running = (1 - momentum) * running + momentum * batch; in eval mode it uses
// the running statistics. Its state_dict holds weight, bias, running_mean,
// running_var and num_batches_tracked (i64, shape []), as PyTorch's.
// Init: weight 1, bias 0 (no randomness, so no seed).
//
// Deferred running statistics exist for deterministic data parallelism
// (parallel::DataParallelStrategy): it trains a batch as fixed atoms spread
// over ranks and applies every atom's statistics in one fixed order, so the
// running statistics do not depend on which rank ran which atom.
#pragma once

#include <optional>
#include <vector>

#include "loom/core/dtype.h"
#include "loom/core/shape.h"
#include "loom/nn/module.h"

namespace loom::nn {

struct BatchNorm2dOptions {
  int64_t num_features = 0;  // channels, dim 1 of the input
  double eps = 1e-5;
  // nullopt: cumulative moving average (momentum = 1 / num_batches_tracked).
  std::optional<double> momentum = 0.1;
  bool affine = true;               // learnable weight and bias
  bool track_running_stats = true;  // false: batch statistics in eval mode too, no buffers
  core::DType dtype = core::DType::F32;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(const BatchNorm2dOptions& o);
  // [N, C, H, W] -> same shape.
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;
  // running_mean <- 0, running_var <- 1, num_batches_tracked <- 0.
  void reset_running_stats();

  // One training forward's batch statistics, per channel ([C], the module's
  // dtype): the mean and the unbiased variance, as the running update uses them.
  struct BatchStatistics {
    Tensor mean, var;
  };
  // While on (and with track_running_stats), a training forward leaves
  // running_mean, running_var and num_batches_tracked alone and records its
  // batch statistics instead. Turning it off drops what was not taken.
  void defer_running_stats(bool on);
  bool defers_running_stats() const { return defer_; }
  // The statistics recorded since the last call, oldest first.
  std::vector<BatchStatistics> take_batch_statistics();
  // The running update of a training forward, from recorded statistics:
  // num_batches_tracked += 1, then running = (1 - m) running + m batch with m
  // the momentum (cumulative average: 1 / num_batches_tracked), in double,
  // rounded once to the dtype. (A forward that is not deferred rounds the
  // batch statistics one time fewer.)
  void apply_batch_statistics(const BatchStatistics& stats);

  const BatchNorm2dOptions& options() const { return o_; }
  const Tensor& weight() const { return weight_; }  // [C], undefined without affine
  const Tensor& bias() const { return bias_; }      // [C], undefined without affine
  const Tensor& running_mean() const { return running_mean_; }
  const Tensor& running_var() const { return running_var_; }
  const Tensor& num_batches_tracked() const { return num_batches_tracked_; }

 private:
  BatchNorm2dOptions o_;
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  bool defer_ = false;
  std::vector<BatchStatistics> recorded_;
};

struct LayerNormOptions {
  core::Shape normalized_shape;  // the trailing dims to normalise over
  double eps = 1e-5;
  bool affine = true;  // learnable weight (PyTorch's elementwise_affine)
  bool bias = true;    // learnable bias, when affine
  core::DType dtype = core::DType::F32;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormOptions& o);
  // [..., *normalized_shape] -> same shape.
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void reset_parameters(core::Generator& gen) override;

  const LayerNormOptions& options() const { return o_; }
  const Tensor& weight() const { return weight_; }  // normalized_shape, undefined without affine
  const Tensor& bias() const { return bias_; }

 private:
  LayerNormOptions o_;
  Tensor weight_, bias_;
};

}  // namespace loom::nn
