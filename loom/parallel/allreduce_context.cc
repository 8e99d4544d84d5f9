#include "loom/parallel/allreduce_context.h"

#include "loom/nn/nn.h"

namespace loom::parallel {

AllreduceContext::AllreduceContext(ProcessGroup& group, AllreduceContextOptions options)
    : group_(group), options_(options), grad_comm_(group.comm()) {
  grad_comm_.channel = 1;
  grad_comm_.next_sequence = 0;
  grad_comm_.deterministic = options_.deterministic;
}

void AllreduceContext::attach(nn::Module& model) {
  if (options_.deterministic) {
    for (auto& [name, m] : model.named_modules()) {
      LOOM_CHECK_T(ConfigError, dynamic_cast<nn::BatchNorm2d*>(m) == nullptr,
                   "deterministic data parallelism back-propagates one sample at a time, which batch norm ('{}') "
                   "does not allow; remove it or set deterministic = false", name);
    }
  }
  dp_ = std::make_unique<DataParallel>(model, grad_comm_, options_.data_parallel);
}

void AllreduceContext::accumulate_micro_batch() {
  LOOM_ASSERT(dp_ != nullptr);
  dp_->accumulate_fixed_point();
}

void AllreduceContext::finish_gradients() {
  LOOM_ASSERT(dp_ != nullptr);
  dp_->finish_gradient_sync();
}

void AllreduceContext::barrier() { comm::barrier(group_.comm()); }

}  // namespace loom::parallel
