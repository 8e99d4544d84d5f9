// Training with parameter servers: the Trainer's DistributedContext over a
// KVStore. Every parameter is one key; each step pushes this worker's
// gradients and pulls the servers' new weights in one round trip (pushpull),
// the servers running the job's optimizer and schedule.
//
//   auto kv = ps::KVStore::create("dist_sync");
//   parallel::PsContext ctx(*kv, job);
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

// The servers' optimizer for a job: its [optimizer] and [schedule], the
// schedule counted in updates (= steps in dist_sync), as the Trainer's.
ps::OptimizerSpec server_optimizer_spec(const io::JobConfig& job, int64_t steps_per_epoch);

class PsContext final : public train::DistributedContext {
 public:
  PsContext(ps::KVStore& kv, io::JobConfig job);

  int rank() const override { return kv_.rank(); }
  int world_size() const override { return kv_.num_workers(); }
  void set_steps_per_epoch(int64_t steps) override { steps_per_epoch_ = steps; }
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
  io::JobConfig job_;
  int64_t steps_per_epoch_ = 1;
  std::vector<int64_t> keys_;
  std::vector<core::Tensor> params_, grads_;
};

}  // namespace loom::parallel
