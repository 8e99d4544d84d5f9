// Training with parameter servers: the Trainer's DistributedContext over a
// KVStore. Every parameter is one key; each step pushes this worker's
// gradients and pulls the servers' new weights in one round trip (pushpull),
// the servers running the job's optimizer and schedule.
//
//   // given: const io::JobConfig& job
//   auto kv = ps::KVStore::create(io::Mode::DistSync);
//   parallel::PsContext ctx(*kv);
//   train::Trainer trainer(job, {.distributed = &ctx});
//
// dist_sync: the servers merge all workers' gradients of a step before
// updating, so training equals the all-reduce (and the one-process) run up to
// float summation order. dist_async: each worker's gradient is applied when
// it arrives. dist_ssp: as async, with advance_clock() after each step.
//
// Checkpoints (rank 0's) hold the servers' weights and optimizer state
// beside the model, so `loom train --resume` goes on with the servers'
// momentum and Adam moments where they were.
#pragma once

#include <vector>

#include "loom/io/config.h"
#include "loom/ps/kvstore.h"
#include "loom/train/trainer.h"

namespace loom::parallel {

class PsContext final : public train::DistributedContext {
 public:
  explicit PsContext(ps::KVStore& kv) : kv_(kv) {}

  int rank() const override { return kv_.rank(); }
  int world_size() const override { return kv_.num_workers(); }
  // The Trainer's spec (the job's [optimizer] and [schedule] with the run's
  // steps) is what the servers run; their schedule counts updates (= steps in dist_sync).
  void set_optimizer(const optim::OptimizerSpec& spec) override { spec_ = spec; }
  // Rank 0's initial weights become every worker's: init, set_optimizer, pull.
  void attach(nn::Module& model) override;
  void finish_gradients() override {}
  bool applies_update() const override { return true; }
  void apply_update() override;
  void barrier() override { kv_.barrier(); }
  // The servers' weights and optimizer state go into rank 0's checkpoints;
  // on resume rank 0 puts them back on the servers and every worker pulls.
  void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) override;
  void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) override;

 private:
  ps::KVStore& kv_;
  optim::OptimizerSpec spec_;
  std::vector<int64_t> keys_;
  std::vector<core::Tensor> params_, grads_;
};

}  // namespace loom::parallel
