// Data-parallel training for the Trainer: a ProcessGroup (who, where, how to
// talk) and a DataParallel (bucketed gradient all-reduce) behind the
// train::DistributedContext interface.
//
//   // given: const io::JobConfig& job, bool job_is_deterministic
//   auto pg = parallel::ProcessGroup::join();
//   parallel::AllreduceContext ctx(*pg, {.deterministic = job_is_deterministic});
//   train::Trainer trainer(job, {.distributed = &ctx});
//   trainer.fit();
#pragma once

#include <memory>

#include "loom/parallel/data_parallel.h"
#include "loom/parallel/process_group.h"
#include "loom/train/trainer.h"

namespace loom::parallel {

struct AllreduceContextOptions {
  DataParallelOptions data_parallel;
  bool deterministic = false;
};

class AllreduceContext final : public train::DistributedContext {
 public:
  AllreduceContext(ProcessGroup& group, AllreduceContextOptions options = {});
  int rank() const override { return group_.rank(); }
  int world_size() const override { return group_.size(); }
  void attach(nn::Module& model) override;
  void finish_gradients() override;
  bool deterministic() const override { return options_.deterministic; }
  void accumulate_micro_batch() override;
  void barrier() override;

 private:
  ProcessGroup& group_;
  AllreduceContextOptions options_;
  comm::Communicator grad_comm_;  // channel 1: the gradient thread's own tag space
  std::unique_ptr<DataParallel> dp_;
};

}  // namespace loom::parallel
