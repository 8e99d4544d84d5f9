// The compute of one pipeline rank over real layers: its chunks of the
// model, this step's micro-batches, the loss on the last chunk.
//
//   // given: parallel::pipeline::Layers layers, train::LossFn loss, std::vector<train::StepBatch> micro
//   using namespace parallel::pipeline;
//   std::map<int, Layers> mine = {{0, Layers(layers.begin(), layers.begin() + 2)}};   // chunk 0: layers 0-1
//   ModuleStage stage(mine, /*num_chunks=*/2);
//   stage.begin_step(micro, loss);    // inputs feed chunk 0, targets the last chunk's loss
//   // ... run_rank(plan, rank, stage, links, deadline) ...
//   double rows_loss = stage.loss_sum();   // sum over micro-batches of mean loss * rows (last chunk)
//
// A chunk's forward takes its input as a fresh leaf (so its backward yields
// the input gradient the previous chunk needs) and keeps the input and the
// output with its graph until the micro-batch's backward; what it hands on
// is detached. The last chunk computes the loss of the micro-batch's
// targets, scaled by its rows / the global batch's rows as
// train::forward_backward does, so parameter gradients add up over the
// micro-batches exactly as gradient accumulation in one process does (the
// same ops on the same values in the same order: the same bits).
// A chunk with recomputation on runs its forward without recording the
// graph and keeps only its input and its modules' generator states; its
// recompute() runs the forward again, with the graph and the same dropout
// masks (the generators rewound, then put back where the first forward
// left them), so the backward is the one without recomputation, bit for bit.
// Deterministic mode (begin_step with atoms): micro-batch i is atom
// atoms.index[i] of the global batch, and the stage does what deterministic
// data parallelism does with an atom (data_parallel_atoms.h): its chunks'
// generators draw from Philox(seed, step, atom) for its forward, and after
// its backward every parameter's gradient is rounded into int64 fixed-point
// sums (fixed_point_sums()), so the step's gradient is an exact sum of the
// atoms' that any grouping over replicas and micro-batches reproduces.
// Split backward (zb-h1): backward_input runs autograd with the parameters'
// gradients held back (BackwardOptions::defer_weights; the chunk's input
// gradient, which the previous stage waits for, computed now) and
// backward_weight computes them later (backward_weights), where the schedule
// put it; the two halves give the unsplit backward's bits.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "loom/autograd/engine.h"
#include "loom/parallel/pipeline/executor.h"
#include "loom/parallel/pipeline/partition.h"
#include "loom/parallel/weight_factors.h"
#include "loom/train/strategy.h"

namespace loom::parallel::pipeline {

class ModuleStage final : public StageWork {
 public:
  // `chunks`: this rank's chunks (global virtual stage -> its layers, in
  // order); `recompute`: empty, or a flag per chunk (ScheduleOptions::recompute).
  ModuleStage(std::map<int, Layers> chunks, int num_chunks, std::vector<bool> recompute = {});

  // This step's micro-batches, the same on every rank of the pipeline (each
  // uses the inputs, the targets or neither), and the loss (which outlives
  // the step); clears the loss sum.
  void begin_step(std::vector<train::StepBatch> microbatches, const train::LossFn& loss);
  // Deterministic mode: which atom each micro-batch is, and the step.
  struct Atoms {
    int64_t step = 0;
    std::vector<int64_t> index;  // per micro-batch
  };
  void begin_step(std::vector<train::StepBatch> microbatches, const train::LossFn& loss, Atoms atoms);
  // After a deterministic step: the generators back at (seed, 0), as between steps.
  void end_step();
  // This rank's parameters (its chunks', in order) and, after a deterministic
  // step, each one's i64 sum of its atoms' gradients in units of 2^-40.
  const std::vector<core::Tensor>& params() const { return params_; }
  const std::vector<core::Tensor>& fixed_point_sums() const { return sums_; }
  // A weight another chunk also uses (see above); before begin_step.
  void tie(core::Tensor weight);
  // This step's gradients of the tied weight, one per micro-batch (undefined
  // where none of this rank's chunks used it); clears them.
  std::vector<core::Tensor> take_tied_gradients();
  // Deterministic, after end_step: rounds `g` (an atom's gradient of
  // `param`, one of params()) into its sum. Throws ValueError when out of range.
  void add_to_sum(const core::Tensor& param, const core::Tensor& g);
  // Sum over this step's micro-batches of their mean loss times their rows
  // (0 unless this rank holds the last chunk).
  double loss_sum() const { return loss_sum_; }
  // No micro-batch is half done (every forward met its backward).
  bool idle() const { return saved_.empty() && deferred_.empty(); }

  core::Tensor forward(int chunk, int microbatch, core::Tensor input) override;
  core::Tensor backward(int chunk, int microbatch, core::Tensor output_grad) override;
  core::Tensor backward_input(int chunk, int microbatch, core::Tensor output_grad) override;
  void backward_weight(int chunk, int microbatch) override;
  void recompute(int chunk, int microbatch) override;

 private:
  struct Saved {
    core::Tensor input;   // the leaf the chunk ran on (undefined on chunk 0: the data needs no gradient)
    core::Tensor output;  // with its graph; the scaled loss on the last chunk (undefined until recomputed)
    std::vector<std::pair<uint64_t, uint64_t>> generators;  // (seed, offset) before the forward, to recompute
  };
  bool recomputes(int chunk) const { return static_cast<size_t>(chunk) < recompute_.size() && recompute_[chunk]; }
  const Layers& layers_of(int chunk) const;
  // Runs chunk `chunk` on `x` (micro-batch i): its output, or on the last chunk its scaled loss.
  core::Tensor run(int chunk, int i, core::Tensor x, bool count_loss);
  std::vector<core::Generator*> generators_of(int chunk) const;
  void reseed(int chunk, int microbatch);
  core::Tensor run_backward(int chunk, int microbatch, core::Tensor output_grad, autograd::DeferredWeights* later);
  void add_to_sums(int chunk);
  void round_into(size_t k, const core::Tensor& g, bool first, bool zero);
  // Deterministic: while it lives, linear layers hand over their weight gradients as factors.
  void take_factors(std::optional<ops::TakeWeightFactors>& taking);
  void flush_factors();
  // After a backward of micro-batch i: the tied weight's gradient kept, then (deterministic) the chunk's rounded.
  void after_backward(int chunk, int i);
  const train::StepBatch& microbatch(int i) const;

  std::map<int, Layers> chunks_;
  int num_chunks_;
  std::vector<bool> recompute_;
  const train::LossFn* loss_ = nullptr;
  std::vector<train::StepBatch> micro_;
  std::map<std::pair<int, int>, Saved> saved_;  // (chunk, micro-batch)
  std::map<std::pair<int, int>, autograd::DeferredWeights> deferred_;  // weight gradients still to compute
  double loss_sum_ = 0;
  std::vector<core::Tensor> params_;
  std::vector<std::string> param_names_;  // for messages
  std::map<int, std::pair<size_t, size_t>> chunk_params_;  // chunk -> its range of params_
  // Deterministic mode.
  std::optional<Atoms> atoms_;
  std::map<core::Generator*, uint64_t> seeds_;  // each generator's seed between steps
  std::vector<core::Tensor> sums_;               // i64, one per parameter
  std::vector<bool> summed_;                     // whether sums_[k] holds this step's first atom yet
  std::unique_ptr<WeightFactors> factors_;       // linear weights' gradients as factors (as DataParallel)
  core::Tensor tied_;                            // undefined: none
  std::vector<core::Tensor> tied_grads_;         // per micro-batch
};

}  // namespace loom::parallel::pipeline
