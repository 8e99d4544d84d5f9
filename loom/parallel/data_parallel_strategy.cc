#include "loom/parallel/data_parallel_strategy.h"

#include <optional>
#include <string>

#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/step_vote.h"

#include "loom/autograd/engine.h"
#include "loom/comm/collectives/collectives.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::parallel {

using core::Tensor;

namespace {

comm::Communicator gradient_channel(const comm::Communicator& c) {
  comm::Communicator g = c;
  g.channel = 1;
  g.next_sequence = 0;
  return g;
}

}  // namespace

DataParallelStrategy::DataParallelStrategy(std::unique_ptr<ProcessGroup> group, DataParallelStrategyOptions options)
    : group_(std::move(group)), comm_(&group_->comm()), grad_comm_(gradient_channel(*comm_)), options_(options) {}

DataParallelStrategy::DataParallelStrategy(comm::Communicator comm, DataParallelStrategyOptions options)
    : own_comm_(std::move(comm)), comm_(&own_comm_), grad_comm_(gradient_channel(own_comm_)), options_(options) {}

// The gradient thread stops before the group (and its transport) goes.
DataParallelStrategy::~DataParallelStrategy() { dp_.reset(); }

void DataParallelStrategy::attach(nn::Module& model, const optim::OptimizerSpec&) {
  if (options_.deterministic) check_atoms(options_.deterministic_atoms, world_size());
  steps_.atoms = options_.deterministic_atoms;
  DataParallelOptions dp = options_.data_parallel;
  dp.deterministic = options_.deterministic;
  dp_ = std::make_unique<DataParallel>(model, grad_comm_, dp);
}

double DataParallelStrategy::step(const train::StepBatch& batch, train::StepParts& parts) {
  LOOM_ASSERT(dp_ != nullptr);
  parts.optimizer.zero_grad();
  // Gradient accumulation: only the last micro-batch's backward all-reduces (the hooks send the sums).
  std::optional<DataParallel::NoSync> accumulating;
  const train::BeforeBackward sync_on_last = [&](bool last) {
    if (last) {
      accumulating.reset();
    } else if (!accumulating) {
      accumulating.emplace(*dp_);
    }
  };
  const double loss_value = options_.deterministic ? deterministic_forward_backward(batch, parts)
                                                   : train::forward_backward(batch, parts, sync_on_last);
  if (!options_.deterministic) dp_->finish_gradient_sync();
  parts.optimizer.step();
  return loss_value;
}

// Each of this rank's atoms: one batched forward and backward with the loss
// scaled to the atom's share of the global mean, its gradient added to the
// fixed-point sums; then the integer all-reduce and the atoms' batch-norm
// statistics, applied in atom order on every rank.
double DataParallelStrategy::deterministic_forward_backward(const train::StepBatch& batch, train::StepParts& parts) {
  const int64_t global_rows = batch.global_rows, rows = batch.rows();
  const int r = rank(), n = world_size();
  LOOM_CHECK(rows == global_rows * (r + 1) / n - global_rows * r / n,
             "deterministic data parallelism: rank {} of {} got {} rows of a global batch of {}; it needs rows "
             "[B r / N, B (r + 1) / N) (train::share_of_batch)", r, n, rows, global_rows);
  const std::vector<Atom> atoms = atoms_of_rank(global_rows, options_.deterministic_atoms, r, n);
  // The atoms are the micro-batches: one at a time, B / A rows each.
  LOOM_CHECK_T(ConfigError, parts.microbatches <= static_cast<int64_t>(atoms.size()),
               "deterministic data parallelism runs a worker's {} atoms one at a time, so [train] microbatches = {} "
               "cannot cut finer: set deterministic_atoms to at least {} (workers x microbatches)", atoms.size(),
               parts.microbatches, static_cast<int64_t>(n) * parts.microbatches);
  AtomScope scope(parts.model, steps_.step, atoms);
  const Atom* last = nullptr;
  for (const Atom& atom : atoms) {
    if (atom.rows() > 0) last = &atom;
  }
  const autograd::GradSink sink = [this](const Tensor& leaf, const Tensor& g) {
    return dp_->take_atom_gradient(leaf, g);
  };
  // Linear layers hand their weight gradients over as factors, rounded into the sums once a step.
  const ops::TakeWeightFactors taking = dp_->take_weight_factors();
  double loss_sum = 0.0;
  for (const Atom& atom : atoms) {
    if (atom.rows() == 0) continue;  // a batch with fewer rows than atoms
    if (&atom == last) dp_->begin_last_atom();  // its buckets go out while backward runs
    scope.begin_atom(atom);
    Tensor loss = parts.loss(parts.model(ops::slice(batch.inputs, 0, atom.begin, atom.end)),
                             ops::slice(batch.targets, 0, atom.begin, atom.end));
    // The sink adds each parameter's gradient straight into the sums.
    autograd::backward(ops::mul(loss, static_cast<double>(atom.rows()) / static_cast<double>(global_rows)),
                       {.sink = sink});
    dp_->accumulate_fixed_point();
    scope.end_atom(atom);
    loss_sum += loss.item<double>() * static_cast<double>(atom.rows());
  }
  dp_->finish_gradient_sync();
  scope.apply_statistics(*comm_);
  ++steps_.step;
  return rows > 0 ? loss_sum / static_cast<double>(rows) : 0.0;
}

void DataParallelStrategy::add_checkpoint_state(io::NamedTensors&, io::Metadata& meta) {
  if (options_.deterministic) steps_.add_to(meta);
}

void DataParallelStrategy::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  train::Strategy::restore_checkpoint_state(file, source);
  if (options_.deterministic) steps_.restore(file, source);
}

train::StepVote DataParallelStrategy::vote(train::StepVote mine) { return allreduce_vote(*comm_, mine); }

void DataParallelStrategy::barrier(std::optional<std::chrono::milliseconds> timeout) {
  comm::barrier(*comm_, {.timeout = timeout});
}

void DataParallelStrategy::finish() {
  if (group_) group_->finish();
}

}  // namespace loom::parallel
