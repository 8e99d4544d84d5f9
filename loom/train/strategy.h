// How one training step is computed and where its parts run: the seam between
// the Trainer's loop (the same for every strategy) and the strategies
// (local here; all-reduce data parallel and parameter servers in
// loom/parallel, made from a job by parallel::make_strategy).
//
//   // given: nn::Module& model, optim::Optimizer& optimizer, data::Batch batch
//   train::LocalStrategy strategy;
//   train::LossFn loss = [](const Tensor& out, const Tensor& y) { return ops::cross_entropy(out, y); };
//   train::StepParts parts{.model = model, .loss = loss, .optimizer = optimizer};
//   strategy.attach(model, optim::OptimizerSpec{});
//   train::StepBatch mine = train::share_of_batch(batch, strategy.rank(), strategy.world_size());
//   double l = strategy.step(mine, parts);   // zero grads, forward, backward, (sync), update
//   parts.microbatches = 4;                  // the same step as 4 accumulated micro-batches
//
// A strategy owns everything between "here is this rank's share of the
// batch" and "the weights are updated": forward and backward (a pipeline
// schedule overrides them), the gradient path (all-reduce, compression,
// push/pull), the optimizer step (local, on servers, sharded), where the
// optimizer's state lives and what checkpoints must hold beyond it. The
// Trainer only feeds batches, steps the LR schedule, evaluates, logs and
// checkpoints. docs/ARCHITECTURE.md ("Strategies") shows a step of each.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "loom/data/dataset.h"
#include "loom/io/checkpoint.h"
#include "loom/nn/module.h"
#include "loom/optim/optim.h"

namespace loom::train {

// The loss of a batch: (model outputs, targets) -> a scalar, the mean over
// the rows (strategies scale it by the rows' share of the global batch).
using LossFn = std::function<core::Tensor(const core::Tensor& outputs, const core::Tensor& targets)>;

// What one step works on; the Trainer owns them and lends them per step.
struct StepParts {
  nn::Module& model;
  const LossFn& loss;
  optim::Optimizer& optimizer;  // a strategy that updates elsewhere (servers) leaves it alone
  // Gradient accumulation: this rank's rows go through forward and backward
  // in this many contiguous micro-batches (rows r M'/M .. r (M'+1)/M), their
  // gradients adding up before the one update; activations live for one
  // micro-batch at a time.
  int64_t microbatches = 1;
};

// This process's rows of one step's global batch.
struct StepBatch {
  core::Tensor inputs;   // [rows, ...] (rows may be 0 when the batch is smaller than the world)
  core::Tensor targets;  // [rows, ...]
  int64_t global_rows = 0;  // rows of the whole step across all ranks
  int64_t rows() const { return inputs.defined() ? inputs.size(0) : 0; }
};

// Rank r of n takes rows [B r / n, B (r + 1) / n) of a global batch of B rows.
StepBatch share_of_batch(const data::Batch& global, int rank, int world_size);

// The micro-batches of `batch`'s rows: m contiguous parts (rows r k / m ..
// r (k + 1) / m), each keeping the step's global_rows; empty parts (fewer
// rows than micro-batches) left out, so a rank with no rows gets none. m = 1
// gives the batch itself. The one cut gradient accumulation and the
// pipeline both use.
std::vector<StepBatch> microbatches_of(const StepBatch& batch, int64_t m);

// Called before each micro-batch's backward with whether it is the step's
// last: a data-parallel strategy lets its gradient hooks start the
// all-reduce only then (PyTorch DDP's no_sync for the others).
using BeforeBackward = std::function<void(bool last)>;

// Forward and backward of `batch`'s rows, in parts.microbatches
// micro-batches, each with its mean loss scaled by its share of the global
// batch (its rows / global_rows), so that gradients summed over the
// micro-batches and ranks are the global batch's mean gradient; returns the
// unscaled mean loss of these rows (0 for no rows). Micro-batches without
// rows (fewer rows than micro-batches) are skipped.
double forward_backward(const StepBatch& batch, StepParts& parts, const BeforeBackward& before_backward = {});

// What the ranks decide together after a step (Strategy::vote).
struct StepVote {
  bool stop = false;        // a rank was asked to stop (a signal): checkpoint and leave
  bool checkpoint = false;  // the main rank's step or time interval came due
};

// The prefix of the tensors and metadata a strategy adds to checkpoints.
inline constexpr const char* kServerStatePrefix = "servers.";

class Strategy {
 public:
  virtual ~Strategy() = default;

