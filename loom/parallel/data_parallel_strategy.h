// Synchronous data parallelism as a training strategy: every rank trains on
// its rows of the global batch, DataParallel sums the gradients (bucketed
// all-reduce started from the gradient hooks), every rank steps the same
// local optimizer on the same sums.
//
//   // given: comm::Communicator comm, const io::JobConfig& job
//   auto strategy = std::make_shared<parallel::DataParallelStrategy>(comm, parallel::DataParallelStrategyOptions{.deterministic = true});
//   train::Trainer trainer(job, {}, strategy);
//   trainer.fit();
//
// `deterministic` belongs to this strategy: every rank back-propagates one
// sample at a time, DataParallel sums the per-sample gradients in 64-bit
// fixed point and all-reduces them in rank order, so the weights are bitwise
// the same for any number of ranks. It cannot be used with batch norm (which
// couples the samples of a batch).
#pragma once

#include <memory>

#include "loom/comm/communicator.h"
#include "loom/parallel/data_parallel.h"
#include "loom/parallel/process_group.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

struct DataParallelStrategyOptions {
  DataParallelOptions data_parallel;  // buckets, algorithm, timeout (its `deterministic` is set from below)
  bool deterministic = false;
};

class DataParallelStrategy final : public train::Strategy {
 public:
  // Over a joined process group (finish() leaves it cleanly).
  DataParallelStrategy(std::unique_ptr<ProcessGroup> group, DataParallelStrategyOptions options = {});
  // Over a communicator (ranks as threads in tests; an embedding application's own).
  explicit DataParallelStrategy(comm::Communicator comm, DataParallelStrategyOptions options = {});
  ~DataParallelStrategy() override;

  std::string_view name() const override { return "allreduce"; }
  int rank() const override { return comm_->rank; }
  int world_size() const override { return comm_->size; }
  void attach(nn::Module& model, const optim::OptimizerSpec& spec) override;
  double step(const train::StepBatch& batch, train::StepParts& parts) override;
  void barrier() override;
  void finish() override;

  bool deterministic() const { return options_.deterministic; }

 private:
  std::unique_ptr<ProcessGroup> group_;  // null over a bare communicator
  comm::Communicator own_comm_;          // the bare communicator, when there is no group
  comm::Communicator* comm_;             // the group's, or own_comm_: barriers (channel 0)
  comm::Communicator grad_comm_;         // channel 1: the gradient thread's own tag space
  DataParallelStrategyOptions options_;
  std::unique_ptr<DataParallel> dp_;
};

}  // namespace loom::parallel
