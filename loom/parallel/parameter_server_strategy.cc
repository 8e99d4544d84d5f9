#include "loom/parallel/parameter_server_strategy.h"

#include <cstring>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/ops/view.h"

namespace loom::parallel {

ParameterServerStrategy::ParameterServerStrategy(std::unique_ptr<ps::KVStore> kv)
    : owned_(std::move(kv)), kv_(owned_.get()) {
  LOOM_ASSERT(kv_ != nullptr);
}

ParameterServerStrategy::ParameterServerStrategy(ps::KVStore& kv) : kv_(&kv) {}

std::string_view ParameterServerStrategy::name() const { return io::name(kv_->type()); }

void ParameterServerStrategy::attach(nn::Module& model, const optim::OptimizerSpec& spec) {
  for (const auto& [name, p] : model.named_parameters()) {
    keys_.push_back(static_cast<int64_t>(keys_.size()));
    params_.push_back(p);
    grads_.push_back(ops::zeros(p.shape(), p.dtype()));
  }
  kv_->init(keys_, params_);
  int64_t next_key = static_cast<int64_t>(keys_.size());
  for (auto& [name, m] : model.named_modules()) {
    if (auto* e = dynamic_cast<ServerEmbedding*>(m)) {
      e->bind(*kv_, next_key++);
      embeddings_.push_back(e);
    }
  }
  kv_->set_optimizer(spec);
  kv_->pull(keys_, params_);  // everyone starts from rank 0's weights
}

double ParameterServerStrategy::step(const train::StepBatch& batch, train::StepParts& parts) {
  parts.optimizer.zero_grad();
  const double loss = train::forward_backward(batch, parts);
  for (ServerEmbedding* e : embeddings_) e->push_gradients();
  for (size_t i = 0; i < params_.size(); ++i) {
    const core::Tensor g = params_[i].grad();
    if (g.defined()) {
      const core::Tensor c = ops::contiguous(g);
      std::memcpy(grads_[i].data_ptr(), c.data_ptr(), c.nbytes());
    } else {
      std::memset(grads_[i].data_ptr(), 0, grads_[i].nbytes());
    }
  }
  kv_->pushpull(keys_, grads_, params_);
  kv_->advance_clock();
  return loss;
}

void ParameterServerStrategy::add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) {
  kv_->optimizer_states(train::kServerStatePrefix, tensors, meta);
}

void ParameterServerStrategy::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  LOOM_CHECK_T(IoError, file.metadata.contains(std::string(train::kServerStatePrefix) + "format"),
               "{}: the checkpoint has no parameter-server state (it was written without parameter servers): "
               "resuming with them would start the servers' optimizer afresh", source);
  kv_->restore_optimizer_states(file, train::kServerStatePrefix, source);
  kv_->pull(keys_, params_);  // the servers' weights, as checkpointed
}

}  // namespace loom::parallel
