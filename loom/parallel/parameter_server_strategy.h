// Training on parameter servers as a strategy, over a KVStore. Every dense
// parameter is one key; each step pushes this worker's gradients and pulls
// the servers' new weights in one round trip (pushpull), the servers running
// the job's optimizer and schedule. A ServerEmbedding in the model is a
// further key whose touched rows travel row-sparse.
//
//   // given: const io::JobConfig& job
//   auto kv = ps::KVStore::create(io::Mode::Local);   // or ps::join_kvstore(env, io::Mode::DistSync)
//   auto strategy = std::make_shared<parallel::ParameterServerStrategy>(std::move(kv));
//   train::Trainer trainer(job, {}, strategy);
//   trainer.fit();
//   strategy->finish();                                // kv->close(): the servers may stop
//
// dist_sync: the servers merge all workers' gradients of a step before
// updating, so training equals the all-reduce (and the one-process) run up to
// float summation order. Deterministic dist_sync ([distributed]
// deterministic = true): as deterministic data parallelism, each of this
// rank's atoms (data_parallel_atoms.h) runs one batched forward and backward,
// its gradient rounded into i64 fixed point, and the worker pushes its
// integer sums (KVStore::pushpull_fixed_point); the servers add them exactly
// and convert once, so the weights are bitwise the same for every number of
// workers dividing the atoms. Batch norm (its running statistics would need
// a collective among the workers) and server embeddings (row-sparse float
// pushes) are refused there, as are dist_async and dist_ssp. dist_async: each worker's gradient is applied when
// it arrives. dist_ssp: as async, with advance_clock() after each step.
//
// Checkpoints (rank 0's) hold the servers' weights and optimizer state in
// the layout every strategy writes (optim/state_dict.h): "model.<p>" and
// "optim.<p>.<slot>", "optim.<p>.step", each key gathered whole from its
// slices. So `loom train --resume` goes on with the servers' momentum and
// Adam moments where they were, and a checkpoint of a local or all-reduce
// run resumes on servers, and the other way round. Server-embedding tables,
// which only servers hold, go in as "servers.<module>.weight" with their
// state beside ("servers.<module>.weight.<slot>", ".step").
#pragma once

#include <memory>
#include <vector>

#include "loom/parallel/server_embedding.h"
#include "loom/parallel/weight_factors.h"
#include "loom/ps/kvstore.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

struct ParameterServerStrategyOptions {
  bool deterministic = false;       // dist_sync only (ConfigError at attach otherwise)
  int64_t deterministic_atoms = 8;  // the world size must divide it (check_atoms)
};

class ParameterServerStrategy final : public train::Strategy {
 public:
  explicit ParameterServerStrategy(std::unique_ptr<ps::KVStore> kv, ParameterServerStrategyOptions options = {});
  // Not owned (tests: a cluster of threads).
  explicit ParameterServerStrategy(ps::KVStore& kv, ParameterServerStrategyOptions options = {});

  std::string_view name() const override;
  int rank() const override { return kv_->rank(); }
  int world_size() const override { return kv_->num_workers(); }
  // Keys 0..n-1: the dense parameters in registration order (rank 0's
  // initial values are kept); then one key per ServerEmbedding. Sends the
  // optimizer spec (what the servers run; their schedule counts updates,
  // = steps in dist_sync), then every worker pulls.
  void attach(nn::Module& model, const optim::OptimizerSpec& spec) override;
  // Backward, push the server embeddings' rows, pushpull the dense keys.
  // The local optimizer is left alone: the servers update.
  double step(const train::StepBatch& batch, train::StepParts& parts) override;
  void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) override { kv_->barrier(timeout); }
  // Through the coordinator (ps/step_agreement.h): every worker acts at the
  // same step with dist_sync and dist_ssp, at its first boundary past the
  // agreed step with dist_async.
  train::StepVote vote(train::StepVote mine) override;
  std::optional<train::StepVote> final_vote() override;
  // The servers' optimizer state of the dense keys, by parameter (the local
  // optimizer stays idle and keeps none); rank 0's model takes the servers'
  // weights it goes with. On resume rank 0 puts the model's weights and the
  // state back on the servers (update counts too; rounds from 0) and every
  // worker pulls.
  optim::OptimizerState optimizer_state(const optim::Optimizer& local) override;
  void load_optimizer_state(const optim::OptimizerState& state, optim::Optimizer& local) override;
  // The server-embedding tables ("servers.*"); a checkpoint without the
  // model's tables is refused (IoError).
  void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) override;
  void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) override;
  // Closes the store: worker 0 tells the servers the job is done.
  void finish() override { kv_->close(); }

  ps::KVStore& kv() { return *kv_; }

 private:
  void check_parameters(const optim::Optimizer& local) const;
  void check_deterministic(nn::Module& model) const;
  // This rank's atoms, their gradients added as fixed point into sums_.
  double deterministic_forward_backward(const train::StepBatch& batch, train::StepParts& parts);
  optim::StateLayout table_layout(std::vector<core::Shape> shapes) const;

  std::unique_ptr<ps::KVStore> owned_;
  ps::KVStore* kv_;
  ParameterServerStrategyOptions options_;
  std::vector<std::string> names_;           // the parameters', for errors
  std::vector<core::Tensor> sums_;           // deterministic: i64 fixed-point gradients, one per key
  std::unique_ptr<WeightFactors> factors_;   // deterministic: linear weights' gradients as factors
  std::vector<int64_t> keys_;
  std::vector<core::Tensor> params_, grads_;
  std::vector<ServerEmbedding*> embeddings_;
  std::vector<std::string> table_names_;     // "<module>.weight" per embedding
  std::string rule_;                         // the servers' rule and its slots
  std::vector<std::string> slots_;
  int64_t steps_ = 0;                        // this worker's steps (the layout's "step")
};

}  // namespace loom::parallel
