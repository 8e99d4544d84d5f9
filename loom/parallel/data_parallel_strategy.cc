#include "loom/parallel/data_parallel_strategy.h"

#include "loom/autograd/engine.h"
#include "loom/comm/collectives.h"
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
  if (options_.deterministic) {
    for (auto& [name, m] : model.named_modules()) {
      LOOM_CHECK_T(ConfigError, dynamic_cast<nn::BatchNorm2d*>(m) == nullptr,
                   "deterministic data parallelism back-propagates one sample at a time, which batch norm ('{}') "
                   "does not allow; remove it or set deterministic = false", name);
    }
  }
  DataParallelOptions dp = options_.data_parallel;
  dp.deterministic = options_.deterministic;
  dp_ = std::make_unique<DataParallel>(model, grad_comm_, dp);
}

double DataParallelStrategy::step(const train::StepBatch& batch, train::StepParts& parts) {
  LOOM_ASSERT(dp_ != nullptr);
  parts.optimizer.zero_grad();
  double loss_value = 0.0;
  const int64_t rows = batch.rows();
  if (options_.deterministic) {
    // One sample at a time, each scaled to its share of the global mean, each
    // added to the fixed-point sums.
    const double share = 1.0 / static_cast<double>(batch.global_rows);
    for (int64_t i = 0; i < rows; ++i) {
      Tensor loss = parts.loss(parts.model(ops::slice(batch.inputs, 0, i, i + 1)), ops::slice(batch.targets, 0, i, i + 1));
      autograd::backward(ops::mul(loss, share));
      dp_->accumulate_fixed_point();
      loss_value += loss.item<double>() / static_cast<double>(rows);
    }
  } else {
    loss_value = train::forward_backward(batch, parts);
  }
  dp_->finish_gradient_sync();
  parts.optimizer.step();
  return loss_value;
}

void DataParallelStrategy::barrier() { comm::barrier(*comm_); }

void DataParallelStrategy::finish() {
  if (group_) group_->finish();
}

}  // namespace loom::parallel
