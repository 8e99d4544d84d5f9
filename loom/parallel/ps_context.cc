#include "loom/parallel/ps_context.h"

#include <algorithm>
#include <cstring>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/ops/view.h"

namespace loom::parallel {

ps::OptimizerSpec server_optimizer_spec(const io::JobConfig& job, int64_t steps_per_epoch) {
  const auto& o = job.optimizer;
  const auto& s = job.schedule;
  ps::OptimizerSpec spec{.rule = o.name, .lr = o.lr, .momentum = o.momentum, .dampening = o.dampening,
                         .weight_decay = o.weight_decay, .nesterov = o.nesterov, .beta1 = o.beta1, .beta2 = o.beta2,
                         .eps = o.eps, .schedule = s.name, .gamma = s.gamma, .min_lr = s.min_lr,
                         .warmup_steps = s.warmup_steps};
  // The same arithmetic as the Trainer's own schedule (trainer.cc make_schedule).
  int64_t total = job.train.epochs * steps_per_epoch;
  if (job.train.max_steps > 0) total = std::min(total, job.train.max_steps);
  spec.step_size = std::max<int64_t>(1, s.step_size * steps_per_epoch);
  spec.t_max = std::max<int64_t>(1, total - s.warmup_steps);
  return spec;
}

PsContext::PsContext(ps::KVStore& kv, io::JobConfig job) : kv_(kv), job_(std::move(job)) {}

void PsContext::attach(nn::Module& model) {
  for (const auto& [name, p] : model.named_parameters()) {
    keys_.push_back(static_cast<int64_t>(keys_.size()));
    params_.push_back(p);
    grads_.push_back(ops::zeros(p.shape(), p.dtype()));
  }
  kv_.init(keys_, params_);
  kv_.set_optimizer(server_optimizer_spec(job_, steps_per_epoch_));
  kv_.pull(keys_, params_);  // everyone starts from rank 0's weights
}

void PsContext::add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) {
  kv_.optimizer_states(train::kServerStatePrefix, tensors, meta);
}

void PsContext::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  LOOM_CHECK_T(IoError, file.metadata.contains(std::string(train::kServerStatePrefix) + "format"),
               "{}: the checkpoint has no parameter-server state (it was written without parameter servers): "
               "resuming with them would start the servers' optimizer afresh", source);
  kv_.restore_optimizer_states(file, train::kServerStatePrefix, source);
  kv_.pull(keys_, params_);  // the servers' weights, as checkpointed
}

void PsContext::apply_update() {
  for (size_t i = 0; i < params_.size(); ++i) {
    const core::Tensor g = params_[i].grad();
    if (g.defined()) {
      const core::Tensor c = ops::contiguous(g);
      std::memcpy(grads_[i].data_ptr(), c.data_ptr(), c.nbytes());
    } else {
      std::memset(grads_[i].data_ptr(), 0, grads_[i].nbytes());
    }
  }
  kv_.pushpull(keys_, grads_, params_);
  kv_.advance_clock();
}

}  // namespace loom::parallel