  // "local", "allreduce", "dist_sync", ... (logs and tests).
  virtual std::string_view name() const = 0;
  // This process among the training processes. Read every step, so a
  // strategy whose membership changes (elastic) can change them between steps.
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  bool is_main() const { return rank() == 0; }
  // Which share of the global batch this process feeds, of how many: its
  // rank among the data-parallel replicas. The ranks of one pipeline (or
  // tensor-parallel group) feed the same share.
  virtual int data_rank() const { return rank(); }
  virtual int data_world_size() const { return world_size(); }

  // Once, before training, with the model and the job's optimizer (the run's
  // steps filled in). All-reduce: broadcast rank 0's weights, build buckets;
  // parameter servers: init the keys, send the spec, pull.
  virtual void attach(nn::Module& model, const optim::OptimizerSpec& spec) {}

  // One optimizer step on this rank's share of the global batch: zero the
  // gradients, forward and backward, the gradient path, the update. Returns
  // the mean loss of this rank's rows.
  virtual double step(const StepBatch& batch, StepParts& parts) = 0;

  // Collective, after every step while the Trainer takes stop requests or
  // checkpoints by steps or time: every rank gets the OR of all ranks'
  // votes, so that all of them checkpoint (and stop) at the same step
  // boundary, whichever rank saw the signal. Strategies whose ranks step in
  // lockstep (all-reduce, pipeline, dist_sync) agree on the very step; with
  // dist_async each worker acts at its first step boundary after the vote.
  virtual StepVote vote(StepVote mine) { return mine; }
  // After the last step, every rank, until it returns nullopt: an agreed
  // event left to act on (a strategy whose ranks do not step in lockstep may
  // have agreed on a step this rank has passed; see ps/step_agreement.h).
  // Lockstep strategies: none.
  virtual std::optional<StepVote> final_vote() { return std::nullopt; }

  // Waits for every rank: the end of training, and after the main rank
  // evaluated or wrote a checkpoint (with the Trainer's longer timeout, since
  // the others wait for that work; default: the strategy's own).
  virtual void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) {}

  // The optimizer's state in optim's one layout (optim/state_dict.h), from
  // wherever it lives, so that a checkpoint does not depend on the strategy
  // that wrote it: the local optimizer's by default; the servers' with
  // parameter servers (each key gathered whole), whose weights rank 0's model
  // then takes, as a pull would, so that the checkpoint's weights and state
  // go together. The main rank calls it when writing a checkpoint (after
  // gather), before it takes the model's tensors.
  // The result is a snapshot, tensors of its own (the asynchronous
  // checkpoint does not copy them again).
  virtual optim::OptimizerState optimizer_state(const optim::Optimizer& local) { return local.state_snapshot(); }
  // Collective: every rank calls it before the main rank evaluates the model
  // (local = nullptr) or writes a checkpoint. A strategy whose model or
  // optimizer state is spread over ranks (pipeline stages, ZeRO shards)
  // brings the other ranks' parts into the main rank's model (and local
  // optimizer) here, so that what the main rank then reads (the model's
  // tensors, optimizer_state) is the whole job's. Nothing to do when every
  // rank holds everything.
  virtual void gather(nn::Module& model, optim::Optimizer* local) {}
  // Every rank on resume, after the model's weights are loaded: puts `state`
  // (it fits local.state_layout()) where the optimizer lives: the local
  // optimizer by default; the servers with parameter servers (collective).
  virtual void load_optimizer_state(const optim::OptimizerState& state, optim::Optimizer& local) {
    local.load_state(state);
  }

  // Checkpoints also hold what only this strategy has, beyond the model and
  // the optimizer's state (tables that live only on parameter servers, as
  // tensors named "servers.*"): the main rank adds it to each checkpoint it
  // writes; on resume every rank hands the checkpoint back after loading the
  // model and the optimizer's state (collective). The default refuses a
  // checkpoint with such tensors.
  virtual void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) {}
  virtual void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source);

  // Leaves the job cleanly after a successful run (a final barrier, telling
  // the coordinator or the servers); not called on an error.
  virtual void finish() {}
};

// One process: forward, backward, the local optimizer's step.
class LocalStrategy final : public Strategy {
 public:
  std::string_view name() const override { return "local"; }
  double step(const StepBatch& batch, StepParts& parts) override;
};

}  // namespace loom::train
