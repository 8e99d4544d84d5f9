// Synchronous data parallelism as a training strategy: every rank trains on
// its rows of the global batch, DataParallel sums the gradients (bucketed
// all-reduce started from the gradient hooks), every rank steps the same
// local optimizer on the same sums.
//
//   // given: comm::Communicator comm, const io::JobConfig& job
//   parallel::DataParallelStrategyOptions options{.deterministic = true, .deterministic_atoms = 8};
//   auto strategy = std::make_shared<parallel::DataParallelStrategy>(comm, options);
//   train::Trainer trainer(job, {}, strategy);
//   trainer.fit();
//
// `deterministic` belongs to this strategy: the global batch is cut into
// `deterministic_atoms` fixed atoms (data_parallel_atoms.h), each rank runs
// one batched forward and backward per atom of its share, DataParallel adds
// the atoms' gradients in 64-bit fixed point and all-reduces the integers,
// and batch norm, dropout and the running statistics are made canonical per
// atom, so weights and buffers are bitwise the same for any number of ranks
// that divides deterministic_atoms (docs/ARCHITECTURE.md, "Data parallelism").
#pragma once

#include <memory>

#include "loom/comm/collectives/communicator.h"
#include "loom/parallel/data_parallel.h"
#include "loom/parallel/deterministic_state.h"
#include "loom/parallel/process_group.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

struct DataParallelStrategyOptions {
  DataParallelOptions data_parallel;  // buckets, algorithm, timeout (its `deterministic` is set from below)
  bool deterministic = false;
  // Deterministic mode's atoms per global batch: every world size that divides
  // it gives the same bits (8: 1, 2, 4 or 8 workers). More atoms allow more
  // world sizes, and cost more (smaller batched passes, one fixed-point add of
  // the whole gradient per atom); at most fixed_point::kMaxAtoms. Batch norm
  // normalises over an atom's rows.
  int64_t deterministic_atoms = 8;
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
  train::StepVote vote(train::StepVote mine) override;
  void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) override;
  void finish() override;
  // Deterministic mode's step count (its dropout masks depend on it) and
  // atoms: "loom.deterministic.step" / ".atoms" in checkpoint metadata.
  void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) override;
  void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) override;

  bool deterministic() const { return options_.deterministic; }
  int64_t deterministic_atoms() const { return options_.deterministic_atoms; }

 private:
  std::unique_ptr<ProcessGroup> group_;  // null over a bare communicator
  comm::Communicator own_comm_;          // the bare communicator, when there is no group
  comm::Communicator* comm_;             // the group's, or own_comm_: barriers (channel 0)
  comm::Communicator grad_comm_;         // channel 1: the gradient thread's own tag space
  DataParallelStrategyOptions options_;
  std::unique_ptr<DataParallel> dp_;
  DeterministicSteps steps_;  // deterministic mode: steps taken (and restored from checkpoints), atoms

  double deterministic_forward_backward(const train::StepBatch& batch, train::StepParts& parts);
};

}  // namespace loom::parallel
