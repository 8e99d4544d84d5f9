// Pipeline parallelism as a training strategy: the model's layers cut into
// stages on different processes, each step's rows cut into micro-batches
// that flow through the stages in the order a compiled schedule gives
// (pipeline/schedule.h), activations forward and gradients backward over the
// job's transport.
//
//   // given: comm::Communicator comm, const io::JobConfig& job
//   parallel::PipelineStrategyOptions o{.stages = 4, .microbatches = 8, .schedule = io::PipelineSchedule::OneFOneB};
//   auto strategy = std::make_shared<parallel::PipelineStrategy>(comm, o);   // comm.size == stages
//   train::Trainer trainer(job, {}, strategy);                               // every rank: the same job
//   trainer.fit();
//
// Every rank builds the whole model (the same seed gives the same weights)
// and trains only its chunks: its optimizer updates the parameters that got
// gradients, its own. attach() cuts the layers (pipeline::pipeline_layers:
// a Sequential's children or the GPT's parts) into stages x virtual_stages
// chunks, balanced by parameter count, by measured time, or at the job's
// hand-placed first layers; chunk c runs on rank c mod stages. A step cuts
// the rank's share of the batch into `microbatches` contiguous micro-batches
// (as train::forward_backward's gradient accumulation does), runs this
// rank's action list (pipeline::run_rank over a pipeline::ModuleStage and
// pipeline::CommLinks), and steps the optimizer. The last stage's loss goes
// to rank 0, which reports it. gather() brings every stage's parameters,
// buffers and optimizer state to rank 0 before it evaluates or writes a
// checkpoint, so checkpoints hold the whole model under its usual names and
// load into any other layout or a single process.
//
// Data x pipeline: with data_parallel = D, D replicas of the pipeline run
// side by side (D x stages processes; rank = replica * stages + stage), each
// on its share of the global batch; after its pipeline's step each stage
// sums its gradients over the D replicas of that stage (one all-reduce on a
// sub-communicator of the stage's replicas) before the update, so every
// replica takes the same step. Each stage's all-reduce starts when its own
// part of the schedule ends, so later stages reduce while earlier ones still
// drain; within a stage it follows the last backward (not bucketed into it).
//
// Deterministic (`deterministic`): the global batch is cut into
// data_parallel x microbatches atoms, replica d's micro-batches are atoms
// d M .. d M + M - 1, and each stage treats each as deterministic data
// parallelism treats an atom (ModuleStage: dropout from (seed, step, atom),
// gradients rounded into int64 fixed-point sums after each micro-batch's
// backward); the replicas add their integers, and the float gradient is
// read back once. The weights are then bitwise those of deterministic data
// parallelism with deterministic_atoms = D M on any number of workers, one
// included, whatever D, P and the schedule.
//
// A tied GPT (the head multiplies by the embedding's token table; Megatron's
// embedding group): every rank holds a copy of the table, and the
// embedding's rank and the head's both train theirs. After the schedule the
// head's rank sends its gradient of each micro-batch to the embedding's,
// which adds the two uses per micro-batch and then the micro-batches in
// order (deterministic: rounds each micro-batch's sum into the fixed-point
// sums), as one process does; after the replicas' sum it sends the final
// gradient back, and both take the same update. gather() takes the table and
// its optimizer state from the embedding's rank only, so checkpoints hold it
// once, under "embedding.wte.weight". Cost: M gradients of the table kept on
// each of the two ranks, M + 1 messages of its size a step.
//
// A lost stage process fails every rank's step (the transport's
// PeerLostError, or a receive's deadline), as with data parallelism.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/io/pipeline_schedule.h"
#include "loom/parallel/deterministic_state.h"
#include "loom/parallel/pipeline/comm_links.h"
#include "loom/parallel/pipeline/module_stage.h"
#include "loom/parallel/pipeline/partition.h"
#include "loom/parallel/pipeline/schedule.h"
#include "loom/parallel/process_group.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

enum class StageBalance { Parameters, Time };

struct PipelineStrategyOptions {
  int stages = 2;
  int data_parallel = 1;  // replicas of the pipeline (D): the job has D x stages processes
  int microbatches = 1;
  io::PipelineSchedule schedule = io::PipelineSchedule::OneFOneB;
  int virtual_stages = 1;  // model chunks per rank (interleaved)
  StageBalance balance = StageBalance::Parameters;  // Time: measured by rank 0 at the first step
  std::vector<int64_t> placement;  // by hand: each chunk's first layer (empty: balance)
  std::vector<bool> recompute;     // per chunk: keep only its input, recompute before backward (empty: none)
  bool deterministic = false;      // atoms = data_parallel x microbatches; fixed-point sums
  std::chrono::milliseconds timeout{60000};  // one step's receives
};

class PipelineStrategy final : public train::Strategy {
 public:
  PipelineStrategy(std::unique_ptr<ProcessGroup> group, PipelineStrategyOptions options);
  PipelineStrategy(comm::Communicator comm, PipelineStrategyOptions options);

  std::string_view name() const override { return "pipeline"; }
  int rank() const override { return comm_->rank; }
  int world_size() const override { return comm_->size; }
  int data_rank() const override { return comm_->rank / options_.stages; }
  int data_world_size() const override { return options_.data_parallel; }

  void attach(nn::Module& model, const optim::OptimizerSpec& spec) override;
  double step(const train::StepBatch& batch, train::StepParts& parts) override;
  void gather(nn::Module& model, optim::Optimizer* local) override;
  train::StepVote vote(train::StepVote mine) override;
  void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) override;
  void finish() override;
  void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) override;
  void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) override;

  // After attach: the chunks as cut, and the plan.
  const std::vector<pipeline::LayerRange>& chunks() const { return chunks_; }
  const pipeline::Plan& plan() const { return plan_; }

 private:
  int stage() const { return comm_->rank % options_.stages; }
  void build_stage(std::vector<pipeline::LayerRange> chunks);
  std::vector<pipeline::LayerRange> measured_cut(const core::Tensor& sample);
  // Sums this stage's gradients over the data-parallel replicas.
  void sync_gradients();
  // Deterministic: the micro-batches are the atoms of this replica's share.
  std::vector<train::StepBatch> atom_microbatches(const train::StepBatch& batch, std::vector<int64_t>& index) const;
  // Deterministic: the stage's fixed-point sums, added over the replicas, into the gradients.
  void exact_gradients();
  // A tied GPT: the embedding group of the embedding's and the head's ranks.
  std::pair<int, int> tied_ranks() const;
  void add_tied_gradients();
  void share_tied_gradient();
  std::unique_ptr<ProcessGroup> group_;
  comm::Communicator own_comm_;
  comm::Communicator* comm_;
  PipelineStrategyOptions options_;
  pipeline::Layers layers_;
  core::Tensor tied_;  // a tied GPT's token table (undefined: none)
  std::vector<pipeline::LayerRange> chunks_;
  pipeline::Plan plan_;
  std::unique_ptr<pipeline::ModuleStage> stage_;
  std::unique_ptr<pipeline::CommLinks> links_;
  comm::Communicator replicas_;  // this stage's replicas (data_parallel > 1)
  std::vector<core::Tensor> own_params_;
  DeterministicSteps steps_;
};

}  // namespace loom::parallel
